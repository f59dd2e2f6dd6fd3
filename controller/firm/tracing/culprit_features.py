"""Per-instance culprit features of a window of traces, compared with a reference window.

FIRM's RI and CI (:mod:`firm.tracing.features`) say which instance dominates the *variance* of
latency, not what *changed*. This module decomposes every request into the parts that a fault
moves, per service instance ``(service, instance)``, and measures how each part grew between a
reference window (before the trouble) and the window under study.

**Parts of a request** (all times integer microseconds, read from the spans as recorded):

- *Entry span* of an instance: a span whose parent is absent or belongs to another instance (a
  server span, or a root).
- *Outgoing call* of an instance: a span below one of its entry spans, in the same instance, that
  is a client or producer span, or has a child in another instance, or (when the source records no
  span kind) is a leaf whose operation name contains ``client``; a direct child of the instance's
  span in another instance counts too.
- **Own processing time** (``own``) of an entry span: its duration minus the union of its outgoing
  calls' intervals (clipped to it). Keyed by (instance, entry operation).
- **Request gap** of a call (caller span ``P`` in instance ``A``, child ``C`` in instance ``B``):
  ``C.start - P.start``; **response gap**: ``P.end - C.end``. Keyed by the edge (A, B, C's
  operation). When ``P`` has several children in other instances, the request gap is taken for
  the earliest-starting one and the response gap for the latest-ending one. Clock offsets between
  hosts make single gaps negative; a constant offset cancels in their growth.
- **Leaf call**: an outgoing call with no child in another instance (an uninstrumented callee, e.g.
  a database client span): its duration, keyed by (instance, operation), charged to the caller.
- **Calls per trace**: occurrences of a key per trace of the window.

**Growth** of a key between the windows is the difference of its trimmed means (per call, in
microseconds; ``trim`` of the calls cut at each end) plus the growth of the mean excess over the
reference's ``tail_quantile`` (what the slowest calls add, which trimming leaves out: packet loss
and bursts show there), shrunk towards zero by ``noise_k`` standard
errors of that difference (Tukey-McLaughlin: winsorized spread) so that small windows and request
shapes that come in several modes do not invent growth; keys with fewer than ``min_calls`` calls in
either window are left out (the request and response gaps of an edge's rare operations are pooled
under one key for the edge first). An
instance's growth of a part is the sum over its keys of growth x calls per trace of the window:
microseconds added to an average request.

**Splitting a gap's growth** (a starved caller makes its callees' gaps grow too): the positive
growth ``g`` of a request or response gap on edge A->B is shared between A and B in proportion
to how consistently each side's *other* calls of the same kind grew: for the caller, its calls to
other callees; for the callee, the calls into it from other callers. The consistency of a side is
the calls-weighted mean of ``clip(g'/g, 0, 1)`` over those other edges, or a prior
(``caller_prior`` / ``callee_prior``) when there are none; equal zero consistencies split evenly.

**Blame** of an instance = its positive own and leaf-call growth + its shares of gap growth
(microseconds per request). Its **relative blame** divides that by the reference window's median
end-to-end latency (the duration of each trace's longest root span). Without a reference, blame
is the instance's time per request (own + leaf + half of every gap it takes part in) and the
relative value divides by the window's median latency.

Every feature of an instance (name -> value; ``None`` when not computable) is listed in
:data:`FEATURE_DOCS` with its unit. RI, CI and cp_share are FIRM's
(:func:`firm.tracing.features.window_features`), computed here from the same critical paths.
Nothing is NaN; nothing raises on odd data (a cycle of parent references excepted, as for critical
paths): negative gaps, client spans without a server child, duplicated traces (the copies of a
trace ID are one request: the union of their spans) and a changed request mix are counted in the
window's ``notes`` instead.

**Computation.** Per request, the parts and the self time of each instance on the main critical
path are computed once (:func:`trace_parts`: array operations over all the spans of a batch of
traces) and can be kept across windows (:class:`TracePartsCache`, as the control loop does);
:func:`culprit_features` aggregates the parts of both windows with array operations (one sort of
(key, value) per window, then group-wise trimmed means, winsorized spreads, tail excesses and
medians). The results are those of the per-object definition above, up to floating-point rounding
(``tests/unit/localize/test_feature_equivalence.py``).
"""

from __future__ import annotations

import contextlib
import math
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import chain, repeat
from operator import attrgetter, is_
from typing import NamedTuple, TypeVar, overload

import numpy as np
import numpy.typing as npt

from firm.tracing.critical_path import critical_paths
from firm.tracing.errors import TraceParseError
from firm.tracing.features import (
    CONSTANT_END_TO_END,
    CONSTANT_LATENCY,
    EMPTY_WINDOW,
    TOO_FEW_SAMPLES,
    ZERO_MEDIAN,
    InstanceFeatures,
    WindowFeatures,
)
from firm.tracing.model import RefType, Span, Trace

__all__ = [
    "FEATURE_DOCS",
    "CulpritFeatureConfig",
    "CulpritInstance",
    "CulpritWindow",
    "PartsTable",
    "TraceParts",
    "TracePartsCache",
    "WindowParts",
    "WindowProfile",
    "culprit_features",
    "profile_window",
    "trace_parts",
    "window_parts",
]

InstanceKey = tuple[str, str]
"""(service, instance)."""

FEATURE_DOCS: Mapping[str, str] = {
    "ri": "FIRM's relative importance: Pearson correlation of the instance's on-path time with the "
    "end-to-end critical-path latency (-1..1; None with too few samples).",
    "ci": "FIRM's congestion intensity: p99/p50 of the instance's on-path time (ratio).",
    "cp_share": "share of the window's critical-path time spent in the instance (0..1).",
    "cp_share_ref": "cp_share in the reference window (0..1; None without one).",
    "cp_share_growth": "cp_share minus cp_share_ref (share points, -1..1).",
    "calls_per_trace": "entry spans of the instance per trace of the window (count).",
    "calls_growth": "calls_per_trace / the same in the reference (ratio; None when it had none).",
    "own_us": "own processing time per request: median own time x calls per trace, summed over "
    "the instance's operations (us).",
    "own_ratio": "own time per request in the window / in the reference (ratio).",
    "own_growth_us": "growth of own processing time per request (us, shrunk by noise).",
    "leaf_growth_us": "growth of the instance's calls to uninstrumented callees per request (us).",
    "req_in_growth_us": "growth of request gaps of calls into the instance per request (us).",
    "resp_in_growth_us": "growth of response gaps of calls into the instance per request (us).",
    "req_out_growth_us": "growth of request gaps of the instance's outgoing calls per request (us).",
    "resp_out_growth_us": "growth of response gaps of the instance's outgoing calls per request (us).",
    "blame_own_us": "positive own-time and leaf-call growth charged to the instance (us per request).",
    "blame_in_us": "share of the gap growth of calls into the instance charged to it (us per request).",
    "blame_out_us": "share of the gap growth of its outgoing calls charged to it (us per request).",
    "blame_us": "blame_own_us + blame_in_us + blame_out_us (us per request); without a reference, "
    "the instance's time per request.",
    "blame_rel": "blame_us / median end-to-end latency of the reference (or of the window without "
    "one) (ratio).",
    "blame_raw_rel": "blame_rel computed from growths not shrunk by noise (ratio; a tie-breaker when "
    "no growth stands out of the noise).",
    "blame_share": "blame_us / the sum of blame_us over all instances (0..1).",
    "blame_vs_top": "blame_us / the largest blame_us of the window (0..1).",
    "latency_growth": "median end-to-end latency of the window / of the reference (ratio; window-wide).",
}
"""Every feature an instance gets, with its unit."""


@dataclass(frozen=True)
class CulpritFeatureConfig:
    """How culprit features are computed."""

    trim: float = 0.1
    """Share of the smallest and of the largest calls left out of a key's mean (0..0.45)."""
    min_calls: int = 2
    """Calls a key needs in each window before its growth is measured (count)."""
    noise_k: float = 2.0
    """Standard errors a growth is shrunk by towards zero (dimensionless)."""
    caller_prior: float = 0.4
    """Consistency assumed for a caller with no other callees (0..1)."""
    callee_prior: float = 0.6
    """Consistency assumed for a callee with no other callers (0..1)."""
    min_samples: int = 20
    """Requests an instance must be on the path of before RI and CI are computed (count)."""
    tail_quantile: float = 0.95
    """A key's growth also counts the growth of the mean excess over this quantile of the
    reference (what the slowest calls add: retransmissions, bursts; 0..1, 1 = off)."""

    def __post_init__(self) -> None:
        if not 0.5 <= self.tail_quantile <= 1.0:
            raise ValueError(f"tail_quantile must be in [0.5, 1], not {self.tail_quantile}")
        if not 0.0 <= self.trim <= 0.45:
            raise ValueError(f"trim must be in [0, 0.45], not {self.trim}")
        if self.min_calls < 1:
            raise ValueError(f"min_calls must be at least 1, not {self.min_calls}")
        if self.noise_k < 0:
            raise ValueError(f"noise_k must be >= 0, not {self.noise_k}")
        for name in ("caller_prior", "callee_prior"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], not {getattr(self, name)}")
        if self.min_samples < 2:
            raise ValueError(f"min_samples must be at least 2, not {self.min_samples}")


# -- Parts of requests, as arrays -------------------------------------------------------------------

EdgeKey = tuple[InstanceKey, InstanceKey, str]
"""(caller, callee, callee operation)."""
OpKey = tuple[InstanceKey, str]
"""(instance, operation)."""


@dataclass
class WindowProfile:
    """Samples of the parts of the requests of one window (microseconds), per key."""

    traces: int = 0
    latencies: list[int] = field(default_factory=list)
    """End-to-end latency of each request: its longest root span's duration (us)."""
    own: dict[OpKey, list[int]] = field(default_factory=lambda: defaultdict(list))
    leaf: dict[OpKey, list[int]] = field(default_factory=lambda: defaultdict(list))
    req: dict[EdgeKey, list[int]] = field(default_factory=lambda: defaultdict(list))
    resp: dict[EdgeKey, list[int]] = field(default_factory=lambda: defaultdict(list))
    instances: set[InstanceKey] = field(default_factory=set)
    notes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    """Counts of what was odd: ``negative_gaps``, ``client_without_server``, ``duplicate_traces``."""
    kept: list[Trace] = field(default_factory=list)
    """The traces used (one per trace ID)."""


_I64 = npt.NDArray[np.int64]
_F64 = npt.NDArray[np.float64]
_Bool = npt.NDArray[np.bool_]

OWN, LEAF, REQ, RESP = 0, 1, 2, 3
"""Part kinds: own processing, leaf call, request gap, response gap."""
PART_NAMES = ("own", "leaf", "req", "resp")
POOLED_OP = "*"
"""The operation under which an edge's rare operations are pooled."""
_KIND_CODE = {"client": 1, "producer": 1, "": 2}
"""Span kind -> 1 (an outgoing call), 2 (unknown), else 0."""

_get_spans = attrgetter("spans")
_get_start = attrgetter("start")
_get_duration = attrgetter("duration")
_get_id = attrgetter("span_id")
_get_parent = attrgetter("parent_id")
_get_ref = attrgetter("ref_type")
_get_kind = attrgetter("kind")
_get_op = attrgetter("operation")
_get_instance = attrgetter("service", "instance")


class PartsTable:
    """Integer ids of the instances, operations and part keys seen; the windows compared with each
    other share one table. A key is (instance, -1, operation) for own time and leaf calls and
    (caller, callee, callee operation) for gaps. Grows with the application's distinct instances
    and operations, not with its requests."""

    def __init__(self) -> None:
        self.instance_ids: dict[InstanceKey, int] = {}
        self.instances: list[InstanceKey] = []
        self.op_ids: dict[str, int] = {}
        self.ops: list[str] = []
        self.op_client: list[bool] = []
        """Per operation: its name contains ``client`` (any case)."""
        self.key_ids: dict[tuple[int, int, int], int] = {}
        self.keys: list[tuple[int, int, int]] = []
        self._columns: _I64 | None = None

    def _instance(self, key: InstanceKey) -> int:
        found = self.instance_ids.get(key)
        if found is None:
            found = self.instance_ids[key] = len(self.instances)
            self.instances.append(key)
        return found

    def _op(self, name: str) -> int:
        found = self.op_ids.get(name)
        if found is None:
            found = self.op_ids[name] = len(self.ops)
            self.ops.append(name)
            self.op_client.append("client" in name.lower())
        return found

    def key(self, a: int, b: int, op: int) -> int:
        """The id of the key (instance ids ``a``, ``b`` (-1: none), operation id ``op``)."""
        found = self.key_ids.get((a, b, op))
        if found is None:
            found = self.key_ids[(a, b, op)] = len(self.keys)
            self.keys.append((a, b, op))
        return found

    def instance_ids_of(self, spans: Sequence[Span]) -> _I64:
        pairs = list(map(_get_instance, spans))
        ids = list(map(self.instance_ids.get, pairs))
        if None in ids:
            ids = list(map(self._instance, pairs))
        return np.array(ids, dtype=np.int64)

    def op_ids_of(self, spans: Sequence[Span]) -> _I64:
        names = list(map(_get_op, spans))
        ids = list(map(self.op_ids.get, names))
        if None in ids:
            ids = list(map(self._op, names))
        return np.array(ids, dtype=np.int64)

    def keys_of(self, a: _I64, b: _I64, op: _I64) -> _I64:
        """Key ids of the rows (a, b, op), interned."""
        if not a.size:
            return np.zeros(0, dtype=np.int64)
        ni, no = len(self.instances) + 1, len(self.ops)
        combined = (a * ni + (b + 1)) * no + op
        uniq, inverse = np.unique(combined, return_inverse=True)
        ua, rest = np.divmod(uniq, ni * no)
        ub, uo = np.divmod(rest, no)
        ids = np.fromiter(
            (self.key(x, y - 1, z) for x, y, z in zip(ua.tolist(), ub.tolist(), uo.tolist(), strict=True)),
            dtype=np.int64,
            count=uniq.size,
        )
        out: _I64 = ids[inverse.reshape(-1)]
        return out

    def key_columns(self) -> tuple[_I64, _I64, _I64]:
        """(a, b, op) of every key id, as arrays."""
        if self._columns is None or self._columns.shape[0] != len(self.keys):
            self._columns = np.array(self.keys, dtype=np.int64).reshape(-1, 3)
        cols = self._columns
        return cols[:, 0], cols[:, 1], cols[:, 2]


class TraceParts(NamedTuple):
    """The parts of one request, computed once (see :func:`trace_parts`); ids refer to a
    :class:`PartsTable`."""

    trace: Trace
    latency: int
    """Duration of the longest root span (the earliest on ties), us."""
    parts: _I64
    """Shape (m, 3): part kind (:data:`OWN`, :data:`LEAF`, :data:`REQ`, :data:`RESP`), key id,
    value (us)."""
    instances: _I64
    """Instance ids of the trace's spans, unique."""
    negative_gaps: int
    client_without_server: int
    path: _I64 | None
    """Shape (p, 2): instance id, its self time on the main critical path (us); ``None`` when
    critical paths were not computed."""
    path_start: int
    """Start of the main critical path's root, us since the epoch."""
    path_end: int
    """End of the main critical path's root, us since the epoch."""


class WindowParts(Sequence[Trace]):
    """A window of requests (one per trace ID) with the parts of each; a sequence of its traces."""

    def __init__(
        self, table: PartsTable, parts: Sequence[TraceParts], *, duplicates: int = 0, with_paths: bool = True
    ) -> None:
        self.table = table
        self.parts = list(parts)
        self.duplicates = duplicates
        """Trace IDs seen more than once in the input (merged into one request)."""
        self.with_paths = with_paths
        self.memo: dict[object, object] = {}
        """What was computed from these parts alone (their aggregates), kept for the next use."""

    def __len__(self) -> int:
        return len(self.parts)

    @overload
    def __getitem__(self, index: int) -> Trace: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Trace]: ...

    def __getitem__(self, index: int | slice) -> Trace | Sequence[Trace]:
        if isinstance(index, slice):
            return [p.trace for p in self.parts[index]]
        return self.parts[index].trace


def _merge_duplicates(traces: Iterable[Trace]) -> tuple[list[Trace], int]:
    """One trace per trace ID (the union of the spans of every copy, by span ID), and how many
    copies were merged."""
    by_id: dict[str, Trace] = {}
    duplicates = 0
    for t in traces:
        prev = by_id.get(t.trace_id)
        if prev is not None:
            duplicates += 1
            seen = {s.span_id for s in prev.spans}
            extra = tuple(s for s in t.spans if s.span_id not in seen)
            if extra:
                by_id[t.trace_id] = Trace(
                    t.trace_id,
                    prev.spans + extra,
                    prev.warnings + t.warnings,
                    prev.sources + tuple(x for x in t.sources if x not in prev.sources),
                )
            continue
        by_id[t.trace_id] = t
    return list(by_id.values()), duplicates


def window_parts(
    traces: Iterable[Trace], table: PartsTable | None = None, *, with_paths: bool = True
) -> WindowParts:
    """The parts of every request of ``traces`` (duplicated trace IDs merged), all traces at once."""
    kept, duplicates = _merge_duplicates(traces)
    table = table or PartsTable()
    return WindowParts(
        table, trace_parts(kept, table, with_paths=with_paths), duplicates=duplicates, with_paths=with_paths
    )


def _parents(traces: Sequence[Trace], flat: Sequence[Span], offsets: _I64, trace_of: _I64) -> _I64:
    """Global index of each span's parent; -1 for none, a parent outside the trace or itself."""
    n = len(flat)
    index = dict(zip(map(_get_id, flat), range(n), strict=False))
    par: _I64
    if len(index) == n:
        par = np.fromiter(map(index.get, map(_get_parent, flat), repeat(-1)), dtype=np.int64, count=n)
        par[(par >= 0) & (trace_of[np.maximum(par, 0)] != trace_of)] = -1
    else:
        local: list[int] = []
        for t in traces:
            spans = t.spans
            idx = dict(zip(map(_get_id, spans), range(len(spans)), strict=False))
            local.extend(map(idx.get, map(_get_parent, spans), repeat(-1)))
        par = np.array(local, dtype=np.int64)
        par = np.where(par >= 0, par + offsets[trace_of], -1)
    par[par == np.arange(n)] = -1
    return par


def _first_in_groups(group: _I64) -> _Bool:
    """Mask of the first row of each run of equal values of ``group`` (sorted by group)."""
    mask = np.ones(group.size, dtype=np.bool_)
    mask[1:] = group[1:] != group[:-1]
    return mask


def _union_lengths(group: _I64, a: _I64, b: _I64, size: int) -> _I64:
    """Per group id (``0..size-1``): length of the union of the intervals ``[a, b)`` (``0 <= a < b``)."""
    out = np.zeros(size, dtype=np.int64)
    if not group.size:
        return out
    order = np.lexsort((a, group))
    g, a, b = group[order], a[order], b[order]
    rank = np.cumsum(_first_in_groups(g)) - 1
    width = int(b.max()) + 1
    if int(rank[-1]) * width < 2**62:
        base = rank * width
        reach = np.maximum.accumulate(base + b)
        prev = np.empty_like(reach)
        prev[0] = -1
        prev[1:] = reach[:-1] - base[1:]
        contrib = np.maximum(b - np.maximum(a, prev), 0)
    else:  # spans too long for one array: group by group
        contrib = np.zeros_like(b)
        for lo, hi in _runs(g):
            reach_g = np.maximum.accumulate(b[lo:hi])
            prev_g = np.concatenate(([-1], reach_g[:-1]))
            contrib[lo:hi] = np.maximum(b[lo:hi] - np.maximum(a[lo:hi], prev_g), 0)
    np.add.at(out, g, contrib)
    return out


def _runs(sorted_group: _I64) -> list[tuple[int, int]]:
    starts = np.flatnonzero(_first_in_groups(sorted_group)).tolist()
    return list(zip(starts, [*starts[1:], sorted_group.size], strict=True))


class _Spans(NamedTuple):
    """The spans of a batch of traces as arrays (global indices; parents -1 for none)."""

    ntr: int
    offsets: _I64
    trace_of: _I64
    start: _I64
    dur: _I64
    end: _I64
    inst: _I64
    op: _I64
    code: _I64
    sync: _Bool
    par: _I64


def _spans_of(traces: Sequence[Trace], table: PartsTable) -> _Spans:
    ntr = len(traces)
    sizes = np.fromiter(map(len, map(_get_spans, traces)), dtype=np.int64, count=ntr)
    offsets = np.zeros(ntr + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    n = int(offsets[-1])
    trace_of = np.repeat(np.arange(ntr, dtype=np.int64), sizes)
    flat: Sequence[Span] = traces[0].spans if ntr == 1 else list(chain.from_iterable(map(_get_spans, traces)))
    start = np.fromiter(map(_get_start, flat), dtype=np.int64, count=n)
    dur = np.fromiter(map(_get_duration, flat), dtype=np.int64, count=n)
    code = np.fromiter(map(_KIND_CODE.get, map(_get_kind, flat), repeat(0)), dtype=np.int64, count=n)
    sync = np.fromiter(map(is_, map(_get_ref, flat), repeat(RefType.CHILD_OF)), dtype=np.bool_, count=n)
    return _Spans(
        ntr,
        offsets,
        trace_of,
        start,
        dur,
        start + dur,
        table.instance_ids_of(flat),
        table.op_ids_of(flat),
        code,
        sync,
        _parents(traces, flat, offsets, trace_of),
    )


def _own_and_leaf(traces: Sequence[Trace], sp: _Spans, table: PartsTable) -> tuple[_I64, _I64, _I64, _I64]:
    """Entry spans and their own time, leaf calls, and per trace the calls without a server child."""
    n = sp.par.size
    par, inst, code = sp.par, sp.inst, sp.code
    nonroot = par >= 0
    pidx = np.where(nonroot, par, 0)
    same = nonroot & (inst[pidx] == inst)
    has_children = np.zeros(n, dtype=np.bool_)
    has_children[par[nonroot]] = True
    has_cross = np.zeros(n, dtype=np.bool_)
    has_cross[par[nonroot & ~same]] = True
    op_client = np.array(table.op_client, dtype=np.bool_)[sp.op]
    is_call = (code == 1) | has_cross | (~has_children & (code == 2) & op_client)
    entry = ~same
    # The region an entry span's own time is taken over: it and its same-instance descendants
    # reached through spans that are not calls. stop[i]: the first non-internal span up i's chain.
    stop = np.where(same & ~is_call, par, np.arange(n, dtype=np.int64))
    for _ in range(n.bit_length() + 2):
        nxt = stop[stop]
        if np.array_equal(nxt, stop):
            break
        stop = nxt
    else:
        raise _cycle(traces, sp.trace_of, np.flatnonzero(stop[stop] != stop))
    # Outgoing calls of each region (children of its spans in another instance, or calls).
    cidx = np.flatnonzero(nonroot & entry[stop][pidx] & (~same | is_call))
    owner = stop[par[cidx]]
    lo = np.maximum(sp.start[cidx], sp.start[owner])
    hi = np.minimum(sp.end[cidx], sp.end[owner])
    keep = hi > lo
    covered = _union_lengths(
        owner[keep], lo[keep] - sp.start[owner[keep]], hi[keep] - sp.start[owner[keep]], n
    )
    own_idx = np.flatnonzero(entry)
    leaf_idx = cidx[same[cidx] & ~has_cross[cidx]]
    no_server = np.bincount(
        sp.trace_of[leaf_idx[(code[leaf_idx] == 1) | ~has_children[leaf_idx]]], minlength=sp.ntr
    )
    return own_idx, sp.dur[own_idx] - covered[own_idx], leaf_idx, no_server


def _gaps(sp: _Spans) -> tuple[_I64, _I64, _I64, _I64]:
    """Request gaps (to the earliest-starting child in another instance) and response gaps (from
    the latest-ending synchronous one; ties: the first in the trace's order): the child spans."""
    par = sp.par
    cc = np.flatnonzero((par >= 0) & (sp.inst[np.maximum(par, 0)] != sp.inst))
    order = np.lexsort((cc, sp.start[cc], par[cc]))
    req_child = cc[order][_first_in_groups(par[cc][order])]
    sc = cc[sp.sync[cc]]
    order = np.lexsort((sc, -sp.end[sc], par[sc]))
    resp_child = sc[order][_first_in_groups(par[sc][order])]
    req_val = sp.start[req_child] - sp.start[par[req_child]]
    resp_val = sp.end[par[resp_child]] - sp.end[resp_child]
    return req_child, req_val, resp_child, resp_val


def _paths(
    traces: Sequence[Trace], sp: _Spans, table: PartsTable
) -> tuple[_I64, list[int], list[int], list[int]]:
    """Per trace, the self time of each instance on the main critical path: rows (instance,
    microseconds), the rows' cut per trace, the main roots' starts and ends."""
    ntr = sp.ntr
    mains = [cp.main for cp in critical_paths(traces)]
    steps = [m.step_span for m in mains]
    counts = np.fromiter(map(len, steps), dtype=np.int64, count=ntr)
    step_trace = np.repeat(np.arange(ntr, dtype=np.int64), counts)
    step_inst = sp.inst[np.concatenate(steps) + sp.offsets[step_trace]]
    step_self = np.concatenate([m.step_self for m in mains])
    width = len(table.instances) + 1
    pk, pinv = np.unique(step_trace * width + step_inst, return_inverse=True)
    sums = np.zeros(pk.size, dtype=np.int64)
    np.add.at(sums, pinv.reshape(-1), step_self)
    ptrace, pinst = np.divmod(pk, width)
    return (
        np.stack([pinst, sums], axis=1),
        np.searchsorted(ptrace, np.arange(ntr + 1)).tolist(),
        [m.root.start for m in mains],
        [m.root.end for m in mains],
    )


def trace_parts(traces: Sequence[Trace], table: PartsTable, *, with_paths: bool = True) -> list[TraceParts]:
    """The parts of each trace (see the module doc), all traces' spans evaluated together with
    array operations; ``with_paths`` also takes each trace's main critical path
    (:func:`~firm.tracing.critical_path.critical_paths`) and the self time of each instance on it.

    Trace IDs are not merged here (see :func:`window_parts`). Raises
    :class:`~firm.tracing.errors.TraceParseError` when parent references form a cycle.
    """
    ntr = len(traces)
    if not ntr:
        return []
    sp = _spans_of(traces, table)
    own_idx, own_val, leaf_idx, no_server = _own_and_leaf(traces, sp, table)
    req_child, req_val, resp_child, resp_val = _gaps(sp)
    trace_of, inst, op, par = sp.trace_of, sp.inst, sp.op, sp.par
    req_parent, resp_parent = par[req_child], par[resp_child]
    negative = np.bincount(trace_of[req_parent[req_val < 0]], minlength=ntr) + np.bincount(
        trace_of[resp_parent[resp_val < 0]], minlength=ntr
    )
    none = np.full(own_idx.size + leaf_idx.size, -1, dtype=np.int64)
    key_a = np.concatenate([inst[own_idx], inst[leaf_idx], inst[req_parent], inst[resp_parent]])
    key_b = np.concatenate([none, inst[req_child], inst[resp_child]])
    key_op = np.concatenate([op[own_idx], op[leaf_idx], op[req_child], op[resp_child]])
    kinds = np.repeat(
        np.array([OWN, LEAF, REQ, RESP], dtype=np.int64),
        [own_idx.size, leaf_idx.size, req_child.size, resp_child.size],
    )
    values = np.concatenate([own_val, sp.dur[leaf_idx], req_val, resp_val])
    row_trace = np.concatenate(
        [trace_of[own_idx], trace_of[leaf_idx], trace_of[req_parent], trace_of[resp_parent]]
    )
    rows = np.stack([kinds, table.keys_of(key_a, key_b, key_op), values], axis=1)
    order = np.argsort(row_trace, kind="stable")
    rows = rows[order]
    rc = np.searchsorted(row_trace[order], np.arange(ntr + 1)).tolist()

    # The request's latency: its longest root (the earliest on ties, then the first).
    roots = np.flatnonzero(par < 0)
    order = np.lexsort((roots, sp.start[roots], -sp.dur[roots], trace_of[roots]))
    main = roots[order][_first_in_groups(trace_of[roots][order])]
    if main.size != ntr:
        have = np.zeros(ntr, dtype=np.bool_)
        have[trace_of[main]] = True
        raise _cycle(traces, trace_of, sp.offsets[np.flatnonzero(~have)])

    width = len(table.instances) + 1
    inst_trace, inst_ids = np.divmod(np.unique(trace_of * width + inst), width)
    ic = np.searchsorted(inst_trace, np.arange(ntr + 1)).tolist()
    path_rows: _I64 | None = None
    pc: list[int] = []
    p_start = p_end = [0] * ntr
    if with_paths:
        path_rows, pc, p_start, p_end = _paths(traces, sp, table)
    lat, neg, nos = sp.dur[main].tolist(), negative.tolist(), no_server.tolist()
    return [
        TraceParts(
            traces[t],
            lat[t],
            rows[rc[t] : rc[t + 1]],
            inst_ids[ic[t] : ic[t + 1]],
            neg[t],
            nos[t],
            None if path_rows is None else path_rows[pc[t] : pc[t + 1]],
            p_start[t],
            p_end[t],
        )
        for t in range(ntr)
    ]


def _cycle(traces: Sequence[Trace], trace_of: _I64, where: _I64) -> TraceParseError:
    t = traces[int(trace_of[int(where[0])])] if where.size else traces[0]
    return TraceParseError(
        "parent references form a cycle, so the trace has no root",
        source=t.source,
        trace_id=t.trace_id,
        fix="parse the trace with firm.tracing.parse, or drop it",
    )


class TracePartsCache:
    """The parts of recent requests by trace ID, computed once and kept across the windows a
    request belongs to (the control loop's windows overlap, and its reference is an earlier
    window). Bounded: the requests computed longest ago go first (a request evicted while still
    in use is computed again when next asked for).

    A trace ID whose spans changed since it was cached (late spans) is computed again.
    """

    def __init__(self, max_traces: int = 20_000, *, with_paths: bool = True) -> None:
        if max_traces < 1:
            raise ValueError(f"max_traces must be at least 1, not {max_traces}")
        self.max_traces = max_traces
        self.with_paths = with_paths
        self.table = PartsTable()
        self._entries: OrderedDict[str, TraceParts] = OrderedDict()
        self.computed = 0
        """Requests whose parts were computed (misses), in total."""

    def __len__(self) -> int:
        return len(self._entries)

    def window(self, traces: Iterable[Trace]) -> WindowParts:
        """The window's parts (duplicated trace IDs merged), computing only the requests not cached.

        Raises :class:`~firm.tracing.errors.TraceParseError` as :func:`trace_parts`.
        """
        todo = list(traces)
        ids = [t.trace_id for t in todo]
        if len(set(ids)) == len(ids):
            kept, duplicates = todo, 0
        else:
            kept, duplicates = _merge_duplicates(todo)
            ids = [t.trace_id for t in kept]
        entries = self._entries
        found: list[TraceParts | None] = list(map(entries.get, ids))
        missing = [
            i
            for i, (t, hit) in enumerate(zip(kept, found, strict=True))
            if hit is None or not (hit.trace is t or hit.trace.spans == t.spans)
        ]
        if missing:
            fresh = trace_parts([kept[i] for i in missing], self.table, with_paths=self.with_paths)
            self.computed += len(missing)
            for i, part in zip(missing, fresh, strict=True):
                found[i] = part
                entries.pop(ids[i], None)
                entries[ids[i]] = part  # the newest last: the oldest go first
            while len(entries) > self.max_traces:
                entries.popitem(last=False)
        return WindowParts(
            self.table, [p for p in found if p is not None], duplicates=duplicates, with_paths=self.with_paths
        )

    def ingest(self, traces: Iterable[Trace]) -> int:
        """Compute and keep the parts of the requests not cached yet; returns how many were
        computed. A request that cannot be profiled (a cycle of parent references) is left out."""
        before = self.computed
        todo = list(traces)
        try:
            self.window(todo)
        except TraceParseError:
            for t in todo:
                with contextlib.suppress(TraceParseError):
                    self.window([t])
        return self.computed - before


def profile_window(traces: Iterable[Trace]) -> WindowProfile:
    """Cut every request of ``traces`` into own times, gaps and leaf calls (see the module doc),
    as lists of samples per key (for reading; the features are computed from :func:`window_parts`).

    A trace ID seen more than once (the same trace twice, or a trace split over several inputs) is
    one request: the union of its spans by span ID (counted in ``notes`` as ``duplicate_traces``).
    """
    wp = window_parts(traces, with_paths=False)
    table = wp.table
    prof = WindowProfile()
    prof.traces = len(wp)
    if wp.duplicates:
        prof.notes["duplicate_traces"] = wp.duplicates
    inst = table.instances
    for p in wp.parts:
        prof.kept.append(p.trace)
        prof.latencies.append(p.latency)
        prof.instances.update(inst[i] for i in p.instances.tolist())
        if p.negative_gaps:
            prof.notes["negative_gaps"] += p.negative_gaps
        if p.client_without_server:
            prof.notes["client_without_server"] += p.client_without_server
        for kind, key, value in p.parts.tolist():
            a, b, op = table.keys[key]
            if kind in (OWN, LEAF):
                (prof.own if kind == OWN else prof.leaf)[(inst[a], table.ops[op])].append(value)
            else:
                (prof.req if kind == REQ else prof.resp)[(inst[a], inst[b], table.ops[op])].append(value)
    return prof


# -- Growth and blame ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CulpritInstance:
    """The culprit features of one instance of a window."""

    service: str
    instance: str
    features: Mapping[str, float | None]
    """Name -> value, as listed in :data:`FEATURE_DOCS` (``None`` when not computable)."""


@dataclass(frozen=True)
class CulpritWindow:
    """Culprit features of every instance seen in a window."""

    requests: int
    """Traces in the window (one per trace ID)."""
    reference_requests: int | None
    """Traces in the reference window, ``None`` without one."""
    reference_used: bool
    latency_p50_us: float | None
    reference_latency_p50_us: float | None
    instances: tuple[CulpritInstance, ...]
    """Sorted by service, then instance."""
    notes: Mapping[str, int]
    """What was odd in the window and the reference (``negative_gaps``, ``client_without_server``,
    ``duplicate_traces``, ``unmatched_keys``, ``only_in_window``, ``only_in_reference``)."""
    paths: WindowFeatures | None = None
    """FIRM's features of the window (RI, CI, cp_share), as computed."""


class _Groups(NamedTuple):
    """Samples sorted by (group, value)."""

    ids: _I64
    """Group ids, ascending."""
    first: _I64
    """First row of each group."""
    sizes: _I64
    values: _F64
    """The sorted values."""
    row: _I64
    """Index (into ``ids``) of each sorted row's group."""


def _sort_pairs(group: _I64, value: _I64) -> tuple[_I64, _I64]:
    """``group`` and ``value`` sorted by (group, value) (``group >= 0``)."""
    if not group.size:
        return group, value
    vmin = int(value.min())
    width = int(value.max()) - vmin + 1
    if (int(group.max()) + 1) * width < 2**62:  # one sort of one integer key
        combined = group * width + (value - vmin)
        combined.sort()
        g, v = np.divmod(combined, width)
        return g, v + vmin
    order = np.lexsort((value, group))
    return group[order], value[order]


def _grouped(group: _I64, value: _I64) -> _Groups:
    g, v = _sort_pairs(group, value)
    mask = _first_in_groups(g)
    first = np.flatnonzero(mask)
    count = np.diff(np.append(first, g.size))
    return _Groups(g[first], first, count, v.astype(np.float64), np.cumsum(mask) - 1)


def _medians(gr: _Groups) -> _F64:
    """np.median of each group."""
    half = gr.sizes // 2
    upper = gr.values[gr.first + half]
    lower = gr.values[gr.first + np.maximum(half - 1, 0)]
    out: _F64 = np.where(gr.sizes % 2 == 1, upper, (lower + upper) / 2)
    return out


def _quantiles(values: _F64, first: _I64, count: _I64, q: float) -> _F64:
    """np.quantile(..., q) (linear) of each group of sorted ``values``."""
    virtual = (count - 1) * q
    prev = np.floor(virtual)
    gamma = virtual - prev
    lo = first + prev.astype(np.int64)
    hi = first + np.minimum(prev.astype(np.int64) + 1, count - 1)
    a, b = values[lo], values[hi]
    diff = b - a
    out: _F64 = np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)
    return out


def _group_sum(values: _F64, first: _I64) -> _F64:
    if not values.size:
        return np.zeros(first.size, dtype=np.float64)
    return np.add.reduceat(values, first)


def _trimmed(gr: _Groups, trim: float) -> tuple[_F64, _F64]:
    """Per group: the ``trim``-trimmed mean and its standard error (Tukey-McLaughlin: the
    winsorized standard deviation / ((1 - 2 trim) sqrt(n)))."""
    n = gr.sizes
    cut = np.floor(trim * n).astype(np.int64)
    csum = np.concatenate(([0.0], np.cumsum(gr.values)))
    lo_i, hi_i = gr.first + cut, gr.first + n - cut
    core_n = n - 2 * cut
    mean = (csum[hi_i] - csum[lo_i]) / core_n
    low, high = gr.values[lo_i], gr.values[hi_i - 1]
    wins_mean = ((csum[hi_i] - csum[lo_i]) + cut * low + cut * high) / n
    wins = np.clip(gr.values, low[gr.row], high[gr.row])
    dev = wins - wins_mean[gr.row]
    ss = _group_sum(dev * dev, gr.first)
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.where(n > 1, np.sqrt(ss / np.maximum(n - 1, 1)) / ((1.0 - 2.0 * trim) * np.sqrt(n)), 0.0)
    return mean, se


def _excess(values: _F64, row: _I64, first: _I64, count: _I64, cut: _F64) -> tuple[_F64, _F64]:
    """Per group: mean of max(value - cut, 0) and its variance (ddof 1; 0 for one value)."""
    e = np.maximum(values - cut[row], 0.0)
    mean = _group_sum(e, first) / count
    dev = e - mean[row]
    var = _group_sum(dev * dev, first) / np.maximum(count - 1, 1)
    return mean, np.where(count > 1, var, 0.0)


def _diff_growth(win: _Groups, ref: _Groups, cfg: CulpritFeatureConfig) -> tuple[_I64, _F64, _F64, _F64]:
    """Groups seen at least ``min_calls`` times in both windows: their ids, the window's calls,
    the difference of the trimmed means plus the tail term (us per call), and its standard error."""
    both, wi, ri = np.intersect1d(win.ids, ref.ids, assume_unique=True, return_indices=True)
    ok = (win.sizes[wi] >= cfg.min_calls) & (ref.sizes[ri] >= cfg.min_calls)
    both, wi, ri = both[ok], wi[ok], ri[ok]
    wm, ws = _trimmed(win, cfg.trim)
    rm, rs = _trimmed(ref, cfg.trim)
    d = wm[wi] - rm[ri]
    var = ws[wi] ** 2 + rs[ri] ** 2
    if cfg.tail_quantile < 1.0 and both.size:
        # Growth of the mean excess over the reference's quantile, beyond the shift d.
        cut_r = np.full(ref.ids.size, np.inf)
        cut_r[ri] = _quantiles(ref.values, ref.first[ri], ref.sizes[ri], cfg.tail_quantile)
        shift_w = np.full(win.ids.size, np.inf)
        cut_w = np.full(win.ids.size, np.inf)
        cut_w[wi] = cut_r[ri]
        shift_w[wi] = d
        ea, va = _excess(win.values - cut_w[win.row], win.row, win.first, win.sizes, shift_w)
        eb, vb = _excess(ref.values, ref.row, ref.first, ref.sizes, cut_r)
        na, nb = win.sizes[wi], ref.sizes[ri]
        tvar = np.where((na > 1) & (nb > 1), va[wi] / na + vb[ri] / nb, 0.0)
        d = d + (ea[wi] - eb[ri])
        var = var + tvar
    return both, win.sizes[wi].astype(np.float64), d, np.sqrt(var)


def _shrink(d: _F64, se: _F64, noise_k: float) -> _F64:
    """The differences shrunk towards zero by ``noise_k`` standard errors."""
    return np.copysign(np.maximum(np.abs(d) - noise_k * se, 0.0), d)


class _Gathered(NamedTuple):
    n: int
    rows: _I64
    latencies: _F64
    instances: list[int]
    notes: dict[str, int]


_get_parts = attrgetter("parts")
_get_latency = attrgetter("latency")
_get_instances = attrgetter("instances")
_get_negative = attrgetter("negative_gaps")
_get_no_server = attrgetter("client_without_server")
_get_path = attrgetter("path")
_get_path_start = attrgetter("path_start")
_get_path_end = attrgetter("path_end")


def _gather(wp: WindowParts) -> _Gathered:
    parts = wp.parts
    rows = np.concatenate(list(map(_get_parts, parts))) if parts else np.zeros((0, 3), dtype=np.int64)
    lat = np.fromiter(map(_get_latency, parts), dtype=np.float64, count=len(parts))
    inst = np.unique(np.concatenate(list(map(_get_instances, parts)))).tolist() if parts else []
    notes: dict[str, int] = {}
    if wp.duplicates:
        notes["duplicate_traces"] = wp.duplicates
    neg = sum(map(_get_negative, parts))
    if neg:
        notes["negative_gaps"] = neg
    nos = sum(map(_get_no_server, parts))
    if nos:
        notes["client_without_server"] = nos
    return _Gathered(len(parts), rows, lat, inst, notes)


def _as_parts(
    data: Sequence[Trace] | WindowProfile | WindowParts, table: PartsTable | None, with_paths: bool
) -> WindowParts:
    """``data`` as parts over ``table`` (a new table when None)."""
    if (
        isinstance(data, WindowParts)
        and (table is None or data.table is table)
        and (data.with_paths or not with_paths)
    ):
        return data
    if isinstance(data, WindowParts):
        return WindowParts(
            table or data.table,
            trace_parts([p.trace for p in data.parts], table or data.table, with_paths=with_paths),
            duplicates=data.duplicates,
            with_paths=with_paths,
        )
    if isinstance(data, WindowProfile):
        wp = window_parts(data.kept, table, with_paths=with_paths)
        wp.duplicates = data.notes.get("duplicate_traces", 0)
        return wp
    return window_parts(data, table, with_paths=with_paths)


def _path_features(wp: WindowParts, min_samples: int) -> WindowFeatures:
    """FIRM's RI, CI and cp_share (:func:`firm.tracing.features.window_features`) from the
    instances' self times on each request's main critical path."""
    parts = wp.parts
    nreq = len(parts)
    if not nreq:
        return WindowFeatures(0, None, None, None, None, None, (EMPTY_WINDOW,), ())
    paths = list(map(_get_path, parts))
    if not wp.with_paths:
        paths = [np.zeros((0, 2), dtype=np.int64) if p is None else p for p in paths]
    counts = np.fromiter(map(len, paths), dtype=np.int64, count=nreq)
    req = np.repeat(np.arange(nreq, dtype=np.int64), counts)
    rows = np.concatenate(paths)
    inst, x = rows[:, 0], rows[:, 1].astype(np.float64)
    e2e: _F64 = np.bincount(req, weights=x, minlength=nreq).astype(np.float64)
    total = float(e2e.sum())
    order = np.argsort(inst * nreq + req)  # by instance, requests in order (one row per pair)
    gi, xr, yr = inst[order], x[order], e2e[req[order]]
    mask = _first_in_groups(gi)
    first = np.flatnonzero(mask)
    n = np.diff(np.append(first, gi.size))
    row = np.cumsum(mask) - 1
    sx, sy = _group_sum(xr, first), _group_sum(yr, first)
    mx, my = sx / n, sy / n
    xc, yc = xr - mx[row], yr - my[row]
    sxy, sxx, syy = _group_sum(xc * yc, first), _group_sum(xc * xc, first), _group_sum(yc * yc, first)
    ptp_y = np.maximum.reduceat(yr, first) - np.minimum.reduceat(yr, first)
    xs = _sort_pairs(gi, rows[:, 1][order])[1].astype(np.float64)
    p50 = _quantiles(xs, first, n, 0.5)
    p99 = _quantiles(xs, first, n, 0.99)
    ptp_x = xs[first + n - 1] - xs[first]
    table = wp.table
    instances = []
    for k, i in enumerate(gi[first].tolist()):
        flags, ri, ci = _ri_ci(
            int(n[k]),
            min_samples,
            bool(ptp_x[k] == 0),
            bool(ptp_y[k] == 0),
            (float(sxy[k]), float(sxx[k]), float(syy[k])),
            float(p50[k]),
            float(p99[k]),
        )
        service, instance = table.instances[i]
        instances.append(
            InstanceFeatures(
                service=service,
                instance=instance,
                samples=int(n[k]),
                on_path_ratio=int(n[k]) / nreq,
                ri=ri,
                ci=ci,
                p50_us=float(p50[k]),
                p99_us=float(p99[k]),
                mean_us=float(mx[k]),
                cp_share=float(sx[k]) / total if total > 0 else 0.0,
                flags=tuple(flags),
            )
        )
    instances.sort(key=lambda f: (-f.cp_share, f.service, f.instance))
    wflags: list[str] = []
    if nreq < min_samples:
        wflags.append(TOO_FEW_SAMPLES)
    if np.ptp(e2e) == 0:
        wflags.append(CONSTANT_END_TO_END)
    lp50, lp99 = np.percentile(e2e, [50, 99])
    return WindowFeatures(
        requests=nreq,
        start=min(map(_get_path_start, parts)),
        end=max(map(_get_path_end, parts)),
        latency_p50_us=float(lp50),
        latency_p99_us=float(lp99),
        latency_mean_us=float(e2e.mean()),
        flags=tuple(wflags),
        instances=tuple(instances),
    )


def _ri_ci(
    n: int,
    min_samples: int,
    constant_x: bool,
    constant_y: bool,
    sums: tuple[float, float, float],
    p50: float,
    p99: float,
) -> tuple[list[str], float | None, float | None]:
    """Flags, RI (from the centred sums xy, xx, yy) and CI of one instance, as
    :func:`firm.tracing.features.window_features` computes them."""
    flags: list[str] = []
    ri: float | None = None
    ci: float | None = None
    if n < min_samples:
        return [TOO_FEW_SAMPLES], None, None
    if constant_x:
        flags.append(CONSTANT_LATENCY)
    if constant_y:
        flags.append(CONSTANT_END_TO_END)
    if not flags:
        sxy, sxx, syy = sums
        ri = max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))
    if p50 > 0:
        ci = p99 / p50
    else:
        flags.append(ZERO_MEDIAN)
    return flags, ri, ci


def _median(xs: _F64) -> float:
    return float(np.median(xs))


def culprit_features(
    window: Sequence[Trace] | WindowProfile | WindowParts,
    reference: Sequence[Trace] | WindowProfile | WindowParts | None = None,
    config: CulpritFeatureConfig | None = None,
    *,
    with_paths: bool = True,
) -> CulpritWindow:
    """Culprit features of every instance in ``window``, against ``reference`` when given.

    ``window`` / ``reference`` are traces, their :func:`window_parts` (computed once, e.g. by a
    :class:`TracePartsCache`; both over the same :class:`PartsTable`, else the reference is
    computed again) or their :func:`profile_window`. ``with_paths=False`` skips FIRM's
    critical-path features (RI, CI, cp_share are then ``None``). An empty window gives a
    :class:`CulpritWindow` without instances. Instances only in the reference are left out.

    Cost: one pass of array operations over the parts of both windows; the parts themselves cost
    one pass over the spans (:func:`trace_parts`), which a cache saves for requests seen before.
    """
    cfg = config or CulpritFeatureConfig()
    wp = _as_parts(window, None, with_paths)
    rp = None if reference is None else _as_parts(reference, wp.table, with_paths)
    win = _memoized(wp, "gather", _gather)
    ref = None if rp is None else _memoized(rp, "gather", _gather)
    if ref is not None and ref.n == 0:
        ref = None
    notes: dict[str, int] = dict(win.notes)
    if ref is not None:
        for k, v in ref.notes.items():
            notes[f"reference_{k}"] = v
    if win.n == 0:
        return CulpritWindow(
            0,
            None if ref is None else ref.n,
            ref is not None,
            None,
            None if ref is None else _median(ref.latencies),
            (),
            notes,
            None,
        )
    table = wp.table
    paths = (
        _memoized(wp, ("paths", cfg.min_samples), partial(_path_features, min_samples=cfg.min_samples))
        if with_paths
        else None
    )
    paths_ref = (
        _memoized(rp, ("paths", cfg.min_samples), partial(_path_features, min_samples=cfg.min_samples))
        if with_paths and ref is not None and rp is not None
        else None
    )
    lat = _median(win.latencies)
    lat_ref = _median(ref.latencies) if ref is not None else None
    n = win.n
    key_a = table.key_columns()[0]
    nk = len(table.keys)
    wg = _grouped(win.rows[:, 0] * nk + win.rows[:, 1], win.rows[:, 2])
    feats: dict[int, dict[str, float | None]] = {i: {} for i in win.instances}

    # Calls per trace and own time per request.
    own = wg.ids < nk
    own_inst = key_a[wg.ids[own]]
    w_calls = wg.sizes[own] / n
    calls = np.bincount(own_inst, weights=w_calls, minlength=len(table.instances))
    own_abs = np.bincount(
        own_inst, weights=_medians(wg)[own] * wg.sizes[own] / n, minlength=len(table.instances)
    )
    for i, f in feats.items():
        f["calls_per_trace"] = float(calls[i])
        f["own_us"] = float(own_abs[i])

    _firm_features(feats, table, paths, paths_ref)

    if ref is None:
        _no_reference(wg, table, feats, lat, n)
    else:
        assert rp is not None
        _with_reference(win, ref, rp, table, feats, cfg, lat_ref or 0.0, notes)
        for f in feats.values():
            if f.get("latency_growth") is None:
                f["latency_growth"] = lat / lat_ref if lat_ref else None

    total = sum(max(f["blame_us"] or 0.0, 0.0) for f in feats.values())
    top = max((f["blame_us"] or 0.0 for f in feats.values()), default=0.0)
    for f in feats.values():
        b = max(f["blame_us"] or 0.0, 0.0)
        f["blame_share"] = b / total if total > 0 else 0.0
        f["blame_vs_top"] = b / top if top > 0 else 0.0
    named = sorted((table.instances[i], f) for i, f in feats.items())
    instances = tuple(
        CulpritInstance(ik[0], ik[1], {name: f.get(name) for name in FEATURE_DOCS}) for ik, f in named
    )
    return CulpritWindow(
        requests=n,
        reference_requests=None if ref is None else ref.n,
        reference_used=ref is not None,
        latency_p50_us=lat,
        reference_latency_p50_us=lat_ref,
        instances=instances,
        notes=notes,
        paths=paths,
    )


def _firm_features(
    feats: dict[int, dict[str, float | None]],
    table: PartsTable,
    paths: WindowFeatures | None,
    paths_ref: WindowFeatures | None,
) -> None:
    """FIRM's RI, CI and cp_share of each instance, and the growth of cp_share."""
    by_path = {(i.service, i.instance): i for i in paths.instances} if paths else {}
    by_path_ref = {(i.service, i.instance): i for i in paths_ref.instances} if paths_ref else {}
    for i, f in feats.items():
        ik = table.instances[i]
        p = by_path.get(ik)
        f["ri"] = p.ri if p else None
        f["ci"] = p.ci if p else None
        f["cp_share"] = (p.cp_share if p else 0.0) if paths else None
        if paths_ref is not None:
            pr = by_path_ref.get(ik)
            f["cp_share_ref"] = pr.cp_share if pr else 0.0
            f["cp_share_growth"] = (f["cp_share"] or 0.0) - (pr.cp_share if pr else 0.0)
        else:
            f["cp_share_ref"] = f["cp_share_growth"] = None


def _no_reference(
    wg: _Groups, table: PartsTable, feats: dict[int, dict[str, float | None]], lat: float, n: int
) -> None:
    nk = len(table.keys)
    key_a, key_b, _ = table.key_columns()
    kind, key = np.divmod(wg.ids, nk)
    per = _medians(wg) * wg.sizes / n
    gap = kind >= REQ
    time_of = np.bincount(key_a[key[~gap]], weights=per[~gap], minlength=len(table.instances))
    half = np.maximum(_medians(wg)[gap], 0.0) * wg.sizes[gap] / n / 2
    time_of += np.bincount(key_a[key[gap]], weights=half, minlength=len(table.instances))
    time_of += np.bincount(key_b[key[gap]], weights=half, minlength=len(table.instances))
    for i, f in feats.items():
        for name in (
            "calls_growth",
            "own_ratio",
            "own_growth_us",
            "leaf_growth_us",
            "req_in_growth_us",
            "resp_in_growth_us",
            "req_out_growth_us",
            "resp_out_growth_us",
            "blame_own_us",
            "blame_in_us",
            "blame_out_us",
            "blame_raw_rel",
            "latency_growth",
        ):
            f[name] = None
        f["blame_us"] = float(time_of[i])
        f["blame_rel"] = float(time_of[i]) / lat if lat > 0 else 0.0


def _pooled(table: PartsTable, win_rows: _I64, ref_rows: _I64, min_calls: int) -> tuple[_I64, _I64]:
    """Both windows' rows with the gap keys too rare to compare one by one (fewer than
    ``min_calls`` in either window, per part) moved to the edge's pooled key (operation
    :data:`POOLED_OP`)."""
    nk = len(table.keys)
    star = table._op(POOLED_OP)
    w_out, r_out = win_rows, ref_rows
    cw_all = np.bincount(win_rows[:, 0] * nk + win_rows[:, 1], minlength=4 * nk)
    cr_all = np.bincount(ref_rows[:, 0] * nk + ref_rows[:, 1], minlength=4 * nk)
    for kind in (REQ, RESP):
        cw, cr = cw_all[kind * nk : (kind + 1) * nk], cr_all[kind * nk : (kind + 1) * nk]
        rare = ((cw > 0) | (cr > 0)) & ~((cw >= min_calls) & (cr >= min_calls))
        if not rare.any():
            continue
        remap = np.arange(nk, dtype=np.int64)
        for k in np.flatnonzero(rare).tolist():
            a, b, _ = table.keys[k]
            remap[k] = table.key(a, b, star)
        if w_out is win_rows:
            w_out, r_out = win_rows.copy(), ref_rows.copy()
        for out in (w_out, r_out):
            sel = out[:, 0] == kind
            out[sel, 1] = remap[out[sel, 1]]
    return w_out, r_out


def _ref_own(rp: WindowParts) -> tuple[_F64, _F64]:
    """Calls per trace and own time per request of each instance id of a reference window."""
    ref = _memoized(rp, "gather", _gather)
    table = rp.table
    key_a = table.key_columns()[0]
    own = ref.rows[ref.rows[:, 0] == OWN]
    rg = _grouped(own[:, 1], own[:, 2])
    calls = np.bincount(key_a[rg.ids], weights=rg.sizes / ref.n, minlength=len(table.instances))
    time = np.bincount(key_a[rg.ids], weights=_medians(rg) * rg.sizes / ref.n, minlength=len(table.instances))
    return calls.astype(np.float64), time.astype(np.float64)


_M = TypeVar("_M")


def _memoized(wp: WindowParts, key: object, make: Callable[[WindowParts], _M]) -> _M:
    """``make(wp)``, computed once per window of parts."""
    if key not in wp.memo:
        wp.memo[key] = make(wp)
    return wp.memo[key]  # type: ignore[return-value]


def _with_reference(
    win: _Gathered,
    ref: _Gathered,
    rp: WindowParts,
    table: PartsTable,
    feats: dict[int, dict[str, float | None]],
    cfg: CulpritFeatureConfig,
    lat_ref: float,
    notes: dict[str, int],
) -> None:
    # Keys seen in one window only (a changed request mix).
    in_w = set((win.rows[:, 0] * (len(table.keys) + 1) + win.rows[:, 1]).tolist())
    in_r = set((ref.rows[:, 0] * (len(table.keys) + 1) + ref.rows[:, 1]).tolist())
    notes["only_in_window"] = notes.get("only_in_window", 0) + len(in_w - in_r)
    notes["only_in_reference"] = notes.get("only_in_reference", 0) + len(in_r - in_w)

    ref_calls, ref_abs = _memoized(rp, "own", _ref_own)
    w_rows, r_rows = _pooled(table, win.rows, ref.rows, cfg.min_calls)
    nk = len(table.keys)
    key_a, key_b, _ = table.key_columns()
    wg = _grouped(w_rows[:, 0] * nk + w_rows[:, 1], w_rows[:, 2])
    rgp = _grouped(r_rows[:, 0] * nk + r_rows[:, 1], r_rows[:, 2])
    ids, calls, d, se = _diff_growth(wg, rgp, cfg)
    kind, key = np.divmod(ids, nk)
    weight = calls / win.n
    acc = _blame(feats, kind, key_a[key], key_b[key], _shrink(d, se, cfg.noise_k), weight, cfg)
    raw = _blame(feats, kind, key_a[key], key_b[key], _shrink(d, se, 0.0), weight, cfg)
    for i, a in acc.items():
        a["raw"] = raw[i]["b_own"] + raw[i]["b_in"] + raw[i]["b_out"]
    _fill(feats, acc, ref_calls, ref_abs, lat_ref)


def _blame(
    feats: Mapping[int, object],
    kind: _I64,
    src: _I64,
    dst: _I64,
    growth: _F64,
    weight: _F64,
    cfg: CulpritFeatureConfig,
) -> dict[int, dict[str, float]]:
    """Growth and blame per instance (us per request): per key of part ``kind`` from instance
    ``src`` (to ``dst`` for gaps), its growth (us per call) and calls per request ``weight``."""
    zero = dict.fromkeys(
        ("own", "leaf", "req_in", "resp_in", "req_out", "resp_out", "b_own", "b_in", "b_out"), 0.0
    )
    acc: dict[int, dict[str, float]] = {i: dict(zero) for i in feats}
    kinds, a_l, b_l, g_l, w_l = kind.tolist(), src.tolist(), dst.tolist(), growth.tolist(), weight.tolist()
    edges: dict[int, list[tuple[int, int, float, float]]] = {REQ: [], RESP: []}
    for k, a, b, g, w in zip(kinds, a_l, b_l, g_l, w_l, strict=True):
        if k in (OWN, LEAF):
            acc[a]["own" if k == OWN else "leaf"] += g * w
            acc[a]["b_own"] += max(g, 0.0) * w
        else:
            edges[k].append((a, b, g, w))
    for k, name in ((REQ, "req"), (RESP, "resp")):
        out_of: dict[int, list[tuple[int, float, float]]] = defaultdict(list)
        into: dict[int, list[tuple[int, float, float]]] = defaultdict(list)
        for a, b, g, w in edges[k]:
            out_of[a].append((b, g, w))
            into[b].append((a, g, w))
        for a, b, g, w in edges[k]:
            acc[a][f"{name}_out"] += g * w
            acc[b][f"{name}_in"] += g * w
            if g <= 0:
                continue
            c_a = _consistency(out_of[a], b, g, cfg.caller_prior)
            c_b = _consistency(into[b], a, g, cfg.callee_prior)
            share_b = 0.5 if c_a + c_b <= 0 else c_b / (c_a + c_b)
            acc[b]["b_in"] += g * w * share_b
            acc[a]["b_out"] += g * w * (1.0 - share_b)
    return acc


def _fill(
    feats: dict[int, dict[str, float | None]],
    acc: Mapping[int, Mapping[str, float]],
    ref_calls: _F64,
    ref_own: _F64,
    lat_ref: float,
) -> None:
    for i, f in feats.items():
        a = acc[i]
        rc = float(ref_calls[i]) if i < ref_calls.size else 0.0
        f["calls_growth"] = (f["calls_per_trace"] or 0.0) / rc if rc > 0 else None
        ro = float(ref_own[i]) if i < ref_own.size else 0.0
        f["own_ratio"] = (f["own_us"] or 0.0) / ro if ro > 0 else None
        f["own_growth_us"] = a["own"]
        f["leaf_growth_us"] = a["leaf"]
        f["req_in_growth_us"] = a["req_in"]
        f["resp_in_growth_us"] = a["resp_in"]
        f["req_out_growth_us"] = a["req_out"]
        f["resp_out_growth_us"] = a["resp_out"]
        f["blame_own_us"] = a["b_own"]
        f["blame_in_us"] = a["b_in"]
        f["blame_out_us"] = a["b_out"]
        blame = a["b_own"] + a["b_in"] + a["b_out"]
        f["blame_us"] = blame
        f["blame_rel"] = blame / lat_ref if lat_ref > 0 else 0.0
        f["blame_raw_rel"] = a["raw"] / lat_ref if lat_ref > 0 else 0.0


def _consistency(side: list[tuple[int, float, float]], exclude: int, g: float, prior: float) -> float:
    """Calls-weighted mean of clip(g'/g, 0, 1) over the side's edges other than those with
    ``exclude``; ``prior`` when there are none."""
    wsum = 0.0
    total = 0.0
    seen = False
    for x, gg, ww in side:
        if x == exclude:
            continue
        seen = True
        wsum += ww
        total += min(max(gg / g, 0.0), 1.0) * ww
    if not seen or wsum <= 0:
        return prior
    return total / wsum


def _pool_sparse(
    win: Mapping[EdgeKey, list[int]], ref: Mapping[EdgeKey, list[int]], min_calls: int
) -> tuple[dict[EdgeKey, list[int]], dict[EdgeKey, list[int]]]:
    """The gaps of an edge's operations too rare to compare one by one (fewer than ``min_calls``
    in either window), pooled under the operation ``*`` of the same caller -> callee edge."""
    w_out: dict[EdgeKey, list[int]] = {}
    r_out: dict[EdgeKey, list[int]] = {}
    for key in set(win) | set(ref):
        xs, ys = win.get(key, []), ref.get(key, [])
        if len(xs) >= min_calls and len(ys) >= min_calls:
            w_out[key], r_out[key] = xs, ys
            continue
        coarse = (key[0], key[1], "*")
        w_out.setdefault(coarse, []).extend(xs)
        r_out.setdefault(coarse, []).extend(ys)
    return ({k: v for k, v in w_out.items() if v}, {k: v for k, v in r_out.items() if v})
