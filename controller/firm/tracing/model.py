"""The trace model every source is parsed into.

A :class:`Trace` is an immutable tuple of :class:`Span` with unique span IDs. Times are integer
microseconds since the Unix epoch (Jaeger's unit); durations are integer microseconds. A span knows
its parent by ID and by the type of the reference to it; a parent ID that is not in the trace is
kept as given (the span is then a root of its own tree, see :mod:`firm.tracing.critical_path`).
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field

from firm.tracing.errors import TraceParseError

TagValue = str | int | float | bool
"""The value of a span tag (Jaeger tag or OTLP attribute; arrays and maps are kept as JSON text)."""


class RefType(enum.Enum):
    """How a span relates to its parent (OpenTracing reference types)."""

    CHILD_OF = "CHILD_OF"
    """The parent waits for the child (a synchronous call)."""
    FOLLOWS_FROM = "FOLLOWS_FROM"
    """The parent does not wait for the child (asynchronous work, e.g. a message consumer)."""


@dataclass(frozen=True, slots=True)
class Span:
    """One timed operation of one service instance."""

    span_id: str
    """Unique within the trace."""
    service: str
    """Service name (Jaeger ``process.serviceName``, OTLP ``service.name``)."""
    instance: str
    """The instance that ran it: Jaeger ``hostname`` process tag (else ``ip``, else the service);
    OTLP ``host.name`` resource attribute (else ``service.instance.id``, else the service)."""
    operation: str
    """Operation (span) name."""
    start: int
    """Start, microseconds since the epoch."""
    duration: int
    """Duration, microseconds (>= 0)."""
    parent_id: str | None = None
    """Span ID of the parent, ``None`` for a root."""
    ref_type: RefType = RefType.CHILD_OF
    """Type of the reference to the parent."""
    kind: str = ""
    """``client``, ``server``, ``producer``, ``consumer``, ``internal`` or ``""`` when unknown."""
    tags: tuple[tuple[str, TagValue], ...] = field(default=(), compare=False)
    """Span tags (attributes) as (key, value) pairs, in the source's order."""

    @property
    def end(self) -> int:
        """End, microseconds since the epoch."""
        return self.start + self.duration

    def tag(self, key: str, default: TagValue | None = None) -> TagValue | None:
        """The value of tag ``key``, or ``default``."""
        for k, v in self.tags:
            if k == key:
                return v
        return default


@dataclass(frozen=True)
class Trace:
    """The spans of one request, with unique span IDs.

    ``warnings`` records what the parser repaired (duplicate span IDs, parents missing from the
    trace, ...), so that a user can see why a trace looks the way it does.
    """

    trace_id: str
    spans: tuple[Span, ...]
    warnings: tuple[str, ...] = ()
    sources: tuple[str, ...] = field(default=(), compare=False, repr=False)
    """The inputs the spans came from (files, ``FILE:LINE`` of JSON Lines), for messages; ``()``
    when unknown. Not part of the trace's value."""

    def __post_init__(self) -> None:
        if not self.spans:
            raise TraceParseError("the trace has no spans", trace_id=self.trace_id)
        ids = [s.span_id for s in self.spans]
        if len(set(ids)) != len(ids):
            dup = next(i for i, c in Counter(ids).items() if c > 1)
            raise TraceParseError(
                "the span ID occurs more than once",
                trace_id=self.trace_id,
                span_id=dup,
                fix="parse the trace with firm.tracing.parse, which renames or drops duplicates",
            )
        for s in self.spans:
            if s.duration < 0:
                raise TraceParseError(
                    f"negative duration {s.duration} us", trace_id=self.trace_id, span_id=s.span_id
                )

    @property
    def source(self) -> str | None:
        """The inputs of :attr:`sources` as one name for a message (``a.json and b.json``), or None."""
        return " and ".join(self.sources) or None

    @property
    def start(self) -> int:
        """Earliest span start, microseconds since the epoch."""
        return min(s.start for s in self.spans)

    @property
    def end(self) -> int:
        """Latest span end, microseconds since the epoch."""
        return max(s.end for s in self.spans)

    def span(self, span_id: str) -> Span:
        """The span with this ID (``KeyError`` when absent)."""
        for s in self.spans:
            if s.span_id == span_id:
                return s
        raise KeyError(span_id)
