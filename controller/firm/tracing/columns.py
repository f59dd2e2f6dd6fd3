"""Traces held as columns: what the fast reader of Jaeger JSON makes, and the critical path reads.

:class:`ColumnTrace` is a :class:`~firm.tracing.model.Trace` whose spans are held as parallel
lists (:class:`SpanColumns`: IDs, services, instances, operations, starts, durations, parent
indices, reference types) instead of :class:`~firm.tracing.model.Span` objects. Its
:attr:`~ColumnTrace.spans` are built on first use, equal to what :class:`firm.tracing.parse.TraceReader`
builds for the same trace; :func:`firm.tracing.critical_path.critical_paths` reads the columns
directly, so a file's spans need never become objects on the way to ``firm critical-path`` and
``firm features``.

Only traces the reader found *clean* are held so (see :mod:`firm.tracing.parse`: unique span IDs,
every number in range, at most one reference to a span of the same trace, no repair needed):
whatever a trace needs repaired or refused goes through the reference parser, so the warnings
and diagnostics are those of that parser.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

import msgspec

from firm.tracing.model import RefType, Span, Trace

__all__ = ["ColumnSpans", "ColumnTrace", "SpanColumns", "span_kind_of"]


@dataclass(frozen=True, slots=True)
class SpanColumns:
    """The spans of one trace as parallel lists, in the file's order (n spans)."""

    ids: list[str]
    """Span IDs, unique."""
    services: list[str]
    instances: list[str]
    operations: list[str]
    starts: list[int]
    """Start, microseconds since the epoch."""
    durations: list[int]
    """Duration, microseconds (>= 0)."""
    parents: list[int]
    """The parent's index within the trace, -1 for a root."""
    parent_ids: list[str | None]
    """The parent's span ID, ``None`` for a span with no reference."""
    follows: list[bool]
    """The reference to the parent is ``FOLLOWS_FROM``."""
    tags: list[msgspec.Raw]
    """Each span's ``tags`` as JSON text (read only when a span object is built: its kind)."""


def span_kind_of(tags: msgspec.Raw) -> str:
    """The ``span.kind`` of a span from its ``tags`` JSON text, as the reference parser reads it."""
    from firm.tracing.parse import decode_json, jaeger_kind  # noqa: PLC0415 (parse imports this module)

    raw = bytes(tags)
    if b"span.kind" not in raw and b"\\" not in raw:
        return ""  # no such key (JSON could spell it only with an escape)
    return jaeger_kind(decode_json(raw) if raw else None)


class ColumnSpans(Sequence[Span]):
    """A :class:`ColumnTrace`'s spans as a sequence: ``spans[i]`` builds the :class:`Span` (not
    kept); :attr:`cols` gives the columns themselves."""

    __slots__ = ("cols",)

    def __init__(self, cols: SpanColumns) -> None:
        self.cols = cols

    def __len__(self) -> int:
        return len(self.cols.ids)

    @overload
    def __getitem__(self, i: int) -> Span: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[Span]: ...
    def __getitem__(self, i: int | slice) -> Span | Sequence[Span]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        c = self.cols
        return Span(
            c.ids[i],
            c.services[i],
            c.instances[i],
            c.operations[i],
            c.starts[i],
            c.durations[i],
            c.parent_ids[i],
            RefType.FOLLOWS_FROM if c.follows[i] else RefType.CHILD_OF,
            span_kind_of(c.tags[i]),
        )

    def __iter__(self) -> Iterator[Span]:
        return (self[i] for i in range(len(self)))


class ColumnTrace(Trace):
    """A :class:`Trace` held as :class:`SpanColumns`; :attr:`spans` is built on first use and
    kept. Equal to a :class:`Trace` with the same ID, spans and warnings."""

    def __init__(
        self, trace_id: str, cols: SpanColumns, warnings: tuple[str, ...] = (), sources: tuple[str, ...] = ()
    ) -> None:
        # No dataclass __init__: the columns were checked by the reader (IDs unique, durations >= 0).
        object.__setattr__(self, "trace_id", trace_id)
        object.__setattr__(self, "warnings", warnings)
        object.__setattr__(self, "sources", sources)
        object.__setattr__(self, "cols", cols)
        object.__setattr__(self, "_spans", None)

    cols: SpanColumns
    _spans: tuple[Span, ...] | None

    @property
    def spans(self) -> tuple[Span, ...]:
        """The spans, built from the columns on first use."""
        if self._spans is None:
            object.__setattr__(self, "_spans", tuple(ColumnSpans(self.cols)))
        assert self._spans is not None
        return self._spans

    def span_view(self) -> ColumnSpans:
        """The spans as a sequence over the columns, built one by one on access."""
        return ColumnSpans(self.cols)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Trace):
            return NotImplemented
        return (self.trace_id, self.spans, self.warnings) == (other.trace_id, other.spans, other.warnings)

    def __hash__(self) -> int:
        return hash((self.trace_id, self.spans, self.warnings))

    def __repr__(self) -> str:
        return (
            f"ColumnTrace(trace_id={self.trace_id!r}, spans={len(self.cols.ids)}, warnings={self.warnings!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (Trace, (self.trace_id, self.spans, self.warnings))
