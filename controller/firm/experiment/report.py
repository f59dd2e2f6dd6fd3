"""The experiment's report, computed from recorded runs (pure functions; the table and plots beside).

A recorded run (:class:`RecordedRun`) holds, for one policy, over the measured part of the run:
every request (type, completion time, latency, failed or not), the CPU allocated and used at each
control step, the anomalies with the times they really ran, and the actions taken. Time is in
seconds from the start of the measured part.

The run is cut into intervals of ``interval_s`` seconds (by completion time, the testbed's SLO
window by default). In an interval a request type **violates** its SLO when it had requests and
their p99 (nearest rank; a failed request counts as infinitely slow) is above the SLO. From that:

- ``slo_violation_s``: seconds of intervals in which any type violated (per type: ``per_type``);
  ``slo_violation_count``: violation episodes, i.e. runs of consecutive violated intervals.
- ``cpu_cores_avg`` / ``cpu_cores_peak``: CPU allocated to the managed instances (their CPU limits,
  each at most the cores of its cpuset), the mean over intervals and the highest sample; the same
  for ``cpu_used_*`` (their telemetry).
- ``core_seconds_met``: CPU-core-seconds allocated during intervals in which every type met its SLO
  (Autothrottle's score: Wang et al., "Autothrottle", NSDI 2024, section 5: fewer is better at the
  same SLO attainment).
- ``other_work_cores_avg`` / ``other_work_cores_peak``: cores of the machine busy with work the run
  does not account for (not the testbed, the anomalies, the harness), the mean over intervals and
  the busiest interval; a policy above :data:`OTHER_WORK_AVG` or :data:`OTHER_WORK_PEAK` ran on a
  machine busy with something else, and the verdict names it (``disturbed``): its figures are not
  comparable with the others'.
- ``mitigation_s``: per anomaly, seconds from its start to the start of the first interval whose
  p99 is back under the SLO (every type) after the first violated interval at or after its start
  and before its end; 0 when it caused no violated interval; None when the SLO never came back.
  ``anomalies[i].before_end`` says whether that happened while the anomaly still ran.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Request:
    """One request of a run."""

    request_type: str
    completed_s: float
    """Seconds from the start of the measured part when it completed (or failed)."""
    latency_ms: float
    failed: bool = False


@dataclass(frozen=True)
class CpuSample:
    """The managed instances' CPU at one control step."""

    time_s: float
    """Seconds from the start of the measured part."""
    allocated: float
    """Sum of their CPU limits, cores (each at most its cpuset's cores)."""
    used: float | None
    """Sum of their telemetry's CPU use, cores (None: no telemetry)."""
    instances: int = 0
    """Managed instances at that step."""


@dataclass(frozen=True)
class AnomalyWindow:
    """An anomaly as it really ran, in run seconds."""

    kind: str
    service: str
    start_s: float
    end_s: float
    intensity: int = 0


@dataclass
class RecordedRun:
    """Everything recorded of one policy's run."""

    policy: str
    duration_s: float
    requests: list[Request] = field(default_factory=list)
    cpu: list[CpuSample] = field(default_factory=list)
    anomalies: list[AnomalyWindow] = field(default_factory=list)
    actions: int = 0
    """Limits changed by the policy."""
    scale_events: int = 0
    """Instances started or stopped by the policy."""
    notes: list[str] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    """Failed requests by error (``timeout``, ``overloaded``, ``connection``, ``http_503``...)."""
    other_work: list[tuple[float, float]] = field(default_factory=list)
    """(seconds, cores): work on the machine the run does not account for, over the stretch ending
    then (:class:`firm.telemetry.cpus.OtherWorkMeter`)."""


OTHER_WORK_AVG = 0.15
"""Cores of other work, on average over a run, above which the run counts as disturbed (a quiet run
of the default experiment on a 2-CPU machine measured 0.02-0.1: Redis, kernel threads)."""
OTHER_WORK_PEAK = 0.5
"""Cores of other work in one interval above which the run counts as disturbed."""


@dataclass(frozen=True)
class Interval:
    """One interval of a run."""

    start_s: float
    p99_ms: Mapping[str, float | None]
    """Per type (None: no request; ``inf``: failures above 1 %)."""
    requests: Mapping[str, int]
    violated: Mapping[str, bool]
    cpu_allocated: float | None
    cpu_used: float | None

    @property
    def any_violated(self) -> bool:
        return any(self.violated.values())


def nearest_rank(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile by nearest rank (the smallest value with at least q % at or below it)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _cpu_at(samples: Sequence[CpuSample], start: float, end: float) -> tuple[float | None, float | None]:
    """Mean allocated and used of the samples in ``[start, end)``; else the last sample before."""
    inside = [s for s in samples if start <= s.time_s < end]
    if not inside:
        before = [s for s in samples if s.time_s < start]
        inside = before[-1:]
    if not inside:
        return None, None
    allocated = sum(s.allocated for s in inside) / len(inside)
    used_values = [s.used for s in inside if s.used is not None]
    return allocated, (sum(used_values) / len(used_values) if used_values else None)


def intervals(run: RecordedRun, slo_ms: Mapping[str, float], interval_s: float) -> list[Interval]:
    """The run cut into ``floor(duration_s / interval_s)`` intervals (see the module's docstring)."""
    if interval_s <= 0:
        raise ValueError(f"interval_s must be above 0, not {interval_s}")
    count = math.floor(run.duration_s / interval_s + 1e-9)
    buckets: list[dict[str, list[float]]] = [{} for _ in range(count)]
    for request in run.requests:
        index = math.floor(request.completed_s / interval_s)
        if 0 <= index < count:
            buckets[index].setdefault(request.request_type, []).append(
                math.inf if request.failed else request.latency_ms
            )
    types = sorted(set(slo_ms) | {r.request_type for r in run.requests})
    result = []
    for index, bucket in enumerate(buckets):
        start = index * interval_s
        p99 = {t: nearest_rank(bucket.get(t, []), 99) for t in types}
        violated = {
            t: (p99[t] is not None and t in slo_ms and p99[t] > slo_ms[t])  # type: ignore[operator]
            for t in types
        }
        allocated, used = _cpu_at(run.cpu, start, start + interval_s)
        result.append(
            Interval(start, p99, {t: len(bucket.get(t, [])) for t in types}, violated, allocated, used)
        )
    return result


def episodes(flags: Sequence[bool]) -> int:
    """Runs of consecutive True values."""
    return sum(1 for i, flag in enumerate(flags) if flag and (i == 0 or not flags[i - 1]))


def mitigation(
    table: Sequence[Interval], anomaly: AnomalyWindow, interval_s: float
) -> tuple[float | None, bool]:
    """Seconds from the anomaly's start until the SLO held again, and whether before its end
    (see the module's docstring); ``(None, False)`` when it never held again."""
    if not table:
        return None, False
    first = max(0, math.floor(anomaly.start_s / interval_s))
    last = min(len(table) - 1, max(first, math.ceil(anomaly.end_s / interval_s) - 1))
    violated = next((k for k in range(first, min(last, len(table) - 1) + 1) if table[k].any_violated), None)
    if violated is None:
        return 0.0, True
    back = next((k for k in range(violated + 1, len(table)) if not table[k].any_violated), None)
    if back is None:
        return None, False
    seconds = max(0.0, table[back].start_s - anomaly.start_s)
    return seconds, table[back].start_s < anomaly.end_s


def other_work(run: RecordedRun, table: Sequence[Interval], interval_s: float) -> list[float | None]:
    """Per interval, the mean of the other-work samples that end in it, cores (None: no sample)."""
    out: list[float | None] = []
    for interval in table:
        inside = [c for t, c in run.other_work if interval.start_s <= t < interval.start_s + interval_s]
        out.append(sum(inside) / len(inside) if inside else None)
    return out


def summarize(run: RecordedRun, slo_ms: Mapping[str, float], interval_s: float) -> dict[str, Any]:
    """The report's entry of one policy (see the module's docstring for every figure)."""
    table = intervals(run, slo_ms, interval_s)
    other = other_work(run, table, interval_s)
    measured_other = [c for c in other if c is not None]
    types = sorted(set(slo_ms) | {r.request_type for r in run.requests})
    per_type: dict[str, dict[str, Any]] = {}
    measured = [r for r in run.requests if 0 <= r.completed_s < len(table) * interval_s]
    for kind in types:
        flags = [i.violated.get(kind, False) for i in table]
        latencies = [r.latency_ms for r in measured if r.request_type == kind and not r.failed]
        failed = sum(1 for r in measured if r.request_type == kind and r.failed)
        per_type[kind] = {
            "slo_ms": slo_ms.get(kind),
            "violation_s": sum(flags) * interval_s,
            "violation_count": episodes(flags),
            "requests": len(latencies) + failed,
            "failed": failed,
            "p50_ms": _r(nearest_rank(latencies, 50)),
            "p99_ms": _r(nearest_rank(latencies, 99)),
            "p999_ms": _r(nearest_rank(latencies, 99.9)),
        }
    any_flags = [i.any_violated for i in table]
    allocated = [i.cpu_allocated for i in table if i.cpu_allocated is not None]
    used = [i.cpu_used for i in table if i.cpu_used is not None]
    met = sum(
        i.cpu_allocated * interval_s for i in table if i.cpu_allocated is not None and not i.any_violated
    )
    anomalies = []
    for window in run.anomalies:
        seconds, before_end = mitigation(table, window, interval_s)
        anomalies.append(
            {
                "kind": window.kind,
                "service": window.service,
                "intensity": window.intensity,
                "start_s": _r(window.start_s),
                "end_s": _r(window.end_s),
                "mitigation_s": _r(seconds),
                "before_end": before_end,
            }
        )
    return {
        "slo_violation_s": sum(any_flags) * interval_s,
        "slo_violation_count": episodes(any_flags),
        "slo_attainment": _r(1 - sum(any_flags) / len(table)) if table else None,
        "per_type": per_type,
        "requests": len(measured),
        "failed_requests": sum(1 for r in measured if r.failed),
        "failed_by_error": dict(sorted(run.errors.items())),
        "cpu_cores_avg": _r(sum(allocated) / len(allocated)) if allocated else None,
        "cpu_cores_peak": _r(max(s.allocated for s in run.cpu)) if run.cpu else None,
        "cpu_used_avg": _r(sum(used) / len(used)) if used else None,
        "cpu_used_peak": _r(max((s.used for s in run.cpu if s.used is not None), default=math.nan))
        if used
        else None,
        "core_seconds_met": _r(met),
        "other_work_cores_avg": _r(sum(measured_other) / len(measured_other)) if measured_other else None,
        "other_work_cores_peak": _r(max(measured_other)) if measured_other else None,
        "mitigation_s": [a["mitigation_s"] for a in anomalies],
        "anomalies": anomalies,
        "actions": run.actions,
        "scale_events": run.scale_events,
        "notes": list(run.notes),
        "series": {
            "start_s": [i.start_s for i in table],
            "p99_ms": {t: [_r(i.p99_ms.get(t)) for i in table] for t in types},
            "violated": [i.any_violated for i in table],
            "cpu_allocated": [_r(i.cpu_allocated) for i in table],
            "cpu_used": [_r(i.cpu_used) for i in table],
            "other_work": [_r(c) for c in other],
        },
    }


def _r(value: float | None, digits: int = 3) -> float | None:
    """Rounded; None for None, NaN and infinity (JSON has neither)."""
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)


def ratio(baseline: float | None, reference: float | None) -> float | None:
    """``baseline / reference``: 1 when both are 0, None when undefined (a reference of 0 alone, or
    a missing value). Above 1: the baseline has more (more violation, more CPU) than the reference."""
    if baseline is None or reference is None:
        return None
    if reference == 0:
        return 1.0 if baseline == 0 else None
    return round(baseline / reference, 3)


RATIO_FIELDS = ("slo_violation_s", "cpu_cores_avg", "cpu_used_avg", "core_seconds_met")


def ratios(
    policies: Mapping[str, Mapping[str, Any]], reference: str = "firm"
) -> dict[str, dict[str, float | None]]:
    """For every policy but ``reference``: each of :data:`RATIO_FIELDS`, baseline over reference."""
    if reference not in policies:
        return {}
    ref = policies[reference]
    return {
        name: {f: ratio(entry.get(f), ref.get(f)) for f in RATIO_FIELDS}
        for name, entry in policies.items()
        if name != reference
    }


def verdict(policies: Mapping[str, Mapping[str, Any]], reference: str = "firm") -> dict[str, Any]:
    """Whether ``reference`` met the bar: fewer violation seconds than every other policy but
    ``none`` (the unlimited ceiling), no more CPU allocated on average than ``static``, every
    anomaly mitigated while it still ran (``before_end``: the SLO came back, or never broke, before
    the anomaly ended; an SLO that comes back only when the anomaly expires was not mitigated).
    ``disturbed``: the policies whose run met more other work on the machine than
    :data:`OTHER_WORK_AVG` on average or :data:`OTHER_WORK_PEAK` in an interval (their comparison
    is not fair; run again on a quiet machine)."""
    if reference not in policies:
        return {}
    ref = policies[reference]
    others = {n: e for n, e in policies.items() if n not in (reference, "none")}
    fewer = {n: ref["slo_violation_s"] < e["slo_violation_s"] for n, e in others.items()}
    cpu_ok = None
    if "static" in policies and ref.get("cpu_cores_avg") is not None:
        cpu_ok = ref["cpu_cores_avg"] <= (policies["static"].get("cpu_cores_avg") or 0) + 1e-9
    return {
        "fewer_violation_s_than": fewer,
        "cpu_not_above_static": cpu_ok,
        "mitigated_every_anomaly": all(bool(a.get("before_end")) for a in ref.get("anomalies", [])),
        "disturbed": [n for n, e in policies.items() if disturbed(e)],
    }


def disturbed(entry: Mapping[str, Any]) -> bool:
    """Whether a policy's run met more other work than :data:`OTHER_WORK_AVG` on average or
    :data:`OTHER_WORK_PEAK` in an interval (False where it was not measured)."""
    avg, peak = entry.get("other_work_cores_avg"), entry.get("other_work_cores_peak")
    return (avg is not None and avg > OTHER_WORK_AVG) or (peak is not None and peak > OTHER_WORK_PEAK)


def build_report(
    runs: Sequence[RecordedRun],
    *,
    slo_ms: Mapping[str, float],
    interval_s: float,
    seed: int,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``report.json``'s content: ``policies`` (name -> :func:`summarize`), ``ratios`` to firm,
    ``verdict``, ``interval_s``, ``seed``, ``slo_ms`` and whatever ``meta`` adds."""
    policies = {run.policy: summarize(run, slo_ms, interval_s) for run in runs}
    durations = {"duration_s": max(run.duration_s for run in runs)} if runs else {}
    return {
        **durations,
        **(meta or {}),
        "interval_s": interval_s,
        "seed": seed,
        "slo_ms": dict(slo_ms),
        "policies": policies,
        "ratios_to_firm": ratios(policies),
        "verdict": verdict(policies),
    }
