"""Traces out as Jaeger query-API JSON (``{"data": [...]}``), which Jaeger UI and firm both read;
JSON documents out as bytes, fast."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import orjson

from firm.tracing.model import Span, TagValue, Trace


def _tag(key: str, value: TagValue) -> dict[str, Any]:
    kind = (
        "bool"
        if isinstance(value, bool)
        else "int64"
        if isinstance(value, int)
        else ("float64" if isinstance(value, float) else "string")
    )
    return {"key": key, "type": kind, "value": value}


def jaeger_trace(trace: Trace) -> dict[str, Any]:
    """One trace in Jaeger's JSON model; processes are per (service, instance)."""
    processes: dict[tuple[str, str], str] = {}
    spans = []
    for span in trace.spans:
        process = processes.setdefault((span.service, span.instance), f"p{len(processes) + 1}")
        spans.append(_jaeger_span(trace.trace_id, span, process))
    return {
        "traceID": trace.trace_id,
        "spans": spans,
        "processes": {
            pid: {"serviceName": service, "tags": [_tag("hostname", instance)]}
            for (service, instance), pid in processes.items()
        },
        "warnings": list(trace.warnings) or None,
    }


def _jaeger_span(trace_id: str, span: Span, process: str) -> dict[str, Any]:
    tags = [_tag(k, v) for k, v in span.tags]
    if span.kind:
        tags.append(_tag("span.kind", span.kind))
    references = (
        []
        if span.parent_id is None
        else [{"refType": span.ref_type.value, "traceID": trace_id, "spanID": span.parent_id}]
    )
    return {
        "traceID": trace_id,
        "spanID": span.span_id,
        "operationName": span.operation,
        "references": references,
        "startTime": span.start,
        "duration": span.duration,
        "tags": tags,
        "logs": [],
        "processID": process,
        "warnings": None,
    }


def jaeger_document(traces: Iterable[Trace]) -> dict[str, Any]:
    """What Jaeger's ``GET /api/traces`` returns for these traces."""
    return {"data": [jaeger_trace(t) for t in traces], "total": 0, "limit": 0, "offset": 0, "errors": None}


def json_bytes(doc: Any, *, indent: bool = False) -> bytes:
    """``doc`` as UTF-8 JSON: one line, or indented by two spaces (the layout of
    ``json.dumps(doc, indent=2)``, with non-ASCII characters written as themselves). Encoded by
    orjson (tens of times faster than the standard library's indented encoder); what orjson
    refuses (an integer beyond 64 bits, a key that is not a string) by the standard library.
    Raises ``TypeError`` for a value that is not JSON; a NaN or infinite float becomes ``null``.
    """
    try:
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2 if indent else 0)
    except orjson.JSONEncodeError:
        text = json.dumps(doc, indent=2 if indent else None, ensure_ascii=False, allow_nan=False)
        return text.encode()
