"""Read traces: Jaeger query-API JSON, single Jaeger traces, Jaeger's domain JSON, and OTLP JSON.

Accepted documents (detected from their shape):

- Jaeger query API (``GET /api/traces``, ``GET /api/traces/{id}``): ``{"data": [trace, ...]}``;
- one Jaeger trace, as Jaeger UI downloads it: ``{"traceID", "spans": [...], "processes": {...}}``,
  or a JSON list of such traces;
- Jaeger's domain model (``model.Trace`` as JSON): base64 IDs, RFC 3339 start times, ``"5000ns"``
  durations, the process inline in each span or in ``processMap``;
- OTLP JSON (``{"resourceSpans": [...]}``, also wrapped in ``{"result": ...}`` as Jaeger's
  ``/api/v3`` returns it): hex IDs, nanosecond times (rounded down to microseconds), spans of
  several traces grouped by trace ID.

What is repaired rather than refused, each with a warning on the trace:

- a span that refers to a parent missing from the trace keeps that parent ID and becomes a root
  of its own tree;
- with several references, the parent is the first ``CHILD_OF`` reference to a span of the same
  trace, else the first ``FOLLOWS_FROM`` one (the span is then asynchronous);
- a span ID that occurs twice: an exact repeat is dropped; a client and a server span sharing an
  ID (Zipkin-style) are split, the server span getting the ID ``<id>~server`` and becoming the
  client's child, and the other spans under that ID moving to the server span, as Jaeger's own
  query service does; any other repeat is renamed ``<id>~2``, ``<id>~3``...

Everything else that is malformed (missing or non-integer times, negative durations, unknown
process IDs, unknown reference types) raises :class:`TraceParseError` naming the source, the trace
and the span.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firm.tracing.errors import TraceParseError
from firm.tracing.model import RefType, Span, TagValue, Trace

__all__ = ["load_traces", "loads_traces", "parse_duration_us", "parse_traces"]

_FORMATS_HINT = (
    'expected Jaeger query-API JSON ({"data": [...]}), a Jaeger trace ({"traceID", "spans", '
    '"processes"}), Jaeger domain JSON ({"spans": [{"spanId", "process", ...}]}) or OTLP JSON '
    '({"resourceSpans": [...]})'
)

_OTLP_KINDS = {
    0: "",
    1: "internal",
    2: "server",
    3: "client",
    4: "producer",
    5: "consumer",
}

# ---------------------------------------------------------------------------------------------
# Public entry points


def load_traces(path: str | Path) -> list[Trace]:
    """Read every trace of a JSON file (any accepted form)."""
    p = Path(path)
    try:
        text = p.read_bytes()
    except OSError as err:
        raise TraceParseError(f"cannot read the file: {err.strerror or err}", source=str(p)) from err
    return loads_traces(text, source=str(p))


def loads_traces(text: str | bytes, source: str = "<input>") -> list[Trace]:
    """Parse every trace of a JSON text (any accepted form)."""
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TraceParseError(f"not valid JSON: {err}", source=source, fix=_FORMATS_HINT) from err
    return parse_traces(doc, source=source)


def parse_traces(doc: Any, source: str = "<input>") -> list[Trace]:
    """Turn a decoded JSON document (any accepted form) into traces, in document order."""
    if isinstance(doc, list):
        return [_parse_jaeger_trace(t, source, i) for i, t in enumerate(doc)]
    if not isinstance(doc, dict):
        raise TraceParseError(f"a JSON {type(doc).__name__} is not a trace document", source=source,
                              fix=_FORMATS_HINT)
    if "resourceSpans" in doc:
        return _parse_otlp(doc, source)
    result = doc.get("result")
    if isinstance(result, dict) and "resourceSpans" in result:
        return _parse_otlp(result, source)
    if "data" in doc:
        data = doc["data"]
        if data is None:
            errors = doc.get("errors") or []
            msgs = "; ".join(str(e.get("msg", e)) if isinstance(e, dict) else str(e) for e in errors)
            raise TraceParseError(f"the document holds no traces{': ' + msgs if msgs else ''}",
                                  source=source)
        if not isinstance(data, list):
            raise TraceParseError('"data" must be a list of traces', source=source, fix=_FORMATS_HINT)
        return [_parse_jaeger_trace(t, source, i) for i, t in enumerate(data)]
    if "spans" in doc:
        spans = doc["spans"]
        if isinstance(spans, list) and spans and isinstance(spans[0], dict) and "spanId" in spans[0]:
            return [_parse_domain_trace(doc, source)]
        return [_parse_jaeger_trace(doc, source, 0)]
    raise TraceParseError("unrecognised trace document", source=source, fix=_FORMATS_HINT)


# ---------------------------------------------------------------------------------------------
# Durations and times

_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
            "m": 60_000_000_000, "h": 3_600_000_000_000}


def parse_duration_us(text: str) -> int:
    """A Go-style duration (``"5000ns"``, ``"1.5ms"``, ``"5m"``, ``"1h30m"``) in microseconds.

    A bare number is taken as seconds. Rounds down to whole microseconds. ``ValueError`` on
    anything else, naming the text.
    """
    s = text.strip()
    if not s:
        raise ValueError("empty duration")
    sign = 1
    if s[0] in "+-":
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    try:
        return sign * int(float(s) * 1_000_000)
    except (ValueError, OverflowError):
        pass
    pos = 0
    total_ns = 0.0
    for m in _GO_DURATION.finditer(s):
        if m.start() != pos:
            break
        total_ns += float(m.group(1)) * _UNIT_NS[m.group(2)]
        pos = m.end()
    if pos != len(s) or pos == 0:
        raise ValueError(f"not a duration: {text!r} (use e.g. 300ms, 30s, 5m, 1h30m)")
    return sign * int(total_ns // 1_000)


_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|z|[+-]\d{2}:?\d{2})$"
)


def _rfc3339_us(text: str) -> int:
    m = _RFC3339.match(text.strip())
    if not m:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    y, mo, d, h, mi, sec = (int(m.group(i)) for i in range(1, 7))
    frac = (m.group(7) or "")[:6].ljust(6, "0")
    tz = m.group(8)
    offset = 0
    if tz not in ("Z", "z"):
        tzs = tz.replace(":", "")
        offset = (int(tzs[1:3]) * 3600 + int(tzs[3:5]) * 60) * (1 if tzs[0] == "+" else -1)
    secs = calendar.timegm((y, mo, d, h, mi, sec, 0, 0, 0)) - offset
    return secs * 1_000_000 + int(frac)


# ---------------------------------------------------------------------------------------------
# Common assembly: raw spans -> Trace, with parent resolution and duplicate handling


@dataclass
class _Raw:
    span_id: str
    service: str
    instance: str
    operation: str
    start: int
    duration: int
    refs: list[tuple[RefType, str]]  # same-trace references, in order
    kind: str
    tags: tuple[tuple[str, TagValue], ...]
    parent_id: str | None = None
    ref_type: RefType = RefType.CHILD_OF


@dataclass
class _Assembler:
    source: str
    trace_id: str
    raws: list[_Raw] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def build(self) -> Trace:
        if not self.raws:
            raise TraceParseError("the trace has no spans", source=self.source, trace_id=self.trace_id)
        self._dedupe()
        ids = {r.span_id for r in self.raws}
        for r in self.raws:
            if r.parent_id is not None:  # already set by the client/server split
                continue
            ref_type = RefType.CHILD_OF
            parent = next((sid for t, sid in r.refs if t is RefType.CHILD_OF and sid in ids), None)
            if parent is None:
                parent = next((sid for t, sid in r.refs if t is RefType.FOLLOWS_FROM and sid in ids), None)
                if parent is not None:
                    ref_type = RefType.FOLLOWS_FROM
            if parent is None and r.refs:
                ref_type, parent = r.refs[0]
                self.warnings.append(
                    f"span {r.span_id}: parent {parent} is not in the trace; the span is a root"
                )
            if parent == r.span_id:
                raise TraceParseError("the span is its own parent", source=self.source,
                                      trace_id=self.trace_id, span_id=r.span_id)
            r.parent_id, r.ref_type = parent, ref_type
        spans = tuple(
            Span(r.span_id, r.service, r.instance, r.operation, r.start, r.duration, r.parent_id,
                 r.ref_type, r.kind, r.tags)
            for r in self.raws
        )
        return Trace(self.trace_id, spans, tuple(self.warnings))

    def _dedupe(self) -> None:
        first: dict[str, _Raw] = {}
        kept: list[_Raw] = []
        for r in self.raws:
            prev = first.get(r.span_id)
            if prev is None:
                first[r.span_id] = r
                kept.append(r)
                continue
            if (prev.start, prev.duration, prev.operation, prev.service, prev.instance, prev.refs) == (
                r.start, r.duration, r.operation, r.service, r.instance, r.refs
            ):
                self.warnings.append(f"span {r.span_id}: exact duplicate dropped")
                continue
            kinds = {prev.kind, r.kind}
            if kinds == {"client", "server"} and f"{r.span_id}~server" not in first:
                server = r if r.kind == "server" else prev
                client = prev if server is r else r
                old = r.span_id
                new = f"{old}~server"
                server.span_id = new
                server.parent_id, server.ref_type = old, RefType.CHILD_OF
                first[new] = server
                first[old] = client
                kept.append(r)
                # The other spans under the shared ID were started by the server side.
                for other in self.raws:
                    if other is not server and other is not client:
                        other.refs = [(t, new if sid == old else sid) for t, sid in other.refs]
                self.warnings.append(
                    f"span {old}: client and server spans share the ID; the server span is now {new}"
                )
                continue
            k = 2
            while f"{r.span_id}~{k}" in first:
                k += 1
            new = f"{r.span_id}~{k}"
            self.warnings.append(f"span {r.span_id}: the ID occurs again; this occurrence is now {new}")
            r.span_id = new
            first[new] = r
            kept.append(r)
        self.raws = kept


def _fail(asm: _Assembler, span_id: str | None, message: str) -> TraceParseError:
    return TraceParseError(message, source=asm.source, trace_id=asm.trace_id, span_id=span_id)


def _int_field(asm: _Assembler, span_id: str, raw: Mapping[str, Any], key: str) -> int:
    if key not in raw:
        raise _fail(asm, span_id, f'"{key}" is missing')
    v = raw[key]
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        return int(v)
    raise _fail(asm, span_id, f'"{key}" must be an integer of microseconds, not {v!r}')


def _tag_value(v: Any) -> TagValue:
    if isinstance(v, str | int | float | bool):
        return v
    return json.dumps(v, sort_keys=True)


# ---------------------------------------------------------------------------------------------
# Jaeger UI / query-API JSON


def _jaeger_tags(tags: Any) -> tuple[tuple[str, TagValue], ...]:
    if not isinstance(tags, list):
        return ()
    out: list[tuple[str, TagValue]] = []
    for t in tags:
        if isinstance(t, dict) and isinstance(t.get("key"), str):
            out.append((t["key"], _tag_value(t.get("value"))))
    return tuple(out)


def _instance_of(service: str, tags: Iterable[tuple[str, TagValue]], keys: tuple[str, ...]) -> str:
    found = dict(tags)
    for k in keys:
        v = found.get(k)
        if v not in (None, ""):
            return str(v)
    return service


def _ref_type(asm: _Assembler, span_id: str, value: Any) -> RefType:
    text = str(value).upper().replace("-", "_")
    if text in ("CHILD_OF", "CHILDOF"):
        return RefType.CHILD_OF
    if text in ("FOLLOWS_FROM", "FOLLOWSFROM"):
        return RefType.FOLLOWS_FROM
    raise _fail(asm, span_id, f"unknown reference type {value!r} (expected CHILD_OF or FOLLOWS_FROM)")


def _parse_jaeger_trace(doc: Any, source: str, position: int) -> Trace:
    if not isinstance(doc, dict):
        raise TraceParseError(f"trace #{position} is a JSON {type(doc).__name__}, not an object",
                              source=source, fix=_FORMATS_HINT)
    spans = doc.get("spans")
    if not isinstance(spans, list):
        raise TraceParseError('"spans" must be a list', source=source,
                              trace_id=str(doc.get("traceID", f"#{position}")), fix=_FORMATS_HINT)
    trace_id = doc.get("traceID")
    if not isinstance(trace_id, str) or not trace_id:
        first = spans[0] if spans and isinstance(spans[0], dict) else {}
        trace_id = str(first.get("traceID") or f"#{position}")
    asm = _Assembler(source, trace_id)
    processes = doc.get("processes") or {}
    if not isinstance(processes, dict):
        raise _fail(asm, None, '"processes" must be an object')
    procs: dict[str, tuple[str, str]] = {}
    for pid, proc in processes.items():
        if not isinstance(proc, dict) or not isinstance(proc.get("serviceName"), str):
            raise _fail(asm, None, f'process {pid} has no "serviceName"')
        service = proc["serviceName"]
        procs[pid] = (service, _instance_of(service, _jaeger_tags(proc.get("tags")), ("hostname", "ip")))
    for k, s in enumerate(spans):
        asm.raws.append(_jaeger_span(asm, procs, s, k))
    return asm.build()


def _jaeger_span(asm: _Assembler, procs: Mapping[str, tuple[str, str]], s: Any, k: int) -> _Raw:
    if not isinstance(s, dict):
        raise _fail(asm, f"#{k}", "a span must be a JSON object")
    span_id = s.get("spanID")
    if not isinstance(span_id, str) or not span_id:
        raise _fail(asm, f"#{k}", '"spanID" is missing or not a string')
    start = _int_field(asm, span_id, s, "startTime")
    duration = _int_field(asm, span_id, s, "duration")
    if duration < 0:
        raise _fail(asm, span_id, f"negative duration {duration} us")
    if "process" in s and isinstance(s["process"], dict) and "serviceName" in s["process"]:
        service = str(s["process"]["serviceName"])
        instance = _instance_of(service, _jaeger_tags(s["process"].get("tags")), ("hostname", "ip"))
    else:
        pid = s.get("processID")
        if not isinstance(pid, str) or pid not in procs:
            raise _fail(asm, span_id, f"processID {pid!r} is not in the trace's processes")
        service, instance = procs[pid]
    refs: list[tuple[RefType, str]] = []
    raw_refs = s.get("references") or []
    if not isinstance(raw_refs, list):
        raise _fail(asm, span_id, '"references" must be a list')
    for ref in raw_refs:
        if not isinstance(ref, dict) or not isinstance(ref.get("spanID"), str):
            raise _fail(asm, span_id, f"malformed reference {ref!r}")
        rtype = _ref_type(asm, span_id, ref.get("refType", "CHILD_OF"))
        ref_trace = ref.get("traceID")
        if ref_trace not in (None, "", asm.trace_id):
            continue  # a link to another trace is no parent here
        refs.append((rtype, ref["spanID"]))
    if not raw_refs and isinstance(s.get("parentSpanID"), str) and s["parentSpanID"]:
        refs.append((RefType.CHILD_OF, s["parentSpanID"]))
    tags = _jaeger_tags(s.get("tags"))
    kind = str(dict(tags).get("span.kind", "")).lower()
    operation = s.get("operationName")
    return _Raw(span_id, service, instance, str(operation) if operation is not None else "",
                start, duration, refs, kind, tags)


# ---------------------------------------------------------------------------------------------
# Jaeger domain JSON (base64 IDs, RFC 3339 times, Go durations)


def _b64_hex(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"not a base64 ID: {value!r}")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"not a base64 ID: {value!r}") from None
    h = raw.hex()
    if len(raw) == 16 and raw[:8] == bytes(8):
        h = h[16:]  # Jaeger prints 128-bit IDs with a zero high half as 64-bit
    return h


def _domain_tags(tags: Any) -> tuple[tuple[str, TagValue], ...]:
    if not isinstance(tags, list):
        return ()
    out: list[tuple[str, TagValue]] = []
    for t in tags:
        if not isinstance(t, dict) or not isinstance(t.get("key"), str):
            continue
        for k in ("vStr", "vBool", "vInt64", "vFloat64", "vBinary"):
            if k in t:
                v = t[k]
                if k == "vInt64" and isinstance(v, str) and v.lstrip("-").isdigit():
                    v = int(v)
                out.append((t["key"], _tag_value(v)))
                break
    return tuple(out)


def _parse_domain_trace(doc: dict[str, Any], source: str) -> Trace:
    spans = doc["spans"]
    try:
        trace_id = _b64_hex(spans[0].get("traceId"))
    except ValueError as err:
        raise TraceParseError(str(err), source=source, trace_id="?", span_id="#0") from None
    asm = _Assembler(source, trace_id)
    for w in doc.get("warnings") or []:
        asm.warnings.append(str(w))
    pmap: dict[str, Any] = {}
    for entry in doc.get("processMap") or []:
        if isinstance(entry, dict) and isinstance(entry.get("processId"), str):
            pmap[entry["processId"]] = entry.get("process")
    for k, s in enumerate(spans):
        if not isinstance(s, dict):
            raise _fail(asm, f"#{k}", "a span must be a JSON object")
        try:
            span_id = _b64_hex(s.get("spanId"))
        except ValueError as err:
            raise _fail(asm, f"#{k}", str(err)) from None
        try:
            start = _rfc3339_us(str(s.get("startTime", "")))
        except ValueError as err:
            raise _fail(asm, span_id, f'"startTime": {err}') from None
        try:
            duration = parse_duration_us(str(s.get("duration", "")))
        except ValueError as err:
            raise _fail(asm, span_id, f'"duration": {err}') from None
        if duration < 0:
            raise _fail(asm, span_id, f"negative duration {duration} us")
        proc = s.get("process") or pmap.get(str(s.get("processId")))
        if not isinstance(proc, dict) or not isinstance(proc.get("serviceName"), str):
            raise _fail(asm, span_id, "the span has no process with a serviceName")
        service = proc["serviceName"]
        instance = _instance_of(service, _domain_tags(proc.get("tags")), ("hostname", "ip"))
        refs: list[tuple[RefType, str]] = []
        for ref in s.get("references") or []:
            if not isinstance(ref, dict):
                raise _fail(asm, span_id, f"malformed reference {ref!r}")
            try:
                ref_trace = _b64_hex(ref.get("traceId")) if ref.get("traceId") else trace_id
                ref_span = _b64_hex(ref.get("spanId"))
            except ValueError as err:
                raise _fail(asm, span_id, f"malformed reference: {err}") from None
            rtype = _ref_type(asm, span_id, ref.get("refType", "CHILD_OF"))
            if ref_trace == trace_id:
                refs.append((rtype, ref_span))
        tags = _domain_tags(s.get("tags"))
        kind = str(dict(tags).get("span.kind", "")).lower()
        asm.raws.append(_Raw(span_id, service, instance, str(s.get("operationName", "")), start,
                             duration, refs, kind, tags))
    return asm.build()


# ---------------------------------------------------------------------------------------------
# OTLP JSON


def _otlp_id(value: Any, nbytes: int) -> str:
    if not isinstance(value, str):
        raise ValueError(f"not an ID: {value!r}")
    v = value.strip()
    if len(v) == 2 * nbytes and all(c in "0123456789abcdefABCDEF" for c in v):
        return v.lower()
    try:
        raw = base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"not a hex or base64 ID: {value!r}") from None
    if len(raw) != nbytes:
        raise ValueError(f"an ID of {len(raw)} bytes where {nbytes} are expected: {value!r}")
    return raw.hex()


def _otlp_value(v: Any) -> TagValue:
    if not isinstance(v, dict):
        return _tag_value(v)
    if "stringValue" in v:
        return str(v["stringValue"])
    if "boolValue" in v:
        return bool(v["boolValue"])
    if "intValue" in v:
        try:
            return int(v["intValue"])
        except (TypeError, ValueError):
            return str(v["intValue"])
    if "doubleValue" in v:
        try:
            return float(v["doubleValue"])
        except (TypeError, ValueError):
            return str(v["doubleValue"])
    if "arrayValue" in v:
        values = (v["arrayValue"] or {}).get("values") or []
        return json.dumps([_otlp_value(x) for x in values])
    if "kvlistValue" in v:
        values = (v["kvlistValue"] or {}).get("values") or []
        return json.dumps({x.get("key"): _otlp_value(x.get("value")) for x in values if isinstance(x, dict)},
                          sort_keys=True)
    if "bytesValue" in v:
        return str(v["bytesValue"])
    return ""


def _otlp_attrs(attrs: Any) -> tuple[tuple[str, TagValue], ...]:
    if not isinstance(attrs, list):
        return ()
    return tuple((a["key"], _otlp_value(a.get("value"))) for a in attrs
                 if isinstance(a, dict) and isinstance(a.get("key"), str))


def _otlp_kind(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return _OTLP_KINDS.get(value, "")
    if isinstance(value, str):
        text = value.upper().removeprefix("SPAN_KIND_")
        return "" if text == "UNSPECIFIED" else text.lower()
    return ""


def _otlp_ns(asm: _Assembler, span_id: str, raw: Mapping[str, Any], key: str) -> int:
    v = raw.get(key)
    if isinstance(v, bool) or not isinstance(v, int | str):
        raise _fail(asm, span_id, f'"{key}" must be an integer of nanoseconds, not {v!r}')
    try:
        return int(v)
    except ValueError:
        raise _fail(asm, span_id, f'"{key}" must be an integer of nanoseconds, not {v!r}') from None


def _parse_otlp(doc: Mapping[str, Any], source: str) -> list[Trace]:
    rs_list = doc.get("resourceSpans")
    if not isinstance(rs_list, list):
        raise TraceParseError('"resourceSpans" must be a list', source=source, fix=_FORMATS_HINT)
    traces: dict[str, _Assembler] = {}
    for rs in rs_list:
        if not isinstance(rs, dict):
            raise TraceParseError("a resourceSpans entry must be a JSON object", source=source)
        attrs = dict(_otlp_attrs((rs.get("resource") or {}).get("attributes")))
        service = str(attrs.get("service.name") or "unknown_service")
        instance = _instance_of(service, attrs.items(), ("host.name", "service.instance.id"))
        scopes = rs.get("scopeSpans", rs.get("instrumentationLibrarySpans")) or []
        for scope in scopes:
            for k, s in enumerate((scope or {}).get("spans") or []):
                if not isinstance(s, dict):
                    raise TraceParseError("a span must be a JSON object", source=source, span_id=f"#{k}")
                try:
                    trace_id = _otlp_id(s.get("traceId"), 16)
                except ValueError as err:
                    raise TraceParseError(f'"traceId": {err}', source=source, trace_id="?",
                                          span_id=str(s.get("spanId", f"#{k}"))) from None
                asm = traces.setdefault(trace_id, _Assembler(source, trace_id))
                try:
                    span_id = _otlp_id(s.get("spanId"), 8)
                except ValueError as err:
                    raise _fail(asm, f"#{k}", f'"spanId": {err}') from None
                start_ns = _otlp_ns(asm, span_id, s, "startTimeUnixNano")
                end_ns = _otlp_ns(asm, span_id, s, "endTimeUnixNano")
                if end_ns < start_ns:
                    raise _fail(asm, span_id, f"ends ({end_ns} ns) before it starts ({start_ns} ns)")
                refs: list[tuple[RefType, str]] = []
                parent = s.get("parentSpanId")
                if parent:
                    try:
                        refs.append((RefType.CHILD_OF, _otlp_id(parent, 8)))
                    except ValueError as err:
                        raise _fail(asm, span_id, f'"parentSpanId": {err}') from None
                start = start_ns // 1000
                asm.raws.append(_Raw(span_id, service, instance, str(s.get("name", "")), start,
                                     end_ns // 1000 - start, refs, _otlp_kind(s.get("kind")),
                                     _otlp_attrs(s.get("attributes"))))
    if not traces:
        raise TraceParseError("the document holds no spans", source=source)
    return [asm.build() for asm in traces.values()]
