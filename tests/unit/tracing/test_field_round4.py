"""Faults of the trace reader found by a fourth new-user trial, each with its right value: C1
controls and direction overrides written raw in ``firm critical-path``'s JSON, JSON Lines whose
first line is longer than a batch, and Jaeger ``span.kind`` tags in another case, spacing or no
kind at all."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from firm.cli import main
from firm.terminal import _UNSAFE, _UNSAFE_BEYOND_ASCII, safe_json
from firm.tracing.export import json_bytes
from firm.tracing.parse import TraceReader
from firm.tracing.stream import StreamOptions, trace_batches

READERS: list[dict[str, Any]] = [{}, {"keep_tags": False}, {"keep_tags": False, "columns": False}]


def read(doc: Any, source: str = "in.json", **kw: Any) -> TraceReader:
    reader = TraceReader(**kw)
    reader.read_text(json.dumps(doc), source)
    return reader


def jspan(
    sid: str, start: int = 1000, duration: int = 100, parent: str | None = None, **extra: Any
) -> dict[str, Any]:
    span: dict[str, Any] = {
        "spanID": sid,
        "operationName": "op",
        "startTime": start,
        "duration": duration,
        "processID": "p1",
        "references": [] if parent is None else [{"refType": "CHILD_OF", "spanID": parent}],
        "tags": [],
        **extra,
    }
    return span


def jtrace(trace_id: str, *spans: dict[str, Any], service: str = "a") -> dict[str, Any]:
    return {"traceID": trace_id, "spans": list(spans), "processes": {"p1": {"serviceName": service}}}


def jaeger(trace_id: str, *spans: dict[str, Any]) -> dict[str, Any]:
    return {"data": [jtrace(trace_id, *spans)]}


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


# -- 1. JSON output: C1 controls and direction overrides escaped --------------------------------


def test_the_json_escape_set_is_the_terminal_one() -> None:
    """One rule: every character :func:`firm.terminal.safe` escapes from DEL on is escaped in JSON."""
    for code in range(0x7F, 0x110000):
        if 0xD800 <= code <= 0xDFFF:
            continue
        char = chr(code)
        assert bool(_UNSAFE.fullmatch(char)) == bool(_UNSAFE_BEYOND_ASCII.fullmatch(char.encode())), hex(code)


@pytest.mark.parametrize("indent", [True, False])
def test_json_output_escapes_c1_and_direction_overrides(indent: bool) -> None:
    name = "svc\u202eevil\u0085x\u009b31m\u2066\u2028\x7f\u00e9"
    doc = {"service": name, "big": 2**70}  # 2**70: the standard library's path too
    for out in (json_bytes(doc, indent=indent), json_bytes({"service": name}, indent=indent)):
        assert json.loads(out)["service"] == name  # the same values
        text = out.decode()
        assert "\\u202eevil\\u0085x\\u009b31m\\u2066\\u2028\\u007f\u00e9" in text  # é stays itself
        assert not _UNSAFE.search(text.replace("\n", ""))
    assert safe_json(b'"plain \xc3\xa9"') == b'"plain \xc3\xa9"'


def test_critical_path_command_prints_no_raw_override(tmp_path: Path) -> None:
    doc = jaeger("ab" * 16, jspan("01"))
    doc["data"][0]["processes"]["p1"]["serviceName"] = "pay\u202ement\u0085"
    doc["data"][0]["spans"][0]["operationName"] = "\u009b2Jop"
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc))
    for compact in ([], ["--compact"]):
        code, out, _ = run("critical-path", *compact, str(path))
        assert code == 0
        assert "\u202e" not in out and "\u0085" not in out and "\u009b" not in out
        [step] = json.loads(out)["traces"][0]["path"]
        assert (step["service"], step["operation"]) == ("pay\u202ement\u0085", "\u009b2Jop")
        assert '"service": "pay\\u202ement\\u0085"' in out or '"service":"pay\\u202ement\\u0085"' in out


# -- 2. JSON Lines whose first line is longer than a batch ---------------------------------------


def _otlp_line(trace_id: str, span_id: str, name: str, parent: str = "") -> dict[str, Any]:
    span = {
        "traceId": trace_id,
        "spanId": span_id,
        "name": name,
        "startTimeUnixNano": "1000000",
        "endTimeUnixNano": "2000000",
    }
    if parent:
        span["parentSpanId"] = parent
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "s"}}]},
                "scopeSpans": [{"spans": [span]}],
            }
        ]
    }


@pytest.mark.parametrize("form", ["query-api", "trace", "otlp"])
@pytest.mark.parametrize("blank_lines", ["", "\n\n"])
def test_json_lines_whose_first_line_exceeds_the_batch_are_read_line_by_line(
    tmp_path: Path, form: str, blank_lines: str
) -> None:
    long_name = "x" * 300_000
    a, b = "a" * 32, "d" * 32
    if form == "otlp":
        lines = [
            _otlp_line(a, "b" * 16, long_name),
            _otlp_line(a, "c" * 16, "y", parent="b" * 16),
            _otlp_line(b, "e" * 16, "z"),
        ]
    else:
        traces = [
            jtrace(a, jspan("b" * 16, operationName=long_name)),
            jtrace(a, jspan("c" * 16, 1100, 50, parent="b" * 16)),
            jtrace(b, jspan("e" * 16)),
        ]
        lines = [{"data": [t]} for t in traces] if form == "query-api" else traces
    path = tmp_path / "big.jsonl"
    path.write_text(blank_lines + "".join(json.dumps(line) + "\n" for line in lines))
    first = len(blank_lines) + 1
    for batch_bytes in (100_000, 2**20):  # the first line alone is longer than the batch, or not
        batches = list(trace_batches([path], StreamOptions(batch_bytes=batch_bytes)))
        sources = sorted(s for batch in batches for ss in batch.sources.values() for s in ss)
        assert sources == [f"{path}:{first}", f"{path}:{first + 1}", f"{path}:{first + 2}"]
        spans = sorted(s.span_id for batch in batches for t in batch.traces for s in t.spans)
        assert spans == ["b" * 16, "c" * 16, "e" * 16]
        assert not [d for batch in batches for d in batch.diagnostics if "not valid JSON" in d]


def test_one_long_document_and_a_pretty_printed_one_are_no_json_lines(tmp_path: Path) -> None:
    """A long line followed by nothing (or blank lines) is one document; a pretty-printed document
    whose first line is long is one document too (its first line is not a whole value)."""
    doc = {"data": [jtrace("ab" * 16, jspan(f"{k:016x}", operationName="x" * 50_000)) for k in range(1, 5)]}
    one_line = tmp_path / "one.json"
    one_line.write_text(json.dumps(doc) + "\n\n")
    pretty = tmp_path / "pretty.json"
    pretty.write_text(
        '{"data": ['
        + json.dumps(doc["data"][0])
        + ",\n"
        + ",\n".join(map(json.dumps, doc["data"][1:]))
        + "\n]}\n"
    )
    for path in (one_line, pretty):
        batches = list(trace_batches([path], StreamOptions(batch_bytes=60_000)))
        assert sum(len(t.spans) for batch in batches for t in batch.traces) == 4, path
        assert not [d for batch in batches for d in batch.diagnostics if "line" in d]


# -- 3. Jaeger span.kind tags ---------------------------------------------------------------------


UNKNOWN_KIND = (
    'in.json: trace {trace}, span 0000000000000001: the "span.kind" tag is {shown}, no span kind '
    "(server, client, producer, consumer or internal, in any case); read as unspecified"
)


def kind_tag(value: Any) -> dict[str, Any]:
    kind = "bool" if isinstance(value, bool) else "int64" if isinstance(value, int) else "string"
    return {"key": "span.kind", "type": kind, "value": value}


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("SERVER", "server"),
        ("Server", "server"),
        (" client ", "client"),
        ("SPAN_KIND_PRODUCER", "producer"),
        ("consumer", "consumer"),
        ("Internal", "internal"),
        ("", ""),
    ],
)
@pytest.mark.parametrize("kw", READERS)
def test_jaeger_span_kinds_are_read_in_any_case_and_spacing(
    value: str, kind: str, kw: dict[str, Any]
) -> None:
    reader = read(jaeger("ab" * 16, jspan("01", tags=[kind_tag(value)])), **kw)
    [t] = reader.traces()
    assert [s.kind for s in t.spans] == [kind]
    assert reader.diagnostics == []


@pytest.mark.parametrize(("value", "shown"), [(7, "7"), (True, "true"), ("weird", '"weird"'), (1.5, "1.5")])
@pytest.mark.parametrize("kw", READERS)
def test_a_jaeger_span_kind_that_is_no_kind_is_unspecified_with_a_warning(
    value: Any, shown: str, kw: dict[str, Any]
) -> None:
    reader = read(jaeger("ab" * 16, jspan("01", tags=[kind_tag(value)])), **kw)
    [t] = reader.traces()
    assert [s.kind for s in t.spans] == [""]
    message = UNKNOWN_KIND.format(trace="ab" * 16, shown=shown)
    assert reader.diagnostics == [message]
    assert t.warnings == (message,)


@pytest.mark.parametrize("kw", READERS)
def test_a_shared_span_id_in_upper_case_kinds_is_split_into_client_and_server(kw: dict[str, Any]) -> None:
    """Zipkin-style shared IDs: the client/server split works whatever the tags' case."""
    doc = jaeger(
        "ab" * 16,
        jspan("01", 1000, 500, tags=[kind_tag("CLIENT")]),
        jspan("01", 1010, 400, tags=[kind_tag("Server")]),
    )
    [t] = read(doc, **kw).traces()
    assert sorted((s.span_id, s.parent_id, s.kind) for s in t.spans) == [
        ("0000000000000001", None, "client"),
        ("0000000000000001~server", "0000000000000001", "server"),
    ]


def test_domain_json_span_kinds_follow_the_same_rule() -> None:
    def b64(n: int, size: int) -> str:
        return base64.b64encode(n.to_bytes(size, "big")).decode()

    spans = [
        {
            "traceId": b64(0xAB, 16),
            "spanId": b64(k, 8),
            "operationName": "op",
            "startTime": "2024-01-01T00:00:00.001Z",
            "duration": "1ms",
            "processId": "p1",
            "tags": [
                {"key": "span.kind", "vStr": v} if isinstance(v, str) else {"key": "span.kind", "vInt64": v}
            ],
        }
        for k, v in ((1, "SERVER"), (2, 7))
    ]
    doc = {"spans": spans, "processMap": [{"processId": "p1", "process": {"serviceName": "a", "tags": []}}]}
    reader = read(doc, "dom.json")
    [t] = reader.traces()
    assert [(s.span_id, s.kind) for s in t.spans] == [
        ("0000000000000001", "server"),
        ("0000000000000002", ""),
    ]
    assert reader.diagnostics == [
        'dom.json: trace 00000000000000ab, span 0000000000000002: the "span.kind" tag is 7, no span kind '
        "(server, client, producer, consumer or internal, in any case); read as unspecified"
    ]


# -- 4. Parent references that loop ---------------------------------------------------------------


LOOP = (
    "in.json: trace {trace}, span 0000000000000001: parent references form a loop ({loop}); the span "
    "that starts first on it is read as a root (fix the exporter's parent IDs)"
)


@pytest.mark.parametrize("kw", READERS)
def test_a_loop_of_parents_is_broken_at_its_first_span_and_the_file_read(kw: dict[str, Any]) -> None:
    good = jtrace("cd" * 16, jspan("0a"))
    loop2 = jtrace("ab" * 16, jspan("01", 1000, 1000, parent="02"), jspan("02", 1100, 100, parent="01"))
    loop3 = jtrace(
        "ef" * 16,
        jspan("03", 1100, 100, parent="02"),
        jspan("02", 1100, 100, parent="01"),
        jspan("01", 1000, 1000, parent="03"),
        jspan("04", 1200, 10, parent="03"),
    )
    reader = read({"data": [good, loop2, loop3]}, **kw)
    traces = {t.trace_id: {s.span_id: s.parent_id for s in t.spans} for t in reader.traces()}
    assert traces == {
        "cd" * 16: {"000000000000000a": None},
        "ab" * 16: {"0000000000000001": None, "0000000000000002": "0000000000000001"},
        "ef" * 16: {
            "0000000000000003": "0000000000000002",
            "0000000000000002": "0000000000000001",
            "0000000000000001": None,
            "0000000000000004": "0000000000000003",
        },
    }
    ids = [f"{k:016x}" for k in range(4)]
    assert reader.diagnostics == [
        LOOP.format(trace="ab" * 16, loop=f"{ids[1]} -> {ids[2]} -> {ids[1]}"),
        LOOP.format(trace="ef" * 16, loop=f"{ids[3]} -> {ids[2]} -> {ids[1]} -> {ids[3]}"),
    ]


@pytest.mark.parametrize("kw", READERS)
def test_a_span_that_is_its_own_parent_is_a_root(kw: dict[str, Any]) -> None:
    reader = read(jaeger("ab" * 16, jspan("01", parent="01"), jspan("02", 1010, 10, parent="01")), **kw)
    [t] = reader.traces()
    assert {s.span_id: s.parent_id for s in t.spans} == {
        "0000000000000001": None,
        "0000000000000002": "0000000000000001",
    }
    assert reader.diagnostics == [
        f"in.json: trace {'ab' * 16}, span 0000000000000001: the span names itself as its parent; read as "
        "a root (fix the exporter's parent IDs)"
    ]


def test_critical_path_and_features_go_on_past_a_loop(tmp_path: Path) -> None:
    loop = jtrace("ab" * 16, jspan("01", 1000, 1000, parent="02"), jspan("02", 1100, 100, parent="01"))
    path = tmp_path / "loop.json"
    path.write_text(json.dumps({"data": [jtrace("cd" * 16, jspan("0a")), loop]}))
    code, out, err = run("critical-path", str(path))
    assert code == 0, err
    paths = {
        t["traceID"]: [(p["spanID"], p["selfTime"]) for p in t["path"]] for t in json.loads(out)["traces"]
    }
    assert paths == {
        "cd" * 16: [("000000000000000a", 100)],
        "ab" * 16: [("0000000000000001", 900), ("0000000000000002", 100)],
    }
    assert "parent references form a loop" in err
    code, out, err = run("features", str(path))
    assert code == 0, err
    assert json.loads(out)["window"]["requests"] == 2


# -- 5. Trace IDs with more leading zeros than 32 digits -----------------------------------------


def test_a_trace_id_padded_beyond_32_digits_is_the_same_trace() -> None:
    padded = "0" * 4 + "ab" * 16  # 36 digits, 128 bits
    short = "0" * 20 + "abcd"  # 24 digits, 16 bits
    reader = read(
        {"data": [jtrace(padded, jspan("01")), jtrace("AB" * 16, jspan("02", 1010, 10, parent="01"))]}
    )
    [t] = reader.traces()
    assert t.trace_id == "ab" * 16 and len(t.spans) == 2
    [u] = read(jaeger(short, jspan("03"))).traces()
    assert u.trace_id == "000000000000abcd"
    [v] = read(jaeger("1" + "0" * 32, jspan("04"))).traces()  # 132 bits: no trace ID, kept as given
    assert v.trace_id == "1" + "0" * 32
