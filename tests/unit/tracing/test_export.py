"""JSON out (``json_bytes``) and the JSON decoder's fallback to the standard library."""

from __future__ import annotations

import json

from firm.tracing import loads_traces
from firm.tracing.export import jaeger_document, json_bytes


def test_indented_output_is_laid_out_as_the_standard_library_does() -> None:
    doc: dict[str, object] = {
        "traces": [{"a": [1, {"b": "é", "c": []}], "d": {}, "e": None, "f": 1.5, "g": True}]
    }
    assert json_bytes(doc, indent=True).decode() == json.dumps(doc, indent=2, ensure_ascii=False)
    assert json.loads(json_bytes(doc)) == doc
    assert b"\n" not in json_bytes(doc)


def test_integers_beyond_64_bits_fall_back_to_the_standard_library() -> None:
    assert json.loads(json_bytes({"x": 2**70})) == {"x": 2**70}


def test_the_fallback_keeps_the_layout_and_writes_null_for_nan() -> None:
    """The standard library's fallback gives orjson's bytes: one line without spaces, or indented;
    a NaN or infinite float is null there too, not a ValueError."""
    doc: dict[str, object] = {"a": [1, {"b": "é", "c": []}], "d": {}, "e": None, "f": 1.5, "g": True}
    with_big = {**doc, "x": 2**70}
    assert json_bytes(with_big) == json_bytes(doc)[:-1] + b',"x":1180591620717411303424}'
    assert json_bytes(with_big, indent=True).decode() == json.dumps(with_big, indent=2, ensure_ascii=False)
    odd = {"x": 2**70, "n": [float("nan"), float("inf"), {"m": float("-inf")}], "t": (1.5,)}
    assert json.loads(json_bytes(odd)) == {"x": 2**70, "n": [None, None, {"m": None}], "t": [1.5]}
    assert json.loads(json_bytes(odd, indent=True)) == json.loads(json_bytes(odd))
    assert json_bytes({"n": float("nan")}) == b'{"n":null}'  # orjson's own, for comparison


def test_a_trace_written_and_read_back_is_the_same_trace() -> None:
    text = (
        '{"data": [{"traceID": "t1", "processes": {"p1": {"serviceName": "s", "tags": []}}, "spans": ['
        '{"spanID": "a", "startTime": 10, "duration": 5, "processID": "p1", "operationName": "op"}]}]}'
    )
    [t] = loads_traces(text)
    [back] = loads_traces(json_bytes(jaeger_document([t])))
    assert back.spans == t.spans


def test_text_only_the_standard_library_reads_is_still_read() -> None:
    """orjson refuses NaN and integers beyond 64 bits; the standard library reads them, and the
    parser then refuses the span as before (a duration longer than a week)."""
    text = (
        '{"data": [{"traceID": "t1", "processes": {"p1": {"serviceName": "s", "tags": '
        '[{"key": "x", "type": "float64", "value": NaN}]}}, "spans": ['
        '{"spanID": "a", "startTime": 10, "duration": 5, "processID": "p1"},'
        '{"spanID": "b", "startTime": 10, "duration": 36893488147419103232, "processID": "p1"}]}]}'
    )
    [t] = loads_traces(text)
    assert [s.span_id for s in t.spans] == [
        "000000000000000a"
    ]  # span IDs in one spelling (canonical_span_id)
    assert any("span 000000000000000b refused" in w for w in t.warnings)
