"""What one control step sees: the window's requests against their SLOs, and every instance's state.

Traces are the window's *completed* requests: a trace counts when its root span (the entry
service's server span) ended in the window, so slow requests are never left out. A trace's request
type is its root operation with ``_`` as ``-`` (``compose_post`` -> ``compose-post``), its latency
the root span's duration.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from firm.telemetry.cpus import CpuLoad
from firm.telemetry.model import Sample
from firm.tracing.model import Span, Trace

SloState = Literal["slack", "ok", "at_risk", "violated", "unknown"]


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank ``q``-th percentile (0 < q <= 100); None for no values (as the load generator's)."""
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=np.float64), q, method="inverted_cdf"))


def root_span(trace: Trace) -> Span:
    """The trace's root: the earliest span without a parent (or whose parent is not in the trace)."""
    roots = [s for s in trace.spans if s.parent_id is None]
    if len(roots) == 1:
        return roots[0]
    if not roots:
        ids = {s.span_id for s in trace.spans}
        roots = [s for s in trace.spans if s.parent_id not in ids]
    return min(roots or trace.spans, key=lambda s: (s.start, -s.duration))


def request_type(trace: Trace) -> str:
    """``compose_post`` -> ``compose-post``: the root span's operation."""
    return root_span(trace).operation.replace("_", "-")


def completed_in(traces: Iterable[Trace], start_us: int, end_us: int) -> list[Trace]:
    """Traces whose root span ended in ``[start_us, end_us]``."""
    return [t for t in traces if start_us <= root_span(t).end <= end_us]


@dataclass(frozen=True)
class SloStatus:
    """One request type over the window."""

    request_type: str
    slo_ms: float | None
    """The SLO (p99 latency, ms), None when the type has none."""
    count: int
    """Requests of the type that completed in the window."""
    p50_ms: float | None
    p99_ms: float | None
    state: SloState
    """``violated`` (p99 > SLO), ``at_risk`` (p99 > at_risk x SLO), ``ok``, ``slack`` (p99 < slack x
    SLO), or ``unknown`` (fewer requests than the minimum, or no SLO)."""

    @property
    def ratio(self) -> float | None:
        """p99 / SLO (above 1: violated)."""
        if self.p99_ms is None or not self.slo_ms:
            return None
        return self.p99_ms / self.slo_ms

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": self.request_type,
            "slo_ms": self.slo_ms,
            "count": self.count,
            "p50_ms": _round(self.p50_ms),
            "p99_ms": _round(self.p99_ms),
            "state": self.state,
        }


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


@dataclass(frozen=True)
class WindowSummary:
    """One pass over a window's traces: what the SLO check, the mix and the instances' view need."""

    latencies_ms: Mapping[str, list[float]]
    """Per request type, the latency of each of its requests, ms."""
    served: Mapping[str, frozenset[str]]
    """Per instance, the request types whose traces it served."""
    count: int

    @property
    def mix(self) -> dict[str, float]:
        """Share of each request type (sums to 1, or empty)."""
        return (
            {k: len(v) / self.count for k, v in sorted(self.latencies_ms.items()) if v} if self.count else {}
        )


class TraceSummaries:
    """Each request's type, latency and instances, by trace ID, kept across the windows it belongs
    to (bounded: the oldest go first; a trace whose spans changed is read again)."""

    def __init__(self, max_traces: int = 20_000) -> None:
        self.max_traces = max_traces
        self._entries: dict[str, tuple[Trace, str, float, frozenset[str]]] = {}

    def of(self, trace: Trace) -> tuple[str, float, frozenset[str]]:
        """(request type, latency ms, instances) of ``trace``."""
        hit = self._entries.get(trace.trace_id)
        if hit is not None and hit[0] is trace:
            return hit[1], hit[2], hit[3]
        root = root_span(trace)
        item = (
            trace,
            root.operation.replace("_", "-"),
            root.duration / 1000,
            frozenset(s.instance for s in trace.spans),
        )
        entries = self._entries
        entries.pop(trace.trace_id, None)
        entries[trace.trace_id] = item
        if len(entries) > self.max_traces:
            for old in list(itertools.islice(entries, len(entries) - self.max_traces)):
                del entries[old]
        return item[1], item[2], item[3]


def summarize(traces: Iterable[Trace], cache: TraceSummaries | None = None) -> WindowSummary:
    """One pass over the window (with ``cache``, each request is read once across windows)."""
    latencies: dict[str, list[float]] = {}
    by_kind: dict[str, set[str]] = {}
    count = 0
    reader = (cache or TraceSummaries(max_traces=1 << 62)).of
    for trace in traces:
        kind, latency, instances = reader(trace)
        found = latencies.get(kind)
        if found is None:
            latencies[kind] = [latency]
            by_kind[kind] = set(instances)
        else:
            found.append(latency)
            by_kind[kind].update(instances)
        count += 1
    served: dict[str, set[str]] = {}
    for kind, names in by_kind.items():
        for name in names:
            served.setdefault(name, set()).add(kind)
    return WindowSummary(latencies, {k: frozenset(v) for k, v in served.items()}, count)


def slo_status(
    traces: Sequence[Trace] | WindowSummary,
    slo_ms: Mapping[str, float],
    *,
    min_requests: int,
    at_risk: float,
    slack: float,
) -> dict[str, SloStatus]:
    """Per request type (every SLO'd type, and any other type seen), its p50/p99 and state."""
    summary = traces if isinstance(traces, WindowSummary) else summarize(traces)
    latencies: dict[str, list[float]] = {t: [] for t in slo_ms}
    latencies.update(summary.latencies_ms)
    result = {}
    for name, values in latencies.items():
        slo = slo_ms.get(name)
        p99 = percentile(values, 99)
        state: SloState
        if slo is None or p99 is None or len(values) < min_requests:
            state = "unknown"
        elif p99 > slo:
            state = "violated"
        elif p99 > at_risk * slo:
            state = "at_risk"
        elif p99 < slack * slo:
            state = "slack"
        else:
            state = "ok"
        result[name] = SloStatus(name, slo, len(values), percentile(values, 50), p99, state)
    return result


def instance_types(traces: Iterable[Trace]) -> dict[str, frozenset[str]]:
    """For each instance, the request types whose traces it served."""
    return dict(summarize(traces).served)


def usage_of(sample: Sample | None) -> dict[str, float]:
    """Usage per resource from a telemetry sample, in the loop's units: cpu cores, disk_io bytes/s
    (read + write), network bit/s received (what the host-side veth's qdisc shapes). Memory
    bandwidth and LLC have no sample here and are left out. Beside the resources,
    ``cpu_throttled``: the share of the sample's CFS periods in which the group was throttled (0..1),
    and ``cpu_wait``: seconds its tasks waited for a CPU per second (schedstat's run delay)."""
    if sample is None:
        return {}
    usage: dict[str, float] = {}
    if sample.cpu_cores is not None:
        usage["cpu"] = sample.cpu_cores
    if sample.disk_read_bps is not None or sample.disk_write_bps is not None:
        usage["disk_io"] = (sample.disk_read_bps or 0.0) + (sample.disk_write_bps or 0.0)
    if sample.net_rx_bps is not None:
        usage["network"] = sample.net_rx_bps * 8
    if sample.cpu_throttled_ratio is not None:
        usage["cpu_throttled"] = sample.cpu_throttled_ratio
    if sample.cpu_wait_s_per_s is not None:
        usage["cpu_wait"] = sample.cpu_wait_s_per_s
    return usage


@dataclass(frozen=True)
class InstanceView:
    """One instance as the deciders see it."""

    name: str
    service: str
    limits: Mapping[str, float | str]
    """Limits in force per resource, resource unit (``inf``: none)."""
    baseline: Mapping[str, float | str]
    """Limits when the loop started (or when the instance appeared)."""
    resources: frozenset[str]
    """Resources the executor can set on it (the others are masked)."""
    usage: Mapping[str, float] = field(default_factory=dict)
    """From its latest telemetry sample (see :func:`usage_of`)."""
    telemetry_at: float | None = None
    """End of its latest telemetry sample, seconds since the epoch (None: none)."""
    telemetry_since: float | None = None
    """Start of the interval that sample covers, seconds since the epoch."""
    cpu_capacity: float = math.inf
    """Cores its cpuset holds: more CPU than this cannot be given on this node."""
    request_types: frozenset[str] = frozenset()
    """Request types whose traces it served in the window."""


@dataclass(frozen=True)
class Observation:
    """Everything a decider may use in one step."""

    time: float
    """Seconds since the epoch when the step began."""
    window: tuple[float, float]
    """Start and end of the window, seconds since the epoch."""
    traces: Sequence[Trace]
    """Requests completed in the window."""
    reference: Sequence[Trace] | None
    """Requests of the last window in which every SLO held (for the localizer), or None."""
    slo: Mapping[str, SloStatus]
    instances: Mapping[str, InstanceView]
    rate_rps: float
    """Requests per second completed in the window."""
    prev_rate_rps: float
    """The same, one step before (0 at the first step)."""
    mix: Mapping[str, float]
    """Share of each request type in the window (sums to 1, or empty)."""
    cpu_load: Mapping[int, CpuLoad] | None = None
    """Per CPU the instances may be placed on, its load over the last step (busy, managed, foreign
    cores: :mod:`firm.telemetry.cpus`); None where the target cannot tell (a cluster, cgroup v2)."""

    def contended_cpus(self, foreign_cpu: float) -> frozenset[int]:
        """CPUs busy with at least ``foreign_cpu`` cores of work outside the managed instances."""
        loads = self.cpu_load or {}
        return frozenset(c for c, load in loads.items() if load.foreign >= foreign_cpu)

    def states(self, *wanted: SloState) -> list[SloStatus]:
        return [s for s in self.slo.values() if s.state in wanted]

    @property
    def violated(self) -> list[SloStatus]:
        return self.states("violated")

    @property
    def at_risk(self) -> list[SloStatus]:
        return self.states("violated", "at_risk")

    @property
    def all_slack(self) -> bool:
        """Every request type with an SLO is known and below its slack share."""
        known = [s for s in self.slo.values() if s.slo_ms is not None]
        return bool(known) and all(s.state == "slack" for s in known)

    def worst_for(self, instance: str) -> SloStatus | None:
        """The request type served by ``instance`` whose p99 is highest against its SLO."""
        view = self.instances.get(instance)
        types = view.request_types if view is not None and view.request_types else frozenset(self.slo)
        rated = [s for s in self.slo.values() if s.request_type in types and s.ratio is not None]
        return max(rated, key=lambda s: s.ratio or 0.0) if rated else None


def mix_of(traces: Sequence[Trace]) -> dict[str, float]:
    """Share of each request type in ``traces``."""
    return summarize(traces).mix
