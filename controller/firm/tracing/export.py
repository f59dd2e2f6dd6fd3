"""Traces out as Jaeger query-API JSON (``{"data": [...]}``), which Jaeger UI and firm both read;
critical paths out as ``firm critical-path``'s document; JSON documents out as bytes, fast."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import orjson

from firm.terminal import safe_json
from firm.tracing.critical_path import CriticalPath, critical_paths
from firm.tracing.model import Span, TagValue, Trace

if TYPE_CHECKING:
    from firm.tracing.source import TraceInput


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
    The characters that JSON allows raw but a terminal obeys (C1 controls, direction overrides:
    :func:`firm.terminal.safe_json`) are written as ``\\u`` escapes, as the standard library writes
    C0 ones: names from traces print as they decode.
    """
    return safe_json(_json_bytes(doc, indent=indent))


def _json_bytes(doc: Any, *, indent: bool) -> bytes:
    try:
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2 if indent else 0)
    except orjson.JSONEncodeError:
        text = json.dumps(
            _finite(doc),
            indent=2 if indent else None,
            separators=(",", ": ") if indent else (",", ":"),  # orjson's layout
            ensure_ascii=False,
            allow_nan=False,
        )
        return text.encode()


def _finite(doc: Any) -> Any:
    """``doc`` with every NaN or infinite float replaced by None (what orjson writes for them)."""
    if isinstance(doc, float):
        return doc if math.isfinite(doc) else None
    if isinstance(doc, dict):
        return {k: _finite(v) for k, v in doc.items()}
    if isinstance(doc, (list, tuple)):
        return [_finite(v) for v in doc]
    return doc


def write_critical_path_document(
    batches: Iterable[TraceInput],
    write: Callable[[bytes], object],
    *,
    overlap_tolerance_us: int = 0,
    indent: bool = True,
) -> int:
    """Write ``{"traces": [...]}``, the critical path of every trace of ``batches`` (the document of
    ``firm critical-path``: per trace its source, :meth:`CriticalPath.as_dict` and warnings), batch by
    batch through ``write``, as the batches come; the bytes are those of :func:`json_bytes` on the
    whole document (``indent``: two spaces a level, else one line). Returns the number of traces.
    The batches' diagnostics are the caller's. Raises as :func:`critical_paths`."""
    sep, lead, end = (
        (b",\n    ", b'{\n  "traces": [\n    ', b"\n  ]\n}") if indent else (b",", b'{"traces":[', b"]}")
    )
    count = 0
    for batch in batches:
        paths = critical_paths(batch.traces, overlap_tolerance_us=overlap_tolerance_us)
        chunk = sep.join(
            _entry(json_bytes(_path_doc(t, cp, batch.sources), indent=indent), indent)
            for t, cp in zip(batch.traces, paths, strict=True)
        )
        if chunk:
            write((sep if count else lead) + chunk)
            count += len(paths)
    write(end if count else (b'{\n  "traces": []\n}' if indent else b'{"traces":[]}'))
    return count


def _path_doc(t: Trace, cp: CriticalPath, sources: dict[str, list[str]]) -> dict[str, object]:
    return {"source": ", ".join(sources.get(t.trace_id, [])), **cp.as_dict(), "warnings": list(t.warnings)}


def _entry(doc: bytes, indent: bool) -> bytes:
    """An entry of the ``traces`` list, indented as its place in the document wants (JSON text holds
    no raw newline inside a string, so every newline starts a line of layout)."""
    return doc.replace(b"\n", b"\n    ") if indent else doc
