"""Numbers no clock writes and nesting no format needs: refused where they are, never a traceback.

- a span whose start or duration is NaN or infinite (JSON ``NaN``/``Infinity``, or such text) is
  refused with a warning naming the trace, the span and the field; the rest of the file is read;
- numbers of 20 digits and more (a corrupt or wrapped value) are refused as out of range, in any
  field that holds a time, in Jaeger JSON and OTLP alike;
- a JSON text nested deeper than the decoders go is refused naming the file (whole, streamed in
  batches, or as JSON Lines); a deeply nested tag value is kept as a short note;
- a very deep chain of spans is read and walked without recursion.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firm.tracing import (
    Span,
    Trace,
    TraceParseError,
    critical_path_walk,
    critical_paths,
    loads_traces,
    parse_traces,
)
from firm.tracing.parse import TraceReader
from firm.tracing.stream import StreamOptions, trace_batches


def span(sid: str, start: Any = 1_000, duration: Any = 10, parent: str | None = None) -> dict[str, Any]:
    return {
        "traceID": "abc",
        "spanID": sid,
        "operationName": "op",
        "references": [{"refType": "CHILD_OF", "traceID": "abc", "spanID": parent}] if parent else [],
        "startTime": start,
        "duration": duration,
        "processID": "p1",
        "tags": [],
    }


def query_doc(*spans: dict[str, Any]) -> dict[str, Any]:
    return {"data": [{"traceID": "abc", "spans": list(spans), "processes": {"p1": {"serviceName": "svc"}}}]}


def text_of(doc: Any) -> str:
    """JSON text as exporters write it: ``NaN`` and ``Infinity`` as bare literals."""
    return json.dumps(doc, allow_nan=True)


# -- NaN and infinity ---------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["startTime", "duration"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "NaN", "-Infinity"])
def test_a_non_finite_time_refuses_just_that_span(field: str, value: Any) -> None:
    bad = span("s2", parent="s1")
    bad[field] = value
    [t] = loads_traces(text_of(query_doc(span("s1"), bad, span("s3", parent="s1"))))
    assert [s.span_id for s in t.spans] == ["s1", "s3"]
    [warning] = t.warnings
    assert f'trace 0000000000000abc, span s2 refused: "{field}" is' in warning
    assert "not a number of microseconds" in warning


# -- Times of the wrong type: refused like times out of range -------------------------------------

_NOT_WHOLE = [
    (1.5, "1.5"),
    (None, "null"),
    (True, "true"),
    (False, "false"),
    ("soon", '"soon"'),
    ("", '""'),
    ([1000], "[1000]"),
    ({"us": 5}, '{"us": 5}'),
]


@pytest.mark.parametrize("columns", [True, False], ids=["column reader", "reference parser"])
@pytest.mark.parametrize("field", ["startTime", "duration"])
@pytest.mark.parametrize(("value", "shown"), _NOT_WHOLE)
def test_a_time_of_the_wrong_type_refuses_just_that_span(
    field: str, value: Any, shown: str, columns: bool
) -> None:
    """A fraction, null, a boolean, text, a list or an object as a span's time is refused as a
    negative or NaN one is: that span, with a warning naming the trace, the span, the field and the
    value; the other spans and traces are read, whichever reader reads the file."""
    bad = span("s2", parent="s1")
    bad[field] = value
    good = {
        "traceID": "def",
        "spans": [{**span("t1"), "traceID": "def"}],
        "processes": {"p1": {"serviceName": "svc"}},
    }
    doc = query_doc(span("s1"), bad, span("s3", parent="s1"))
    doc["data"].append(good)
    reader = TraceReader(keep_tags=False, columns=columns)
    reader.read_text(json.dumps(doc).encode(), "in.json")
    first, second = reader.traces()
    assert [s.span_id for s in first.spans] == ["s1", "s3"] and [s.span_id for s in second.spans] == ["t1"]
    message = f'in.json: trace 0000000000000abc, span s2 refused: "{field}" is {shown}, not a whole number of microseconds'
    assert list(first.warnings) == [message] and message in reader.diagnostics
    assert second.warnings == ()


@pytest.mark.parametrize("columns", [True, False], ids=["column reader", "reference parser"])
@pytest.mark.parametrize("field", ["startTime", "duration"])
def test_a_missing_time_refuses_just_that_span(field: str, columns: bool) -> None:
    bad = span("s2", parent="s1")
    del bad[field]
    reader = TraceReader(keep_tags=False, columns=columns)
    reader.read_text(json.dumps(query_doc(span("s1"), bad)).encode(), "in.json")
    [t] = reader.traces()
    assert [s.span_id for s in t.spans] == ["s1"]
    assert list(t.warnings) == [
        f'in.json: trace 0000000000000abc, span s2 refused: "{field}" is missing: no whole number of microseconds'
    ]


def test_whole_numbers_in_other_spellings_are_still_read() -> None:
    """An integral float and digits as text are whole numbers: read, not refused."""
    [t] = loads_traces(json.dumps(query_doc(span("s1", start=1000.0, duration="25"))))
    assert (t.spans[0].start, t.spans[0].duration, t.warnings) == (1000, 25, ())


@pytest.mark.parametrize(("value", "shown"), _NOT_WHOLE)
def test_otlp_times_of_the_wrong_type_refuse_the_span(value: Any, shown: str) -> None:
    def ospan(sid: str, start: Any, end: Any) -> dict[str, Any]:
        return {"traceId": "c" * 32, "spanId": sid, "startTimeUnixNano": start, "endTimeUnixNano": end}

    spans = [ospan("1" * 16, "1000", "9000"), ospan("2" * 16, value, "9000"), ospan("3" * 16, 1000, value)]
    resource = {"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "s"}}]}}
    [t] = loads_traces(json.dumps({"resourceSpans": [{**resource, "scopeSpans": [{"spans": spans}]}]}))
    assert [s.span_id for s in t.spans] == ["1" * 16]
    assert [w.split(": ", 1)[1] for w in t.warnings] == [
        f'trace {"c" * 32}, span {"2" * 16} refused: "startTimeUnixNano" is {shown}, not a whole number of nanoseconds',
        f'trace {"c" * 32}, span {"3" * 16} refused: "endTimeUnixNano" is {shown}, not a whole number of nanoseconds',
    ]


@pytest.mark.parametrize(
    ("field", "value"), [("startTime", None), ("startTime", 5), ("duration", True), ("duration", "soon")]
)
def test_jaeger_domain_times_that_cannot_be_read_refuse_the_span(field: str, value: Any) -> None:
    def dspan(sid: str) -> dict[str, Any]:
        return {
            "traceId": "AAAAAAAAAAE=",
            "spanId": sid,
            "operationName": "x",
            "startTime": "2020-01-01T00:00:00Z",
            "duration": "1us",
            "process": {"serviceName": "svc"},
        }

    bad = dspan("AAAAAAAAAAI=")
    bad[field] = value
    [t] = parse_traces({"spans": [dspan("AAAAAAAAAAE="), bad]})
    assert [s.span_id for s in t.spans] == ["0000000000000001"]
    [warning] = t.warnings
    assert f'span 0000000000000002 refused: "{field}"' in warning


def test_the_command_goes_on_past_a_span_of_the_wrong_type(tmp_path: Path) -> None:
    """``firm critical-path`` warns naming the span and writes the paths, exit status 0."""
    from click.testing import CliRunner  # noqa: PLC0415

    from firm.cli import main  # noqa: PLC0415

    path = tmp_path / "float-duration.json"
    path.write_text(json.dumps(query_doc(span("s1", duration=100), span("s2", duration=2.5, parent="s1"))))
    result = CliRunner().invoke(main, ["critical-path", str(path)])
    assert result.exit_code == 0, result.output
    assert (
        f'warning: {path}: trace 0000000000000abc, span s2 refused: "duration" is 2.5, not a whole number of microseconds'
        in result.stderr
    )
    [trace] = json.loads(result.stdout)["traces"]
    assert [step["spanID"] for step in trace["path"]] == ["s1"]


def test_a_non_finite_time_in_a_streamed_file_refuses_just_that_span(tmp_path: Path) -> None:
    traces = [
        {
            "traceID": f"{k:x}",
            "spans": [span("a"), span("b", duration=math.nan if k == 3 else 5, parent="a")],
            "processes": {"p1": {"serviceName": "svc"}},
        }
        for k in range(1, 9)
    ]
    path = tmp_path / "export.json"
    path.write_text(text_of({"data": traces}))
    batches = list(trace_batches([path], StreamOptions(batch_bytes=300)))
    assert len(batches) > 1
    read = [t for b in batches for t in b.traces]
    assert [len(t.spans) for t in read] == [2, 2, 1, 2, 2, 2, 2, 2]
    assert any(
        'span 000000000000000b refused: "duration" is nan' in m for b in batches for m in b.diagnostics
    )


def test_otlp_non_finite_and_huge_times_refuse_the_span() -> None:
    def ospan(sid: str, start: Any, end: Any) -> dict[str, Any]:
        return {"traceId": "c" * 32, "spanId": sid, "startTimeUnixNano": start, "endTimeUnixNano": end}

    doc = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "s"}}]},
                "scopeSpans": [
                    {
                        "spans": [
                            ospan("1" * 16, "1000", "9000"),
                            ospan("2" * 16, "NaN", "9000"),
                            ospan("3" * 16, 1000, math.inf),
                            ospan("4" * 16, 12345678901234567890123000, 12345678901234567890124000),
                        ]
                    }
                ],
            }
        ]
    }
    [t] = loads_traces(text_of(doc))
    assert [s.span_id for s in t.spans] == ["1" * 16]
    assert len(t.warnings) == 3
    assert (
        f'span {"2" * 16} refused: "startTimeUnixNano" is NaN, not a number of nanoseconds' in t.warnings[0]
    )
    assert f'span {"3" * 16} refused: "endTimeUnixNano" is inf' in t.warnings[1]
    assert f"span {'4' * 16} refused: start 1.234568e+22 us is outside" in t.warnings[2]


# -- Numbers of 20 digits and more --------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("startTime", 12345678901234567890123, "start 1.234568e+22 us is outside"),
        ("startTime", "12345678901234567890123", "start 1.234568e+22 us is outside"),
        ("duration", 12345678901234567890123, "duration 1.234568e+22 us is longer than a week"),
        ("duration", -12345678901234567890123, "negative duration -1.234568e+22 us"),
        ("duration", 1e300, "duration 1.000000e+300 us is longer than a week"),
    ],
)
def test_numbers_of_many_digits_refuse_the_span_naming_it(field: str, value: Any, words: str) -> None:
    bad = span("s2", parent="s1")
    bad[field] = value
    [t] = loads_traces(text_of(query_doc(span("s1"), bad)))
    assert [s.span_id for s in t.spans] == ["s1"]
    [warning] = t.warnings
    assert f"span s2 refused: {words}" in warning
    assert len(warning) < 300  # the number is shown by its magnitude, not in 300 digits


def test_numbers_of_many_digits_as_ids_are_refused_naming_the_field() -> None:
    bad = span("s2", parent="s1")
    bad["spanID"] = 12345678901234567890123
    [t] = loads_traces(text_of(query_doc(span("s1"), bad)))
    assert [s.span_id for s in t.spans] == ["s1"]
    assert 'span #1 refused: "spanID" is a number (' in t.warnings[0]
    assert t.warnings[0].endswith("), not text: the span has no ID")
    bad = span("s2", parent="s1")
    bad["processID"] = 12345678901234567890123
    with pytest.raises(TraceParseError, match=r"span s2: processID .* is not in the trace's processes"):
        loads_traces(text_of(query_doc(span("s1"), bad)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    bad=st.dictionaries(
        st.integers(1, 11),
        st.tuples(
            st.sampled_from(["startTime", "duration"]),
            st.one_of(
                st.sampled_from([math.nan, math.inf, -math.inf, "NaN", "Infinity", 1e300, -1e300]),
                st.integers(min_value=10**19, max_value=10**40),
                st.integers(min_value=-(10**40), max_value=-1),
            ),
        ),
        max_size=6,
    )
)
def test_exactly_the_spans_with_bad_numbers_are_refused(bad: dict[int, tuple[str, Any]]) -> None:
    """Random spans of a chain get unbelievable numbers: the others are read exactly as from a
    clean file, each refused span has one warning naming it, the file is never refused."""
    clean = [
        span(f"s{i}", start=1_000 + i, duration=100 - i, parent=f"s{i - 1}" if i else None) for i in range(12)
    ]
    spoiled = [dict(s) for s in clean]
    for i, (field, value) in bad.items():
        spoiled[i][field] = value
    [whole] = loads_traces(text_of(query_doc(*clean)))
    [t] = loads_traces(text_of(query_doc(*spoiled)))
    kept = {f"s{i}" for i in range(12)} - {f"s{i}" for i in bad}
    assert [s.span_id for s in t.spans] == [s.span_id for s in whole.spans if s.span_id in kept]
    assert all(s in whole.spans for s in t.spans)
    refused = [w for w in t.warnings if "refused" in w]
    assert len(refused) == len(bad)
    for i in bad:
        assert sum(f"span s{i} refused: " in w for w in refused) == 1
    critical_paths([t])  # what is kept can be walked


# -- Nesting ------------------------------------------------------------------------------------


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_json_nested_too_deeply_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text('{"data": ' + nested(100_000) + "}")
    with pytest.raises(TraceParseError, match=r"deep.json: not usable JSON: values nested too deeply"):
        TraceReader().read_file(path)


def test_a_streamed_entry_nested_too_deeply_is_refused_naming_it(tmp_path: Path) -> None:
    ok = {"traceID": "a", "spans": [span("s1")], "processes": {"p1": {"serviceName": "svc"}}}
    path = tmp_path / "deep.json"
    path.write_text('{"data": [' + json.dumps(ok) + ", " + nested(5_000) + "]}")
    with pytest.raises(
        TraceParseError, match=r"deep.json: trace #1: not usable JSON: values nested too deeply"
    ):
        list(trace_batches([path], StreamOptions(batch_bytes=100)))


def test_a_json_lines_line_nested_too_deeply_is_refused_naming_it(tmp_path: Path) -> None:
    ok = json.dumps(query_doc(span("s1")))
    path = tmp_path / "deep.jsonl"
    path.write_text(ok + "\n" + nested(5_000) + "\n")
    reader = TraceReader()
    reader.read_file(path)
    assert len(reader.traces()) == 1
    [warning] = reader.diagnostics
    assert "line 2 skipped: not usable JSON: values nested too deeply" in warning


def test_a_deeply_nested_tag_value_is_kept_as_a_note() -> None:
    tagged = span("s1")
    tagged["tags"] = [{"key": "payload", "type": "string", "value": orjson.loads(nested(995))}]
    [t] = parse_traces(query_doc(tagged))
    assert t.spans[0].tag("payload") == "(a value nested too deeply to keep)"


def test_a_very_deep_chain_of_spans_is_read_and_walked() -> None:
    n = 20_000
    doc = query_doc(*(span(f"s{i}", 1_000 + i, 2 * (n - i), f"s{i - 1}" if i else None) for i in range(n)))
    [t] = parse_traces(doc)
    [cp] = critical_paths([t])
    walk = critical_path_walk(t)
    assert cp.as_dict() == walk.as_dict()
    assert len(cp.main.steps) == n
    deep = Trace(
        "d",
        tuple(Span(f"x{i}", "s", "s", "op", i, 2 * (n - i), f"x{i - 1}" if i else None) for i in range(n)),
    )
    assert critical_path_walk(deep).as_dict() == critical_paths([deep])[0].as_dict()
