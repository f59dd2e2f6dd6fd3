"""Deciders: the one part of the loop that differs between policies.

A decider turns an :class:`~firm.loop.observe.Observation` into proposed actions; the loop bounds
them (:mod:`firm.loop.guard`), applies them (an executor) and audits them, the same for every
decider, so that comparing policies compares decisions only.

- ``firm``: FIRM. When an SLO is violated or at risk, the localizer ranks the window's instances and
  the agent picks new limits for the culprits (FIRM, Qiu et al., OSDI 2020, sections 3.3-3.4); when
  every SLO holds with slack, resources are reclaimed (the agent's decreases, or a bounded step).
- ``aimd``: multiplicative increase of every instance on a violated request type's traces,
  additive decrease when every SLO holds with slack (the AIMD baseline of FIRM's evaluation).
- ``none``: decides nothing (the loop still measures and audits).

Each decider keeps an :class:`Explanation` of its last decision for the audit.
"""

from __future__ import annotations

import importlib
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ansible_collections.firm.core.plugins.module_utils import cgroup
from ansible_collections.firm.core.plugins.module_utils.errors import FirmError
from firm.actuate.executor import Action
from firm.loop.config import RESOURCES, LoopConfig
from firm.loop.guard import effective
from firm.loop.observe import InstanceView, Observation, SloStatus
from firm.tracing.culprit_features import TracePartsCache, WindowParts
from firm.tracing.errors import TraceParseError
from firm.tracing.model import Trace

log = logging.getLogger(__name__)

# -- the stages the firm decider calls (firm.localize and firm.rl implement them) ---------------------


class RankedInstance(Protocol):
    @property
    def service(self) -> str: ...
    @property
    def instance(self) -> str: ...
    @property
    def score(self) -> float: ...
    @property
    def culprit(self) -> bool: ...
    @property
    def features(self) -> Mapping[str, float | None]: ...


class RankingLike(Protocol):
    @property
    def instances(self) -> Sequence[RankedInstance]: ...
    @property
    def reference_used(self) -> bool: ...


class LocalizerLike(Protocol):
    def rank(self, window: Sequence[Trace], reference: Sequence[Trace] | None = None) -> RankingLike: ...


class AgentDecisionLike(Protocol):
    @property
    def limits(self) -> Mapping[str, float]: ...
    @property
    def scale_out(self) -> bool: ...
    @property
    def masked(self) -> tuple[str, ...]: ...


class AgentLike(Protocol):
    def decide(
        self, state: Any, *, current: Mapping[str, float], bounds: Mapping[str, Any], mask: Mapping[str, bool]
    ) -> AgentDecisionLike: ...


StateBuilder = Callable[..., Any]
"""``firm.rl.build_state``: keyword arguments slo_ms, p99_ms, rate_rps, prev_rate_rps, mix, usage, limits."""
BoundsFactory = Callable[[float, float], Any]
"""``firm.rl.ResourceBounds``: (min, max)."""


# -- the interface --------------------------------------------------------------------------------


@dataclass
class Explanation:
    """Why the last decision was what it was."""

    mode: str = "idle"
    """``raise`` (an SLO violated or at risk), ``reclaim`` (every SLO with slack), ``hold`` or ``idle``."""
    culprits: list[dict[str, Any]] = field(default_factory=list)
    """Ranked instances acted on (instance, service, score, culprit, features)."""
    ranking: list[dict[str, Any]] = field(default_factory=list)
    """The top of the ranking (instance, score, culprit)."""
    scale_out: list[str] = field(default_factory=list)
    """Services the agent asked to scale out."""
    notes: list[str] = field(default_factory=list)
    agent: str = ""
    """Which estimator set the limits: ``ddpg``, or ``step rule`` when no agent model is installed."""
    stages_ms: dict[str, float] = field(default_factory=dict)
    """Time spent in each stage of the decider, ms (``localize``, ``agent``)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "culprits": self.culprits,
            "ranking": self.ranking,
            "scale_out": self.scale_out,
            "notes": self.notes,
            "agent": self.agent,
        }


class Decider(Protocol):
    """Turns an observation into proposed actions (bounded and applied by the loop)."""

    name: str

    def decide(self, observation: Observation) -> list[Action]: ...

    @property
    def explanation(self) -> Explanation: ...


class NoneDecider:
    """Decides nothing."""

    name = "none"

    def __init__(self) -> None:
        self._explanation = Explanation()

    def decide(self, observation: Observation) -> list[Action]:
        self._explanation = Explanation(mode="idle")
        return []

    @property
    def explanation(self) -> Explanation:
        return self._explanation


# -- reclaiming, shared by the deciders ------------------------------------------------------------------


class Calm:
    """Since when every SLO has held with slack and nothing was raised (for ``reclaim.hold_s``)."""

    def __init__(self) -> None:
        self.since: float | None = None

    def update(self, observation: Observation, raised: bool) -> float:
        """Seconds of calm up to this observation."""
        if raised or not observation.all_slack:
            self.since = None
            return 0.0
        if self.since is None:
            self.since = observation.time
        return observation.time - self.since


def floor_of(config: LoopConfig, view: InstanceView, resource: str) -> float:
    """How far reclaim may go: the baseline (``inf`` baseline: nothing to reclaim) or the guard's min."""
    guard = config.guard(view.service, resource)
    if config.reclaim.floor == "min":
        return guard.min
    base = view.baseline.get(resource)
    return max(guard.min, effective(base, math.inf))


def excess(config: LoopConfig, view: InstanceView, resource: str) -> float:
    """How much ``resource`` of ``view`` is above its reclaim floor, as a share of the floor (0: none)."""
    if resource not in view.resources or view.service in config.exclude:
        return 0.0
    current = view.limits.get(resource)
    if not isinstance(current, float) or math.isinf(current):
        return 0.0
    floor = floor_of(config, view, resource)
    if math.isinf(floor) or current <= floor * (1 + config.deadband):
        return 0.0
    return (current - floor) / floor


def step_down(config: LoopConfig, view: InstanceView, resource: str) -> float:
    """The bounded step down: ``fraction`` of the excess, at least ``min_step`` x max_step, not below the floor."""
    current = float(view.limits[resource])
    floor = floor_of(config, view, resource)
    guard = config.guard(view.service, resource)
    amount = max(config.reclaim.fraction * (current - floor), config.reclaim.min_step * guard.max_step)
    return max(floor, current - amount)


def reclaim_candidates(config: LoopConfig, observation: Observation) -> list[InstanceView]:
    """Instances with a resource above its floor, the largest excess first."""
    scored = []
    for view in observation.instances.values():
        worst = max((excess(config, view, r) for r in RESOURCES), default=0.0)
        if worst > 0:
            scored.append((worst, view.name, view))
    scored.sort(key=lambda item: (-item[0], item[1]))
    return [view for _, _, view in scored[: config.reclaim.instances_per_step]]


# -- AIMD ------------------------------------------------------------------------------------------------


class AimdDecider:
    """Multiplicative increase on violation, additive decrease with slack (resources of ``aimd.decrease``)."""

    name = "aimd"

    def __init__(self, config: LoopConfig) -> None:
        self.config = config
        self.calm = Calm()
        self._explanation = Explanation()

    @property
    def explanation(self) -> Explanation:
        return self._explanation

    def decide(self, observation: Observation) -> list[Action]:
        cfg = self.config
        explanation = Explanation()
        actions: list[Action] = []
        violated = observation.violated
        if violated:
            explanation.mode = "raise"
            types = {s.request_type for s in violated}
            for view in sorted(observation.instances.values(), key=lambda v: v.name):
                if view.service in cfg.exclude or not view.request_types & types:
                    continue
                for resource in cfg.aimd.decrease:
                    current = view.limits.get(resource)
                    if (
                        resource not in view.resources
                        or not isinstance(current, float)
                        or math.isinf(current)
                    ):
                        continue
                    worst = max(
                        (s for s in violated if s.request_type in view.request_types),
                        key=lambda s: s.ratio or 0.0,
                    )
                    actions.append(
                        Action(
                            view.name,
                            resource,
                            current * cfg.aimd.increase,
                            f"{worst.request_type} p99 {worst.p99_ms:.0f} ms > SLO {worst.slo_ms:g} ms: "
                            f"x{cfg.aimd.increase:g}",
                            view.service,
                        )
                    )
        calm = self.calm.update(observation, raised=bool(actions))
        if not violated and observation.all_slack and cfg.reclaim.enabled:
            if calm < cfg.reclaim.hold_s:
                explanation.mode = "hold"
                explanation.notes.append(
                    f"slack for {calm:.0f} of {cfg.reclaim.hold_s:g} s before reclaiming"
                )
            else:
                explanation.mode = "reclaim"
                for view in sorted(observation.instances.values(), key=lambda v: v.name):
                    for resource, amount in cfg.aimd.decrease.items():
                        if excess(cfg, view, resource) > 0:
                            current = float(view.limits[resource])
                            target = max(floor_of(cfg, view, resource), current - amount)
                            actions.append(
                                Action(
                                    view.name,
                                    resource,
                                    target,
                                    f"every SLO with slack: -{amount:g}",
                                    view.service,
                                )
                            )
        self._explanation = explanation
        return actions


# -- FIRM ------------------------------------------------------------------------------------------------


class FirmDecider:
    """Localize culprits, let the agent set their limits; reclaim when every SLO holds with slack.

    ``request_types`` fixes the order of the agent's request-mix entries (padded with zeros or cut
    to ``n_request_types``).
    """

    name = "firm"

    def __init__(
        self,
        config: LoopConfig,
        localizer: LocalizerLike,
        agent: AgentLike,
        *,
        build_state: StateBuilder,
        bounds: BoundsFactory,
        request_types: Sequence[str],
        n_request_types: int | None = None,
    ) -> None:
        self.config = config
        self.localizer, self.agent = localizer, agent
        self.build_state, self.make_bounds = build_state, bounds
        n = len(request_types) if n_request_types is None else n_request_types
        self.request_types = tuple(request_types)[:n] + ("",) * max(0, n - len(request_types))
        self.calm = Calm()
        self._explanation = Explanation()
        self.parts = TracePartsCache(config.firm.trace_cache)
        """Each request's parts (critical path, own times, gaps), computed once when it completes."""
        self._reference: tuple[Sequence[Trace] | None, WindowParts | None] = (None, None)
        self._placed: dict[int, float] = {}
        """CPU use (cores) placement moved onto each CPU in the decision under way."""

    @property
    def explanation(self) -> Explanation:
        return self._explanation

    def ingest(self, traces: Sequence[Trace]) -> int:
        """Compute the parts of the window's requests not seen before (the loop calls this every
        step, so a decision finds them ready); returns how many were computed."""
        return self.parts.ingest(traces)

    def forget(self) -> None:
        """Drop every cached per-trace part (the next decision computes them all again)."""
        self.parts = TracePartsCache(self.config.firm.trace_cache)
        self._reference = (None, None)

    def _windows(self, observation: Observation) -> tuple[Sequence[Trace], Sequence[Trace] | None]:
        """The window and the reference as cached parts (the reference's own aggregates are kept
        while it stays the same); the traces themselves when a trace cannot be profiled."""
        try:
            window: Sequence[Trace] = self.parts.window(observation.traces)
            source = observation.reference
            if source is None:
                return window, None
            held, parts = self._reference
            if held is not source or parts is None:
                parts = self.parts.window(source)
                self._reference = (source, parts)
            return window, parts
        except TraceParseError:
            return observation.traces, observation.reference

    def decide(self, observation: Observation) -> list[Action]:
        cfg = self.config
        explanation = Explanation(agent="step rule" if isinstance(self.agent, StepAgent) else "agent")
        self._explanation = explanation
        self._placed = {}
        actions: list[Action] = []
        if observation.at_risk:
            explanation.mode = "raise"
            actions = self._raise(observation, explanation)
        calm = self.calm.update(observation, raised=bool(actions))
        if not observation.at_risk and observation.all_slack and cfg.reclaim.enabled:
            if calm < cfg.reclaim.hold_s:
                explanation.mode = "hold"
                explanation.notes.append(
                    f"slack for {calm:.0f} of {cfg.reclaim.hold_s:g} s before reclaiming"
                )
            else:
                explanation.mode = "reclaim"
                actions = self._reclaim(observation, explanation)
        if not observation.at_risk:
            actions = [*actions, *self._tidy(observation, explanation)]
        return actions

    def _tidy(self, observation: Observation, explanation: Explanation) -> list[Action]:
        """While no SLO is at risk: up to ``firm.placement_idle_moves`` instances on CPUs that work
        outside the managed instances keeps busy are moved off them where other CPUs have room
        (:meth:`_move_to`), those that wait for a CPU the longest first, so that the next
        contention finds them elsewhere; a move changes no quota."""
        cfg = self.config.firm
        if not cfg.placement or cfg.placement_idle_moves == 0 or not observation.cpu_load:
            return []
        contended = observation.contended_cpus(cfg.foreign_cpu)
        if not contended:
            return []
        views = sorted(
            (
                v
                for v in observation.instances.values()
                if v.service not in self.config.exclude and _cpus(v) & contended
            ),
            key=lambda v: (-v.usage.get("cpu_wait", 0.0), -v.usage.get("cpu", 0.0), v.name),
        )
        moves: list[Action] = []
        loads = observation.cpu_load
        for view in views:
            if len(moves) >= cfg.placement_idle_moves:
                break
            move = self._move_to(view, observation, commit=True)
            if move is None:
                continue
            busy = ", ".join(f"CPU {c} {loads[c].foreign:.2f} cores" for c in sorted(_cpus(view) & contended))
            reason = (
                f"work outside the managed instances keeps its CPUs busy ({busy}): moved to CPUs "
                f"{cgroup.format_list(move)} before an SLO is at risk"
            )
            moves.append(Action(view.name, "cpuset", cgroup.format_list(move), reason, view.service))
        if moves:
            explanation.notes.append(
                f"placement: {', '.join(m.instance for m in moves)} moved off contended CPUs "
                f"{cgroup.format_list(sorted(contended))}"
            )
        return moves

    # raising ---------------------------------------------------------------------------------------

    def _raise(self, observation: Observation, explanation: Explanation) -> list[Action]:
        cfg = self.config.firm
        started = time.perf_counter()
        window, reference = self._windows(observation)
        try:
            ranking = self.localizer.rank(window, reference)
        except FirmError as exc:  # e.g. a reference with no instance in common: rank the window alone
            if reference is None:
                raise
            explanation.notes.append(f"reference not usable ({exc.message}); ranked the window alone")
            ranking = self.localizer.rank(window, None)
        explanation.stages_ms["localize"] = (time.perf_counter() - started) * 1000
        eligible = [
            r
            for r in ranking.instances
            if r.instance in observation.instances
            and observation.instances[r.instance].service not in self.config.exclude
        ]
        explanation.ranking = [
            {"instance": r.instance, "score": round(float(r.score), 4), "culprit": r.culprit}
            for r in eligible[:5]
        ]
        if not ranking.reference_used:
            explanation.notes.append("ranked without a reference window")
        culprits, waiting = self._choose(eligible, observation, explanation)
        explanation.culprits = [
            {
                "instance": r.instance,
                "service": r.service,
                "score": round(float(r.score), 4),
                "culprit": r.culprit,
                "features": _top_features(r.features),
                **({"cpu_wait_s_per_s": round(waiting[r.instance], 4)} if r.instance in waiting else {}),
            }
            for r in culprits
        ]
        actions: list[Action] = []
        started = time.perf_counter()
        for ranked in culprits:
            view = observation.instances[ranked.instance]
            worst = observation.worst_for(view.name)
            if ranked.instance in waiting:
                actions.extend(self._relieve(view, waiting[ranked.instance], worst, observation))
                continue
            proposals, scale_out = self._ask_agent(
                observation,
                view,
                worst_slo=worst.slo_ms if worst else None,
                worst_p99=worst.p99_ms if worst else None,
            )
            if scale_out:
                explanation.scale_out.append(view.service)
            label = (
                f"culprit (score {float(ranked.score):.2f}) of {worst.request_type} p99 {worst.p99_ms:.0f} ms "
                f"/ SLO {worst.slo_ms:g} ms"
                if worst and worst.p99_ms is not None and worst.slo_ms
                else f"culprit (score {float(ranked.score):.2f})"
            )
            for resource, proposed in proposals.items():
                value = proposed
                current = effective(view.limits.get(resource), self.config.guard(view.service, resource).max)
                if value < current and cfg.raise_only:
                    continue  # the SLO is in danger: no resource of a culprit is cut now
                reason = f"agent: {label}"
                if resource == "cpu" and value > current and math.isfinite(current) and self._starved(view):
                    used = view.usage.get("cpu", 0.0) / current if current > 0 else 1.0
                    widen = self._widen(view, observation)
                    if widen is not None:
                        reason = (
                            f"widened onto CPUs {cgroup.format_list(widen)} (no quota change): uses "
                            f"{used:.0%} of its CPU limit; {label}"
                        )
                        actions.append(
                            Action(view.name, "cpuset", cgroup.format_list(widen), reason, view.service)
                        )
                        continue
                    value = min(value, current * (1 + 2 * self.config.deadband))
                    reason = f"smallest raise (widens its CPUs): uses {used:.0%} of its CPU limit; {label}"
                actions.append(Action(view.name, resource, value, reason, view.service))
                if resource == "cpu" and value > current:
                    actions.extend(self._place_raise(view, observation, value))
        explanation.stages_ms["agent"] = (time.perf_counter() - started) * 1000
        return actions

    def _choose(
        self, eligible: Sequence[RankedInstance], observation: Observation, explanation: Explanation
    ) -> tuple[list[RankedInstance], dict[str, float]]:
        """The culprits to act on, in order, and the seconds per second that those contended on
        their CPUs wait for one (by instance): first every instance waiting for a CPU
        (:meth:`_waits_for_cpu`), then the localizer's culprits up to ``firm.max_culprits`` in all;
        with none, and an SLO violated, the top-ranked instance (``firm.fallback_top``). An instance
        that uses little of its CPU limit and that more CPU cannot reach (:meth:`_stuck`) is passed
        over."""
        cfg = self.config.firm
        actionable = []
        for r in eligible:
            view = observation.instances[r.instance]
            if self._starved(view) and self._stuck(view, observation):
                if r.culprit:
                    explanation.notes.append(
                        f"{r.instance} (score {float(r.score):.2f}) passed over: it uses little of its CPU "
                        f"limit and {self._stuck_why(view)}, so more CPU would not reach it"
                    )
                continue
            actionable.append(r)
        waiting = {
            r.instance: wait
            for r in actionable
            if (wait := self._waits_for_cpu(observation.instances[r.instance], observation)) is not None
        }
        culprits = [r for r in actionable if r.instance in waiting]
        flagged = [r for r in actionable if r.culprit and r.instance not in waiting]
        culprits += flagged[: max(0, cfg.max_culprits - len(culprits))]
        if not culprits and observation.violated and cfg.fallback_top and actionable:
            culprits = actionable[:1]
            explanation.notes.append(
                f"no instance flagged; acting on the top-ranked {actionable[0].instance}"
            )
        return culprits, waiting

    def _waits_for_cpu(self, view: InstanceView, observation: Observation) -> float | None:
        """Seconds per second ``view``'s tasks waited for a CPU (telemetry's ``cpu_wait``) when that
        marks a neighbour contending for its CPUs (at least ``firm.cpu_wait_s``, and at least
        ``firm.cpu_wait_ratio`` per CPU-second it ran) and another cpuset could help (it is not
        :meth:`_stuck`) or it lacks quota too (throttled in more than ``firm.throttled_cpu`` of its
        CFS periods); None otherwise."""
        cfg = self.config.firm
        wait = view.usage.get("cpu_wait")
        if cfg.cpu_wait_s is None or wait is None or wait < cfg.cpu_wait_s:
            return None
        if self._stuck(view, observation) and view.usage.get("cpu_throttled", 0.0) <= cfg.throttled_cpu:
            return None
        used = view.usage.get("cpu", 0.0)
        if used > 0 and wait / used < cfg.cpu_wait_ratio:
            return None
        return wait

    def _relieve(
        self, view: InstanceView, wait: float, worst: SloStatus | None, observation: Observation
    ) -> list[Action]:
        """What an instance contended on its CPUs gets: moved off the contended ones where the
        target reports each CPU's load (:meth:`_move_to`), else the smallest CPU raise, which widens
        its cpuset (onto uncontended CPUs only, where the load is known; else the executor adds the
        parent's next CPU), which is what the instance lacks; the quota grows only by twice the
        dead band."""
        used = view.usage.get("cpu", 0.0)
        label = (
            f" of {worst.request_type} p99 {worst.p99_ms:.0f} ms / SLO {worst.slo_ms:g} ms"
            if worst and worst.p99_ms is not None and worst.slo_ms
            else ""
        )
        waited = (
            f"waits for a CPU {wait:.2f} s per s ({wait / used:.1f} s per CPU-second run)"
            if used > 0
            else f"waits for a CPU {wait:.2f} s per s"
        )
        move = self._move_to(view, observation, commit=True)
        if move is not None:
            loads = observation.cpu_load or {}
            busy = ", ".join(
                f"CPU {c} {loads[c].foreign:.2f} cores"
                for c in sorted(_cpus(view) & observation.contended_cpus(self.config.firm.foreign_cpu))
                if c in loads
            )
            reason = (
                f"{waited}{label}; work outside the managed instances keeps its CPUs busy ({busy}): "
                f"moved to CPUs {cgroup.format_list(move)}"
            )
            return [Action(view.name, "cpuset", cgroup.format_list(move), reason, view.service)]
        widen = self._widen(view, observation)
        if widen is not None:
            reason = (
                f"{waited}: a neighbour contends for its CPUs{label}; widened onto CPUs "
                f"{cgroup.format_list(widen)} (no quota change: it lacks a CPU, not quota)"
            )
            return [Action(view.name, "cpuset", cgroup.format_list(widen), reason, view.service)]
        guard = self.config.guard(view.service, "cpu")
        current = effective(view.limits.get("cpu"), guard.max)
        if not math.isfinite(current) or "cpu" not in view.resources:
            return []
        reason = f"{waited}: a neighbour contends for its CPUs{label}; smallest raise (widens its CPUs)"
        value = current * (1 + 2 * self.config.deadband)
        return [
            Action(view.name, "cpu", value, reason, view.service),
            *self._place_raise(view, observation, value),
        ]

    def _cpu_room(
        self, view: InstanceView, observation: Observation, cores: float, *, grow: bool, commit: bool = False
    ) -> list[int] | None:
        """The CPUs ``view`` should run on with a quota of ``cores`` where placement applies (it is
        on, the target reports each CPU's load, the instance has a cpuset the executor sets): the
        CPUs of its cpuset that are not contended (``firm.foreign_cpu``), plus the least loaded
        uncontended others below the cap, up to as many CPUs as the quota needs and, when
        ``grow``, one more than it keeps. A cpuset that changes must leave room for the CPU use it
        brings onto its CPUs (the instance's use times the share of its CPUs it leaves, its use
        spread evenly): their headroom below the cap (busy cores over the last step, plus what
        this decision already moved there) must hold it, else None, as where placement does not
        apply or every CPU is contended. The cap is ``firm.placement_busy``, or
        ``firm.placement_busy_max`` when a contended CPU the instance leaves is busier than that.
        ``commit``: count that use on its new CPUs for the rest of the decision."""
        cfg = self.config.firm
        loads = observation.cpu_load
        mine = _cpus(view)
        if not cfg.placement or not loads or not mine or "cpuset" not in view.resources:
            return None
        contended = observation.contended_cpus(cfg.foreign_cpu)
        left_busy = max((loads[c].busy for c in mine & contended if c in loads), default=0.0)
        cap = cfg.placement_busy_max if left_busy > cfg.placement_busy_max else cfg.placement_busy

        def load(cpu: int) -> float:
            return loads[cpu].busy + self._placed.get(cpu, 0.0) if cpu in loads else cap

        keep = sorted(mine - contended)
        spare = sorted(
            (c for c in loads if c not in contended and c not in mine and load(c) < cap),
            key=lambda c: (load(c), c),
        )
        needed = math.ceil(cores - 1e-9) if math.isfinite(cores) else len(mine)
        wanted = max(1, needed, len(keep) + (1 if grow else 0))
        room = sorted(keep + spare[: max(0, wanted - len(keep))])
        if not room:
            return None
        if set(room) != mine:
            brought = view.usage.get("cpu", 0.0) * len(mine - set(room)) / len(mine)
            if sum(max(0.0, cap - load(c)) for c in room) < brought:
                return None
            if commit:
                for c in room:
                    self._placed[c] = self._placed.get(c, 0.0) + brought / len(room)
        return room

    def _move_to(
        self, view: InstanceView, observation: Observation, *, commit: bool = False
    ) -> list[int] | None:
        """The CPUs to move ``view`` to when some of its CPUs are contended and others have room
        (:meth:`_cpu_room` for its current quota); None when it need not or cannot move."""
        mine = _cpus(view)
        if not mine & observation.contended_cpus(self.config.firm.foreign_cpu):
            return None
        cores = effective(view.limits.get("cpu"), math.inf)
        room = self._cpu_room(view, observation, cores, grow=False, commit=commit)
        return room if room is not None and set(room) != mine else None

    def _place_raise(self, view: InstanceView, observation: Observation, cores: float) -> list[Action]:
        """The cpuset that goes with a CPU raise to ``cores`` where placement applies: the raise
        widens onto uncontended CPUs only (:meth:`_cpu_room`), and the executor, given the cpuset
        in the same step, does not add a CPU of its own choosing; nothing where it does not apply."""
        room = self._cpu_room(view, observation, cores, grow=True, commit=True)
        if room is None:
            return []
        contended = sorted(observation.contended_cpus(self.config.firm.foreign_cpu))
        reason = f"placement of the CPU raise: CPUs {cgroup.format_list(room)}" + (
            f", not the contended {cgroup.format_list(contended)}" if contended else ""
        )
        return [Action(view.name, "cpuset", cgroup.format_list(room), reason, view.service)]

    def _widen(self, view: InstanceView, observation: Observation) -> list[int] | None:
        """Where placement applies and ``view`` is not throttled (it lacks a CPU, not quota): the
        wider cpuset a raise would have given it, as a change of its own, so that its quota does
        not grow for nothing: its uncontended CPUs plus a quiet one with room (:meth:`_cpu_room`),
        or, when every CPU is contended, all of them (it runs wherever a turn comes first). None
        where placement does not apply, nothing wider has room, or it is throttled (a raise then)."""
        cfg = self.config.firm
        loads = observation.cpu_load
        mine = _cpus(view)
        if not cfg.placement or not loads or not mine or "cpuset" not in view.resources:
            return None
        if view.usage.get("cpu_throttled", 0.0) > cfg.throttled_cpu:
            return None
        cores = effective(view.limits.get("cpu"), math.inf)
        room = self._cpu_room(view, observation, cores, grow=True, commit=True)
        if room is not None:
            return room if set(room) > mine else None
        if set(loads) <= observation.contended_cpus(cfg.foreign_cpu) and not set(loads) <= mine:
            return sorted(set(loads) | mine)
        return None

    def _stuck(self, view: InstanceView, observation: Observation) -> bool:
        """Whether no cpuset would give ``view`` more room: it cannot be moved off a contended CPU
        (:meth:`_move_to`), and it already runs on every CPU it may have, or, where placement
        applies, a raise would keep it on the CPUs it has (every other one contended or full)."""
        if self._move_to(view, observation) is not None:
            return False
        if _on_every_cpu(view):
            return True
        cores = effective(view.limits.get("cpu"), math.inf) * (1 + 2 * self.config.deadband)
        room = self._cpu_room(view, observation, cores, grow=True)
        return room is not None and set(room) == _cpus(view)

    @staticmethod
    def _stuck_why(view: InstanceView) -> str:
        if _on_every_cpu(view):
            return "already runs on every CPU it may use"
        return "every CPU it could add is contended or full"

    def _starved(self, view: InstanceView) -> bool:
        """Whether ``view`` uses less than ``firm.unused_cpu`` of a finite CPU limit and is seldom
        throttled (in at most ``firm.throttled_cpu`` of its CFS periods): what it lacks is a free CPU
        to run on, not quota. One throttled more often lacks quota in its bursts, however low its
        average use."""
        current = effective(view.limits.get("cpu"), math.inf)
        if not math.isfinite(current) or current <= 0:
            return False
        if view.usage.get("cpu_throttled", 0.0) > self.config.firm.throttled_cpu:
            return False
        return view.usage.get("cpu", 0.0) / current < self.config.firm.unused_cpu

    def _ask_agent(
        self,
        observation: Observation,
        view: InstanceView,
        *,
        worst_slo: float | None,
        worst_p99: float | None,
    ) -> tuple[dict[str, float], bool]:
        guards = {r: self.config.guard(view.service, r) for r in RESOURCES}
        ceilings = {r: g.max for r, g in guards.items()}
        if math.isfinite(view.cpu_capacity):
            ceilings["cpu"] = max(guards["cpu"].min, min(ceilings["cpu"], view.cpu_capacity))
        current = {
            r: min(max(effective(view.limits.get(r), ceilings[r]), guards[r].min), ceilings[r])
            for r in RESOURCES
        }
        mask = {r: r in view.resources for r in RESOURCES}
        usage = {r: view.usage.get(r, 0.0) for r in RESOURCES}
        mix = [observation.mix.get(t, 0.0) for t in self.request_types]
        slo = worst_slo or 1.0
        state = self.build_state(
            slo_ms=slo,
            p99_ms=worst_p99 if worst_p99 is not None else 0.0,
            rate_rps=observation.rate_rps,
            prev_rate_rps=observation.prev_rate_rps,
            mix=mix,
            usage=usage,
            limits=current,
        )
        bounds = {r: self.make_bounds(guards[r].min, ceilings[r]) for r in RESOURCES}
        decision = self.agent.decide(state, current=current, bounds=bounds, mask=mask)
        proposals = {
            r: float(v) for r, v in decision.limits.items() if mask.get(r) and math.isfinite(float(v))
        }
        return proposals, bool(decision.scale_out)

    # reclaiming ------------------------------------------------------------------------------------

    def _reclaim(self, observation: Observation, explanation: Explanation) -> list[Action]:
        actions: list[Action] = []
        started = time.perf_counter()
        for view in reclaim_candidates(self.config, observation):
            worst = observation.worst_for(view.name)
            proposals, _ = self._ask_agent(
                observation,
                view,
                worst_slo=worst.slo_ms if worst else None,
                worst_p99=worst.p99_ms if worst else None,
            )
            for resource in RESOURCES:
                if excess(self.config, view, resource) <= 0:
                    continue
                current = float(view.limits[resource])
                floor = floor_of(self.config, view, resource)
                agent_value = proposals.get(resource)
                if agent_value is not None and agent_value < current * (1 - self.config.deadband):
                    target, how = max(floor, agent_value), "agent"
                else:
                    target, how = step_down(self.config, view, resource), "bounded step"
                actions.append(
                    Action(
                        view.name, resource, target, f"every SLO with slack: reclaim ({how})", view.service
                    )
                )
            explanation.culprits.append(
                {
                    "instance": view.name,
                    "service": view.service,
                    "score": None,
                    "culprit": False,
                    "features": {},
                }
            )
        explanation.stages_ms["agent"] = (time.perf_counter() - started) * 1000
        return actions


def _cpus(view: InstanceView) -> set[int]:
    """The CPUs of ``view``'s cpuset (empty when unknown or unreadable)."""
    text = view.limits.get("cpuset")
    if not isinstance(text, str) or not text.strip():
        return set()
    try:
        return set(cgroup.parse_list(text, "cpuset"))
    except FirmError:
        return set()


def _on_every_cpu(view: InstanceView) -> bool:
    """Whether ``view``'s cpuset already holds as many CPUs as it may have (its ``cpu_capacity``)."""
    cpus = _cpus(view)
    return bool(cpus) and math.isfinite(view.cpu_capacity) and len(cpus) >= view.cpu_capacity


def _top_features(features: Mapping[str, float | None], keep: int = 6) -> dict[str, float | None]:
    """The largest few features by magnitude (for the audit), rounded."""
    finite = [(k, v) for k, v in features.items() if v is not None and np.isfinite(v)]
    finite.sort(key=lambda kv: -abs(float(kv[1] or 0.0)))
    return {k: round(float(v or 0.0), 4) for k, v in finite[:keep]}


@dataclass(frozen=True)
class StepDecision:
    limits: dict[str, float]
    scale_out: bool
    masked: tuple[str, ...]


class StepAgent:
    """Stands in for the agent when no agent model is installed (the audit says so).

    Reads FIRM's state (SR at index 0, the five RU last, :data:`RESOURCES` order). SLO violated (SR
    < 1): CPU, and every resource used to ``busy`` of its limit or more, times ``factor``. SLO met
    with slack (SR > ``slack_sr``): every resource used below ``idle`` of its limit divided by
    ``factor``. Otherwise no change. Scale-out when the CPU sits at its bound in a violation.
    """

    def __init__(
        self, factor: float = 1.5, busy: float = 0.8, idle: float = 0.5, slack_sr: float = 1.5
    ) -> None:
        self.factor, self.busy, self.idle, self.slack_sr = factor, busy, idle, slack_sr

    def decide(
        self, state: Any, *, current: Mapping[str, float], bounds: Mapping[str, Any], mask: Mapping[str, bool]
    ) -> StepDecision:
        values = [float(v) for v in state]
        sr, ru = values[0], dict(zip(RESOURCES, values[-len(RESOURCES) :], strict=True))
        limits: dict[str, float] = {}
        scale_out = False
        for resource in RESOURCES:
            if not mask.get(resource):
                continue
            low, high = float(bounds[resource].min), float(bounds[resource].max)
            value = current[resource]
            if sr < 1 and (resource == "cpu" or ru[resource] >= self.busy):
                scale_out = scale_out or (resource == "cpu" and value >= high)
                value *= self.factor
            elif sr > self.slack_sr and ru[resource] < self.idle:
                value /= self.factor
            limits[resource] = min(max(value, low), high)
        return StepDecision(limits, scale_out, tuple(r for r in RESOURCES if not mask.get(r)))


def make_decider(
    config: LoopConfig,
    *,
    request_types: Sequence[str],
    localizer: LocalizerLike | None = None,
    agent: AgentLike | None = None,
) -> Decider:
    """The decider ``config.decider`` names; the firm decider loads the shipped (or configured) models
    unless ``localizer`` and ``agent`` are given. Raises the stages' own errors for a bad model."""
    if config.decider == "none":
        return NoneDecider()
    if config.decider == "aimd":
        return AimdDecider(config)
    rl = importlib.import_module("firm.rl")  # torch: imported only when the firm decider runs
    agent_class, bounds_class, build_state = rl.Agent, rl.ResourceBounds, rl.build_state

    if localizer is None:
        localize = importlib.import_module("firm.localize")
        localizer = localize.Localizer.load(config.firm.localizer_model)
    loaded: AgentLike
    if agent is not None:
        loaded = agent
    elif config.firm.agent_model is None and not rl.DEFAULT_MODEL.is_file():
        log.warning("no agent model is installed (%s): the firm decider uses the step rule", rl.DEFAULT_MODEL)
        loaded = StepAgent()
    else:
        loaded = agent_class.load(config.firm.agent_model)
    n_types: int | None = getattr(getattr(loaded, "cfg", None), "n_request_types", None)
    return FirmDecider(
        config,
        localizer,
        loaded,
        build_state=build_state,
        bounds=bounds_class,
        request_types=request_types,
        n_request_types=n_types,
    )
