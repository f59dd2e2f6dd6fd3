"""A rate trace (``firm load --trace``) with numbers no load has: refused naming the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from firm.load import LoadSpecError
from firm.load.schedule import MAX_TRACE_RATE, read_rate_trace


@pytest.mark.parametrize("value", ["12345678901234567890123", str(MAX_TRACE_RATE + 1), "9" * 5000])
def test_a_rate_of_many_digits_is_refused_naming_the_line(tmp_path: Path, value: str) -> None:
    trace = tmp_path / "rates.txt"
    trace.write_text(f"10\n{value}\n5\n")
    with pytest.raises(LoadSpecError, match=r"rates.txt line 2: .* digits\) is too large") as err:
        read_rate_trace(trace)
    assert err.value.field == "rate.path"
    assert len(str(err.value)) < 400


def test_the_largest_rate_is_read(tmp_path: Path) -> None:
    trace = tmp_path / "rates.txt"
    trace.write_text(f"0\n{MAX_TRACE_RATE}\n")
    assert read_rate_trace(trace).tolist() == [0, MAX_TRACE_RATE]
