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


def _refused(tmp_path: Path) -> Path:
    """A trace whose only span has a wrapped duration: every span refused, the trace dropped."""
    path = tmp_path / "every-span-refused.json"
    span = {"spanID": "01", "operationName": "root", "references": [], "startTime": 1000}
    trace = {"traceID": "77", "spans": [{**span, "duration": 2**64 - 66, "processID": "p1"}]}
    path.write_text(json.dumps({"data": [{**trace, "processes": {"p1": {"serviceName": "a"}}}]}))
    return path


@pytest.mark.parametrize("kind", ["empty answer", "empty list", "every span refused"])
def test_critical_path_names_the_file_without_traces_among_good_ones(
    kind: str, empty: Path, tmp_path: Path
) -> None:
    good_file, other_file = good()
    if kind == "empty list":
        empty = tmp_path / "empty-list.json"
        empty.write_text("[]")
    elif kind == "every span refused":
        empty = _refused(tmp_path)
    result = CliRunner().invoke(main, ["critical-path", str(good_file), str(empty), str(other_file)])
    assert result.exit_code == 0, result.output
    assert result.stderr.count(f"warning: {empty}: no trace in this file") == 1
    assert "the critical paths are those of the other files" in result.stderr
    assert f"{good_file}: no trace" not in result.stderr and f"{other_file}: no trace" not in result.stderr
    # the split trace is still one trace across the good files, its path 20 % frontend, 80 % checkout
    (trace,) = json.loads(result.stdout)["traces"]
    assert trace["source"] == f"{good_file}, {other_file}"
    per_service: dict[str, int] = {}
    for step in trace["path"]:
        per_service[step["service"]] = per_service.get(step["service"], 0) + step["selfTime"]
    assert per_service == {"frontend": 200, "checkout": 800}


@pytest.mark.parametrize("command", ["features", "critical-path"])
def test_several_good_files_warn_of_nothing(command: str) -> None:
    good_file, other_file = good()
    result = CliRunner().invoke(main, [command, str(good_file), str(other_file)])
    assert result.exit_code == 0, result.output
    assert "no trace in" not in result.stderr


@pytest.mark.parametrize("command", ["features", "critical-path"])
def test_a_json_lines_file_among_several_counts_as_giving_traces(command: str, empty: Path) -> None:
    """Its traces' sources are ``FILE:LINE``; they are FILE's, which is not "without traces"."""
    lines = data_dir("field-traces", "otlp-file-exporter.jsonl")
    result = CliRunner().invoke(main, [command, str(lines), str(empty)])
    assert result.exit_code == 0, result.output
    assert f"{lines}: no trace" not in result.stderr
    assert result.stderr.count(f"warning: {empty}: no trace in this file") == 1


@pytest.mark.parametrize("command", ["features", "critical-path"])
def test_files_that_all_hold_no_trace_are_each_named(command: str, empty: Path, tmp_path: Path) -> None:
    other = tmp_path / "empty-list.json"
    other.write_text("[]")
    result = CliRunner().invoke(main, [command, str(empty), str(other)])
    assert result.exit_code == 1
    assert f"{empty}, {other}: no trace in these files" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", ["features", "critical-path"])
@pytest.mark.parametrize("content", [b"garbage", b"{}", b"\xff\xfe{", b'{"data": [1]}'])
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
@pytest.mark.parametrize("content", [b"", b" \n\r\n\t"])
def test_an_empty_file_among_several_is_a_file_without_traces(
    command: str, content: bytes, tmp_path: Path
) -> None:
    """OpenTelemetry's file exporter writes 0 bytes when there were no spans: no trace, not bad JSON."""
    good_file = good()[0]
    empty_export = tmp_path / "empty.json"
    empty_export.write_bytes(content)
    result = CliRunner().invoke(main, [command, str(good_file), str(empty_export)])
    assert result.exit_code == 0, result.output
    assert f"warning: {empty_export}: no trace in this file" in result.stderr


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


def test_several_files_give_the_critical_paths_of_the_stream_module(empty: Path) -> None:
    from firm.cli import critical_paths_of_files  # noqa: PLC0415
    from firm.tracing.stream import StreamOptions, write_critical_paths  # noqa: PLC0415
    from tests.unit.tracing.shared_data import deathstarbench_files  # noqa: PLC0415

    lines = data_dir("field-traces", "otlp-file-exporter.jsonl")
    files = (*deathstarbench_files(), *good(), empty, lines)
    for batch_bytes in (2**10, 2**25):  # batch after batch, and all in one
        options = StreamOptions(batch_bytes=batch_bytes)
        for indent in (True, False):
            ours: list[bytes] = []
            warnings: list[str] = []
            count = critical_paths_of_files(
                files,
                ours.append,
                overlap_tolerance_us=0,
                indent=indent,
                options=options,
                warn=warnings.append,
            )
            theirs: list[bytes] = []
            assert write_critical_paths(files, theirs.append, indent=indent, options=options) == count
            assert count > 10 and b"".join(ours) == b"".join(theirs)
            assert len(json.loads(b"".join(ours))["traces"]) == count
            assert [w for w in warnings if "no trace in this file" in w] == [
                f"{empty}: no trace in this file (an empty answer or export, or every span refused); "
                "the critical paths are those of the other files"
            ]


@pytest.mark.parametrize(
    ("sources", "without"),
    [
        (["a.json", "b.jsonl:1", "b.jsonl:7"], ["c.json"]),  # lines of a JSON Lines file are the file's
        (["b.jsonl:x", "a.json:"], ["a.json", "b.jsonl", "c.json"]),  # not a line number: no file of ours
        (["c.json", "c.json", "a.json"], ["b.jsonl"]),
        ([], ["a.json", "b.jsonl", "c.json"]),
    ],
)
def test_which_files_gave_no_trace(sources: list[str], without: list[str]) -> None:
    from firm.cli_options import files_without_traces  # noqa: PLC0415

    files = [Path("a.json"), Path("b.jsonl"), Path("c.json"), Path("a.json")]  # a.json given twice
    assert files_without_traces(files, sources) == without


def test_a_file_named_like_a_line_is_itself() -> None:
    """``x.jsonl:2`` may be a file's own name: a source that names a given file exactly is that file."""
    from firm.cli_options import source_file  # noqa: PLC0415

    assert source_file("x.jsonl:2", {"x.jsonl", "x.jsonl:2"}) == "x.jsonl:2"
    assert source_file("x.jsonl:2", {"x.jsonl"}) == "x.jsonl"
    assert source_file("dir:5/x.jsonl:2", {"dir:5/x.jsonl"}) == "dir:5/x.jsonl"
