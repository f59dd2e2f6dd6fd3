"""Guardrails: every proposed action is bounded here, whichever decider proposed it.

For an action on resource ``r`` of an instance of service ``s`` with guardrail ``g =
config.guard(s, r)`` and current limit ``c`` (``inf``, no limit, counts as ``g.max``):

1. the instance must be known, not excluded, not stale, and ``r`` controllable on it (not masked);
2. its previous action must be confirmed: a telemetry sample that *began* after it (``confirm``);
3. ``r`` must be out of its cool-down (``g.cooldown_s`` since its last change);
4. the target is clipped to ``[g.min, min(g.max, node bound)]`` (the node bound of ``cpu`` is the
   cores of the instance's cpuset), then to ``[c - g.max_step, c + g.max_step]``, then to
   ``[g.min, g.max]`` again;
5. a change smaller than ``deadband x c`` is no action, and so is a limit at the ceiling on a
   resource that has none.

The value that comes out is always within ``[g.min, g.max]``; it differs from ``c`` by at most
``g.max_step`` whenever ``c`` is within ``[g.min, g.max]`` (or unlimited). An instance whose limit
lies outside its guardrail (a baseline set by hand) is brought inside in one step.
Other resources (``cpu_weight``, ``cpuset``) pass through steps 1-3 only, and a value already in
force is no action, except a ``cpuset`` proposed beside an accepted CPU raise of the same instance:
it stays, so that the executor keeps the cpuset as it is instead of widening it for the raise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from firm.actuate.executor import Action, StepResult
from firm.loop.config import RESOURCES, LoopConfig
from firm.loop.observe import Observation


@dataclass(frozen=True)
class Rejected:
    """A proposal the guardrails refused, and why."""

    action: Action
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {**self.action.as_dict(), "rejected": self.reason}


def effective(value: float | str | None, ceiling: float) -> float:
    """A limit as a number for step arithmetic: ``inf`` (none) counts as ``ceiling``."""
    if not isinstance(value, float | int) or math.isinf(value):
        return ceiling
    return float(value)


class Guardrails:
    """Bounds actions and remembers when each instance and resource last changed."""

    def __init__(self, config: LoopConfig) -> None:
        self.config = config
        self.changed_at: dict[tuple[str, str], float] = {}
        """(instance, resource) -> seconds since the epoch of its last change."""
        self.unconfirmed: dict[str, float] = {}
        """instance -> time of its last action, until telemetry shows it."""

    def confirm(self, observation: Observation) -> None:
        """Drop the instances whose telemetry now covers a whole interval after their last action."""
        for name, acted_at in list(self.unconfirmed.items()):
            view = observation.instances.get(name)
            if view is None or (view.telemetry_since is not None and view.telemetry_since >= acted_at):
                del self.unconfirmed[name]

    def bound(
        self,
        proposals: Sequence[Action],
        observation: Observation,
        now: float,
        stale: Mapping[str, str] | None = None,
    ) -> tuple[list[Action], list[Rejected]]:
        """The proposals as they may be applied, and the ones refused with the reason."""
        accepted: list[Action] = []
        rejected: list[Rejected] = []
        pins: list[Action] = []
        seen: set[tuple[str, str]] = set()
        for action in proposals:
            reason = self._refusal(action, observation, now, stale or {})
            if reason is None and (action.instance, action.resource) in seen:
                reason = "a second action on the same resource in one step"
            if reason is not None:
                rejected.append(Rejected(action, reason))
                continue
            seen.add((action.instance, action.resource))
            bounded = self._clip(action, observation)
            if bounded is None and action.resource == "cpuset":
                pins.append(action)
            elif bounded is None:
                rejected.append(Rejected(action, "no change (within the deadband)"))
            else:
                accepted.append(bounded)
        raised = {a.instance for a in accepted if a.resource == "cpu"}
        for pin in pins:  # a cpuset kept as it is, beside a CPU raise: the raise must not widen it
            if pin.instance in raised:
                accepted.append(pin)
            else:
                rejected.append(Rejected(pin, "no change (within the deadband)"))
        return accepted, rejected

    def _refusal(
        self, action: Action, observation: Observation, now: float, stale: Mapping[str, str]
    ) -> str | None:
        view = observation.instances.get(action.instance)
        if view is None:
            return "unknown instance"
        if view.service in self.config.exclude:
            return f"service {view.service} is excluded"
        if action.resource not in view.resources:
            return f"{action.resource} is masked on this node"
        if action.instance in stale:
            return stale[action.instance]
        if self.config.confirm and action.instance in self.unconfirmed:
            return "its previous action is not yet visible in telemetry"
        if action.resource in RESOURCES:
            cooldown = self.config.guard(view.service, action.resource).cooldown_s
            last = self.changed_at.get((action.instance, action.resource))
            if last is not None and now - last < cooldown:
                return f"cool-down ({now - last:.1f} of {cooldown:g} s)"
        return None

    def _clip(self, action: Action, observation: Observation) -> Action | None:
        view = observation.instances[action.instance]
        current = view.limits.get(action.resource)
        if action.resource not in RESOURCES:
            return None if current == action.value else action
        assert isinstance(action.value, float)
        guard = self.config.guard(view.service, action.resource)
        ceiling = guard.max
        if action.resource == "cpu":
            ceiling = max(guard.min, min(ceiling, view.cpu_capacity))
        base = effective(current, ceiling)
        by: list[str] = []  # which guardrails clipped the proposal (for the audit)
        target = min(max(action.value, guard.min), ceiling)
        if target != action.value:
            by.append(_limit_name(action.value, guard.min, ceiling, guard.max))
        stepped = min(max(target, base - guard.max_step), base + guard.max_step)
        if stepped != target:
            by.append(f"max_step {guard.max_step:g}")
        target = min(max(stepped, guard.min), ceiling)
        if target != stepped:
            by.append(_limit_name(stepped, guard.min, ceiling, guard.max))
        unlimited = isinstance(current, float) and math.isinf(current)
        if unlimited and target >= ceiling:
            return None  # a limit at the ceiling changes nothing an unlimited resource does not have
        if not unlimited and abs(target - base) <= self.config.deadband * base:
            return None
        note = (
            ""
            if math.isclose(target, action.value, rel_tol=1e-9)
            else f" (bounded from {action.value:.6g} by {', '.join(by) or 'rounding'})"
        )
        return Action(action.instance, action.resource, target, action.reason + note, view.service)

    def forget(self, instances: Iterable[str]) -> None:
        """Drop the state of instances that are gone (scaled in): their changes and confirmations.
        An instance of the same name started later begins with no cool-down and nothing unconfirmed."""
        gone = set(instances)
        self.changed_at = {k: v for k, v in self.changed_at.items() if k[0] not in gone}
        for name in gone:
            self.unconfirmed.pop(name, None)

    def record(self, result: StepResult, now: float) -> None:
        """Remember the step's changes (in a dry run too: the audit then shows what a real run does)."""
        if not result.ok:
            return
        for applied in result.applied:
            if applied.changed:
                self.changed_at[(applied.action.instance, applied.action.resource)] = now
                self.unconfirmed[applied.action.instance] = now


def _limit_name(value: float, low: float, ceiling: float, high: float) -> str:
    """The guardrail a value outside ``[low, ceiling]`` was clipped to."""
    if value < low:
        return f"min {low:g}"
    return f"max {high:g}" if ceiling >= high else f"the node's bound {ceiling:g}"
