"""Faults in trace input: a bad line of a JSON Lines file, a document of another JSON type, and the
spelling of trace IDs in warnings and errors.

- A JSON Lines line that is not JSON (a truncated last line, as a file exporter leaves when it
  stops) or not a trace document is skipped with a warning naming the file and the line; the other
  lines' traces are read, by the whole-file reader and the batched one alike; a file of which no
  line gave a trace is a file without traces (the command's error names it).
- A document of the wrong JSON type is named in JSON's words (``null``, ``a number``...).
- A trace ID is spelt the same in warnings, errors and output (``canonical_trace_id``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from firm.cli import main
from firm.cli_options import MAX_WARNINGS_SHOWN
from firm.tracing import TraceParseError, TraceReader, loads_traces, parse_traces
from firm.tracing.model import Span, Trace
from firm.tracing.parse import json_kind, looks_like_json_lines
from firm.tracing.stream import StreamOptions, trace_batches
from tests.unit.tracing.shared_data import data_dir

GOOD = (data_dir("field-traces") / "otlp-file-exporter.jsonl").read_text().splitlines()[0]
"""One OTLP JSON document of OpenTelemetry's file exporter (trace 5b8e..., two spans)."""
GOOD_ID = "5b8efff798038103d269b633813fc60c"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def otlp_line(trace_id: str) -> str:
    """:data:`GOOD` under another trace ID (32 hex digits)."""
    return GOOD.replace(GOOD_ID, trace_id)


def read_whole(path: Path) -> tuple[list[str], list[str]]:
    """Trace IDs and diagnostics of ``path`` read whole."""
    reader = TraceReader()
    reader.read_file(path)
    return [t.trace_id for t in reader.traces()], reader.diagnostics


def read_batched(path: Path, batch_bytes: int = 64) -> tuple[list[str], list[str]]:
    """Trace IDs and diagnostics of ``path`` read in batches (line by line: the file is larger)."""
    assert path.stat().st_size > batch_bytes
    ids: list[str] = []
    diagnostics: list[str] = []
    for batch in trace_batches([path], StreamOptions(batch_bytes=batch_bytes)):
        ids.extend(t.trace_id for t in batch.traces)
        diagnostics.extend(batch.diagnostics)
    return ids, diagnostics


READERS = pytest.mark.parametrize("read", [read_whole, read_batched], ids=["whole file", "batches"])


# -- 1. a bad line of a JSON Lines file ---------------------------------------------------------


BAD_LINES = [
    (GOOD[:60], "not valid JSON (Unterminated string starting at, column 53)"),
    (GOOD[:-1], "not valid JSON ("),
    ("42", "a number (42) is not a trace document"),
    ("null", "null is not a trace document"),
    ('"text"', 'a string ("text") is not a trace document'),
    ("true", "true is not a trace document"),
    ('{"nothing": 1}', "unrecognised trace document"),
    ('{"data": "x"}', '"data" must be a list of traces'),
    ("[42]", "trace #0 is a number (42), not an object"),
]


@READERS
@pytest.mark.parametrize(("bad", "problem"), BAD_LINES)
def test_a_bad_last_line_is_skipped_with_a_warning_naming_it(
    tmp_path: Path, read: Any, bad: str, problem: str
) -> None:
    path = tmp_path / "trunc.jsonl"
    path.write_text(GOOD + "\n" + bad + "\n")
    ids, diagnostics = read(path)
    assert ids == [GOOD_ID]
    [warning] = diagnostics
    assert warning.startswith(f"{path}: line 2 skipped: {problem}")


@READERS
def test_a_bad_line_among_good_ones_and_a_file_without_a_final_newline(tmp_path: Path, read: Any) -> None:
    a, b = "1" * 32, "2" * 32
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join([otlp_line(a), "42", "", otlp_line(b), GOOD[:60]]))
    ids, diagnostics = read(path)
    assert ids == [a, b]
    assert diagnostics == [
        f"{path}: line 2 skipped: a number (42) is not a trace document",
        f"{path}: line 5 skipped: not valid JSON (Unterminated string starting at, column 53)",
    ]


@READERS
def test_a_damaged_first_line_is_skipped_too(tmp_path: Path, read: Any) -> None:
    path = tmp_path / "first.jsonl"
    path.write_text(GOOD[:60] + "\n" + GOOD + "\n")
    ids, diagnostics = read(path)
    assert ids == [GOOD_ID]
    assert diagnostics == [
        f"{path}: line 1 skipped: not valid JSON (Unterminated string starting at, column 53)"
    ]


@READERS
def test_a_line_that_is_not_utf8_is_skipped(tmp_path: Path, read: Any) -> None:
    path = tmp_path / "latin.jsonl"
    path.write_bytes(GOOD.encode() + b"\n" + GOOD.replace("checkout", "caf\xe9").encode("latin-1") + b"\n")
    ids, diagnostics = read(path)
    assert ids == [GOOD_ID]
    [warning] = diagnostics
    assert warning.startswith(f"{path}: line 2 skipped: not UTF-8 text")


def test_nothing_of_a_skipped_line_is_kept() -> None:
    """A line whose trace is malformed after a refused span: neither its traces nor the refused
    span's warning are kept, only the line's."""
    doc = {
        "data": [
            {
                "traceID": "aa01",
                "spans": [
                    {"spanID": "s1", "startTime": 1, "duration": -1, "processID": "p1"},
                    {"spanID": "s2", "startTime": 1, "duration": 1, "processID": "nope"},
                ],
                "processes": {"p1": {"serviceName": "svc"}},
            }
        ]
    }
    reader = TraceReader()
    reader.read_text(GOOD + "\n" + json.dumps(doc) + "\n", "x.jsonl")
    assert [t.trace_id for t in reader.traces()] == [GOOD_ID]
    assert reader.diagnostics == [
        "x.jsonl: line 2 skipped: trace 000000000000aa01, span s2: processID 'nope' is not in the trace's processes"
    ]


def test_every_line_bad_gives_no_trace_and_a_warning_per_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("42\nnull\n")
    ids, diagnostics = read_whole(path)
    assert ids == []
    assert diagnostics == [
        f"{path}: line 1 skipped: a number (42) is not a trace document",
        f"{path}: line 2 skipped: null is not a trace document",
    ]


def test_the_same_result_whole_and_in_batches(tmp_path: Path) -> None:
    path = tmp_path / "many.jsonl"
    lines = [otlp_line(f"{k:032x}") if k % 3 else ("{" if k % 2 else "[1, 2]") for k in range(1, 30)]
    path.write_text("\n".join(lines) + "\n")
    assert read_whole(path) == read_batched(path, batch_bytes=500)


@pytest.mark.parametrize(
    ("text", "lines"),
    [
        (GOOD + "\n" + GOOD, True),
        ("\n\n" + GOOD + "\n42\n", True),
        (GOOD[:60] + "\n" + GOOD + "\n", True),
        (GOOD, False),
        (GOOD + "\n\n", False),
        ('{\n  "data": [\n  ]\n}\n', False),
        ('{\n  "data": [\n    {}\n  ]\n}\n', False),
        ("{nope\n[1]\n", False),
    ],
)
def test_json_lines_are_told_from_one_document(text: str, lines: bool) -> None:
    assert looks_like_json_lines(text, whole=True) is lines
    assert looks_like_json_lines(text.encode(), whole=True) is lines


def test_a_line_cut_off_by_the_end_of_the_head_is_no_evidence() -> None:
    assert not looks_like_json_lines((GOOD[:60] + "\n" + GOOD[:100]).encode())
    assert looks_like_json_lines((GOOD + "\n" + GOOD[:100]).encode())


def test_a_malformed_single_document_is_still_an_error() -> None:
    with pytest.raises(TraceParseError, match=r"x\.json: not valid JSON \(.*line 3 column"):
        loads_traces('{\n  "data": [\n  }\n', "x.json")


# -- 1, through the commands --------------------------------------------------------------------


@pytest.mark.parametrize("batch", [[], ["--batch-mb", "1"]], ids=["whole file", "batches"])
def test_critical_path_keeps_the_good_lines(tmp_path: Path, batch: list[str]) -> None:
    path = tmp_path / "trunc.jsonl"
    good = [otlp_line(f"{k:032x}") for k in range(1, 1 + (1500 if batch else 1))]
    path.write_text("\n".join([*good, "42", GOOD[:60]]) + "\n")
    assert (path.stat().st_size > 2**20) == bool(batch)
    code, out, err = run("critical-path", "--compact", *batch, str(path))
    assert code == 0, err
    traces = json.loads(out)["traces"]
    assert len(traces) == len(good)
    assert traces[0]["traceID"] == "0000000000000001"
    assert traces[0]["source"] == f"{path}:1"
    n = len(good)
    assert err.splitlines() == [
        f"warning: {path}: line {n + 1} skipped: a number (42) is not a trace document",
        f"warning: {path}: line {n + 2} skipped: not valid JSON (Unterminated string starting at, column 53)",
    ]
    assert "Traceback" not in out + err


def test_features_keeps_the_good_lines(tmp_path: Path) -> None:
    good = [otlp_line(f"{k:032x}") for k in range(1, 4)]
    clean = tmp_path / "clean.jsonl"
    clean.write_text("\n".join(good) + "\n")
    path = tmp_path / "trunc.jsonl"
    path.write_text("\n".join([*good, GOOD[:60]]) + "\n")
    code, out, err = run("features", "--min-samples", "2", str(path))
    assert code == 0, err
    doc = json.loads(out)
    assert doc["window"]["requests"] == 3
    assert doc == json.loads(run("features", "--min-samples", "2", str(clean))[1])
    assert f"warning: {path}: line 4 skipped: not valid JSON" in err
    assert "Traceback" not in out + err


def test_a_file_of_bad_lines_only_is_a_file_without_traces(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("42\n" + GOOD[:60] + "\n")
    code, out, err = run("critical-path", str(path))
    assert code == 1
    assert out == ""
    assert f"warning: {path}: line 1 skipped: a number (42) is not a trace document" in err
    assert f"warning: {path}: line 2 skipped: not valid JSON" in err
    assert f"Error: {path}: no trace in the file" in err
    assert "Traceback" not in err


def test_a_file_of_bad_lines_beside_a_good_file_is_named_in_a_warning(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("42\n" + GOOD[:60] + "\n")
    good = tmp_path / "good.jsonl"
    good.write_text(GOOD + "\n")
    code, out, err = run("critical-path", "--compact", str(bad), str(good))
    assert code == 0, err
    assert [t["traceID"] for t in json.loads(out)["traces"]] == [GOOD_ID]
    assert f"warning: {bad}: line 1 skipped" in err
    assert f"warning: {bad}: no trace in this file" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", ["critical-path", "features", "localize"])
def test_a_thousand_bad_lines_give_twenty_warnings_and_a_count(tmp_path: Path, command: str) -> None:
    path = tmp_path / "noisy.jsonl"
    path.write_text(GOOD + "\n" + "not json\n" * 1000)
    code, _, err = run(command, str(path))
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == MAX_WARNINGS_SHOWN + 1, err[-2000:]
    assert warnings[0].endswith(f"{path}: line 2 skipped: not valid JSON (Expecting value, column 1)")
    assert warnings[-1].endswith(
        "980 more warnings not shown (the first 20 are above); run `firm -v ...` to see every one"
    )
    assert "Traceback" not in err and code in (0, 1)  # localize: one trace is too few to rank (status 1)


def test_with_verbose_every_warning_is_shown(tmp_path: Path) -> None:
    path = tmp_path / "noisy.jsonl"
    path.write_text(GOOD + "\n" + "not json\n" * 50)
    code, _, err = run("-v", "critical-path", str(path))
    assert code == 0
    assert len([line for line in err.splitlines() if line.startswith("warning: ")]) == 50


# -- 2. JSON's own type names -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (None, "null"),
        (True, "true"),
        (False, "false"),
        (42, "a number (42)"),
        (1.5, "a number (1.5)"),
        ("abc", 'a string ("abc")'),
        ([1], "a list"),
        ({"a": 1}, "an object"),
    ],
)
def test_json_kind_names_json_types(value: Any, kind: str) -> None:
    assert json_kind(value) == kind


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("null", "x.json: null is not a trace document"),
        ("true", "x.json: true is not a trace document"),
        ("false", "x.json: false is not a trace document"),
        ("42", r"x.json: a number \(42\) is not a trace document"),
        ("-1.5e3", r"x.json: a number \(-1500.0\) is not a trace document"),
        ('"traces"', r'x.json: a string \("traces"\) is not a trace document'),
        ("[null]", "x.json: trace #0 is null, not an object"),
        ("[[]]", "x.json: trace #0 is a list, not an object"),
        (
            '[{"traceID": "a", "spans": [], "processes": {}}, "t"]',
            r'x.json: trace #1 is a string \("t"\), not an object',
        ),
    ],
)
def test_a_document_of_another_type_is_named_in_json_words(text: str, message: str) -> None:
    with pytest.raises(TraceParseError, match=message) as caught:
        loads_traces(text, "x.json")
    for python in ("NoneType", "bool", "int", "float", "str", "list", "dict"):
        assert f"JSON {python}" not in str(caught.value)


def test_the_command_names_null_in_json_words(tmp_path: Path) -> None:
    path = tmp_path / "null.json"
    path.write_text("null\n")
    code, out, err = run("critical-path", str(path))
    assert code == 1
    assert out == ""
    assert f"Error: {path}: null is not a trace document" in err
    assert "NoneType" not in err
    assert "Traceback" not in err


# -- 3. one spelling of a trace ID --------------------------------------------------------------


def jaeger(trace_id: str, *spans: dict[str, Any]) -> dict[str, Any]:
    return {"traceID": trace_id, "spans": list(spans), "processes": {"p1": {"serviceName": "svc"}}}


def jspan(sid: str, start: Any = 1_000, duration: Any = 10, **extra: Any) -> dict[str, Any]:
    return {"spanID": sid, "startTime": start, "duration": duration, "processID": "p1", **extra}


def test_a_refused_span_names_its_trace_as_the_output_does() -> None:
    reader = TraceReader()
    reader.read_document({"data": [jaeger("AA01", jspan("s1"), jspan("s2", duration=-5))]}, "in.json")
    [t] = reader.traces()
    assert t.trace_id == "000000000000aa01"
    assert reader.diagnostics == ["in.json: trace 000000000000aa01, span s2 refused: negative duration -5 us"]
    assert t.warnings == tuple(reader.diagnostics)


def test_a_dropped_trace_is_named_as_the_output_does() -> None:
    reader = TraceReader()
    reader.read_document({"data": [jaeger("aa01", jspan("s1", duration=-5))]}, "in.json")
    assert reader.traces() == []
    assert reader.diagnostics == [
        "in.json: trace 000000000000aa01, span s1 refused: negative duration -5 us",
        "in.json: trace 000000000000aa01 dropped: every span of it was refused",
    ]


@pytest.mark.parametrize(
    "doc",
    [
        jaeger("aa01", jspan("s1", processID="nope")),
        {"traceID": "aa01", "spans": "nope"},
    ],
    ids=["process", "spans"],
)
def test_an_error_names_the_trace_as_the_output_does(doc: dict[str, Any]) -> None:
    with pytest.raises(TraceParseError, match=r"in\.json, trace 000000000000aa01") as caught:
        parse_traces(doc, "in.json")
    assert caught.value.trace_id == "000000000000aa01"


def test_an_error_of_the_model_and_the_critical_path_spells_it_so() -> None:
    with pytest.raises(TraceParseError, match=r"^trace 000000000000aa01: the trace has no spans"):
        Trace("AA01", ())
    from firm.tracing.critical_path import critical_path_walk  # noqa: PLC0415

    loop = Trace(
        "AA01",
        (
            Span("a", "svc", "svc", "op", 0, 10, "b"),
            Span("b", "svc", "svc", "op", 0, 10, "a"),
        ),
    )
    with pytest.raises(TraceParseError, match=r"trace 000000000000aa01"):
        critical_path_walk(loop)


def test_a_trace_split_over_batches_is_named_as_the_output_does(tmp_path: Path) -> None:
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps({"data": [jaeger("AA01", jspan("s1"))]}))
    second.write_text(json.dumps({"data": [jaeger("aa01", jspan("s2", references=[{"spanID": "s1"}]))]}))
    batches = list(trace_batches([first, second], StreamOptions(batch_bytes=1)))
    messages = [m for b in batches for m in b.diagnostics]
    assert [t.trace_id for b in batches for t in b.traces] == ["000000000000aa01"] * 2
    assert len(messages) == 1
    assert messages[0].startswith("trace 000000000000aa01: a part of it came after the batch")


def test_the_command_spells_the_trace_alike_in_warnings_and_output(tmp_path: Path) -> None:
    path = tmp_path / "in.json"
    path.write_text(json.dumps({"data": [jaeger("aa01", jspan("s1"), jspan("s2", duration=-5))]}))
    code, out, err = run("critical-path", "--compact", str(path))
    assert code == 0, err
    [trace] = json.loads(out)["traces"]
    assert trace["traceID"] == "000000000000aa01"
    assert err.splitlines() == [
        f"warning: {path}: trace 000000000000aa01, span s2 refused: negative duration -5 us"
    ]
    assert "trace aa01" not in out + err
    assert "Traceback" not in err
