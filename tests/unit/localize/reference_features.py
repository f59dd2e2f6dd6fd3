"""The culprit-feature computation as it was before vectorisation: per-object Python, trace by
trace. Kept verbatim (only this docstring differs) as the oracle of the equivalence tests in
``test_feature_equivalence.py``; not used by firm itself.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from firm.tracing.features import WindowFeatures, trace_features
from firm.tracing.model import RefType, Trace

__all__ = [
    "FEATURE_DOCS",
    "CulpritFeatureConfig",
    "CulpritInstance",
    "CulpritWindow",
    "WindowProfile",
    "culprit_features",
    "profile_window",
]

K = TypeVar("K")
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


# -- Profiles: the parts of every request, per key --------------------------------------------------

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


def profile_window(traces: Iterable[Trace]) -> WindowProfile:
    """Cut every request of ``traces`` into own times, gaps and leaf calls (see the module doc).

    A trace ID seen more than once (the same trace twice, or a trace split over several inputs) is
    one request: the union of its spans by span ID (counted in ``notes`` as ``duplicate_traces``).
    """
    by_id: dict[str, Trace] = {}
    prof = WindowProfile()
    for t in traces:
        prev = by_id.get(t.trace_id)
        if prev is not None:
            prof.notes["duplicate_traces"] += 1
            seen = {s.span_id for s in prev.spans}
            extra = tuple(s for s in t.spans if s.span_id not in seen)
            if extra:
                by_id[t.trace_id] = Trace(t.trace_id, prev.spans + extra, prev.warnings + t.warnings)
            continue
        by_id[t.trace_id] = t
    for t in by_id.values():
        _profile_trace(t, prof)
        prof.kept.append(t)
    prof.traces = len(by_id)
    return prof


def _profile_trace(t: Trace, prof: WindowProfile) -> None:
    spans = t.spans
    n = len(spans)
    index = {s.span_id: i for i, s in enumerate(spans)}
    keys = [(s.service, s.instance) for s in spans]
    parent = [-1 if s.parent_id is None else index.get(s.parent_id, -1) for s in spans]
    children: list[list[int]] = [[] for _ in range(n)]
    for i, p in enumerate(parent):
        if p >= 0:
            children[p].append(i)
    # cross[i]: the children of span i in another instance.
    cross = [[c for c in children[i] if keys[c] != keys[i]] for i in range(n)]
    main = max((i for i in range(n) if parent[i] < 0), key=lambda i: (spans[i].duration, -spans[i].start))
    prof.latencies.append(spans[main].duration)
    prof.instances.update(keys)
    notes = prof.notes
    for i, s in enumerate(spans):
        k = keys[i]
        xs = cross[i]
        if xs:
            first = min(xs, key=lambda c: spans[c].start)
            rq = spans[first].start - s.start
            prof.req[(k, keys[first], spans[first].operation)].append(rq)
            if rq < 0:
                notes["negative_gaps"] += 1
            sync = [c for c in xs if spans[c].ref_type is RefType.CHILD_OF]
            if sync:
                last = max(sync, key=lambda c: spans[c].end)
                rs = s.end - spans[last].end
                prof.resp[(k, keys[last], spans[last].operation)].append(rs)
                if rs < 0:
                    notes["negative_gaps"] += 1
        if parent[i] >= 0 and keys[parent[i]] == k:
            continue
        # An entry span: own time = duration minus the union of outgoing calls.
        intervals: list[tuple[int, int]] = []
        stack = [i]
        while stack:
            node = stack.pop()
            for c in children[node]:
                sc = spans[c]
                if keys[c] != k:
                    intervals.append((sc.start, sc.start + sc.duration))
                elif (
                    sc.kind in ("client", "producer")
                    or cross[c]
                    or (not children[c] and sc.kind == "" and "client" in sc.operation.lower())
                ):
                    # An outgoing call; without a server child it goes to an uninstrumented callee.
                    intervals.append((sc.start, sc.start + sc.duration))
                    if not cross[c]:
                        prof.leaf[(k, sc.operation)].append(sc.duration)
                        if sc.kind in ("client", "producer") or not children[c]:
                            notes["client_without_server"] += 1
                else:
                    stack.append(c)
        prof.own[(k, s.operation)].append(s.duration - _covered(intervals, s.start, s.start + s.duration))


def _covered(intervals: list[tuple[int, int]], lo: int, hi: int) -> int:
    """Microseconds of [lo, hi) covered by the union of ``intervals``."""
    if not intervals:
        return 0
    total = 0
    cur_s = cur_e = None
    for a0, b0 in sorted(intervals):
        a, b = max(a0, lo), min(b0, hi)
        if b <= a:
            continue
        if cur_e is None or a > cur_e:
            if cur_e is not None and cur_s is not None:
                total += cur_e - cur_s
            cur_s, cur_e = a, b
        else:
            cur_e = max(cur_e, b)
    if cur_e is not None and cur_s is not None:
        total += cur_e - cur_s
    return total


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


def _stats(x: list[int], trim: float) -> tuple[float, float]:
    """The ``trim``-trimmed mean of ``x`` and its standard error (Tukey-McLaughlin: the
    winsorized standard deviation / ((1 - 2 trim) sqrt(n)))."""
    a = np.sort(np.asarray(x, dtype=np.float64))
    n = a.size
    g = math.floor(trim * n)
    core = a[g : n - g] if n - 2 * g > 0 else a
    wins = np.clip(a, core[0], core[-1])
    se = float(np.std(wins, ddof=1)) / ((1.0 - 2.0 * trim) * math.sqrt(n)) if n > 1 else 0.0
    return float(core.mean()), se


def _diffs(
    win: Mapping[K, list[int]], ref: Mapping[K, list[int]], cfg: CulpritFeatureConfig
) -> dict[K, tuple[float, float]]:
    """Per key seen often enough in both windows: (difference of trimmed means, its standard error), us."""
    out: dict[K, tuple[float, float]] = {}
    for key, xs in win.items():
        ys = ref.get(key)
        if not ys or len(xs) < cfg.min_calls or len(ys) < cfg.min_calls:
            continue
        ma, sa = _stats(xs, cfg.trim)
        mb, sb = _stats(ys, cfg.trim)
        d, var = ma - mb, sa**2 + sb**2
        if cfg.tail_quantile < 1.0:
            td, tvar = _tail(xs, ys, cfg.tail_quantile, d)
            d, var = d + td, var + tvar
        out[key] = (d, math.sqrt(var))
    return out


def _tail(xs: list[int], ys: list[int], q: float, shift: float) -> tuple[float, float]:
    """Growth of the mean excess over the reference's ``q`` quantile, beyond the growth ``shift`` of
    the trimmed mean (us per call: what the slowest calls add, which a trimmed mean leaves out; a
    window that is the reference shifted by ``shift`` has none), and its variance."""
    a = np.asarray(xs, dtype=np.float64)
    b = np.asarray(ys, dtype=np.float64)
    cut = float(np.quantile(b, q))
    ea, eb = np.maximum(a - cut - shift, 0.0), np.maximum(b - cut, 0.0)
    var = (
        float(np.var(ea, ddof=1)) / a.size + float(np.var(eb, ddof=1)) / b.size
        if a.size > 1 and b.size > 1
        else 0.0
    )
    return float(ea.mean() - eb.mean()), var


def _growth(diffs: Mapping[K, tuple[float, float]], noise_k: float) -> dict[K, float]:
    """The differences shrunk towards zero by ``noise_k`` standard errors."""
    return {key: math.copysign(max(abs(d) - noise_k * se, 0.0), d) for key, (d, se) in diffs.items()}


def _median(xs: list[int]) -> float:
    return float(np.median(np.asarray(xs, dtype=np.float64)))


def culprit_features(
    window: Sequence[Trace] | WindowProfile,
    reference: Sequence[Trace] | WindowProfile | None = None,
    config: CulpritFeatureConfig | None = None,
    *,
    with_paths: bool = True,
) -> CulpritWindow:
    """Culprit features of every instance in ``window``, against ``reference`` when given.

    ``window`` / ``reference`` are traces or their :func:`profile_window`. ``with_paths=False``
    skips FIRM's critical-path features (RI, CI, cp_share are then ``None``). An empty window gives
    a :class:`CulpritWindow` without instances. Instances only in the reference are left out.
    """
    cfg = config or CulpritFeatureConfig()
    win = window if isinstance(window, WindowProfile) else profile_window(window)
    ref = (
        reference if isinstance(reference, WindowProfile) or reference is None else profile_window(reference)
    )
    if ref is not None and ref.traces == 0:
        ref = None
    notes: dict[str, int] = dict(win.notes)
    if ref is not None:
        for k, v in ref.notes.items():
            notes[f"reference_{k}"] = v
    if win.traces == 0:
        return CulpritWindow(
            0,
            None if ref is None else ref.traces,
            ref is not None,
            None,
            None if ref is None else _median(ref.latencies),
            (),
            notes,
            None,
        )

    paths = trace_features(win.kept, min_samples=cfg.min_samples) if with_paths else None
    paths_ref = (
        trace_features(ref.kept, min_samples=cfg.min_samples) if with_paths and ref is not None else None
    )
    lat = _median(win.latencies)
    lat_ref = _median(ref.latencies) if ref is not None else None
    n = win.traces
    feats: dict[InstanceKey, dict[str, float | None]] = {k: {} for k in win.instances}

    def cpt(keyed: Mapping[object, list[int]], key: object) -> float:
        return len(keyed[key]) / n

    # Calls per trace and own time per request.
    calls: dict[InstanceKey, float] = defaultdict(float)
    own_abs: dict[InstanceKey, float] = defaultdict(float)
    for (ik, _op), xs in win.own.items():
        calls[ik] += len(xs) / n
        own_abs[ik] += _median(xs) * len(xs) / n
    for ik, f in feats.items():
        f["calls_per_trace"] = calls.get(ik, 0.0)
        f["own_us"] = own_abs.get(ik, 0.0)

    # FIRM's features.
    by_path = {(i.service, i.instance): i for i in paths.instances} if paths else {}
    by_path_ref = {(i.service, i.instance): i for i in paths_ref.instances} if paths_ref else {}
    for ik, f in feats.items():
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

    if ref is None:
        _no_reference(win, feats, lat)
    else:
        _with_reference(win, ref, feats, cfg, lat_ref or 0.0, notes)
        for f in feats.values():
            if f.get("latency_growth") is None:
                f["latency_growth"] = lat / lat_ref if lat_ref else None

    total = sum(max(f["blame_us"] or 0.0, 0.0) for f in feats.values())
    top = max((f["blame_us"] or 0.0 for f in feats.values()), default=0.0)
    for f in feats.values():
        b = max(f["blame_us"] or 0.0, 0.0)
        f["blame_share"] = b / total if total > 0 else 0.0
        f["blame_vs_top"] = b / top if top > 0 else 0.0
    instances = tuple(
        CulpritInstance(ik[0], ik[1], {name: feats[ik].get(name) for name in FEATURE_DOCS})
        for ik in sorted(feats)
    )
    return CulpritWindow(
        requests=n,
        reference_requests=None if ref is None else ref.traces,
        reference_used=ref is not None,
        latency_p50_us=lat,
        reference_latency_p50_us=lat_ref,
        instances=instances,
        notes=notes,
        paths=paths,
    )


def _no_reference(win: WindowProfile, feats: dict[InstanceKey, dict[str, float | None]], lat: float) -> None:
    n = win.traces
    time_of: dict[InstanceKey, float] = defaultdict(float)
    for (ik, _op), xs in win.own.items():
        time_of[ik] += _median(xs) * len(xs) / n
    for (ik, _op), xs in win.leaf.items():
        time_of[ik] += _median(xs) * len(xs) / n
    for gaps in (win.req, win.resp):
        for (a, b, _op), xs in gaps.items():
            v = max(_median(xs), 0.0) * len(xs) / n / 2
            time_of[a] += v
            time_of[b] += v
    for ik, f in feats.items():
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
        f["blame_us"] = time_of.get(ik, 0.0)
        f["blame_rel"] = time_of.get(ik, 0.0) / lat if lat > 0 else 0.0


def _with_reference(
    win: WindowProfile,
    ref: WindowProfile,
    feats: dict[InstanceKey, dict[str, float | None]],
    cfg: CulpritFeatureConfig,
    lat_ref: float,
    notes: dict[str, int],
) -> None:
    nr = ref.traces
    # Keys seen in one window only (a changed request mix).
    for name in ("own", "req", "resp", "leaf"):
        a, b = getattr(win, name), getattr(ref, name)
        notes["only_in_window"] = notes.get("only_in_window", 0) + sum(1 for k in a if k not in b)
        notes["only_in_reference"] = notes.get("only_in_reference", 0) + sum(1 for k in b if k not in a)

    ref_calls: dict[InstanceKey, float] = defaultdict(float)
    ref_own: dict[InstanceKey, float] = defaultdict(float)
    for (ik, _op), xs in ref.own.items():
        ref_calls[ik] += len(xs) / nr
        ref_own[ik] += _median(xs) * len(xs) / nr
    parts: dict[str, tuple[Mapping[Any, list[int]], Mapping[Any, list[int]]]] = {
        "own": (win.own, ref.own),
        "leaf": (win.leaf, ref.leaf),
        "req": _pool_sparse(win.req, ref.req, cfg.min_calls),
        "resp": _pool_sparse(win.resp, ref.resp, cfg.min_calls),
    }
    diffs = {name: _diffs(w, r, cfg) for name, (w, r) in parts.items()}
    samples = {name: w for name, (w, _) in parts.items()}
    acc = _blame(win.traces, samples, diffs, cfg, cfg.noise_k, feats)
    raw = _blame(win.traces, samples, diffs, cfg, 0.0, feats)
    for ik, a in acc.items():
        a["raw"] = raw[ik]["b_own"] + raw[ik]["b_in"] + raw[ik]["b_out"]
    _fill(feats, acc, ref_calls, ref_own, lat_ref)


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


def _blame(
    n: int,
    samples: Mapping[str, Mapping[Any, list[int]]],
    diffs: Mapping[str, Mapping[Any, tuple[float, float]]],
    cfg: CulpritFeatureConfig,
    noise_k: float,
    feats: Mapping[InstanceKey, object],
) -> dict[InstanceKey, dict[str, float]]:
    """Growth and blame per instance (us per request), growths shrunk by ``noise_k`` standard errors;
    ``samples`` are the window's calls per part and key (their counts weigh the growths)."""
    own_g: dict[OpKey, float] = _growth(diffs["own"], noise_k)
    leaf_g: dict[OpKey, float] = _growth(diffs["leaf"], noise_k)
    req_g: dict[EdgeKey, float] = _growth(diffs["req"], noise_k)
    resp_g: dict[EdgeKey, float] = _growth(diffs["resp"], noise_k)

    zero = dict.fromkeys(
        ("own", "leaf", "req_in", "resp_in", "req_out", "resp_out", "b_own", "b_in", "b_out"), 0.0
    )
    acc: dict[InstanceKey, dict[str, float]] = {ik: dict(zero) for ik in feats}
    for (ik, op), g in own_g.items():
        w = len(samples["own"][(ik, op)]) / n
        acc[ik]["own"] += g * w
        acc[ik]["b_own"] += max(g, 0.0) * w
    for (ik, op), g in leaf_g.items():
        w = len(samples["leaf"][(ik, op)]) / n
        acc[ik]["leaf"] += g * w
        acc[ik]["b_own"] += max(g, 0.0) * w

    for kind, grown in (("req", req_g), ("resp", resp_g)):
        edges = [(e, g, len(samples[kind][e]) / n) for e, g in grown.items()]
        out_of: dict[InstanceKey, list[tuple[InstanceKey, float, float]]] = defaultdict(list)
        into: dict[InstanceKey, list[tuple[InstanceKey, float, float]]] = defaultdict(list)
        for (a, b, _op), g, w in edges:
            out_of[a].append((b, g, w))
            into[b].append((a, g, w))
        for (a, b, _op), g, w in edges:
            acc[a][f"{kind}_out"] += g * w
            acc[b][f"{kind}_in"] += g * w
            if g <= 0:
                continue
            c_a = _consistency([(x, gg, ww) for x, gg, ww in out_of[a] if x != b], g, cfg.caller_prior)
            c_b = _consistency([(x, gg, ww) for x, gg, ww in into[b] if x != a], g, cfg.callee_prior)
            share_b = 0.5 if c_a + c_b <= 0 else c_b / (c_a + c_b)
            acc[b]["b_in"] += g * w * share_b
            acc[a]["b_out"] += g * w * (1.0 - share_b)

    return acc


def _fill(
    feats: dict[InstanceKey, dict[str, float | None]],
    acc: Mapping[InstanceKey, Mapping[str, float]],
    ref_calls: Mapping[InstanceKey, float],
    ref_own: Mapping[InstanceKey, float],
    lat_ref: float,
) -> None:
    for ik, f in feats.items():
        a = acc[ik]
        rc = ref_calls.get(ik, 0.0)
        f["calls_growth"] = (f["calls_per_trace"] or 0.0) / rc if rc > 0 else None
        ro = ref_own.get(ik, 0.0)
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


def _consistency(others: list[tuple[InstanceKey, float, float]], g: float, prior: float) -> float:
    """Calls-weighted mean of clip(g'/g, 0, 1) over the other edges; ``prior`` when there are none."""
    if not others:
        return prior
    wsum = sum(w for _, _, w in others)
    if wsum <= 0:
        return prior
    return sum(min(max(gg / g, 0.0), 1.0) * w for _, gg, w in others) / wsum
