"""A rate trace (``firm load --trace``) with numbers no load has: refused naming the line."""

from __future__ import annotations

import gzip
import os
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


def test_a_byte_order_mark_and_crlf_lines_are_read(tmp_path: Path) -> None:
    trace = tmp_path / "rates.txt"
    trace.write_bytes(b"\xef\xbb\xbf3\r\n0\r\n7\r\n")
    assert read_rate_trace(trace).tolist() == [3, 0, 7]


@pytest.mark.parametrize("value", ["\u0661\u0660", "\uff11\uff10", "1_000", "1.5", "0x10"])
def test_only_ascii_whole_numbers_are_rates(tmp_path: Path, value: str) -> None:
    trace = tmp_path / "rates.txt"
    trace.write_text(f"10\n{value}\n")
    with pytest.raises(LoadSpecError, match=r"rates.txt line 2: .* is not an integer"):
        read_rate_trace(trace)


def test_a_compressed_trace_is_named_with_the_way_to_read_it(tmp_path: Path) -> None:
    trace = tmp_path / "rates.txt.gz"
    trace.write_bytes(gzip.compress(b"1\n2\n"))
    with pytest.raises(
        LoadSpecError, match=r"trace file .*rates.txt.gz is not UTF-8 text .*looks compressed.*zcat"
    ):
        read_rate_trace(trace)


def test_a_device_or_a_pipe_is_not_a_trace_file(tmp_path: Path) -> None:
    with pytest.raises(LoadSpecError, match="trace file /dev/null is a device, not a file"):
        read_rate_trace("/dev/null")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(LoadSpecError, match=r"is a pipe.*, not a file"):  # no writer: refused, not waited on
        read_rate_trace(fifo)
