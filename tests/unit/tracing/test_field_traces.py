"""Trace files as they arrive in the field (../shared/data/field-traces/, right values from its README),
and other inputs of the same kinds: trace identity, instance identity, numbers that cannot be trusted,
diagnostics that must reach the user."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from firm.cli import main
from firm.tracing import (
    MAX_DURATION_US,
    TraceReader,
    canonical_trace_id,
    load_trace_files,
    load_traces,
    loads_traces,
    parse_traces,
    trace_features,
)
from tests.unit.tracing.shared_data import data_dir


def field(name: str) -> Path:
    return data_dir("field-traces", name)


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def shares(traces: Any) -> dict[str, float]:
    return {f.service: round(f.cp_share, 6) for f in trace_features(traces, min_samples=2).instances}


# -- trace identity -----------------------------------------------------------------------------


def test_the_same_trace_twice_in_one_answer_is_one_request() -> None:
    [t] = load_traces(field("same-trace-twice.json"))
    assert len(t.spans) == 2
    assert any("came in 2 parts" in w for w in t.warnings)
    assert trace_features([t]).requests == 1


def test_a_trace_split_over_two_files_is_one_request() -> None:
    reader = load_trace_files([field("split-trace-part1.json"), field("split-trace-part2.json")])
    [t] = reader.traces()
    assert len(t.spans) == 3
    assert len(reader.sources(t.trace_id)) == 2
    assert shares([t]) == {"frontend": 0.2, "checkout": 0.8}


def test_the_split_trace_through_the_cli_is_one_request_in_either_order() -> None:
    for files in (
        [field("split-trace-part1.json"), field("split-trace-part2.json")],
        [field("split-trace-part2.json"), field("split-trace-part1.json")],
    ):
        code, out, _ = run("features", *map(str, files))
        assert code == 0
        doc = json.loads(out)
        assert doc["window"]["requests"] == 1
        assert {i["service"]: i["cpShare"] for i in doc["instances"]} == {"frontend": 0.2, "checkout": 0.8}
        code, out, _ = run("critical-path", "--compact", *map(str, files))
        assert code == 0
        [trace] = json.loads(out)["traces"]
        assert len(trace["source"].split(", ")) == 2


def test_otlp_json_lines_are_read_line_by_line() -> None:
    [t] = load_traces(field("otlp-file-exporter.jsonl"))
    assert {s.service for s in t.spans} == {"checkout", "frontend"}
    assert shares([t]) == {"frontend": 0.2, "checkout": 0.8}


def test_a_bad_json_line_is_named_and_skipped() -> None:
    reader = TraceReader()
    reader.read_text(
        field("otlp-file-exporter.jsonl").read_text().splitlines()[0] + "\n{nope\n", source="x.jsonl"
    )
    assert len(reader.traces()) == 1
    [warning] = reader.diagnostics
    assert warning.startswith("x.jsonl: line 2 skipped: not valid JSON")


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("0000000000000015", "0000000000000015"),
        ("00000000000000000000000000000015", "0000000000000015"),
        ("15", "0000000000000015"),
        ("ABCDEF0123456789", "abcdef0123456789"),
        ("563478E5D75DB03E0000000000000015", "563478e5d75db03e0000000000000015"),
        (" t1 ", "t1"),
        ("not-hex", "not-hex"),
    ],
)
def test_trace_ids_have_one_spelling(spelling: str, canonical: str) -> None:
    assert canonical_trace_id(spelling) == canonical


def test_one_trace_under_two_id_spellings_and_two_formats_is_one_trace() -> None:
    jaeger = {
        "data": [
            {
                "traceID": "00000000000000AB",
                "processes": {"p": {"serviceName": "a"}},
                "spans": [
                    {
                        "spanID": "0000000000000001",
                        "startTime": 1000,
                        "duration": 100,
                        "processID": "p",
                        "operationName": "root",
                    }
                ],
            }
        ]
    }
    otlp = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "b"}}]},
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "000000000000000000000000000000ab",
                                "spanId": "0000000000000002",
                                "parentSpanId": "0000000000000001",
                                "startTimeUnixNano": "1010000",
                                "endTimeUnixNano": "1050000",
                            }
                        ]
                    }
                ],
            }
        ]
    }
    reader = TraceReader()
    reader.read_document(jaeger, "a.json")
    reader.read_document(otlp, "b.json")
    [t] = reader.traces()
    assert t.trace_id == "00000000000000ab"
    assert t.span("0000000000000002").parent_id == "0000000000000001"


def _id_less(service: str, trace_id: object) -> dict[str, Any]:
    """A query-API answer of one single-span trace whose ``traceID`` is ``trace_id`` (None: absent)."""
    span = {"spanID": "01", "operationName": "root", "references": [], "startTime": 1000, "duration": 100}
    trace: dict[str, Any] = {
        "spans": [{**span, "processID": "p1"}],
        "processes": {"p1": {"serviceName": service}},
    }
    if trace_id is not None:
        trace["traceID"] = trace_id
    return {"data": [trace]}


@pytest.mark.parametrize("trace_id", [None, "", "   ", 123])
def test_traces_without_an_id_are_never_merged_across_inputs(trace_id: object, tmp_path: Path) -> None:
    """Without a trace ID a trace is named after its place (FILE#N), which no trace of another input
    shares: trace #0 of two files is two requests, not one request of two roots; a warning names each."""
    files = []
    for service in ("a", "b"):
        path = tmp_path / f"{service}.json"
        path.write_text(json.dumps(_id_less(service, trace_id)))
        files.append(path)
    for columns in (True, False):  # the fast reader and the reference parser
        reader = TraceReader(columns=columns)
        for path in files:
            reader.read_file(path)
        traces = reader.traces()
        assert [t.trace_id for t in traces] == [f"{files[0]}#0", f"{files[1]}#0"]
        assert [[s.service for s in t.spans] for t in traces] == [["a"], ["b"]]
        assert [m for m in reader.diagnostics if "has no traceID" in m] == [
            f"{f}: trace #0 has no traceID; it is a trace of its own, {f}#0" for f in files
        ]
    code, out, err = run("features", *map(str, files))
    assert code == 0 and json.loads(out)["window"]["requests"] == 2
    assert err.count("has no traceID") == 2
    code, out, _ = run("critical-path", "--compact", *map(str, files))
    assert code == 0 and [t["source"] for t in json.loads(out)["traces"]] == list(map(str, files))


def test_a_trace_without_an_id_takes_its_spans_id() -> None:
    doc = _id_less("a", None)
    doc["data"][0]["spans"][0]["traceID"] = "00000000000000AB"
    [t] = loads_traces(json.dumps(doc))
    assert t.trace_id == "00000000000000ab"


# -- instance identity --------------------------------------------------------------------------


def test_opentelemetry_replicas_are_told_apart_the_same_way_in_both_forms() -> None:
    instances: list[list[tuple[str, str]]] = []
    shares_of: list[list[tuple[str, str, int, float]]] = []
    for name in ("otel-host-name-jaeger.json", "otel-host-name-otlp.json"):
        traces = load_traces(field(name))
        instances.append(sorted({(s.service, s.instance) for t in traces for s in t.spans}))
        features = trace_features(traces, min_samples=2)
        shares_of.append(
            sorted((f.service, f.instance, f.samples, round(f.cp_share, 6)) for f in features.instances)
        )
    assert instances[0] == [("api", "api-1"), ("api", "api-2")]
    assert instances[0] == instances[1]
    assert shares_of[0] == shares_of[1]


@pytest.mark.parametrize(
    ("tags", "instance"),
    [
        ([("hostname", "h1"), ("host.name", "h2")], "h1"),
        ([("host.name", "h2"), ("service.instance.id", "uuid")], "h2"),
        ([("k8s.pod.name", "pod-7"), ("service.instance.id", "uuid")], "pod-7"),
        ([("service.instance.id", "uuid"), ("ip", "10.0.0.1")], "uuid"),
        ([("ip", "10.0.0.1")], "10.0.0.1"),
        ([("hostname", "")], "svc"),
        ([], "svc"),
    ],
)
def test_one_instance_rule_in_every_format(tags: list[tuple[str, str]], instance: str) -> None:
    jaeger = {
        "traceID": "1",
        "processes": {"p": {"serviceName": "svc", "tags": [{"key": k, "value": v} for k, v in tags]}},
        "spans": [{"spanID": "1", "startTime": 0, "duration": 1, "processID": "p"}],
    }
    otlp = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]
                    + [{"key": k, "value": {"stringValue": v}} for k, v in tags]
                },
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "1" * 32,
                                "spanId": "1" * 16,
                                "startTimeUnixNano": "0",
                                "endTimeUnixNano": "1000",
                            }
                        ]
                    }
                ],
            }
        ]
    }
    domain = {
        "spans": [
            {
                "traceId": "AAAAAAAAAAE=",
                "spanId": "AAAAAAAAAAE=",
                "operationName": "x",
                "startTime": "2020-01-01T00:00:00Z",
                "duration": "1us",
                "process": {"serviceName": "svc", "tags": [{"key": k, "vStr": v} for k, v in tags]},
            }
        ]
    }
    for doc in (jaeger, otlp, domain):
        [t] = parse_traces(doc)
        assert t.spans[0].instance == instance


# -- numbers that cannot be trusted ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["wrapped-duration.json", "int64-edge-duration.json"])
def test_absurd_durations_are_refused_with_a_warning_naming_the_span(name: str) -> None:
    reader = load_trace_files([field(name)])
    [t] = reader.traces()
    assert len(t.spans) == 1  # the bad child is gone, the root stays
    refused = [m for m in reader.diagnostics if "refused" in m]
    assert len(refused) == 1
    assert name in refused[0]
    features = trace_features([t], min_samples=2)
    assert features.latency_p99_us is not None and 0 < features.latency_p99_us <= MAX_DURATION_US
    assert all(0 <= f.cp_share <= 1 for f in features.instances)


@pytest.mark.parametrize("name", ["wrapped-duration.json", "int64-edge-duration.json"])
def test_absurd_durations_reach_the_user_without_a_traceback(name: str) -> None:
    for command in (["features"], ["critical-path", "--compact"]):
        code, out, err = run(*command, str(field(name)))
        assert code == 0
        assert "refused" in err and "Traceback" not in err
        assert json.loads(out)


@pytest.mark.parametrize(
    ("start", "duration", "why"),
    [
        (0, -1, "negative duration"),
        (1000, MAX_DURATION_US + 1, "longer than a week"),
        (-5, 10, "outside"),
        (2**63 - 10, 5, "outside"),
        (2**64 + 1, 5, "outside"),
        (10, 2**64 - 1, "longer than a week"),
    ],
)
def test_every_number_is_range_checked(start: int, duration: int, why: str) -> None:
    doc = {
        "traceID": "7",
        "processes": {"p": {"serviceName": "s"}},
        "spans": [
            {"spanID": "a", "startTime": 0, "duration": 100, "processID": "p"},
            {
                "spanID": "b",
                "startTime": start,
                "duration": duration,
                "processID": "p",
                "references": [{"refType": "CHILD_OF", "spanID": "a"}],
            },
        ],
    }
    reader = TraceReader()
    reader.read_document(doc, "in.json")
    [t] = reader.traces()
    assert [s.span_id for s in t.spans] == ["000000000000000a"]
    assert any(why in m and "span 000000000000000b refused" in m for m in reader.diagnostics)


def test_a_trace_whose_every_span_is_refused_is_dropped_with_a_diagnostic() -> None:
    doc = {
        "data": [
            {
                "traceID": "7",
                "processes": {"p": {"serviceName": "s"}},
                "spans": [{"spanID": "a", "startTime": 0, "duration": -4, "processID": "p"}],
            },
            {
                "traceID": "8",
                "processes": {"p": {"serviceName": "s"}},
                "spans": [{"spanID": "a", "startTime": 0, "duration": 4, "processID": "p"}],
            },
        ]
    }
    reader = TraceReader()
    reader.read_document(doc, "in.json")
    assert [t.trace_id for t in reader.traces()] == ["0000000000000008"]
    assert any("trace 0000000000000007 dropped" in m for m in reader.diagnostics)


# -- diagnostics ----------------------------------------------------------------------------------


def test_query_api_errors_are_reported_not_dropped() -> None:
    reader = load_trace_files([field("query-api-partial-errors.json")])
    assert len(reader.traces()) == 1
    [message] = reader.diagnostics
    assert "trace d2d2d2d2d2d20019" in message and "trace not found" in message and "404" in message
    code, out, err = run("features", str(field("query-api-partial-errors.json")))
    assert code == 0
    assert "trace not found" in err
    assert json.loads(out)["window"]["requests"] == 1


def test_a_bad_file_among_several_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "broken.json"
    bad.write_text('{"data": [{"traceID": "1", "spans": "nope"}]}')
    code, _, err = run("features", str(field("same-trace-twice.json")), str(bad))
    assert code == 1
    assert "broken.json" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "text",
    ["2017-02-30T00:00:00Z", "2017-13-01T00:00:00Z", "2017-01-01T25:00:00Z", "yesterday"],
)
def test_impossible_rfc3339_times_are_refused(text: str) -> None:
    doc = {
        "spans": [
            {
                "traceId": "AAAAAAAAAAE=",
                "spanId": "AAAAAAAAAAE=",
                "operationName": "x",
                "startTime": text,
                "duration": "1us",
                "process": {"serviceName": "svc"},
            }
        ]
    }
    # refused as any time that cannot be believed is: the span, with a warning naming it and the value
    reader = TraceReader()
    reader.read_document(doc, "domain.json")
    assert reader.traces() == []
    assert any(
        'span 0000000000000001 refused: "startTime": not an RFC 3339 time' in d and repr(text) in d
        for d in reader.diagnostics
    ), reader.diagnostics


def test_rfc3339_times_with_nanoseconds_offsets_and_lower_case() -> None:
    for text, us in [
        ("2017-01-26T16:46:31.639875139Z", 1485449191639875),
        ("2017-01-26t18:46:31.639875+02:00", 1485449191639875),
        ("2017-01-26 16:46:31.5z", 1485449191500000),
    ]:
        doc = {
            "spans": [
                {
                    "traceId": "AAAAAAAAAAE=",
                    "spanId": "AAAAAAAAAAE=",
                    "operationName": "x",
                    "startTime": text,
                    "duration": "1us",
                    "process": {"serviceName": "svc"},
                }
            ]
        }
        [t] = parse_traces(doc)
        assert t.spans[0].start == us
