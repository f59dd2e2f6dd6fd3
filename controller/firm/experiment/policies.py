"""The policies ``firm experiment`` compares, each behind the control loop's ``Decider`` protocol.

Every policy runs through the same loop (same observation, guardrails, executor and audit); they
differ only in the decision:

- ``firm``: the loop's :class:`~firm.loop.deciders.FirmDecider` (localization plus the agent).
- ``aimd``: the loop's :class:`~firm.loop.deciders.AimdDecider` (FIRM's own baseline).
- ``static``: the testbed's configured limits, never changed (:class:`StaticDecider`).
- ``none``: no CPU limit at all, every instance given every core of the node once before the run
  (:func:`ceiling_actions`); the resource ceiling, for reference.
- ``hpa``: the Kubernetes Horizontal Pod Autoscaler's rule (:class:`HpaDecider`), scaling the
  number of instances of a service: 15 s sync period, 0.1 tolerance, scale-up at once, a 300 s
  scale-down stabilisation window. ``hpa-fast``: the same with a 1 s sync and a 20 s window.

The HPA rule, from the Kubernetes documentation ("Horizontal Pod Autoscaling", Algorithm details;
``pkg/controller/podautoscaler/horizontal.go``)::

    desiredReplicas = ceil(currentReplicas x currentMetricValue / desiredMetricValue)

skipped (desired = current) when the ratio is within ``tolerance`` of 1.0; the recommendation is
then stabilised: every recommendation of the last ``window_s`` seconds is kept and the largest is
used for a scale-down, while a scale-up uses the current recommendation at once (the default
``behavior``: scale-up stabilisation window 0). The utilisation is the instances' CPU use summed
over their CPU limits summed (the limit stands for the pod's CPU request; the testbed has no other).
Not modelled: the scale-up rate policies (at most double, or +4 pods, per 15 s: the testbed adds one
instance at a time anyway), readiness delays and the missing-metrics assumptions (instances without
telemetry are left out of the sum).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from ansible_collections.firm.core.plugins.module_utils.errors import FirmError
from firm.actuate.executor import Action
from firm.experiment import ExperimentInputError
from firm.loop.config import LoopConfig
from firm.loop.deciders import AimdDecider, Decider, Explanation, NoneDecider, make_decider
from firm.loop.observe import InstanceView, Observation
from firm.testbed import scale
from firm.testbed.config import TestbedConfig

log = logging.getLogger(__name__)

POLICIES = ("firm", "hpa", "hpa-fast", "aimd", "static", "none")
"""Every policy ``firm experiment`` knows, in the order of its table."""

REPLICA_POLICIES = frozenset({"hpa", "hpa-fast"})
"""Policies that change the number of instances instead of their limits."""


@dataclass(frozen=True)
class HpaConfig:
    """The HPA's settings (Kubernetes' defaults unless said otherwise)."""

    target_utilization: float = 0.5
    """Target average CPU utilisation, share of the CPU request (here the limit): 0.5 is 50 %, the
    value of the Kubernetes walkthrough (``kubectl autoscale --cpu-percent=50``)."""
    tolerance: float = 0.1
    """No scaling while ``|utilisation / target - 1| <= tolerance`` (``--horizontal-pod-autoscaler-tolerance``)."""
    sync_s: float = 15.0
    """Seconds between two evaluations (``--horizontal-pod-autoscaler-sync-period``)."""
    window_s: float = 300.0
    """Scale-down stabilisation window, seconds (``behavior.scaleDown.stabilizationWindowSeconds``)."""
    min_replicas: int = 1
    """Fewest instances of a service."""

    def __post_init__(self) -> None:
        for name in ("target_utilization", "sync_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ExperimentInputError(f"hpa.{name} is {value!r}", fix="give a finite number above 0")
        for name in ("tolerance", "window_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ExperimentInputError(f"hpa.{name} is {value!r}", fix="give a finite number, 0 or more")
        if self.min_replicas < 1:
            raise ExperimentInputError(f"hpa.min_replicas is {self.min_replicas}", fix="give 1 or more")


HPA = HpaConfig()
HPA_FAST = HpaConfig(sync_s=1.0, window_s=20.0)


def hpa_desired(current: int, utilization: float, target: float, tolerance: float) -> int:
    """HPA's replica count for one metric: ``ceil(current x utilization / target)``, or ``current``
    when the ratio is within ``tolerance`` of 1 (both inclusive, as ``math.Abs(1.0-usageRatio) <=
    tolerance`` in Kubernetes' replica calculator).

    ``current``: instances (>= 1); ``utilization`` and ``target``: shares of the CPU request.
    """
    if current < 1 or target <= 0 or not math.isfinite(utilization) or utilization < 0:
        raise ValueError(
            f"hpa_desired needs current >= 1, target > 0, utilization >= 0 "
            f"(got {current}, {target}, {utilization})"
        )
    ratio = utilization / target
    if abs(1.0 - ratio) <= tolerance:
        return current
    return math.ceil(ratio * current)


class Stabilizer:
    """HPA's recommendation stabilisation for one service (``stabilizeRecommendationWithBehaviors``).

    Keeps the recommendations of the last ``down_window_s`` seconds (``up_window_s``: the scale-up
    window, 0 by default). The stabilised count starts at the current one, rises to the smallest
    recommendation of the up window and falls to no less than the largest of the down window.
    """

    def __init__(self, down_window_s: float, up_window_s: float = 0.0) -> None:
        self.down_window_s, self.up_window_s = down_window_s, up_window_s
        self.recommendations: list[tuple[float, int]] = []

    def stabilize(self, now: float, desired: int, current: int) -> int:
        """Record ``desired`` at ``now`` (seconds) and return the replica count to set."""
        self.recommendations.append((now, desired))
        horizon = max(self.down_window_s, self.up_window_s)
        self.recommendations = [(t, r) for t, r in self.recommendations if t >= now - horizon]
        up = min(r for t, r in self.recommendations if t >= now - self.up_window_s)
        down = max(r for t, r in self.recommendations if t >= now - self.down_window_s)
        final = current
        final = max(final, up)
        final = min(final, down)
        return final


class ReplicaSetter(Protocol):
    """Sets the number of instances of a service (in the background; the loop never waits)."""

    def set_replicas(self, service: str, count: int) -> None: ...

    def replicas(self, service: str) -> int | None:
        """The target last set for ``service``, or None."""
        ...


def service_utilization(views: Sequence[InstanceView]) -> float | None:
    """CPU used over CPU allotted, summed over the instances with a finite CPU limit and a sample
    (share; None when there is none)."""
    used = allotted = 0.0
    for view in views:
        limit = view.limits.get("cpu")
        usage = view.usage.get("cpu")
        if isinstance(limit, float) and math.isfinite(limit) and limit > 0 and usage is not None:
            used += usage
            allotted += limit
    return used / allotted if allotted > 0 else None


class HpaDecider:
    """The Kubernetes HPA's rule per service, applied through ``replicas`` (never a limit).

    ``max_replicas``: per service, the most instances it may have; services not in it (the
    entry point, Redis) are never scaled. Raises nothing: a service without telemetry is skipped.
    """

    def __init__(
        self, name: str, config: HpaConfig, replicas: ReplicaSetter, max_replicas: Mapping[str, int]
    ) -> None:
        self.name = name
        self.config, self.setter = config, replicas
        self.max_replicas = dict(max_replicas)
        self.last_sync: float | None = None
        self.stabilizers: dict[str, Stabilizer] = {}
        self.history: list[dict[str, object]] = []
        """Every evaluation: time, service, replicas, utilisation, desired, stabilised."""
        self._explanation = Explanation()

    @property
    def explanation(self) -> Explanation:
        return self._explanation

    def decide(self, observation: Observation) -> list[Action]:
        cfg = self.config
        explanation = Explanation(mode="hold", agent="hpa")
        self._explanation = explanation
        if self.last_sync is not None and observation.time - self.last_sync < cfg.sync_s - 1e-6:
            explanation.notes.append(
                f"next HPA sync in {cfg.sync_s - (observation.time - self.last_sync):.0f} s"
            )
            return []
        self.last_sync = observation.time
        explanation.mode = "idle"
        by_service: dict[str, list[InstanceView]] = {}
        for view in observation.instances.values():
            if view.service in self.max_replicas:
                by_service.setdefault(view.service, []).append(view)
        for service in sorted(by_service):
            views = by_service[service]
            utilization = service_utilization(views)
            if utilization is None:
                continue
            current = len(views)
            desired = hpa_desired(current, utilization, cfg.target_utilization, cfg.tolerance)
            desired = min(max(desired, cfg.min_replicas), self.max_replicas[service])
            stabilizer = self.stabilizers.setdefault(service, Stabilizer(cfg.window_s))
            final = stabilizer.stabilize(observation.time, desired, current)
            self.history.append(
                {
                    "time": observation.time,
                    "service": service,
                    "replicas": current,
                    "utilization": round(utilization, 4),
                    "desired": desired,
                    "final": final,
                }
            )
            if final != current:
                explanation.mode = "raise" if final > current else "reclaim"
                explanation.notes.append(
                    f"{service}: {current} -> {final} instances "
                    f"(CPU {utilization:.0%} of limits, target {cfg.target_utilization:.0%})"
                )
                self.setter.set_replicas(service, final)
        return []


class StaticDecider(NoneDecider):
    """The configured limits, never changed."""

    name = "static"


class CeilingDecider(NoneDecider):
    """No limits: decides nothing once :func:`ceiling_actions` lifted every CPU limit."""

    name = "none"


def ceiling_actions(
    instances: Mapping[str, str], capacity: Callable[[str], float], exclude: Sequence[str] = ()
) -> list[Action]:
    """For the ``none`` policy: every instance (name -> service, those of ``exclude`` left alone)
    given all ``capacity(name)`` cores (the executor widens its cpuset to match)."""
    return [
        Action(name, "cpu", capacity(name), "no limits: the ceiling", service)
        for name, service in sorted(instances.items())
        if service not in exclude
    ]


def make_policy(
    name: str,
    config: LoopConfig,
    *,
    request_types: Sequence[str],
    replicas: ReplicaSetter | None = None,
    max_replicas: Mapping[str, int] | None = None,
) -> Decider:
    """The decider of policy ``name``.

    Raises :class:`ExperimentInputError` for an unknown name or an HPA without ``replicas``; the
    firm policy raises what loading its models raises (``FirmError``, ``OSError``).
    """
    if name == "static":
        return StaticDecider()
    if name == "none":
        return CeilingDecider()
    if name == "aimd":
        return AimdDecider(config)
    if name == "firm":
        return make_decider(config.model_copy(update={"decider": "firm"}), request_types=request_types)
    if name in REPLICA_POLICIES:
        if replicas is None:
            raise ExperimentInputError(f"policy {name} needs a way to scale services", fix="give replicas")
        return HpaDecider(name, HPA if name == "hpa" else HPA_FAST, replicas, max_replicas or {})
    raise ExperimentInputError(f"unknown policy {name!r}", fix=f"use some of {', '.join(POLICIES)}")


def parse_policies(text: str) -> list[str]:
    """``"firm,hpa"`` -> ``["firm", "hpa"]``; raises :class:`ExperimentInputError` naming a wrong one."""
    names = [p.strip() for p in text.split(",") if p.strip()]
    if not names:
        raise ExperimentInputError("--policies names no policy", fix=f"give some of {', '.join(POLICIES)}")
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        raise ExperimentInputError(
            f"--policies: unknown {', '.join(repr(u) for u in unknown)}",
            fix=f"use some of {', '.join(POLICIES)}, separated by commas",
        )
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ExperimentInputError(
            f"--policies names {', '.join(duplicates)} twice", fix="name each policy once"
        )
    return names


# -- the testbed's replica setter ---------------------------------------------------------------------


class TestbedReplicas:
    """Scales the testbed's services towards the counts asked, one instance at a time, in a thread.

    Adapter of :mod:`firm.testbed.scale` (``replicas``, ``scale_out``, ``scale_in``) to
    :class:`ReplicaSetter`: Kubernetes sets a Deployment's replica count in one write, the testbed
    starts or drains one instance per call; this keeps calling until each service has its target.
    ``events`` lists what was done (service, direction, instance or error, time).
    """

    __test__ = False

    def __init__(self, config: TestbedConfig, *, poll_s: float = 0.5) -> None:
        self.config = config
        self.poll_s = poll_s
        self.targets: dict[str, int] = {}
        self.events: list[dict[str, object]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hpa-replicas", daemon=True)
        self._thread.start()

    def set_replicas(self, service: str, count: int) -> None:
        with self._lock:
            self.targets[service] = count
        self._wake.set()

    def replicas(self, service: str) -> int | None:
        with self._lock:
            return self.targets.get(service)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll_s)
            self._wake.clear()
            with self._lock:
                wanted = dict(self.targets)
            for service, count in sorted(wanted.items()):
                if self._stop.is_set():
                    return
                event: dict[str, object] = {"service": service, "time": time.time()}
                try:
                    present = len(scale.replicas(self.config, service))
                    if present < count:
                        event.update(
                            direction="out",
                            instance=scale.scale_out(self.config, service, progress=log.info).name,
                        )
                    elif present > count:
                        event.update(
                            direction="in", instance=scale.scale_in(self.config, service, progress=log.info)
                        )
                    else:
                        continue
                    self._wake.set()  # maybe more to do
                except FirmError as exc:
                    event.update(direction="error", error=str(exc))
                    with self._lock:  # do not retry a refused count forever
                        self.targets.pop(service, None)
                with self._lock:
                    self.events.append(event)

    def close(self, timeout_s: float = 120.0) -> None:
        """Stop after the scale step under way (if any) finished."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout_s)
