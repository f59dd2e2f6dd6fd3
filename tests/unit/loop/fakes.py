"""Test doubles for the control loop: traces, a target in memory, a localizer and an agent."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from firm.actuate.executor import MemoryExecutor
from firm.loop.observe import InstanceView, Observation, mix_of, slo_status
from firm.loop.observe import instance_types as types_of
from firm.telemetry.cpus import CpuLoad
from firm.telemetry.model import Sample
from firm.tracing.model import Span, Trace

_ids = itertools.count()

SLO = {"compose-post": 250.0, "read-home-timeline": 120.0}


def trace(kind: str, latency_ms: float, instances: Sequence[str], end_us: int = 10_000_000) -> Trace:
    """A request of type ``kind`` (root on frontend-0) calling each of ``instances`` in turn."""
    n = next(_ids)
    duration = int(latency_ms * 1000)
    start = end_us - duration
    spans = [Span(f"r{n}", "frontend", "frontend-0", kind.replace("-", "_"), start, duration, kind="server")]
    for i, name in enumerate(instances):
        spans.append(
            Span(
                f"c{n}-{i}",
                name.rsplit("-", 1)[0],
                name,
                "call",
                start + 10,
                max(1, duration // 2),
                f"r{n}",
                kind="server",
            )
        )
    return Trace(f"t{n}", tuple(spans))


def window(
    kind_latencies: Mapping[str, Sequence[float]],
    instances: Mapping[str, Sequence[str]] | None = None,
    end_us: int = 10_000_000,
) -> list[Trace]:
    out = []
    for kind, latencies in kind_latencies.items():
        for latency in latencies:
            out.append(trace(kind, latency, (instances or {}).get(kind, ()), end_us))
    return out


def sample(name: str, at: float, cpu: float = 0.2, interval: float = 1.0) -> Sample:
    return Sample(name, name.rsplit("-", 1)[0], at, interval, cpu, 0.0, 0.0, 1 << 20, 0.0, 0.0, 1e5, 1e5)


def view(
    name: str,
    limits: Mapping[str, float | str],
    *,
    baseline: Mapping[str, float] | None = None,
    resources: frozenset[str] = frozenset({"cpu", "disk_io", "network"}),
    types: frozenset[str] = frozenset(),
    capacity: float = 2.0,
    usage: Mapping[str, float] | None = None,
    telemetry_since: float | None = 0.0,
) -> InstanceView:
    return InstanceView(
        name,
        name.rsplit("-", 1)[0],
        dict(limits),
        dict(baseline or limits),
        resources,
        dict(usage or {"cpu": 0.3}),
        telemetry_since,
        telemetry_since,
        capacity,
        types,
    )


def observation(
    traces: Sequence[Trace],
    views: Sequence[InstanceView],
    *,
    now: float = 100.0,
    slo: Mapping[str, float] = SLO,
    reference: Sequence[Trace] | None = None,
    cpus: Mapping[int, float | tuple[float, float]] | None = None,
) -> Observation:
    """``cpus``: per CPU its foreign load, cores, or (busy, managed) cores (None: the target cannot
    tell)."""
    served = types_of(traces)
    views = [
        InstanceView(
            v.name,
            v.service,
            v.limits,
            v.baseline,
            v.resources,
            v.usage,
            v.telemetry_at,
            v.telemetry_since,
            v.cpu_capacity,
            v.request_types or served.get(v.name, frozenset()),
        )
        for v in views
    ]
    status = slo_status(traces, slo, min_requests=5, at_risk=0.9, slack=0.6)
    return Observation(
        now,
        (now - 6, now - 1),
        traces,
        reference,
        status,
        {v.name: v for v in views},
        len(traces) / 5,
        len(traces) / 5,
        mix_of(traces),
        None if cpus is None else {c: _load(c, v) for c, v in cpus.items()},
    )


def _load(cpu: int, value: float | tuple[float, float]) -> CpuLoad:
    busy, managed = value if isinstance(value, tuple) else (value, 0.0)
    return CpuLoad(cpu, busy, managed, 0.0)


@dataclass(frozen=True)
class Ranked:
    service: str
    instance: str
    score: float
    culprit: bool
    features: Mapping[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Ranking:
    instances: tuple[Ranked, ...]
    reference_used: bool = True


class FakeLocalizer:
    """Ranks instances by a fixed table of scores; culprits are those at or above ``threshold``."""

    def __init__(self, scores: Mapping[str, float], threshold: float = 0.5) -> None:
        self.scores, self.threshold = dict(scores), threshold
        self.calls: list[tuple[int, bool]] = []

    def rank(self, window: Sequence[Trace], reference: Sequence[Trace] | None = None) -> Ranking:
        self.calls.append((len(window), reference is not None))
        ranked = sorted(self.scores.items(), key=lambda kv: -kv[1])
        return Ranking(
            tuple(Ranked(n.rsplit("-", 1)[0], n, s, s >= self.threshold, {"ri": s}) for n, s in ranked),
            reference is not None,
        )


@dataclass(frozen=True)
class AgentDecision:
    limits: dict[str, float]
    scale_out: bool
    masked: tuple[str, ...]
    raw: Any = None


class FakeAgent:
    """Multiplies each controllable current limit by ``factor`` (clipped to the bounds)."""

    def __init__(self, factor: float | Mapping[str, float] = 2.0, scale_out: bool = False) -> None:
        self.factor, self.scale_out = factor, scale_out
        self.states: list[Any] = []

    def decide(
        self, state: Any, *, current: Mapping[str, float], bounds: Mapping[str, Any], mask: Mapping[str, bool]
    ) -> AgentDecision:
        self.states.append(state)
        out = {}
        for r, on in mask.items():
            if on:
                f = self.factor if isinstance(self.factor, float | int) else self.factor.get(r, 1.0)
                out[r] = min(max(current[r] * f, bounds[r][0]), bounds[r][1])
        return AgentDecision(out, self.scale_out, tuple(r for r, on in mask.items() if not on))


def build_state(**kwargs: Any) -> dict[str, Any]:
    return kwargs


def bounds(low: float, high: float) -> tuple[float, float]:
    return (low, high)


class MemoryTarget:
    """Instances with limits in memory, traces and telemetry handed in by the test."""

    def __init__(
        self, limits: Mapping[str, Mapping[str, float]], *, fail_on: frozenset[tuple[str, str]] = frozenset()
    ) -> None:
        self._executor = MemoryExecutor(limits, fail_on=fail_on)
        self.traces: list[Trace] = []
        self.samples: dict[str, Sample | None] = {}
        self.trace_error: Exception | None = None
        self.telemetry_error: Exception | None = None
        self.cpus: dict[int, CpuLoad] | None = None
        """What :meth:`cpu_load` answers (None: the target cannot tell, as a cluster's)."""

    @property
    def executor(self) -> MemoryExecutor:
        return self._executor

    def refresh(self) -> tuple[list[str], list[str]]:
        return [], []

    def names(self) -> list[str]:
        return sorted(self._executor.limits)

    def service_of(self, name: str) -> str:
        return name.rsplit("-", 1)[0]

    def cpu_capacity(self, name: str) -> float:
        return 2.0

    def read_traces(self, start_us: int, end_us: int) -> list[Trace]:
        if self.trace_error is not None:
            raise self.trace_error
        return list(self.traces)

    def latest_telemetry(self, names: Sequence[str]) -> dict[str, Sample | None]:
        if self.telemetry_error is not None:
            raise self.telemetry_error
        return {n: self.samples.get(n) for n in names}

    def cpu_load(self) -> dict[int, CpuLoad] | None:
        return self.cpus


REDIS_DOWN = redis.ConnectionError("Error 111 connecting to 127.0.0.1:6399. Connection refused.")
INF = math.inf
