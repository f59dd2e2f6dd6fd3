"""Parsing every accepted input form, real-data repairs, and errors that name trace and span."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from firm.tracing import (
    RefType,
    Trace,
    TraceParseError,
    load_traces,
    loads_traces,
    parse_duration_us,
    parse_traces,
)
from firm.tracing.parse import TraceReader, query_error
from tests.unit.tracing.shared_data import data_dir, deathstarbench_files


def jaeger_trace(*spans: dict[str, Any], processes: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "traceID": "t1",
        "spans": list(spans),
        "processes": processes
        or {"p1": {"serviceName": "svc", "tags": [{"key": "hostname", "value": "h1"}]}},
    }


def jspan(
    sid: str,
    start: int = 0,
    duration: int = 10,
    parent: str | None = None,
    ref: str = "CHILD_OF",
    **extra: Any,
) -> dict[str, Any]:
    refs = [{"refType": ref, "traceID": "t1", "spanID": parent}] if parent else []
    return {
        "spanID": sid,
        "operationName": f"op-{sid}",
        "references": refs,
        "startTime": start,
        "duration": duration,
        "processID": "p1",
        "tags": [],
        **extra,
    }


# -- Jaeger query API and single traces --------------------------------------------------------


def test_jaeger_query_api_file() -> None:
    [f] = deathstarbench_files("compose-post_R500__trace_02")
    [t] = load_traces(f)
    assert t.trace_id == "2b4c83d3fc000dd5"
    assert len(t.spans) == 32
    root = t.span("2b4c83d3fc000dd5")
    assert (root.service, root.instance, root.operation) == (
        "nginx-web-server",
        "nginx-thrift",
        "/wrk2-api/post/compose",
    )
    assert root.parent_id is None
    assert (root.start, root.duration) == (1782331594452000, 10438)
    child = t.span("0283340b368af0c6")
    assert (child.service, child.instance) == ("user-service", "user-service")
    assert child.parent_id == "89458fb8140c8af9"
    assert child.ref_type is RefType.CHILD_OF
    assert child.tag("internal.span.format") == "proto"
    assert child.end == child.start + 9
    assert t.warnings == ()


def test_single_jaeger_trace_and_list_of_traces_give_the_same_model() -> None:
    [f] = deathstarbench_files("read-home-timeline_R600__trace_01")
    doc = json.loads(f.read_text())
    [from_api] = parse_traces(doc)
    [single] = parse_traces(doc["data"][0])
    [from_list] = parse_traces(doc["data"])
    assert from_api == single == from_list
    assert from_api.spans == single.spans


def test_instance_falls_back_to_ip_then_service() -> None:
    doc = jaeger_trace(
        jspan("a"),
        {**jspan("b", parent="a"), "processID": "p2"},
        {**jspan("c", parent="a"), "processID": "p3"},
        processes={
            "p1": {
                "serviceName": "s1",
                "tags": [{"key": "hostname", "value": "host-1"}, {"key": "ip", "value": "10.0.0.1"}],
            },
            "p2": {"serviceName": "s2", "tags": [{"key": "ip", "type": "string", "value": "10.0.0.2"}]},
            "p3": {"serviceName": "s3"},
        },
    )
    [t] = parse_traces(doc)
    assert [s.instance for s in t.spans] == ["host-1", "10.0.0.2", "s3"]


def test_follows_from_reference_and_reference_preference() -> None:
    doc = jaeger_trace(
        jspan("a"),
        jspan("b", parent="a"),
        jspan("async", parent="a", ref="FOLLOWS_FROM"),
        {
            **jspan("multi"),
            "references": [
                {"refType": "FOLLOWS_FROM", "spanID": "a"},
                {"refType": "CHILD_OF", "traceID": "other-trace", "spanID": "x"},
                {"refType": "CHILD_OF", "spanID": "b"},
            ],
        },
    )
    [t] = parse_traces(doc)
    assert t.span("async").ref_type is RefType.FOLLOWS_FROM
    assert (t.span("multi").parent_id, t.span("multi").ref_type) == ("000000000000000b", RefType.CHILD_OF)


def test_missing_parent_is_kept_and_reported() -> None:
    [t] = parse_traces(jaeger_trace(jspan("a"), jspan("b", parent="nowhere")))
    assert t.span("000000000000000b").parent_id == "nowhere"
    assert t.warnings == ("span 000000000000000b: parent nowhere is not in the trace; the span is a root",)


def test_exact_duplicate_span_is_dropped() -> None:
    [t] = parse_traces(jaeger_trace(jspan("a"), jspan("b", parent="a"), jspan("b", parent="a")))
    assert [s.span_id for s in t.spans] == ["000000000000000a", "000000000000000b"]
    assert t.warnings == ("span 000000000000000b: exact duplicate dropped",)


def test_shared_client_server_span_id_is_split_like_jaeger_does() -> None:
    def kind(k: str) -> list[dict[str, str]]:
        return [{"key": "span.kind", "type": "string", "value": k}]

    doc = jaeger_trace(
        jspan("root"),
        jspan("shared", 10, 50, "root", tags=kind("client")),
        jspan("shared", 12, 40, "root", tags=kind("server")),
        jspan("work", 15, 20, "shared"),
    )
    [t] = parse_traces(doc)
    server = t.span("shared~server")
    assert (server.kind, server.parent_id) == ("server", "shared")
    assert t.span("shared").kind == "client"
    assert t.span("work").parent_id == "shared~server"


def test_other_duplicates_are_renamed() -> None:
    [t] = parse_traces(jaeger_trace(jspan("a"), jspan("b", 1, 5, "a"), jspan("b", 2, 6, "a")))
    assert [s.span_id for s in t.spans] == ["000000000000000a", "000000000000000b", "000000000000000b~2"]
    assert "this occurrence is now 000000000000000b~2" in t.warnings[0]


def test_clock_skew_is_kept_as_recorded() -> None:
    [t] = parse_traces(jaeger_trace(jspan("a", 100, 10), jspan("b", 90, 40, "a")))
    assert (t.span("000000000000000b").start, t.span("000000000000000b").end) == (
        90,
        130,
    )  # trimming is the critical path's job


# -- Jaeger domain JSON -----------------------------------------------------------------------


def test_jaeger_domain_json_fixture() -> None:
    [t] = load_traces(data_dir("jaeger-fixtures", "domain_01.json"))
    assert t.trace_id == "0000000000000001"
    ids = [s.span_id for s in t.spans]
    # Two spans share ID ...02 (neither client nor server): the second is renamed.
    assert ids == [
        "0000000000000002",
        "0000000000000002~2",
        "0000000000000003",
        "0000000000000004",
        "0000000000000005",
    ]
    first = t.spans[0]
    # 2017-01-26T16:46:31.639875139-05:00, rounded down to the microsecond; 5000ns = 5 us.
    assert (first.start, first.duration, first.service) == (1485467191639875, 5, "service-x")
    ref = t.span("0000000000000004")
    # Its first CHILD_OF reference points into another trace and is no parent here.
    assert (ref.parent_id, ref.ref_type) == ("0000000000000002", RefType.CHILD_OF)
    assert t.span("0000000000000005").duration == 4
    assert t.spans[1].tag("javascript_limit") == 9223372036854775222
    assert "some trace warning" in t.warnings


def test_domain_json_with_process_map_and_bad_duration() -> None:
    sid = base64.b64encode(bytes.fromhex("00000000000000aa")).decode()
    tid = base64.b64encode(bytes(15) + b"\x07").decode()
    doc: dict[str, Any] = {
        "spans": [
            {
                "traceId": tid,
                "spanId": sid,
                "operationName": "x",
                "processId": "p1",
                "startTime": "2020-01-01T00:00:00Z",
                "duration": "1.5ms",
            }
        ],
        "processMap": [
            {
                "processId": "p1",
                "process": {"serviceName": "s", "tags": [{"key": "hostname", "vStr": "node-7"}]},
            }
        ],
    }
    [t] = parse_traces(doc)
    assert t.trace_id == "0000000000000007"
    assert (t.spans[0].span_id, t.spans[0].instance) == ("00000000000000aa", "node-7")
    assert (t.spans[0].start, t.spans[0].duration) == (1577836800000000, 1500)
    doc["spans"][0]["duration"] = "soon"  # refused as a number out of range is: the span, with a warning
    reader = TraceReader()
    reader.read_document(doc, "domain.json")
    assert reader.traces() == []
    assert any(
        'trace 0000000000000007, span 00000000000000aa refused: "duration": "soon" is not a duration' in d
        for d in reader.diagnostics
    ), reader.diagnostics


# -- OTLP JSON --------------------------------------------------------------------------------


def test_otlp_fixture() -> None:
    [t] = load_traces(data_dir("jaeger-fixtures", "example_trace.json"))
    assert t.trace_id == "0000000000000011"  # one spelling: Jaeger's, without the zero high half
    assert len(t.spans) == 5
    s6 = t.span("0000000000000006")
    assert (s6.service, s6.operation, s6.kind) == ("example-service-1", "example-operation-3", "server")
    assert t.span("0000000000000007").kind == "client"
    assert (s6.start, s6.duration) == (1485449191639875, 100)
    assert all(s.parent_id is None for s in t.spans)  # five roots


def otlp(*resource_spans: dict[str, Any]) -> dict[str, Any]:
    return {"resourceSpans": list(resource_spans)}


def resource(service: str, spans: list[dict[str, Any]], **attrs: str) -> dict[str, Any]:
    kv = [{"key": "service.name", "value": {"stringValue": service}}]
    kv += [{"key": k.replace("_", "."), "value": {"stringValue": v}} for k, v in attrs.items()]
    return {"resource": {"attributes": kv}, "scopeSpans": [{"scope": {}, "spans": spans}]}


def ospan(
    trace_id: str, sid: str, start_ns: int, end_ns: int, parent: str = "", **extra: Any
) -> dict[str, Any]:
    return {
        "traceId": trace_id,
        "spanId": sid,
        "parentSpanId": parent,
        "name": f"op-{sid}",
        "startTimeUnixNano": str(start_ns),
        "endTimeUnixNano": str(end_ns),
        **extra,
    }


def test_otlp_instances_parents_attributes_and_several_traces() -> None:
    t1, t2 = "a" * 32, "b" * 32
    doc = otlp(
        resource(
            "front",
            [
                ospan(
                    t1,
                    "1" * 16,
                    1_000_000,
                    9_000_999,
                    kind="SPAN_KIND_SERVER",
                    attributes=[{"key": "http.status_code", "value": {"intValue": "200"}}],
                ),
                ospan(t2, "3" * 16, 0, 5_000),
            ],
            host_name="node-a",
        ),
        resource(
            "back",
            [ospan(t1, "2" * 16, 2_000_000, 3_000_000, "1" * 16, kind=3)],
            service_instance_id="back-pod-1",
        ),
    )
    first, second = parse_traces({"result": doc})  # also as Jaeger's /api/v3 wraps it
    assert (first.trace_id, second.trace_id) == (t1, t2)
    front, back = first.spans
    assert (front.instance, front.kind, front.start, front.duration) == ("node-a", "server", 1000, 8000)
    assert front.tag("http.status_code") == 200
    assert (back.service, back.instance, back.parent_id, back.kind) == (
        "back",
        "back-pod-1",
        "1" * 16,
        "client",
    )
    assert second.spans[0].instance == "node-a"


def test_otlp_base64_ids() -> None:
    tid = base64.b64encode(bytes(range(16))).decode()
    sid = base64.b64encode(bytes(range(8))).decode()
    [t] = parse_traces(otlp(resource("s", [ospan(tid, sid, 0, 1000)])))
    assert t.trace_id == bytes(range(16)).hex()
    assert t.spans[0].span_id == bytes(range(8)).hex()


def test_otlp_errors_name_trace_and_span() -> None:
    tid = "c" * 32
    [t] = parse_traces(otlp(resource("s", [ospan(tid, "1" * 16, 0, 9000), ospan(tid, "2" * 16, 5000, 1000)])))
    assert [s.span_id for s in t.spans] == ["1" * 16]
    assert any(f"span {'2' * 16} refused: negative duration -4 us" in w for w in t.warnings)
    reader = TraceReader()  # a span without a usable trace ID is refused, the rest read
    reader.read_document(
        otlp(resource("s", [ospan("xyz", "1" * 16, 0, 1), ospan(tid, "2" * 16, 0, 9)])), "in.json"
    )
    assert [s.span_id for t in reader.traces() for s in t.spans] == ["2" * 16]
    assert reader.diagnostics == [
        'in.json: span 1111111111111111 refused: "traceId" is "xyz", not an ID (32 hex digits or base64 of '
        "16 bytes); it belongs to no trace"
    ]
    bad = ospan(tid, "1" * 16, 0, 1)
    bad["startTimeUnixNano"] = 1.5  # refused as a number out of range is: the span, with a warning
    [t] = parse_traces(otlp(resource("s", [bad, ospan(tid, "2" * 16, 0, 9000)])))
    assert [s.span_id for s in t.spans] == ["2" * 16]
    assert any(
        f'span {"1" * 16} refused: "startTimeUnixNano" is 1.5, not a whole number of nanoseconds' in w
        for w in t.warnings
    ), t.warnings


# -- Malformed input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("span", "message"),
    [
        ({**jspan("b", parent="a"), "processID": "p9"}, r"trace t1, span b: processID 'p9' is not in"),
        ("not a span", r"trace t1, span #1: a span must be a JSON object"),
    ],
)
def test_malformed_span_error_names_source_trace_and_span(span: Any, message: str) -> None:
    with pytest.raises(TraceParseError, match=r"^in\.json, " + message) as info:
        parse_traces(jaeger_trace(jspan("a"), span), source="in.json")
    assert info.value.trace_id == "t1"


def test_malformed_documents(tmp_path: Path) -> None:
    with pytest.raises(TraceParseError, match="not valid JSON"):
        loads_traces("{nope", source="x.json")
    with pytest.raises(TraceParseError, match="unrecognised trace document"):
        parse_traces({"hello": 1})
    with pytest.raises(TraceParseError, match="no traces: trace not found"):
        parse_traces({"data": None, "errors": [{"code": 404, "msg": "trace not found"}]})
    with pytest.raises(TraceParseError, match="trace t1: the trace has no spans"):
        parse_traces(jaeger_trace())
    with pytest.raises(TraceParseError, match=r"missing\.json: cannot read the file"):
        load_traces(tmp_path / "missing.json")


@pytest.mark.parametrize(
    ("error", "text"),
    [
        ({"code": 500, "msg": "storage timeout"}, "storage timeout (code 500)"),
        ({"code": None, "msg": None}, "no message"),
        ({"msg": ""}, "no message"),
        ({"code": "", "msg": "late"}, "late"),
        ({"code": 404, "msg": None, "traceID": "00AB"}, "trace " + "0" * 12 + "00ab: no message (code 404)"),
        (None, "no message"),
        ("plain text", "plain text"),
    ],
)
def test_a_query_api_error_reads_as_text_without_none(error: Any, text: str) -> None:
    assert query_error(error) == text


def test_trace_model_checks() -> None:
    with pytest.raises(TraceParseError, match="no spans"):
        Trace("empty", ())


# -- Durations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "us"),
    [
        ("5000ns", 5),
        ("1.5ms", 1500),
        ("250us", 250),
        ("30s", 30_000_000),
        ("5m", 300_000_000),
        ("1h30m", 5_400_000_000),
        ("90", 90_000_000),
        ("-1s", -1_000_000),
        ("0.5", 500_000),
    ],
)
def test_parse_duration(text: str, us: int) -> None:
    assert parse_duration_us(text) == us


@pytest.mark.parametrize("text", ["", "soon", "5 minutes", "1x", "m5", "inf", "nan"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration_us(text)
