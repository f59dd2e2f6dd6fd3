"""Commands given several trace files name the file at fault: one that cannot be parsed (an error),
one with no trace among files with traces (a warning naming it), all without traces (an error naming
each)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from firm.cli import main
from tests.unit.tracing.shared_data import data_dir


def good() -> tuple[Path, Path]:
    """The two halves of one trace (``../shared/data/field-traces/``): one request together."""
    return (
        data_dir("field-traces", "split-trace-part1.json"),
        data_dir("field-traces", "split-trace-part2.json"),
    )


@pytest.fixture
def empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty-answer.json"
    path.write_text('{"data": [], "total": 0, "limit": 0, "offset": 0, "errors": null}')
    return path


def test_features_names_the_file_without_traces_among_good_ones(empty: Path) -> None:
    good_file, other_file = good()
    result = CliRunner().invoke(main, ["features", str(good_file), str(empty), str(other_file)])
    assert result.exit_code == 0, result.output
    assert f"warning: {empty}: no trace in this file" in result.stderr
    assert str(good_file) not in result.stderr and str(other_file) not in result.stderr
    # the split trace is still one request across the good files
    assert json.loads(result.stdout)["window"]["requests"] == 1


def test_localize_names_the_file_without_traces_among_good_ones(empty: Path) -> None:
    good_file, other_file = good()
    result = CliRunner().invoke(main, ["localize", "--rules", str(good_file), str(empty), str(other_file)])
    assert result.exit_code == 0, result.output
    assert f"{empty}: no trace in this file" in result.stderr
    assert str(good_file) not in result.stderr and str(other_file) not in result.stderr


def test_features_of_good_files_warns_of_nothing() -> None:
    good_file, other_file = good()
    result = CliRunner().invoke(main, ["features", str(good_file), str(other_file)])
    assert result.exit_code == 0, result.output
    assert "no trace in" not in result.stderr


@pytest.mark.parametrize("command", ["features", "critical-path"])
def test_files_that_all_hold_no_trace_are_each_named(command: str, empty: Path, tmp_path: Path) -> None:
    other = tmp_path / "empty-list.json"
    other.write_text("[]")
    result = CliRunner().invoke(main, [command, str(empty), str(other)])
    assert result.exit_code == 1
    assert f"{empty}, {other}: no trace in these files" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", ["features", "critical-path"])
@pytest.mark.parametrize("content", [b"", b"garbage", b"{}", b"\xff\xfe{", b'{"data": [1]}'])
def test_the_bad_file_among_several_is_named(command: str, content: bytes, tmp_path: Path) -> None:
    good_file = good()[0]
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    for files in ([good_file, bad], [bad, good_file]):
        result = CliRunner().invoke(main, [command, *map(str, files)])
        assert result.exit_code == 1, result.output
        assert str(bad) in result.stderr and str(good_file) not in result.stderr.split("Fix:")[0]
        assert "Traceback" not in result.output


@pytest.mark.parametrize("command", ["features", "critical-path"])
def test_a_file_given_twice_is_named_once(command: str, empty: Path) -> None:
    result = CliRunner().invoke(main, [command, str(empty), str(empty)])
    assert result.exit_code == 1
    assert f"{empty}: no trace in the file" in result.stderr and f"{empty}, {empty}" not in result.stderr


def test_a_good_file_with_an_empty_one_given_twice_is_warned_of_once(empty: Path) -> None:
    good_file, _ = good()
    result = CliRunner().invoke(main, ["features", str(good_file), str(empty), str(empty)])
    assert result.exit_code == 0, result.output
    assert result.stderr.count(f"{empty}: no trace in this file") == 1


def test_several_files_give_the_features_of_the_stream_module(empty: Path) -> None:
    from firm.cli import features_of_files  # noqa: PLC0415
    from firm.tracing.stream import StreamOptions, stream_features  # noqa: PLC0415
    from tests.unit.tracing.shared_data import deathstarbench_files  # noqa: PLC0415

    files = (*deathstarbench_files(), *good(), empty)
    for batch_bytes in (2**10, 2**25):  # batch after batch, and all in one
        options = StreamOptions(batch_bytes=batch_bytes)
        ours = features_of_files(files, min_samples=2, overlap_tolerance_us=0, options=options, warn=print)
        theirs = stream_features(files, min_samples=2, options=options)
        assert ours.requests > 10 and ours.as_dict() == theirs.as_dict()
