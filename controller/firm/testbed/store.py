"""The trace store of the embedded default: spans in the application's Redis, read back as traces.

Services append every finished span to the stream ``firm:spans`` (see :mod:`firm.testbed.spans`);
entries are appended in batches within about a second of a span's end. Reading a window of traces
takes the stream's entries from the window's start to a little after its end, groups them by trace
and keeps the traces whose first span started in the window.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import redis

from firm.testbed.spans import SPANS_STREAM
from firm.tracing.model import Span, Trace

FLUSH_GRACE_US = 5_000_000
"""How long after a trace's spans end they may still arrive (the exporters batch every 0.5 s)."""


def _span(record: dict[str, Any]) -> Span:
    tags = [(k, v) for k, v in record.get("attributes", {}).items()]
    if record.get("error"):
        tags.append(("error", True))
    return Span(span_id=record["span_id"], service=record["service"], instance=record["instance"],
                operation=record["name"], start=int(record["start_us"]), duration=int(record["duration_us"]),
                parent_id=record.get("parent_id"), kind=record.get("kind", ""), tags=tuple(tags))


def assemble(records: Iterable[dict[str, Any]]) -> list[Trace]:
    """Group span records into traces (each span once), ordered by start."""
    grouped: dict[str, dict[str, Span]] = defaultdict(dict)
    for record in records:
        grouped[record["trace_id"]].setdefault(record["span_id"], _span(record))
    traces = [Trace(trace_id, tuple(sorted(spans.values(), key=lambda s: s.start)))
              for trace_id, spans in grouped.items()]
    return sorted(traces, key=lambda t: t.start)


class RedisTraceStore:
    """A :class:`firm.tracing.jaeger.TraceSource` over the testbed's span stream."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    @classmethod
    def at(cls, address: str, port: int = 6379) -> RedisTraceStore:
        return cls(redis.Redis(host=address, port=port, socket_timeout=10))

    def records(self, start: int, end: int) -> list[dict[str, Any]]:
        """Span records appended from ``start`` to ``end`` plus the flush grace (microseconds)."""
        first, last = start // 1000, (end + FLUSH_GRACE_US) // 1000
        # An ID without a sequence number means the millisecond's first entry as min, its last as max.
        entries: list[tuple[bytes, dict[bytes, bytes]]] = self.client.xrange(  # type: ignore[assignment]
            SPANS_STREAM, min=str(first), max=str(last))
        return [json.loads(fields[b"s"]) for _, fields in entries]

    def traces(self, start: int, end: int) -> list[Trace]:
        """Every trace whose first span started in ``[start, end]`` (microseconds since the epoch)."""
        return [t for t in assemble(self.records(start, end)) if start <= t.start <= end]

    def fetch(self, service: str, start: int, end: int, limit: int = 100,
              operation: str | None = None) -> list[Trace]:
        matching = [t for t in self.traces(start, end)
                    if any(s.service == service and (operation is None or s.operation == operation) for s in t.spans)]
        return matching[:limit]
