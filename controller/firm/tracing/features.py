"""Per-instance features of a window of requests: FIRM's Algorithm 2 inputs, computed for real.

For each request (trace) of the window, the critical path is the main root's path (see
:mod:`firm.tracing.critical_path`); its length is the request's *end-to-end critical-path
latency* ``L``. For each service instance ``i`` (a (service, instance) pair) on that path, its
*latency* in the request ``x_i`` is the time the path spends in ``i`` itself: the sum of the self
times of ``i``'s on-path spans (client spans count for the calling instance, server spans for the
called one). Over the requests whose path passes through ``i``:

- **RI** (relative importance) = Pearson correlation of ``x_i`` with ``L`` over those requests;
- **CI** (congestion intensity) = p99(``x_i``) / p50(``x_i``) (percentiles by linear
  interpolation);
- **cp_share** = sum of ``x_i`` / sum of ``L`` over *all* requests of the window: the part of the
  window's critical-path time spent in ``i``;
- **samples** = the number of those requests (``on_path_ratio`` = samples / requests).

Nothing becomes NaN. What cannot be computed is ``None`` and says why in ``flags``:

- ``too_few_samples``: fewer than ``min_samples`` requests (RI and CI are ``None``);
- ``constant_latency``: ``x_i`` never varies, so RI is undefined (``None``; CI is 1.0);
- ``constant_end_to_end``: ``L`` never varies over those requests, so RI is undefined;
- ``zero_median``: p50 is 0 us, so CI is undefined.

The window itself is flagged ``empty_window``, ``too_few_samples`` or ``constant_end_to_end``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from firm.terminal import safe
from firm.tracing.critical_path import CriticalPath, RootPath, critical_paths
from firm.tracing.model import Trace

__all__ = [
    "CONSTANT_END_TO_END",
    "CONSTANT_LATENCY",
    "EMPTY_WINDOW",
    "TOO_FEW_SAMPLES",
    "ZERO_MEDIAN",
    "InstanceFeatures",
    "PathSummary",
    "WindowFeatures",
    "format_table",
    "trace_features",
    "window_features",
]

TOO_FEW_SAMPLES = "too_few_samples"
CONSTANT_LATENCY = "constant_latency"
CONSTANT_END_TO_END = "constant_end_to_end"
ZERO_MEDIAN = "zero_median"
EMPTY_WINDOW = "empty_window"

DEFAULT_MIN_SAMPLES = 20
"""Requests an instance must be on the path of before RI and CI are computed."""


@dataclass(frozen=True)
class InstanceFeatures:
    """Features of one service instance over a window."""

    service: str
    instance: str
    samples: int
    """Requests of the window whose critical path passes through the instance."""
    on_path_ratio: float
    """``samples`` / requests in the window."""
    ri: float | None
    """Pearson correlation of the instance's latency with the end-to-end critical-path latency."""
    ci: float | None
    """p99 / p50 of the instance's latency."""
    p50_us: float
    """Median latency on the path, microseconds."""
    p99_us: float
    """99th percentile latency on the path, microseconds."""
    mean_us: float
    """Mean latency on the path, microseconds."""
    cp_share: float
    """Share of the window's critical-path time spent in the instance (0..1)."""
    flags: tuple[str, ...]
    """Why a value is ``None`` or unreliable; empty when all is well."""

    def as_dict(self) -> dict[str, object]:
        """Stable JSON form (times in microseconds)."""
        return {
            "service": self.service,
            "instance": self.instance,
            "samples": self.samples,
            "onPathRatio": _round(self.on_path_ratio),
            "ri": _round(self.ri),
            "ci": _round(self.ci),
            "p50": _round(self.p50_us),
            "p99": _round(self.p99_us),
            "mean": _round(self.mean_us),
            "cpShare": _round(self.cp_share),
            "flags": list(self.flags),
        }


@dataclass(frozen=True)
class WindowFeatures:
    """Features of every instance on the critical paths of a window of requests."""

    requests: int
    """Traces in the window."""
    start: int | None
    """Earliest root start, microseconds since the epoch (``None`` for an empty window)."""
    end: int | None
    """Latest root end, microseconds since the epoch."""
    latency_p50_us: float | None
    """Median end-to-end critical-path latency, microseconds."""
    latency_p99_us: float | None
    """99th percentile end-to-end critical-path latency, microseconds."""
    latency_mean_us: float | None
    """Mean end-to-end critical-path latency, microseconds."""
    flags: tuple[str, ...]
    instances: tuple[InstanceFeatures, ...]
    """Ordered by share of critical-path time, largest first."""

    def as_dict(self) -> dict[str, object]:
        """Stable JSON form (times in microseconds)."""
        return {
            "window": {
                "requests": self.requests,
                "start": self.start,
                "end": self.end,
                "latencyP50": _round(self.latency_p50_us),
                "latencyP99": _round(self.latency_p99_us),
                "latencyMean": _round(self.latency_mean_us),
                "flags": list(self.flags),
            },
            "instances": [i.as_dict() for i in self.instances],
        }


@dataclass(frozen=True, slots=True)
class PathSummary:
    """What :func:`window_features` needs of one request's path, without its spans: kept by
    :func:`firm.tracing.stream.stream_features` for every request of a file read in batches."""

    start: int
    """The root's start, microseconds since the epoch."""
    end: int
    """The root's end, microseconds since the epoch."""
    latency: int
    """The path's length, microseconds (:attr:`RootPath.latency`)."""
    times: dict[tuple[str, str], int]
    """Microseconds of the path in each ``(service, instance)`` (:meth:`RootPath.instance_times`)."""

    @classmethod
    def of(cls, path: RootPath) -> PathSummary:
        """The summary of a root's path."""
        root = path.root
        return cls(root.start, root.start + root.duration, path.latency, path.instance_times())

    def instance_times(self) -> dict[tuple[str, str], int]:
        """As :meth:`RootPath.instance_times`."""
        return self.times


def _summary(p: CriticalPath | RootPath | PathSummary) -> PathSummary:
    if isinstance(p, PathSummary):
        return p
    return PathSummary.of(p.main if isinstance(p, CriticalPath) else p)


def _round(v: float | None) -> float | None:
    return None if v is None else round(float(v), 6)


def trace_features(
    traces: Iterable[Trace],
    *,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    overlap_tolerance_us: int = 0,
) -> WindowFeatures:
    """Critical paths of ``traces``, then :func:`window_features` over them."""
    return window_features(
        critical_paths(traces, overlap_tolerance_us=overlap_tolerance_us), min_samples=min_samples
    )


def window_features(
    paths: Iterable[CriticalPath | RootPath | PathSummary],
    *,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    start: int | None = None,
    end: int | None = None,
) -> WindowFeatures:
    """Features of the instances on ``paths`` (one per request; a trace's main path is used; a
    :class:`PathSummary` stands for a path).

    ``start`` / ``end`` (microseconds since the epoch) keep only the requests whose root starts
    in ``[start, end)``.
    """
    if min_samples < 2:
        raise ValueError(
            f"min_samples must be at least 2 (a correlation needs two points), not {min_samples}"
        )
    roots = [_summary(p) for p in paths]
    if start is not None:
        roots = [r for r in roots if r.start >= start]
    if end is not None:
        roots = [r for r in roots if r.start < end]
    nreq = len(roots)
    if not nreq:
        return WindowFeatures(0, None, None, None, None, None, (EMPTY_WINDOW,), ())

    e2e = np.array([r.latency for r in roots], dtype=np.float64)
    # Per instance: the requests it is on the path of, and its latency in each.
    req_of: dict[tuple[str, str], list[int]] = defaultdict(list)
    lat_of: dict[tuple[str, str], list[int]] = defaultdict(list)
    for k, r in enumerate(roots):
        for key, lat in r.instance_times().items():
            req_of[key].append(k)
            lat_of[key].append(lat)

    total = float(e2e.sum())
    instances = [
        _instance(
            key,
            np.array(lat_of[key], dtype=np.float64),
            y=e2e[req_of[key]],
            nreq=nreq,
            total=total,
            min_samples=min_samples,
        )
        for key in req_of
    ]
    instances.sort(key=lambda f: (-f.cp_share, f.service, f.instance))

    wflags: list[str] = []
    if nreq < min_samples:
        wflags.append(TOO_FEW_SAMPLES)
    if np.ptp(e2e) == 0:
        wflags.append(CONSTANT_END_TO_END)
    p50, p99 = np.percentile(e2e, [50, 99])
    return WindowFeatures(
        requests=nreq,
        start=min(r.start for r in roots),
        end=max(r.end for r in roots),
        latency_p50_us=float(p50),
        latency_p99_us=float(p99),
        latency_mean_us=float(e2e.mean()),
        flags=tuple(wflags),
        instances=tuple(instances),
    )


def _instance(
    key: tuple[str, str],
    x: npt.NDArray[np.float64],
    *,
    y: npt.NDArray[np.float64],
    nreq: int,
    total: float,
    min_samples: int,
) -> InstanceFeatures:
    n = x.size
    flags: list[str] = []
    p50, p99 = (float(v) for v in np.percentile(x, [50, 99]))
    ri: float | None = None
    ci: float | None = None
    if n < min_samples:
        flags.append(TOO_FEW_SAMPLES)
    else:
        if np.ptp(x) == 0:
            flags.append(CONSTANT_LATENCY)
        if np.ptp(y) == 0:
            flags.append(CONSTANT_END_TO_END)
        if not flags:
            ri = _pearson(x, y)
        if p50 > 0:
            ci = p99 / p50
        else:
            flags.append(ZERO_MEDIAN)
    return InstanceFeatures(
        service=key[0],
        instance=key[1],
        samples=n,
        on_path_ratio=n / nreq,
        ri=ri,
        ci=ci,
        p50_us=p50,
        p99_us=p99,
        mean_us=float(x.mean()),
        cp_share=float(x.sum()) / total if total > 0 else 0.0,
        flags=tuple(flags),
    )


def _pearson(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> float:
    xc = x - x.mean()
    yc = y - y.mean()
    denom = math.sqrt(float(xc @ xc) * float(yc @ yc))
    return max(-1.0, min(1.0, float(xc @ yc) / denom))


def format_table(window: WindowFeatures) -> str:
    """The features as an aligned text table (times in milliseconds)."""

    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    head = ["service", "instance", "samples", "RI", "CI", "p50 ms", "p99 ms", "share", "flags"]
    rows: list[Sequence[str]] = [head]
    for f in window.instances:
        rows.append(
            [
                safe(f.service),  # names come from the traces: control characters escaped (firm.terminal)
                safe(f.instance),
                str(f.samples),
                num(f.ri, ".3f"),
                num(f.ci, ".2f"),
                num(f.p50_us / 1000, ".3f"),
                num(f.p99_us / 1000, ".3f"),
                num(f.cp_share * 100, ".1f") + "%",
                ",".join(f.flags) or "-",
            ]
        )
    widths = [max(len(r[c]) for r in rows) for c in range(len(head))]
    right = {2, 3, 4, 5, 6, 7}
    lines = [
        "  ".join(
            cell.rjust(widths[c]) if c in right else cell.ljust(widths[c]) for c, cell in enumerate(r)
        ).rstrip()
        for r in rows
    ]
    summary = (
        f"{window.requests} requests; end-to-end critical-path latency p50 "
        f"{num(None if window.latency_p50_us is None else window.latency_p50_us / 1000, '.3f')} ms, p99 "
        f"{num(None if window.latency_p99_us is None else window.latency_p99_us / 1000, '.3f')} ms"
        + (f"; window flags: {','.join(window.flags)}" if window.flags else "")
    )
    return "\n".join([summary, *lines])
