"""Faults of the trace reader found by a third new-user trial, each with its right value: all-zero
trace and span IDs, OTLP span kinds written as text or unknown, malformed references and IDs that
refused a whole file, Jaeger's own warnings and spans of another trace, and instance names that
are not text."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from firm.tracing.features import trace_features
from firm.tracing.parse import TraceReader, load_trace_files

READERS: list[dict[str, Any]] = [{}, {"keep_tags": False}, {"keep_tags": False, "columns": False}]


def read(doc: Any, source: str = "in.json", **kw: Any) -> TraceReader:
    reader = TraceReader(**kw)
    reader.read_text(json.dumps(doc), source)
    return reader


def jspan(sid: str, start: int = 1000, duration: int = 100, **extra: Any) -> dict[str, Any]:
    return {
        "spanID": sid,
        "operationName": "op",
        "startTime": start,
        "duration": duration,
        "processID": "p1",
        **extra,
    }


def jaeger(trace_id: str, *spans: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "data": [
            {"traceID": trace_id, "spans": list(spans), "processes": {"p1": {"serviceName": "a"}}, **extra}
        ]
    }


def ospan(tid: str, sid: str, start: int, end: int, parent: str = "", kind: Any = None) -> dict[str, Any]:
    s: dict[str, Any] = {
        "traceId": tid,
        "spanId": sid,
        "name": "op",
        "startTimeUnixNano": str(start * 1000),
        "endTimeUnixNano": str(end * 1000),
    }
    if parent:
        s["parentSpanId"] = parent
    if kind is not None:
        s["kind"] = kind
    return s


def resource(service: str, *spans: dict[str, Any], attrs: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    return {
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}, *attrs]},
        "scopeSpans": [{"spans": list(spans)}],
    }


def otlp(*resources: dict[str, Any]) -> dict[str, Any]:
    return {"resourceSpans": list(resources)}


# -- 1. all-zero IDs ----------------------------------------------------------------------------


ZERO_TRACE = "the trace ID is invalid (all zeros, as W3C Trace Context and OpenTelemetry define it)"


@pytest.mark.parametrize("zeros", ["0" * 32, "0" * 16])
@pytest.mark.parametrize("form", ["otlp", "jaeger"])
@pytest.mark.parametrize("kw", READERS)
def test_all_zero_trace_ids_are_refused_and_never_merged(
    tmp_path: Path, zeros: str, form: str, kw: dict[str, Any]
) -> None:
    good = "0" * 31 + "1"
    docs = {}
    for name, service, start in (("a", "a", 1000), ("b", "b", 5000)):
        if form == "otlp":
            zero_id = zeros if len(zeros) == 32 else "AAAAAAAAAAAAAAAAAAAAAA=="  # 16 zero bytes, base64
            doc = otlp(resource(service, ospan(zero_id, f"{name}1".rjust(16, "0"), start, start + 1000)))
            doc["resourceSpans"].append(
                resource(service, ospan(good, f"{name}2".rjust(16, "0"), start, start + 100))
            )
        else:
            doc = jaeger(zeros, jspan(f"{name}1", start, 1000))
            doc["data"].append(jaeger(good, jspan(f"{name}2", start, 100))["data"][0])
        docs[name] = tmp_path / f"{name}.json"
        docs[name].write_text(json.dumps(doc))
    reader = TraceReader(**kw)
    for path in docs.values():
        reader.read_file(path)
    traces = reader.traces()
    assert [t.trace_id for t in traces] == ["0000000000000001"]  # the all-zero spans are in no trace
    assert sorted(s.span_id for s in traces[0].spans) == ["00000000000000a2", "00000000000000b2"]
    refused = [d for d in reader.diagnostics if " refused: " in d]
    assert refused == [
        f"{docs['a']}: trace 0000000000000000, span 00000000000000a1 refused: {ZERO_TRACE}",
        f"{docs['b']}: trace 0000000000000000, span 00000000000000b1 refused: {ZERO_TRACE}",
    ]
    assert (
        f"{docs['a']}, {docs['b']}: trace 0000000000000000 dropped: every span of it was refused"
        in reader.diagnostics
    )


@pytest.mark.parametrize("kw", READERS)
def test_an_all_zero_span_id_is_refused_and_a_zero_parent_is_no_parent(kw: dict[str, Any]) -> None:
    doc = jaeger("aa01", jspan("0000000000000000"), jspan("02", 1010, 50, parentSpanID="0" * 16), jspan("03"))
    reader = read(doc, **kw)
    [t] = reader.traces()
    assert [(s.span_id, s.parent_id) for s in t.spans] == [
        ("0000000000000002", None),
        ("0000000000000003", None),
    ]
    assert reader.diagnostics == [
        "in.json: trace 000000000000aa01, span 0000000000000000 refused: the span ID is invalid "
        "(all zeros, as W3C Trace Context and OpenTelemetry define it)"
    ]
    # OTLP too, and its parent reference of zeros is a root (as exporters write "no parent")
    tid = "ab" * 16
    doc2 = otlp(resource("a", ospan(tid, "0" * 16, 0, 10), ospan(tid, "1" * 16, 0, 9, parent="0" * 16)))
    reader = read(doc2)
    [t] = reader.traces()
    assert [(s.span_id, s.parent_id) for s in t.spans] == [("1" * 16, None)]
    assert [d.split("refused: ")[1] for d in reader.diagnostics] == [
        "the span ID is invalid (all zeros, as W3C Trace Context and OpenTelemetry define it)"
    ]


# -- 2. OTLP span kinds -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("server", "client"), [("2", "3"), (2, 3), ("SPAN_KIND_SERVER", "SPAN_KIND_CLIENT"), (" 2 ", "3")]
)
def test_otlp_kinds_as_integer_text_split_a_shared_span_id(server: Any, client: Any) -> None:
    tid = "22".rjust(32, "0")
    doc = otlp(
        resource("front", ospan(tid, "c0".rjust(16, "0"), 1000, 5000, kind=server)),
        resource("front", ospan(tid, "c1".rjust(16, "0"), 1100, 4900, "c0".rjust(16, "0"), kind=client)),
        resource("back", ospan(tid, "c1".rjust(16, "0"), 1200, 4800, "c0".rjust(16, "0"), kind=server)),
    )
    reader = read(doc)
    [t] = reader.traces()
    assert {s.span_id: s.kind for s in t.spans} == {
        "00000000000000c0": "server",
        "00000000000000c1": "client",
        "00000000000000c1~server": "server",
    }
    assert reader.diagnostics == []
    shares = {i.instance: round(i.cp_share, 3) for i in trace_features([t, t], min_samples=2).instances}
    assert shares == {"back": 0.9, "front": 0.1}


@pytest.mark.parametrize(
    ("kind", "shown"), [(99, "99"), ("weird", '"weird"'), ("7", '"7"'), (True, "true"), ([2], "[2]")]
)
def test_an_unknown_otlp_kind_is_unspecified_with_a_warning(kind: Any, shown: str) -> None:
    tid = "22".rjust(32, "0")
    reader = read(otlp(resource("a", ospan(tid, "c0".rjust(16, "0"), 1000, 5000, kind=kind))))
    [t] = reader.traces()
    assert t.spans[0].kind == ""
    message = (
        f'in.json: trace 0000000000000022, span 00000000000000c0: "kind" is {shown}, no OTLP span kind (0 to 5, '
        "or SPAN_KIND_INTERNAL, _SERVER, _CLIENT, _PRODUCER, _CONSUMER); read as unspecified"
    )
    assert reader.diagnostics == [message] and t.warnings == (message,)


# -- 3. malformed references and IDs refuse the span, not the file ------------------------------


@pytest.mark.parametrize(
    ("refs", "problem"),
    [
        ([{"refType": "CHILD_OF"}], 'reference 1 has no "spanID"'),
        ([{"refType": "CHILD_OF", "spanID": 5}], 'reference 1 has "spanID" a number (5), not a span ID'),
        ([{"refType": "CHILD_OF", "spanID": ""}], 'reference 1 has an empty "spanID"'),
        ([{"refType": "CHILD_OF", "spanID": "01"}, "x"], 'reference 2 is a string ("x"), not an object'),
        (
            [{"refType": "SIBLING_OF", "spanID": "01"}],
            'reference 1 has "refType" "SIBLING_OF", neither CHILD_OF nor FOLLOWS_FROM',
        ),
        (
            [{"refType": None, "spanID": "01"}],
            'reference 1 has "refType" null, neither CHILD_OF nor FOLLOWS_FROM',
        ),
        ({"spanID": "01"}, '"references" is an object, not a list'),
    ],
)
@pytest.mark.parametrize("kw", READERS)
def test_a_malformed_jaeger_reference_refuses_its_span(refs: Any, problem: str, kw: dict[str, Any]) -> None:
    doc = jaeger(
        "aa0b",
        jspan("01", 1000, 500),
        jspan("03", 1100, 100, references=refs),
        jspan("04", 1200, 10, parentSpanID="03"),
    )
    reader = read(doc, "refs-bad.json", **kw)
    [t] = reader.traces()
    assert [(s.span_id, s.parent_id) for s in t.spans] == [
        ("0000000000000001", None),
        ("0000000000000004", "0000000000000003"),
    ]
    refused = f"refs-bad.json: trace 000000000000aa0b, span 0000000000000003 refused: {problem}"
    assert reader.diagnostics == [refused]
    assert "{" not in refused.split("refused: ")[1].replace('"references" is an object', "")  # no Python repr


@pytest.mark.parametrize(
    ("value", "shown"),
    [(None, '"spanID" is missing'), (5, '"spanID" is a number (5), not text'), ("  ", '"spanID" is empty')],
)
@pytest.mark.parametrize("kw", READERS)
def test_a_jaeger_span_without_an_id_is_refused(value: Any, shown: str, kw: dict[str, Any]) -> None:
    bad = jspan("x")
    if value is None:
        del bad["spanID"]
    else:
        bad["spanID"] = value
    reader = read(jaeger("aa0b", jspan("01"), bad), **kw)
    [t] = reader.traces()
    assert [s.span_id for s in t.spans] == ["0000000000000001"]
    assert reader.diagnostics == [
        f"in.json: trace 000000000000aa0b, span #1 refused: {shown}: the span has no ID"
    ]


def test_bad_otlp_ids_refuse_their_span_naming_the_id() -> None:
    tid = "ab" * 16
    doc = otlp(
        resource(
            "a",
            ospan("abc", "1" * 16, 0, 10),
            ospan(tid, "xyz", 0, 10),
            ospan(tid, "2" * 16, 0, 10, parent="not-an-id"),
            ospan(tid, "3" * 16, 0, 10),
        )
    )
    reader = read(doc, "otlp-badtid.json")
    [t] = reader.traces()
    assert [s.span_id for s in t.spans] == ["3" * 16]
    assert reader.diagnostics == [
        'otlp-badtid.json: span 1111111111111111 refused: "traceId" is "abc", not an ID (32 hex digits or base64 '
        "of 16 bytes); it belongs to no trace",
        f'otlp-badtid.json: trace {tid}, span #1 refused: "spanId" is "xyz", not an ID (16 hex digits or base64 of '
        "8 bytes)",
        f'otlp-badtid.json: trace {tid}, span 2222222222222222 refused: "parentSpanId" is "not-an-id", not an ID '
        "(16 hex digits or base64 of 8 bytes)",
    ]


def test_a_file_whose_every_span_has_a_bad_trace_id_gives_no_trace(tmp_path: Path) -> None:
    bad, good = tmp_path / "bad.json", tmp_path / "good.json"
    bad.write_text(json.dumps(otlp(resource("a", ospan("abc", "1" * 16, 0, 10)))))
    good.write_text(json.dumps(otlp(resource("a", ospan("ab" * 16, "1" * 16, 0, 10)))))
    reader = load_trace_files([bad, good])
    assert [t.trace_id for t in reader.traces()] == ["ab" * 16]
    assert reader.diagnostics[0].startswith(f'{bad}: span 1111111111111111 refused: "traceId" is "abc"')


# -- 4. Jaeger's warnings, spans of another trace -------------------------------------------------


@pytest.mark.parametrize("kw", READERS)
def test_jaeger_warnings_are_passed_on_in_one_line_per_trace(kw: dict[str, Any]) -> None:
    many = [f"w{k}" for k in range(5)]
    doc = jaeger(
        "aa0c", jspan("01", warnings=["span warn"]), jspan("02", 1010, 10, parentSpanID="01"), warnings=many
    )
    doc["data"].append(jaeger("aa0d", jspan("01"), warnings=None)["data"][0])
    reader = read(doc, **kw)
    first, second = reader.traces()
    line = 'in.json: trace 000000000000aa0c: Jaeger\'s warnings: "w0"; "w1"; "w2" (and 3 more)'
    assert reader.diagnostics == [line] and first.warnings == (line,) and second.warnings == ()
    assert [s.span_id for s in first.spans] == ["0000000000000001", "0000000000000002"]
    reader = read(jaeger("aa0c", jspan("01", warnings=["skew adjusted"])), **kw)
    assert reader.diagnostics == [
        'in.json: trace 000000000000aa0c: Jaeger\'s warnings: span 0000000000000001: "skew adjusted"'
    ]


@pytest.mark.parametrize("kw", READERS)
def test_a_span_of_another_trace_is_read_in_its_own(kw: dict[str, Any]) -> None:
    doc = jaeger(
        "aa0c",
        jspan("01", 1000, 500, traceID="aa0c"),
        jspan("02", 1100, 100, traceID="BB0C", parentSpanID="01"),
    )
    doc["data"].append(jaeger("bb0c", jspan("03", 1000, 300, traceID="bb0c"))["data"][0])
    reader = read(doc, **kw)
    by_id = {t.trace_id: [s.span_id for s in t.spans] for t in reader.traces()}
    assert by_id == {
        "000000000000aa0c": ["0000000000000001"],
        "000000000000bb0c": ["0000000000000002", "0000000000000003"],
    }
    assert reader.diagnostics == [
        'in.json: trace 000000000000bb0c, span 0000000000000002: its "traceID" names another trace than '
        "000000000000aa0c; read in its own trace"
    ]
    # the same trace ID in another spelling is the same trace, silently
    reader = read(jaeger("aa0c", jspan("01", traceID="000000000000AA0C")), **kw)
    assert [t.trace_id for t in reader.traces()] == ["000000000000aa0c"] and reader.diagnostics == []


# -- 5. only text and whole numbers name an instance ----------------------------------------------


@pytest.mark.parametrize(
    ("value", "instance"),
    [
        ({"arrayValue": {"values": [{"stringValue": "h"}]}}, "svc"),
        ({"kvlistValue": {"values": [{"key": "a", "value": {"stringValue": "h"}}]}}, "svc"),
        ({"boolValue": True}, "svc"),
        ({"doubleValue": 1.5}, "svc"),
        ({"bytesValue": "aGk="}, "svc"),
        ({"intValue": "42"}, "42"),
        ({"intValue": 7}, "7"),
        ({"stringValue": "h1"}, "h1"),
    ],
)
def test_only_text_or_whole_numbers_name_an_otlp_instance(value: dict[str, Any], instance: str) -> None:
    tid = "ab" * 16
    doc = otlp(resource("svc", ospan(tid, "1" * 16, 0, 10), attrs=({"key": "host.name", "value": value},)))
    [t] = read(doc).traces()
    assert (t.spans[0].service, t.spans[0].instance) == ("svc", instance)


def test_only_text_or_whole_numbers_name_a_service_or_a_jaeger_instance() -> None:
    tid = "ab" * 16
    doc = otlp(resource("x", ospan(tid, "1" * 16, 0, 10)))
    doc["resourceSpans"][0]["resource"]["attributes"][0]["value"] = {
        "arrayValue": {"values": [{"stringValue": "s"}]}
    }
    [t] = read(doc).traces()
    assert t.spans[0].service == "unknown_service"
    procs = {
        "p1": {
            "serviceName": "a",
            "tags": [{"key": "hostname", "value": ["h"]}, {"key": "ip", "value": "10.0.0.1"}],
        }
    }
    for kw in READERS:
        [t] = read({"data": [{"traceID": "aa01", "spans": [jspan("01")], "processes": procs}]}, **kw).traces()
        assert t.spans[0].instance == "10.0.0.1"


def test_domain_json_spans_are_read_in_the_trace_their_own_trace_id_names() -> None:
    """Jaeger's domain JSON: trace identity decided per span, as in Jaeger JSON (not by the first
    span's traceId); a span with a bad traceId, or not an object, is refused alone."""

    def span(trace: int, span_id: int, parent: int | None = None) -> dict[str, object]:
        def b64(n: int, size: int) -> str:
            return base64.b64encode(n.to_bytes(size, "big")).decode()

        out: dict[str, object] = {
            "traceId": b64(trace, 16),
            "spanId": b64(span_id, 8),
            "operationName": "op",
            "startTime": f"2024-01-01T00:00:00.00{span_id}Z",
            "duration": "1ms",
            "processId": "p1",
        }
        if parent is not None:
            out["references"] = [{"refType": "CHILD_OF", "traceId": b64(trace, 16), "spanId": b64(parent, 8)}]
        return out

    doc = {
        "spans": [
            span(0xAB, 1),
            span(0xAB, 2, parent=1),
            span(0xAC, 3),
            {**span(0xAB, 4), "traceId": "zz"},
            5,
        ],
        "processMap": [{"processId": "p1", "process": {"serviceName": "a", "tags": []}}],
    }
    reader = TraceReader()
    reader.read_text(json.dumps(doc), "dom.json")
    traces = {t.trace_id: sorted(s.span_id for s in t.spans) for t in reader.traces()}
    assert traces == {
        "00000000000000ab": ["0000000000000001", "0000000000000002"],
        "00000000000000ac": ["0000000000000003"],
    }
    assert 'dom.json: span #3 refused: "traceId" is "zz"' in "\n".join(reader.diagnostics)
    assert "dom.json: span #4 refused: a span must be a JSON object, not a number (5)" in reader.diagnostics
