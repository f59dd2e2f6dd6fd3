"""Audit logs that are not audit logs: a clean error naming the line, from the library and the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from firm.cli import main
from firm.loop.audit import read_recent


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"step": 1}\n[1, 2]\n', "line 2 is a JSON list, not a record"),
        (b'{"step": 1}\n{"x":\n', "line 2 is not JSON (Expecting value)"),
        (b"\xff\xfe{}\n", "not UTF-8 text (byte 0)"),
    ],
)
def test_a_file_that_is_not_an_audit_log_is_refused_naming_the_line(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="one JSON object per line") as raised:
        read_recent(path=path)
    assert expected in str(raised.value)
    for command in ("audit", "explain"):
        result = CliRunner().invoke(main, [command, "--file", str(path)])
        assert result.exit_code == 1, result.output
        assert expected in result.output and "Traceback" not in result.output


def test_blank_lines_are_skipped_and_the_last_records_kept(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text('{"step": 1}\n\n{"step": 2}\n{"step": 3}\n')
    assert read_recent(path=path, last=2) == [{"step": 2}, {"step": 3}]
