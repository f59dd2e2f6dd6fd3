"""Errors reach users in words, without Python's spelling of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from firm.cli_options import describe


def test_system_and_decoding_errors_in_words(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError) as directory:
        tmp_path.joinpath().open().read()
    assert describe(directory.value) == f"Is a directory: {tmp_path}"
    with pytest.raises(UnicodeDecodeError) as decoding:
        b"ok\xff".decode()
    assert describe(decoding.value) == "not UTF-8 text (byte 2); give files saved as UTF-8"
    assert describe(ValueError("line 3 is not JSON")) == "line 3 is not JSON"
    assert "Errno" not in describe(OSError(28, "No space left on device", "/var/x"))
