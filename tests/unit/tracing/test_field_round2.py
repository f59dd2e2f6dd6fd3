"""Faults of the trace reader found by a second new-user trial (issue 14), each with its right value:
span identity in one spelling, numbers of thousands of digits, instance names that are blank, the
file named for a parent cycle, empty files, domain-JSON durations, out-of-range ends and non-ASCII
digits."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from firm.tracing.critical_path import critical_paths
from firm.tracing.features import trace_features
from firm.tracing.parse import MAX_TIME_US, TraceReader, canonical_span_id, load_trace_files
from firm.tracing.stream import StreamOptions, trace_batches


def span(sid: str, start: int, duration: Any, pid: str = "p1", parent: str | None = None) -> dict[str, Any]:
    s: dict[str, Any] = {"spanID": sid, "operationName": "op", "startTime": start, "duration": duration}
    s["processID"] = pid
    if parent is not None:
        s["references"] = [{"refType": "CHILD_OF", "spanID": parent}]
    return s


def trace(*spans: dict[str, Any], procs: dict[str, Any] | None = None, tid: str = "b") -> dict[str, Any]:
    procs = procs or {"p1": {"serviceName": "a"}, "p2": {"serviceName": "b"}}
    return {"traceID": tid, "spans": list(spans), "processes": procs}


def read(text: str | bytes, source: str = "in.json", **kw: Any) -> TraceReader:
    reader = TraceReader(**kw)
    reader.read_text(text, source)
    return reader


READERS = [{}, {"keep_tags": False}, {"keep_tags": False, "columns": False}]


# -- 1. span identity ---------------------------------------------------------------------------


def otlp_document(attributes: list[tuple[str, str | None]], *spans: dict[str, object]) -> dict[str, object]:
    """An OTLP JSON export of one resource (its attributes as string values) holding ``spans``."""
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attributes]},
                "scopeSpans": [{"spans": list(spans)}],
            }
        ]
    }


@pytest.mark.parametrize(
    ("root", "ref"),
    [
        ("00000000000000A1", "00000000000000a1"),
        ("a1", "00000000000000a1"),
        ("00000000000000a1", "A1"),
        ("0000000000000000a1", "a1"),
    ],
)
@pytest.mark.parametrize("kw", READERS)
def test_span_ids_are_one_span_in_every_spelling(root: str, ref: str, kw: dict[str, Any]) -> None:
    doc = {"data": [trace(span(root, 1000, 100), span("0000000000000002", 1010, 80, "p2", ref))]}
    [t] = read(json.dumps(doc), **kw).traces()
    assert [(s.span_id, s.parent_id) for s in t.spans] == [
        ("00000000000000a1", None),
        ("0000000000000002", "00000000000000a1"),
    ]
    assert t.warnings == ()
    result = trace_features([t, t], min_samples=2)
    shares = {i.instance: round(i.cp_share, 3) for i in result.instances}
    assert shares == {"a": 0.2, "b": 0.8}


def test_span_ids_are_one_span_across_formats() -> None:
    otlp = otlp_document(
        [("service.name", "b")],
        {
            "traceId": "0" * 31 + "b",
            "spanId": base64.b64encode(bytes.fromhex("0000000000000002")).decode(),
            "parentSpanId": "00000000000000A1",
            "name": "x",
            "startTimeUnixNano": "1010000",
            "endTimeUnixNano": "1090000",
        },
    )
    reader = TraceReader()
    reader.read_text(json.dumps({"data": [trace(span("a1", 1000, 100))]}), "jaeger.json")
    reader.read_text(json.dumps(otlp), "otlp.json")
    [t] = reader.traces()
    assert {s.span_id: s.parent_id for s in t.spans} == {
        "00000000000000a1": None,
        "0000000000000002": "00000000000000a1",
    }


def test_canonical_span_id() -> None:
    assert canonical_span_id("00000000000000A1") == "00000000000000a1"
    assert canonical_span_id(" a1 ") == "00000000000000a1"
    assert canonical_span_id("s1") == "s1"
    assert canonical_span_id("0000000000000000") == "0000000000000000"


# -- 2. integers of thousands of digits ----------------------------------------------------------


def _two_spans(duration_text: str) -> str:
    doc = json.dumps(
        {
            "data": [
                trace(
                    span("0000000000000001", 1000, 100),
                    span("0000000000000002", 1010, 80, "p2", "0000000000000001"),
                )
            ]
        }
    )
    return doc.replace('"duration": 80', f'"duration": {duration_text}')


@pytest.mark.parametrize("number", ["9" * 5000, "-" + "9" * 5000, "9" * 400])
@pytest.mark.parametrize("kw", READERS)
def test_a_number_of_thousands_of_digits_refuses_the_span(number: str, kw: dict[str, Any]) -> None:
    reader = read(_two_spans(number), **kw)
    [t] = reader.traces()
    assert [s.span_id for s in t.spans] == ["0000000000000001"]
    [message] = [m for m in reader.diagnostics if "refused" in m]
    assert message.startswith("in.json: trace 000000000000000b, span 0000000000000002 refused: ")


def test_a_long_number_in_json_lines_and_streamed_batches(tmp_path: Path) -> None:
    small = [json.dumps({"data": [trace(span("0000000000000003", 1, 1), tid=f"c{k}")]}) for k in range(40)]
    lines = "\n".join([_two_spans("9" * 5000), *small]) + "\n"
    path = tmp_path / "t.jsonl"
    path.write_text(lines)
    reader = read(lines, "t.jsonl")
    assert [len(t.spans) for t in reader.traces()] == [1] * 41
    big = tmp_path / "big.json"
    big.write_text(
        json.dumps(
            {"data": [trace(span("0000000000000001", 1, 1), tid=f"{k:x}") for k in range(1, 30)]}
        ).replace('"duration": 1', '"duration": ' + "9" * 5000, 1)
    )
    for p in (path, big):
        batches = list(trace_batches([p], StreamOptions(batch_bytes=6000 if p == path else 300)))
        assert any("(5000 digits)" in m for b in batches for m in b.diagnostics)


def test_a_long_number_as_text_or_in_a_tag_is_no_error() -> None:
    doc = _two_spans('"' + "9" * 5000 + '"').replace(
        '"p2": {"serviceName": "b"}',
        '"p2": {"serviceName": "b", "tags": [{"key": "n", "value": ' + "7" * 5000 + "}]}",
    )
    reader = read(doc)
    [t] = reader.traces()
    assert len(t.spans) == 1
    assert any(
        "span 0000000000000002 refused: duration 999999... (5000 digits) us" in m for m in reader.diagnostics
    )


# -- 3. instance identity ------------------------------------------------------------------------


@pytest.mark.parametrize("kw", READERS)
def test_blank_or_null_instance_tags_are_absent(kw: dict[str, Any]) -> None:
    procs = {
        "p1": {
            "serviceName": "a",
            "tags": [{"key": "hostname", "value": None}, {"key": "ip", "value": "10.0.0.1"}],
        },
        "p2": {
            "serviceName": "b",
            "tags": [{"key": "host.name", "value": "   "}, {"key": "k8s.pod.name", "value": ""}],
        },
    }
    doc = {
        "data": [
            trace(
                span("0000000000000001", 1000, 100),
                span("0000000000000002", 1010, 80, "p2", "0000000000000001"),
                procs=procs,
            )
        ]
    }
    [t] = read(json.dumps(doc), **kw).traces()
    assert [s.instance for s in t.spans] == ["10.0.0.1", "b"]


def test_blank_instance_values_in_domain_json_and_otlp() -> None:
    b64 = base64.b64encode
    domain = {
        "spans": [
            {
                "traceId": b64(bytes(15) + b"\x01").decode(),
                "spanId": b64(bytes(7) + b"\x01").decode(),
                "startTime": "2020-01-01T00:00:00Z",
                "duration": "5ms",
                "process": {
                    "serviceName": "svc",
                    "tags": [{"key": "hostname", "vStr": None}, {"key": "host.name", "vStr": " "}],
                },
            }
        ]
    }
    [t] = read(json.dumps(domain)).traces()
    assert t.spans[0].instance == "svc"
    otlp = otlp_document(
        [
            ("service.name", "svc"),
            ("host.name", None),
            ("k8s.pod.name", "  "),
            ("service.instance.id", "pod-2"),
        ],
        {
            "traceId": "0" * 31 + "1",
            "spanId": "0" * 15 + "1",
            "startTimeUnixNano": "1000",
            "endTimeUnixNano": "2000",
        },
    )
    [t] = read(json.dumps(otlp)).traces()
    assert t.spans[0].instance == "pod-2"


@pytest.mark.parametrize("name", ["", "  ", 5, None])
@pytest.mark.parametrize("kw", READERS)
def test_a_process_without_a_service_name_refuses_its_spans(name: Any, kw: dict[str, Any]) -> None:
    procs = {"p1": {"serviceName": "a"}, "p2": {"serviceName": name}}
    doc = {
        "data": [
            trace(
                span("0000000000000001", 1000, 100),
                span("0000000000000002", 1010, 80, "p2", "0000000000000001"),
                procs=procs,
            )
        ]
    }
    reader = read(json.dumps(doc), **kw)
    [t] = reader.traces()
    assert [s.span_id for s in t.spans] == ["0000000000000001"]
    assert any(
        'span 0000000000000002 refused: its process p2 has "serviceName"' in m for m in reader.diagnostics
    )


# -- 4. a parent cycle names the file ------------------------------------------------------------


def test_a_parent_cycle_names_the_file(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"data": [trace(span("0000000000000001", 1, 1), tid="c")]}))
    bad = tmp_path / "cycle.json"
    bad.write_text(
        json.dumps(
            {
                "data": [
                    trace(
                        span("0000000000000001", 1000, 100, "p1", "0000000000000002"),
                        span("0000000000000002", 1010, 80, "p2", "0000000000000001"),
                    )
                ]
            }
        )
    )
    loaded = load_trace_files([good, bad])  # the loop is broken where it starts, with a warning
    traces = loaded.traces()
    assert any(
        w.startswith(f"{bad}: trace 000000000000000b, span 0000000000000001: parent references form a loop")
        for w in loaded.diagnostics
    ), loaded.diagnostics
    assert len(critical_paths(traces)) == 2


# -- 5. empty files ------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "  \n\n ", b"", b"\n"])
def test_an_empty_file_gives_no_trace(text: str | bytes, tmp_path: Path) -> None:
    assert read(text).traces() == []
    path = tmp_path / "empty.json"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    assert [t for b in trace_batches([path]) for t in b.traces] == []


# -- 6. domain-JSON durations --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("duration", "why"),
    [
        ("-5ns", '"-5ns" is a negative duration'),
        ("-0.5us", '"-0.5us" is a negative duration'),
        ("5", '"5" is a number without a unit'),
        ("5x", '"5x" is not a duration'),
        ("\u0661\u0660ms", "is not a duration"),
    ],
)
def test_domain_durations_that_cannot_be_believed_are_refused(duration: str, why: str) -> None:
    b64 = base64.b64encode

    def dspan(k: int, d: str) -> dict[str, Any]:
        return {
            "traceId": b64(bytes(15) + b"\x01").decode(),
            "spanId": b64(bytes(7) + bytes([k])).decode(),
            "startTime": "2020-01-01T00:00:00Z",
            "duration": d,
            "process": {"serviceName": "svc"},
        }

    reader = read(json.dumps({"spans": [dspan(1, "5ms"), dspan(2, duration)]}))
    [t] = reader.traces()
    assert [(s.span_id, s.duration) for s in t.spans] == [("0000000000000001", 5000)]
    [message] = [m for m in reader.diagnostics if "refused" in m]
    assert 'span 0000000000000002 refused: "duration": ' in message and why in message
    assert "300ms" not in message  # no command-line hint for a trace file


# -- 7. ends, starts and digits ------------------------------------------------------------------


def test_an_end_out_of_range_is_named_as_the_end() -> None:
    reader = read(
        json.dumps(
            {"data": [trace(span("0000000000000001", MAX_TIME_US - 10, 100), span("0000000000000002", 1, 1))]}
        )
    )
    [m] = [m for m in reader.diagnostics if "refused" in m]
    assert f"refused: end {MAX_TIME_US + 90} us (start {MAX_TIME_US - 10} + duration 100) is not before" in m


def test_an_otlp_start_before_the_epoch_is_named_as_the_start() -> None:
    otlp = otlp_document(
        [("service.name", "a")],
        {
            "traceId": "0" * 31 + "1",
            "spanId": "0" * 15 + "1",
            "startTimeUnixNano": "-5000000000",
            "endTimeUnixNano": "1700000000000000000",
        },
        {
            "traceId": "0" * 31 + "1",
            "spanId": "0" * 15 + "2",
            "startTimeUnixNano": "1000",
            "endTimeUnixNano": "2000",
        },
    )
    reader = read(json.dumps(otlp))
    [m] = [m for m in reader.diagnostics if "refused" in m]
    assert "span 0000000000000001 refused: start -5000000 us is outside" in m


@pytest.mark.parametrize(
    "text", ["\u0661\u0660\u0660\u0660", "\uff11\uff10\uff10\uff10", "\u00b2", "--5", "1_000"]
)
def test_only_ascii_digits_are_numbers(text: str) -> None:
    reader = read(
        json.dumps({"data": [trace(span("0000000000000001", 1, 1), span("0000000000000002", 1, text))]})
    )
    [t] = reader.traces()
    assert [s.span_id for s in t.spans] == ["0000000000000001"]
    assert any("span 0000000000000002 refused" in m for m in reader.diagnostics)
    assert [
        s.duration
        for s in read(json.dumps({"data": [trace(span("0000000000000001", 1, " 1000 "))]})).traces()[0].spans
    ] == [1000]
