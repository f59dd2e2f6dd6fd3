"""Critical paths of traces: FIRM's Algorithm 1 with its defects fixed, and Jaeger UI's sections.

**The walk.** For a span, the *last returned child* (LRC) is the child that ends last; it is on
the path. Walking backwards from the LRC's start, the next child on the path is the latest-ending
child that ends at or before that time; and so on until no earlier child remains. Children that
overlap the chosen ones ran in parallel and had slack: they are off the path. Each on-path child
is walked the same way, depth first.

- **Sections** (Jaeger UI's critical-path view) are the pieces of each on-path span's time that
  no on-path child covers, in the order the walk finds them: backwards in time from the root's
  end. Together they tile the root's interval exactly.
- **The path** is the same walk read forward in time: the on-path spans in pre-order (a parent
  before its children, children in time order), each with its *self time on the path*, the total
  length of its sections. The self times add up to the root's duration.

This fixes the original's defects: the path comes out in time order, only a chain of sequential
children is on it (parallel children are not), asynchronous children and clock skew are handled.

**Rules for real data**, applied before the walk (1 to 3, and a path per root, are Jaeger UI's):

1. *Clock skew*: a child is trimmed into its (trimmed) parent's interval: one starting before
   its parent starts at the parent's start, one ending after its parent (including CHILD_OF
   children the parent did not wait for) ends at the parent's end.
2. A child entirely outside its parent (starting at or after the parent's end, or ending at or
   before its start) is dropped with its subtree: it cannot have delayed the parent.
3. *FOLLOWS_FROM* children are asynchronous: the parent does not wait for them, so they and
   their subtrees are never on its path.
4. A span whose parent is missing from the trace is a root. Every root gets its own path; the
   *main* path, the request's, is under the longest root (the earliest on ties).
5. *Overlaps of a few microseconds*: by default any overlap makes two siblings parallel (Jaeger
   UI's rule). With ``overlap_tolerance_us=d``, a child that ends at most ``d`` us after a later
   sibling starts is cut at that sibling's start (after rule 1, and its own children are trimmed
   again, rules 1 and 2, into the cut interval); the two are then sequential. Use it when sibling
   spans come from hosts whose clocks differ slightly.
6. A child that ends exactly when the next on-path child starts is sequential with it (Jaeger
   UI requires it to end strictly before; none of its test cases depends on the difference); a
   zero-length child at that very instant is passed over. Among children ending at the same
   time the one that started first is taken, then the first in the trace's order.

**Cost.** :func:`critical_path_of` computes one trace: up to :data:`SMALL_TRACE_SPANS` spans
it walks plain lists (children indexed once, rules 1-3 top-down, children sorted by end only
where the walk enters), so a small trace pays no array setup. :func:`critical_paths` computes a
window: from :data:`ARRAY_MIN_SPANS` spans in all it evaluates the walk for all traces at once
with array operations: ancestors' intervals by pointer jumping (O(n log depth)), children sorted
once (O(n log n)), each child's predecessor in a chain by binary search, chains marked by binary
lifting. No per-span Python loop runs beyond reading the spans, so deep chains and wide fan-outs
cost the same per span, and many small traces cost no more per span than one large one. Results
are held as lists; path steps, sections and arrays become objects only when asked for. Traces
held as columns (:class:`firm.tracing.columns.ColumnTrace`, what the reader makes of clean Jaeger
JSON) are read from their columns: their span objects are never built, unless asked for.
:func:`critical_path_walk` is the walk itself, iterative and span by span: the readable
definition, used to cross-check every fast path.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from itertools import chain, repeat
from operator import attrgetter, is_
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from firm.tracing.columns import ColumnSpans, ColumnTrace
from firm.tracing.errors import TraceParseError
from firm.tracing.gcpause import paused_gc
from firm.tracing.model import RefType, Span, Trace

__all__ = [
    "SMALL_TRACE_SPANS",
    "Columns",
    "CriticalPath",
    "PathStep",
    "RootPath",
    "Section",
    "critical_path",
    "critical_path_of",
    "critical_path_walk",
    "critical_paths",
]

_I64 = npt.NDArray[np.int64]
_Bool = npt.NDArray[np.bool_]


class Section(NamedTuple):
    """A piece of an on-path span's time that no on-path child covers (Jaeger UI's section)."""

    span_id: str
    start: int
    """Microseconds since the epoch."""
    end: int
    """Microseconds since the epoch."""

    def as_dict(self) -> dict[str, str | int]:
        """Jaeger UI's form: ``{spanID, sectionStart, sectionEnd}``."""
        return {"spanID": self.span_id, "sectionStart": self.start, "sectionEnd": self.end}


class PathStep(NamedTuple):
    """One span on the critical path."""

    span: Span
    start: int
    """Start after trimming into the parent, microseconds since the epoch."""
    end: int
    """End after trimming, microseconds since the epoch."""
    self_time: int
    """Microseconds of the path spent in this span itself (the sum of its sections)."""
    depth: int
    """0 for the root, 1 for its children, ..."""


class Columns(NamedTuple):
    """The path and the sections of one root as parallel arrays (span indices are within the
    trace): :meth:`RootPath.columns`."""

    step_span: _I64
    step_start: _I64
    step_end: _I64
    step_self: _I64
    step_depth: _I64
    sec_span: _I64
    sec_start: _I64
    sec_end: _I64


class _Rows(NamedTuple):
    """Paths and sections as parallel Python lists (what :class:`Columns` holds as arrays); a
    :class:`RootPath` is a range of the step lists and one of the section lists."""

    step_span: list[int]
    step_start: list[int]
    step_end: list[int]
    step_self: list[int]
    step_depth: list[int]
    sec_span: list[int]
    sec_start: list[int]
    sec_end: list[int]


class RootPath:
    """The critical path under one root span.

    Held as ranges of parallel lists; :attr:`steps` and :attr:`sections` build Python objects on
    first use, :meth:`instance_times` sums the path per instance without building them.
    """

    __slots__ = (
        "_instance_times",
        "_p0",
        "_p1",
        "_root",
        "_root_span",
        "_rows",
        "_s0",
        "_s1",
        "_sections",
        "_spans",
        "_steps",
    )

    def __init__(
        self, spans: Sequence[Span], root: int, rows: _Rows, steps: tuple[int, int], sections: tuple[int, int]
    ) -> None:
        self._spans = spans
        self._root = root
        self._root_span: Span | None = None
        self._rows = rows
        self._p0, self._p1 = steps
        self._s0, self._s1 = sections
        self._steps: tuple[PathStep, ...] | None = None
        self._sections: tuple[Section, ...] | None = None
        self._instance_times: dict[tuple[str, str], int] | None = None

    @property
    def root(self) -> Span:
        """The root span."""
        if self._root_span is None:
            self._root_span = self._spans[self._root]
        return self._root_span

    @property
    def step_span(self) -> _I64:
        """Per on-path span, forward in time: its index in the trace's spans."""
        return np.array(self._rows.step_span[self._p0 : self._p1], dtype=np.int64)

    @property
    def step_self(self) -> _I64:
        """Per on-path span, forward in time: its self time on the path, microseconds."""
        return np.array(self._rows.step_self[self._p0 : self._p1], dtype=np.int64)

    def columns(self) -> Columns:
        """The path and the sections as numpy arrays (span indices within the trace)."""
        r, a, b, c, d = self._rows, self._p0, self._p1, self._s0, self._s1

        def arr(values: list[int]) -> _I64:
            return np.array(values, dtype=np.int64)

        return Columns(
            arr(r.step_span[a:b]),
            arr(r.step_start[a:b]),
            arr(r.step_end[a:b]),
            arr(r.step_self[a:b]),
            arr(r.step_depth[a:b]),
            arr(r.sec_span[c:d]),
            arr(r.sec_start[c:d]),
            arr(r.sec_end[c:d]),
        )

    @property
    def latency(self) -> int:
        """Length of the path, microseconds: the sum of the self times (the root's duration)."""
        return sum(self._rows.step_self[self._p0 : self._p1])

    @property
    def steps(self) -> tuple[PathStep, ...]:
        """The on-path spans, forward in time (pre-order)."""
        if self._steps is None:
            sp, r, a, b = self._spans, self._rows, self._p0, self._p1
            self._steps = tuple(
                PathStep(sp[i], s, e, t, d)
                for i, s, e, t, d in zip(
                    r.step_span[a:b],
                    r.step_start[a:b],
                    r.step_end[a:b],
                    r.step_self[a:b],
                    r.step_depth[a:b],
                    strict=True,
                )
            )
        return self._steps

    @property
    def sections(self) -> tuple[Section, ...]:
        """Jaeger UI's sections, backwards in time from the root's end."""
        if self._sections is None:
            sp, r, a, b = self._spans, self._rows, self._s0, self._s1
            self._sections = tuple(
                Section(sp[i].span_id, s, e)
                for i, s, e in zip(r.sec_span[a:b], r.sec_start[a:b], r.sec_end[a:b], strict=True)
            )
        return self._sections

    def instance_times(self) -> dict[tuple[str, str], int]:
        """Microseconds of the path spent in each ``(service, instance)`` on it: the sum of the
        self times of its on-path spans (0 for an instance on the path whose spans are all
        covered by their children), in the order the path first reaches each instance.

        What :func:`firm.tracing.features.window_features` needs of a request; computed once,
        then cached (do not change the returned dict)."""
        if self._instance_times is None:
            sp, r, a, b = self._spans, self._rows, self._p0, self._p1
            out: dict[tuple[str, str], int] = {}
            if sp.__class__ is ColumnSpans:
                cols = sp.cols
                services, instances = cols.services, cols.instances
                for i, t in zip(r.step_span[a:b], r.step_self[a:b], strict=True):
                    key = (services[i], instances[i])
                    out[key] = out.get(key, 0) + t
                self._instance_times = out
                return out
            for i, t in zip(r.step_span[a:b], r.step_self[a:b], strict=True):
                s = sp[i]
                key = (s.service, s.instance)
                out[key] = out.get(key, 0) + t
            self._instance_times = out
        return self._instance_times

    def as_dict(self) -> dict[str, object]:
        """Stable JSON form: the root, the path forward in time, Jaeger UI's sections."""
        sp, r, a, b, c, d = self._spans, self._rows, self._p0, self._p1, self._s0, self._s1
        if sp.__class__ is ColumnSpans:
            return self._column_dict()
        path: list[dict[str, object]] = []
        for i, s, e, t, dep in zip(
            r.step_span[a:b],
            r.step_start[a:b],
            r.step_end[a:b],
            r.step_self[a:b],
            r.step_depth[a:b],
            strict=True,
        ):
            x = sp[i]
            path.append(
                {
                    "spanID": x.span_id,
                    "service": x.service,
                    "instance": x.instance,
                    "operation": x.operation,
                    "start": s,
                    "end": e,
                    "selfTime": t,
                    "depth": dep,
                }
            )
        return {
            "rootSpanID": self.root.span_id,
            "duration": self.root.duration,
            "path": path,
            "sections": [
                {"spanID": sp[i].span_id, "sectionStart": s, "sectionEnd": e}
                for i, s, e in zip(r.sec_span[c:d], r.sec_start[c:d], r.sec_end[c:d], strict=True)
            ],
        }

    def _column_dict(self) -> dict[str, object]:
        """:meth:`as_dict` reading the names from the trace's columns, not from span objects."""
        cols = self._spans.cols  # type: ignore[attr-defined]
        ids, services, instances, operations = cols.ids, cols.services, cols.instances, cols.operations
        r, a, b, c, d = self._rows, self._p0, self._p1, self._s0, self._s1
        return {
            "rootSpanID": ids[self._root],
            "duration": cols.durations[self._root],
            "path": [
                {
                    "spanID": ids[i],
                    "service": services[i],
                    "instance": instances[i],
                    "operation": operations[i],
                    "start": s,
                    "end": e,
                    "selfTime": t,
                    "depth": dep,
                }
                for i, s, e, t, dep in zip(
                    r.step_span[a:b],
                    r.step_start[a:b],
                    r.step_end[a:b],
                    r.step_self[a:b],
                    r.step_depth[a:b],
                    strict=True,
                )
            ],
            "sections": [
                {"spanID": ids[i], "sectionStart": s, "sectionEnd": e}
                for i, s, e in zip(r.sec_span[c:d], r.sec_start[c:d], r.sec_end[c:d], strict=True)
            ],
        }

    def __repr__(self) -> str:
        return (
            f"RootPath(root={self.root.span_id!r}, steps={self._p1 - self._p0}, "
            f"sections={self._s1 - self._s0}, latency={self.latency})"
        )


class _Shared(NamedTuple):
    """Rows of a batch of traces, and where each root's rows are (root k: its span index
    within its trace, steps ``pcut[k]:pcut[k + 1]``, sections ``scut[k]:scut[k + 1]``)."""

    rows: _Rows
    root_local: list[int]
    pcut: list[int]
    scut: list[int]


class CriticalPath:
    """The critical paths of one trace, one per root (read-only)."""

    __slots__ = ("_r0", "_r1", "_roots", "_shared", "_spans", "excluded", "main_index", "trace_id", "trimmed")

    def __init__(
        self, trace_id: str, roots: Sequence[RootPath], main_index: int, excluded: int, trimmed: int
    ) -> None:
        self.trace_id = trace_id
        self.main_index = main_index
        """Index in :attr:`roots` of the main root (the longest)."""
        self.excluded = excluded
        """Spans on no path's tree: FOLLOWS_FROM subtrees and children outside their parent's
        time."""
        self.trimmed = trimmed
        """Spans whose interval was trimmed into their parent's (clock skew, outliving children,
        overlap tolerance)."""
        self._roots: tuple[RootPath, ...] | None = tuple(roots)
        self._shared: _Shared | None = None
        self._spans: Sequence[Span] = ()
        self._r0 = self._r1 = 0

    @classmethod
    def _of_batch(
        cls,
        trace: Trace,
        shared: _Shared,
        rows: tuple[int, int],
        main_index: int,
        excluded: int,
        trimmed: int,
    ) -> CriticalPath:
        """A trace's result within a batch; its RootPath objects are built on first use."""
        self = cls.__new__(cls)
        self.trace_id, self.main_index, self.excluded, self.trimmed = (
            trace.trace_id,
            main_index,
            excluded,
            trimmed,
        )
        self._roots, self._shared = None, shared
        self._spans = trace.span_view() if isinstance(trace, ColumnTrace) else trace.spans
        self._r0, self._r1 = rows
        return self

    @property
    def roots(self) -> tuple[RootPath, ...]:
        """One path per root span, roots ordered by start time."""
        if self._roots is None:
            assert self._shared is not None
            rows, local, pcut, scut = self._shared
            self._roots = tuple(
                RootPath(self._spans, local[k], rows, (pcut[k], pcut[k + 1]), (scut[k], scut[k + 1]))
                for k in range(self._r0, self._r1)
            )
        return self._roots

    def __repr__(self) -> str:
        return (
            f"CriticalPath(trace_id={self.trace_id!r}, roots={len(self.roots)}, main={self.main!r}, "
            f"excluded={self.excluded}, trimmed={self.trimmed})"
        )

    @property
    def main(self) -> RootPath:
        """The path of the request: the one under the longest root."""
        return self.roots[self.main_index]

    @property
    def sections(self) -> tuple[Section, ...]:
        """Jaeger UI's sections over all roots, root after root."""
        return tuple(s for r in self.roots for s in r.sections)

    def as_dict(self) -> dict[str, object]:
        """Stable JSON form: the main root's path and sections, then the other roots'."""
        return {
            "traceID": self.trace_id,
            **self.main.as_dict(),
            "excludedSpans": self.excluded,
            "trimmedSpans": self.trimmed,
            "otherRoots": [r.as_dict() for i, r in enumerate(self.roots) if i != self.main_index],
        }


# ---------------------------------------------------------------------------------------------
# Input arrays

_get_id = attrgetter("span_id")
_get_start = attrgetter("start")
_get_duration = attrgetter("duration")
_get_parent = attrgetter("parent_id")
_get_ref = attrgetter("ref_type")
_get_spans = attrgetter("spans")


class _Batch(NamedTuple):
    """The spans of several traces, concatenated, as arrays (parents as global indices)."""

    traces: Sequence[Trace]
    offsets: _I64  # first global index of each trace, and the total at the end
    trace_of: _I64  # trace of each span
    start: _I64
    end: _I64
    par: _I64  # parent's global index, -1 for a root
    follows: _Bool

    def locate(self, i: int) -> tuple[Trace, Span]:
        t = int(self.trace_of[i])
        trace = self.traces[t]
        return trace, trace.spans[i - int(self.offsets[t])]


def _column_batch(traces: Sequence[ColumnTrace]) -> _Batch:
    """:func:`_batch` of traces held as columns: the arrays straight from the columns, parents
    already resolved to indices by the reader."""
    cols = [t.cols for t in traces]
    sizes = np.fromiter(map(len, map(_get_ids, cols)), dtype=np.int64, count=len(cols))
    offsets = np.zeros(len(cols) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    n = int(offsets[-1])
    trace_of = np.repeat(np.arange(len(cols), dtype=np.int64), sizes)
    start: _I64 = np.fromiter(chain.from_iterable(map(_get_starts, cols)), dtype=np.int64, count=n)
    end: _I64 = start + np.fromiter(chain.from_iterable(map(_get_durations, cols)), dtype=np.int64, count=n)
    follows: _Bool = np.fromiter(chain.from_iterable(map(_get_follows, cols)), dtype=np.bool_, count=n)
    local = np.fromiter(chain.from_iterable(map(_get_parents, cols)), dtype=np.int64, count=n)
    par: _I64 = np.where(local >= 0, local + offsets[trace_of], -1)
    return _Batch(traces, offsets, trace_of, start, end, par, follows)


_get_ids = attrgetter("ids")
_get_starts = attrgetter("starts")
_get_durations = attrgetter("durations")
_get_follows = attrgetter("follows")
_get_parents = attrgetter("parents")


def _batch(traces: Sequence[Trace]) -> _Batch:
    if traces and all(t.__class__ is ColumnTrace for t in traces):
        return _column_batch(traces)  # type: ignore[arg-type]
    sizes = np.fromiter(map(len, map(_get_spans, traces)), dtype=np.int64, count=len(traces))
    offsets = np.zeros(len(traces) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    n = int(offsets[-1])
    trace_of = np.repeat(np.arange(len(traces), dtype=np.int64), sizes)
    flat = traces[0].spans if len(traces) == 1 else list(chain.from_iterable(map(_get_spans, traces)))
    start: _I64 = np.fromiter(map(_get_start, flat), dtype=np.int64, count=n)
    end: _I64 = start + np.fromiter(map(_get_duration, flat), dtype=np.int64, count=n)
    follows: _Bool = np.fromiter(
        map(is_, map(_get_ref, flat), repeat(RefType.FOLLOWS_FROM)), dtype=np.bool_, count=n
    )
    # Parents by ID (C-level loops; a missing parent or None maps to -1). Span IDs are random
    # and unique across traces in practice: then one index serves all, and a parent found in
    # another trace is no parent. Otherwise, one index per trace.
    index = dict(zip(map(_get_id, flat), range(n), strict=False))
    par: _I64
    if len(index) == n:
        par = np.fromiter(map(index.get, map(_get_parent, flat), repeat(-1)), dtype=np.int64, count=n)
        par[(par >= 0) & (trace_of[np.maximum(par, 0)] != trace_of)] = -1
    else:
        local: list[int] = []
        for t in traces:
            spans = t.spans
            index = dict(zip(map(_get_id, spans), range(len(spans)), strict=False))
            local.extend(map(index.get, map(_get_parent, spans), repeat(-1)))
        par = np.array(local, dtype=np.int64)
        par = np.where(par >= 0, par + offsets[trace_of], -1)
    batch = _Batch(traces, offsets, trace_of, start, end, par, follows)
    self_parent = np.flatnonzero(par == np.arange(n))
    if self_parent.size:
        trace, span = batch.locate(int(self_parent[0]))
        raise TraceParseError(
            "the span is its own parent", source=trace.source, trace_id=trace.trace_id, span_id=span.span_id
        )
    return batch


def _cycle_error(batch: _Batch) -> TraceParseError:
    """The error for parent references that loop, naming a span on the loop."""
    p = batch.par.tolist()
    state = [0] * len(p)  # 0 unknown, 1 on the chain being followed, 2 leads to a root
    for i in range(len(p)):
        followed = []
        j = i
        while j >= 0 and state[j] == 0:
            state[j] = 1
            followed.append(j)
            j = p[j]
        if j >= 0 and state[j] == 1:
            trace, span = batch.locate(j)
            return TraceParseError(
                "parent references form a cycle through this span",
                source=trace.source,
                trace_id=trace.trace_id,
                span_id=span.span_id,
            )
        for k in followed:
            state[k] = 2
    return TraceParseError("parent references form a cycle")


# ---------------------------------------------------------------------------------------------
# Vectorised evaluation

_Fold = Callable[[Any, Any], Any]


def _fold_ancestors(
    batch: _Batch, values: list[npt.NDArray[Any]], ops: list[_Fold]
) -> tuple[_I64, list[npt.NDArray[Any]], _I64]:
    """Fold each value over a span and all its ancestors, by pointer jumping.

    Returns the root of each span, the folded values and each span's depth. ``R[i]`` is an
    ancestor of ``i``; ``v[i]`` covers the spans from ``i`` to ``R[i]`` inclusive; each round
    doubles the distance, so O(log depth) rounds of O(n) array operations.
    """
    par = batch.par
    n = par.shape[0]
    nonroot = par >= 0
    jump = np.where(nonroot, par, np.arange(n))
    vals = [op(v, v[jump]) for v, op in zip(values, ops, strict=True)]
    depth: _I64 = nonroot.astype(np.int64)
    for _ in range(n.bit_length() + 2):
        nxt = jump[jump]
        if np.array_equal(nxt, jump):
            break
        vals = [op(v, v[jump]) for v, op in zip(vals, ops, strict=True)]
        depth = depth + depth[jump]
        jump = nxt
    else:
        raise _cycle_error(batch)
    if (par[jump] >= 0).any():
        raise _cycle_error(batch)
    return jump, vals, depth


def _lexsort(keys: Sequence[_I64]) -> _I64:
    """``np.lexsort(keys)`` (the last key primary; stable), by one stable sort of the keys packed
    into one integer when their ranges fit in 63 bits together, as they do for the traces of a
    window (times relative to the earliest, span counts); ``np.lexsort`` itself otherwise. The
    packed sort is many times faster than ``np.lexsort``'s pass per key."""
    n = keys[0].shape[0]
    if n < 2:
        return np.arange(n, dtype=np.int64)
    packed = np.zeros(n, dtype=np.int64)
    shift = 0
    for k in keys:  # the least significant key first, in the low bits
        lo, hi = int(k.min()), int(k.max())
        bits = (hi - lo).bit_length()
        if shift + bits > 63:
            return np.lexsort(keys)
        if bits:
            packed |= (k - lo).astype(np.int64) << shift
        shift += bits
    return np.argsort(packed, kind="stable")


def _group_keys(vgroup: _I64, value: _I64, pgroup: _I64, probe: _I64) -> tuple[_I64, _I64]:
    """Integer keys ordering (group, time) pairs, so one binary search serves every group."""
    lo = int(min(value.min(initial=0), probe.min(initial=0)))
    hi = int(max(value.max(initial=0), probe.max(initial=0)))
    width = hi - lo + 2
    top = int(max(vgroup.max(initial=0), pgroup.max(initial=0))) + 1
    if top * width < 2**62:
        return vgroup * width + (value - lo), pgroup * width + (probe - lo)
    # Times too far apart for the product: compare their ranks instead.
    _, inv = np.unique(np.concatenate([value, probe]), return_inverse=True)
    width = int(inv.max(initial=0)) + 2
    return vgroup * width + inv[: value.size], pgroup * width + inv[value.size :]


def _tolerance_cuts(cs: _I64, ce: _I64, par: _I64, kept: _Bool, tol: int) -> _I64:
    """Rule 5: each kept child's end, cut at the earliest later sibling's start it overlaps by
    at most ``tol`` (a sibling starting in ``[max(end - tol, start + 1), end)``)."""
    out = ce.copy()
    kc = np.flatnonzero(kept)
    if kc.size < 2:
        return out
    g = par[kc]
    order = _lexsort((cs[kc] - cs[g], g))
    sib = kc[order]
    sg = g[order]
    ss = cs[sib]
    low = np.maximum(ce[kc] - tol, cs[kc] + 1)
    keys, probes = _group_keys(sg, ss - cs[sg], g, low - cs[g])  # relative to the parent's start
    pos = np.minimum(np.searchsorted(keys, probes, side="left"), sib.size - 1)
    hit = (sg[pos] == g) & (ss[pos] >= low) & (ss[pos] < ce[kc])
    out[kc[hit]] = ss[pos[hit]]
    return out


class _Tree(NamedTuple):
    """The traces after rules 1-3 and 5, as arrays indexed by span."""

    par: _I64
    cs: _I64  # trimmed start
    ce: _I64  # trimmed (and cut) end
    drop: _Bool  # the edge to the parent is not followed
    root_of: _I64
    depth: _I64


SMALL_TRACE_SPANS = 300
"""A trace of at most this many spans is walked in plain Python by :func:`critical_path_of`, a
larger one evaluated with array operations; both give the same result. A speed choice, measured
by ``bench/bench_critical_path.py``: the array evaluation costs a fixed ~0.5 ms a call, then less
per span than the walk."""

ARRAY_MIN_SPANS = 1_000
"""A window of at least this many spans in all is evaluated by :func:`critical_paths` with array
operations, all its traces together; a smaller one trace by trace with :func:`critical_path_of`.
A speed choice, like :data:`SMALL_TRACE_SPANS`."""


def _size(trace: Trace) -> int:
    """The number of spans of a trace, without building a :class:`ColumnTrace`'s span objects."""
    return len(trace.cols.ids) if trace.__class__ is ColumnTrace else len(trace.spans)


def critical_path_of(trace: Trace, *, overlap_tolerance_us: int = 0) -> CriticalPath:
    """The critical path of one trace, computed once (see the module documentation for the rules).

    Meant to be called when a trace completes, its result kept (it is immutable) and reused by
    every window the trace belongs to: :func:`firm.tracing.features.window_features` takes these
    results directly. A trace of up to :data:`SMALL_TRACE_SPANS` spans is walked in plain Python
    (no array setup: tens of microseconds for a 30-span trace), a larger one with array operations.
    Raises :class:`TraceParseError` for parent references that form a cycle or a span that is its
    own parent, ``ValueError`` for a negative ``overlap_tolerance_us`` (microseconds).
    """
    if overlap_tolerance_us < 0:
        raise ValueError(f"overlap_tolerance_us must be >= 0, not {overlap_tolerance_us}")
    if _size(trace) <= SMALL_TRACE_SPANS:
        cp = _small_path(trace, overlap_tolerance_us)
        if cp is not None:
            return cp
    return _batch_paths([trace], overlap_tolerance_us)[0]


critical_path = critical_path_of
"""The same function as :func:`critical_path_of` (its first name)."""


def critical_paths(traces: Iterable[Trace], *, overlap_tolerance_us: int = 0) -> list[CriticalPath]:
    """The critical path of each trace of a window, in the traces' order.

    A window of :data:`ARRAY_MIN_SPANS` spans or more is evaluated together, one pass of array
    operations over all its spans (so many small traces cost no more per span than one big one);
    a smaller window trace by trace. The result is the same as :func:`critical_path_of` on each
    trace. Raises as :func:`critical_path_of`, naming the trace.
    """
    if overlap_tolerance_us < 0:
        raise ValueError(f"overlap_tolerance_us must be >= 0, not {overlap_tolerance_us}")
    todo = list(traces)
    if sum(map(_size, todo)) >= ARRAY_MIN_SPANS:
        return _batch_paths(todo, overlap_tolerance_us)
    return [critical_path_of(t, overlap_tolerance_us=overlap_tolerance_us) for t in todo]


def _batch_paths(todo: Sequence[Trace], overlap_tolerance_us: int) -> list[CriticalPath]:
    """The critical paths of ``todo`` by array operations over all their spans at once."""
    if not todo:
        return []
    with paused_gc():
        return _evaluate(todo, overlap_tolerance_us)


def _evaluate(todo: Sequence[Trace], overlap_tolerance_us: int) -> list[CriticalPath]:
    batch = _batch(todo)
    tree = _prepare(batch, overlap_tolerance_us)
    on_chain = _chain_members(tree)
    nonroot = batch.par >= 0
    _, (below_off, below_drop), _ = _fold_ancestors(
        batch, [nonroot & ~on_chain, tree.drop], [np.logical_or, np.logical_or]
    )
    ntr = len(todo)
    excluded = np.bincount(batch.trace_of[below_drop], minlength=ntr).tolist()
    moved = ~below_drop & ((tree.cs != batch.start) | (tree.ce != batch.end))
    trimmed = np.bincount(batch.trace_of[moved], minlength=ntr).tolist()
    shared, rows, main = _root_paths(batch, tree, np.flatnonzero(~below_off))
    return [
        CriticalPath._of_batch(t, shared, r, m, e, tr)
        for t, r, m, e, tr in zip(todo, rows, main, excluded, trimmed, strict=True)
    ]


def _prepare(batch: _Batch, tol: int) -> _Tree:
    """Rules 1-3 (trim into ancestors, drop children outside their parent or asynchronous) and
    rule 5 (cut small sibling overlaps, then trim the cut spans' subtrees again)."""
    start, end, par, follows = batch.start, batch.end, batch.par, batch.follows
    nonroot = par >= 0
    pidx = np.where(nonroot, par, 0)
    root_of, (cs, ce), depth = _fold_ancestors(batch, [start, end], [np.maximum, np.minimum])
    ps, pe = cs[pidx], ce[pidx]
    drop = nonroot & (follows | (start >= pe) | ((start < ps) & (end <= ps)))
    if tol > 0:
        ce_cut = _tolerance_cuts(cs, ce, par, nonroot & ~drop, tol)
        if (ce_cut != ce).any():
            _, (ce_new,), _ = _fold_ancestors(batch, [ce_cut], [np.minimum])
            shortened = ce_new[pidx] < ce[pidx]
            drop |= nonroot & shortened & (cs >= ce_new[pidx])
            ce = ce_new
    return _Tree(par, cs, ce, drop, root_of, depth)


def _chain_members(tree: _Tree) -> _Bool:
    """Per span: is it on its parent's chain (the LRC, its predecessor, and so on)?"""
    n = tree.par.shape[0]
    cs, ce, par = tree.cs, tree.ce, tree.par
    # Children grouped by parent, sorted by end (ties: earlier start, then trace order, last).
    kc = np.flatnonzero((par >= 0) & ~tree.drop)[::-1]  # reversed: stable sort puts later first
    pk = par[kc]
    # (times relative to the parent's start: the same order, and the keys pack into one integer)
    child = kc[_lexsort((cs[pk] - cs[kc], ce[kc] - cs[pk], pk))]
    on_chain = np.zeros(n, dtype=np.bool_)
    m = child.size
    if not m:
        return on_chain
    grp = par[child]
    cstart, cend = cs[child], ce[child]
    counts = np.bincount(grp, minlength=n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    # A child's predecessor: the last earlier child (in end order) that ends at or before its
    # start and starts strictly before it.
    base = cs[grp]  # times relative to the parent's start: small numbers, the same order
    ekeys, skeys = _group_keys(grp, cend - base, grp, cstart - base)
    pred = np.minimum(np.searchsorted(ekeys, skeys, side="right") - 1, np.arange(m) - 1)
    pred = _skip_back(pred, offsets[grp], cstart, cstart)
    # The LRC of each parent: its last child that starts before the parent ends.
    parents = np.flatnonzero(counts)
    first = _skip_back(offsets[parents + 1] - 1, offsets[parents], cstart, ce[parents])
    marks = _mark_chains(np.where(pred >= 0, pred, m), first[first >= 0], int(counts.max()), m)
    on_chain[child] = marks[:m]
    return on_chain


def _root_paths(batch: _Batch, tree: _Tree, on: _I64) -> tuple[_Shared, list[tuple[int, int]], list[int]]:
    """Self times, the forward path and the sections of the on-path spans ``on``; per trace, the
    range of its roots (ordered by start) and the index of its main root among them."""
    n = tree.par.shape[0]
    par, cs, ce, root_of, depth = tree.par, tree.cs, tree.ce, tree.root_of, tree.depth
    nonroot = par >= 0
    roots = np.flatnonzero(~nonroot)
    roots = roots[_lexsort((roots, batch.start[roots], batch.trace_of[roots]))]
    rank = np.zeros(n, dtype=np.int64)
    rank[roots] = np.arange(roots.size)

    # Self time: own (trimmed) duration minus the on-path children's.
    dur = ce - cs
    on_child = on[nonroot[on]]
    covered = np.bincount(par[on_child], weights=dur[on_child], minlength=n)
    selft = dur - np.rint(covered).astype(np.int64)

    # The path forward in time: pre-order, i.e. by root, start, then depth.
    path = on[_lexsort((depth[on], cs[on] - cs[root_of[on]], rank[root_of[on]]))]

    # Sections: the gap before each on-path child (from its previous on-path sibling's end, or
    # the parent's start) and the gap after a span's last on-path child (or the whole span).
    oc = on_child[_lexsort((cs[on_child] - cs[par[on_child]], par[on_child]))]
    op = par[oc]
    same = np.zeros(oc.size, dtype=np.bool_)
    same[1:] = op[1:] == op[:-1]
    prev_end = np.where(same, np.roll(ce[oc], 1), cs[op])
    last = np.ones(oc.size, dtype=np.bool_)
    last[:-1] = ~same[1:]
    tail_from = cs.copy()
    tail_from[op[last]] = ce[oc[last]]
    sec_span = np.concatenate([op, on])
    sec_start = np.concatenate([prev_end, tail_from[on]])
    sec_end = np.concatenate([cs[oc], ce[on]])
    keep = sec_end > sec_start
    sec_span, sec_start, sec_end = sec_span[keep], sec_start[keep], sec_end[keep]
    # Jaeger UI's order: root by root, backwards in time (the sections tile each root).
    order = _lexsort((cs[root_of[sec_span]] - sec_start, rank[root_of[sec_span]]))
    sec_span, sec_start, sec_end = sec_span[order], sec_start[order], sec_end[order]

    # Indices within each trace; where each root's rows are.
    local = np.arange(n, dtype=np.int64) - batch.offsets[batch.trace_of]
    bounds = np.arange(roots.size + 1)
    pcut = np.searchsorted(rank[root_of[path]], bounds).tolist()
    scut = np.searchsorted(rank[root_of[sec_span]], bounds).tolist()
    lists = _Rows(
        local[path].tolist(),
        cs[path].tolist(),
        ce[path].tolist(),
        selft[path].tolist(),
        depth[path].tolist(),
        local[sec_span].tolist(),
        sec_start.tolist(),
        sec_end.tolist(),
    )
    shared = _Shared(lists, local[roots].tolist(), pcut, scut)

    # Per trace: its roots' range, and its main root: the longest, the earliest on ties.
    rtrace = batch.trace_of[roots]
    first = np.searchsorted(rtrace, np.arange(len(batch.traces) + 1))
    rows = list(zip(first[:-1].tolist(), first[1:].tolist(), strict=True))
    longest = _lexsort((np.arange(roots.size), batch.start[roots] - batch.end[roots], rtrace))
    is_first = np.ones(roots.size, dtype=np.bool_)
    is_first[1:] = rtrace[longest[1:]] != rtrace[longest[:-1]]
    main = (longest[is_first] - first[:-1]).tolist()
    return shared, rows, main


def _skip_back(cand: _I64, lo: _I64, cstart: _I64, before: _I64) -> _I64:
    """Move each candidate position down (not below ``lo``) until its child starts strictly
    before ``before``; -1 when none does. Only zero-length children at that instant are skipped,
    so the loop runs a few times at most on real traces."""
    cand = np.where(cand >= lo, cand, -1)
    bad = np.flatnonzero(cand >= 0)
    bad = bad[cstart[cand[bad]] >= before[bad]]
    while bad.size:
        c = cand[bad] - 1
        c[c < lo[bad]] = -1
        cand[bad] = c
        bad = bad[c >= 0]
        bad = bad[cstart[cand[bad]] >= before[bad]]
    return cand


def _mark_chains(pred: _I64, first: _I64, longest: int, m: int) -> _Bool:
    """Mark every position on the chains ``first, pred[first], pred[pred[first]], ...``.

    ``pred`` maps a position to its predecessor, ``m`` meaning none. Chains are followed step
    by step for a while (real traces have short ones); what remains is marked by binary
    lifting: ``jumps[k]`` is the predecessor ``2**k`` steps back, and a mark at level ``k``
    covers ``2**k`` consecutive chain members, so long chains cost O(m log m), not O(m**2).
    """
    pred = np.append(pred, m)
    cover = np.zeros(m + 1, dtype=np.bool_)
    frontier = first
    for _ in range(64):
        if not frontier.size:
            return cover
        cover[frontier] = True
        frontier = pred[frontier]
        frontier = frontier[frontier < m]
    levels = max(longest - 1, 0).bit_length()
    jumps = [pred]
    for _ in range(1, levels):
        jumps.append(jumps[-1][jumps[-1]])
    lifted = np.zeros(m + 1, dtype=np.bool_)
    lifted[frontier] = True
    for k in range(levels - 1, -1, -1):
        at = np.flatnonzero(lifted)
        lifted[jumps[k][at]] = True
    cover |= lifted
    cover[m] = False
    return cover


def _main_index(paths: Sequence[RootPath]) -> int:
    if len(paths) == 1:
        return 0
    return max(range(len(paths)), key=lambda i: (paths[i].root.duration, -paths[i].root.start, -i))


# ---------------------------------------------------------------------------------------------
# One small trace, in plain Python

_FOLLOWS_FROM = RefType.FOLLOWS_FROM


def _children_of(spans: Sequence[Span]) -> tuple[dict[int, list[int]], list[int]] | None:
    """Each parent's children (indices, in the trace's order) and the roots; ``None`` when a span
    is its own parent. A parent ID missing from the trace makes a root."""
    get = {s.span_id: i for i, s in enumerate(spans)}.get
    children: dict[int, list[int]] = {}
    roots: list[int] = []
    for i, s in enumerate(spans):
        pid = s.parent_id
        j = None if pid is None else get(pid)
        if j is None:
            roots.append(i)
        elif j == i:
            return None
        else:
            kids = children.get(j)
            if kids is None:
                children[j] = [i]
            else:
                kids.append(i)
    return children, roots


def _small_path(trace: Trace, tol: int) -> CriticalPath | None:
    """The walk on plain lists, for one trace: rules 1-3 top-down, rule 5 as in the walk, then
    the backward walk under each root, children sorted only where the walk goes.

    ``None`` when a parent reference loops or points at its own span: the array evaluation then
    raises the error that names the span.
    """
    spans = trace.spans
    n = len(spans)
    tree = _children_of(spans)
    if tree is None:
        return None
    children, roots = tree
    start = [s.start for s in spans]
    cs = start[:]
    ce = [s.start + s.duration for s in spans]
    end = ce[:]
    # Rules 1-3, parents before children (breadth first from the roots).
    alive = [True] * n
    order = roots[:]
    trimmed = 0
    for q in order:
        kids = children.get(q)
        if kids is None:
            continue
        ps, pe, ap = cs[q], ce[q], alive[q]
        for c in kids:
            s, e = start[c], end[c]
            if not ap or s >= pe or (s < ps and e <= ps) or spans[c].ref_type is _FOLLOWS_FROM:
                alive[c] = False
            elif s < ps or e > pe:
                trimmed += 1
            if s < ps:
                cs[c] = ps
            if e > pe:
                ce[c] = pe
        order.extend(kids)
    if len(order) != n:
        return None  # a cycle: spans no root reaches
    if tol > 0:
        _cut_overlaps(order, [children.get(p, []) for p in range(n)], cs, ce, alive, tol)
        trimmed = sum(1 for i in range(n) if alive[i] and (cs[i] != start[i] or ce[i] != end[i]))
    excluded = alive.count(False)
    if len(roots) > 1:
        roots.sort(key=lambda r: (start[r], r))
    out = [_walk_lists(spans, r, children, alive, cs, ce) for r in roots]
    if len(out) == 1:
        main = 0
    else:
        main = max(range(len(out)), key=lambda k: (end[roots[k]] - start[roots[k]], -start[roots[k]], -k))
    return CriticalPath(trace.trace_id, out, main, excluded, trimmed)


def _walk_lists(
    spans: Sequence[Span],
    r: int,
    children: dict[int, list[int]],
    alive: list[bool],
    cs: list[int],
    ce: list[int],
) -> RootPath:
    """The backward walk under root ``r`` on lists (as :func:`_walk_root`), children sorted by
    end only for the spans the walk enters."""

    def kids_by_end(x: int) -> list[int]:
        kids = children.get(x)
        if kids is None:
            return []
        live = [c for c in kids if alive[c]]
        if len(live) > 1:  # by end (ties: earlier start, then trace order, taken first)
            live.sort(key=lambda c: (ce[c], -cs[c], -c))
        return live

    sec_x: list[int] = []
    sec_s: list[int] = []
    sec_e: list[int] = []
    done_x: list[int] = []
    done_d: list[int] = []
    selft: dict[int, int] = {}
    kr = kids_by_end(r)
    stack: list[list[Any]] = [[r, ce[r], kr, len(kr), 0]]
    while stack:
        frame = stack[-1]
        x, t, kids, j, d = frame
        j -= 1
        while j >= 0:
            c = kids[j]
            if ce[c] <= t and cs[c] < t:
                break
            j -= 1
        if j >= 0:  # the next child on the path, backwards in time
            c = kids[j]
            e = ce[c]
            if e < t:
                sec_x.append(x)
                sec_s.append(e)
                sec_e.append(t)
                selft[x] = selft.get(x, 0) + t - e
            frame[1] = cs[c]
            frame[3] = j
            kc = kids_by_end(c)
            stack.append([c, e, kc, len(kc), d + 1])
        else:  # no earlier child: the rest of the span is on the path
            s = cs[x]
            if s < t:
                sec_x.append(x)
                sec_s.append(s)
                sec_e.append(t)
                selft[x] = selft.get(x, 0) + t - s
            stack.pop()
            done_x.append(x)
            done_d.append(d)
    done_x.reverse()
    done_d.reverse()
    rows = _Rows(
        done_x,
        [cs[x] for x in done_x],
        [ce[x] for x in done_x],
        [selft.get(x, 0) for x in done_x],
        done_d,
        sec_x,
        sec_s,
        sec_e,
    )
    return RootPath(spans, r, rows, (0, len(done_x)), (0, len(sec_x)))


def _cut_overlaps(
    order: list[int], children: list[list[int]], cs: list[int], ce: list[int], alive: list[bool], tol: int
) -> None:
    """Rule 5 on lists, in place: cut each live child at the earliest later sibling start it
    overlaps by at most ``tol`` us, trim the cut spans' subtrees again and drop the children
    that start after their parent's new end."""
    cut = ce[:]
    for p in order:
        kids = [c for c in children[p] if alive[c]]
        for i in kids:
            later = [cs[j] for j in kids if cs[i] < cs[j] < ce[i] <= cs[j] + tol]
            if later:
                cut[i] = min(later)
    if cut == ce:
        return
    old = ce[:]
    for p in order:
        for c in children[p]:
            ce[c] = min(cut[c], ce[p])
            if alive[c] and ce[p] < old[p] and cs[c] >= ce[p]:
                alive[c] = False
    for p in order:
        for c in children[p]:
            alive[c] = alive[c] and alive[p]


# ---------------------------------------------------------------------------------------------
# The walk, span by span


def critical_path_walk(trace: Trace, *, overlap_tolerance_us: int = 0) -> CriticalPath:
    """The same result as :func:`critical_path`, computed by walking spans one by one.

    This is Algorithm 1 as stated in the module documentation, written for reading rather than
    speed; it is iterative, so chains of any depth work.
    """
    if overlap_tolerance_us < 0:
        raise ValueError(f"overlap_tolerance_us must be >= 0, not {overlap_tolerance_us}")
    w = _WalkTree(trace, overlap_tolerance_us)
    # Children by end time (ties: earlier start, then trace order, taken first).
    kids_by_end = [
        sorted((c for c in w.children[p] if w.alive[c]), key=lambda c: (w.ce[c], -w.cs[c], -c))
        for p in range(len(w.cs))
    ]
    out = [_walk_root(trace, w, kids_by_end, r) for r in sorted(w.roots, key=lambda r: (w.start[r], r))]
    return CriticalPath(trace.trace_id, tuple(out), _main_index(out), w.alive.count(False), w.trimmed)


class _WalkTree:
    """Rules 1-3 and 5 applied top-down, span by span."""

    def __init__(self, trace: Trace, tol: int) -> None:
        batch = _batch([trace])
        self.start: list[int] = batch.start.tolist()
        end: list[int] = batch.end.tolist()
        follows: list[bool] = batch.follows.tolist()
        n = len(self.start)
        self.children: list[list[int]] = [[] for _ in range(n)]
        self.roots: list[int] = []
        for i, p in enumerate(batch.par.tolist()):
            (self.roots if p < 0 else self.children[p]).append(i)
        # Top-down order (breadth first from the roots); spans not reached hang off a cycle.
        self.order: list[int] = []
        queue = deque(self.roots)
        while queue:
            i = queue.popleft()
            self.order.append(i)
            queue.extend(self.children[i])
        if len(self.order) != n:
            raise _cycle_error(batch)
        # Rules 1-3.
        self.cs, self.ce = self.start[:], end[:]
        self.alive = [True] * n
        for p in self.order:
            for c in self.children[p]:
                s, e, ps, pe = self.start[c], end[c], self.cs[p], self.ce[p]
                self.cs[c], self.ce[c] = max(s, ps), min(e, pe)
                dropped = follows[c] or s >= pe or (s < ps and e <= ps)
                self.alive[c] = self.alive[p] and not dropped
        if tol > 0:
            self._cut(tol)
        self.trimmed = sum(
            1 for i in range(n) if self.alive[i] and (self.cs[i] != self.start[i] or self.ce[i] != end[i])
        )

    def _cut(self, tol: int) -> None:
        """Rule 5: cut each child at the earliest later sibling start it overlaps by <= tol."""
        _cut_overlaps(self.order, self.children, self.cs, self.ce, self.alive, tol)


def _walk_root(trace: Trace, w: _WalkTree, kids_by_end: list[list[int]], r: int) -> RootPath:
    """The backward walk under root ``r``."""
    cs, ce = w.cs, w.ce
    sections: list[tuple[int, int, int]] = []
    done: list[tuple[int, int]] = []  # (span, depth), as the walk leaves them
    selft: dict[int, int] = {}
    # A frame: [span, t = how far back its time is accounted for, children still eligible, depth]
    stack: list[list[int]] = [[r, ce[r], len(kids_by_end[r]), 0]]
    while stack:
        frame = stack[-1]
        x, t, cur, d = frame
        kids = kids_by_end[x]
        j = cur - 1
        while j >= 0 and not (ce[kids[j]] <= t and cs[kids[j]] < t):
            j -= 1
        if j >= 0:  # the next child on the path, backwards in time
            c = kids[j]
            if ce[c] < t:
                sections.append((x, ce[c], t))
                selft[x] = selft.get(x, 0) + t - ce[c]
            frame[1], frame[2] = cs[c], j
            stack.append([c, ce[c], len(kids_by_end[c]), d + 1])
        else:  # no earlier child: the rest of the span, back to its start, is on the path
            if cs[x] < t:
                sections.append((x, cs[x], t))
                selft[x] = selft.get(x, 0) + t - cs[x]
            stack.pop()
            done.append((x, d))
    done.reverse()  # leaving order, reversed, is pre-order forward in time

    rows = _Rows(
        [x for x, _ in done],
        [cs[x] for x, _ in done],
        [ce[x] for x, _ in done],
        [selft.get(x, 0) for x, _ in done],
        [d for _, d in done],
        [x for x, _, _ in sections],
        [s for _, s, _ in sections],
        [e for _, _, e in sections],
    )
    return RootPath(trace.spans, r, rows, (0, len(done)), (0, len(sections)))
