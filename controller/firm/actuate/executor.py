"""The executor contract: how a control step's decisions reach the nodes, whatever the back end.

Every back end (``local`` in :mod:`firm.actuate.local`; ``ansible`` and ``kubernetes`` later) takes
the same :class:`Action` objects and answers with the same :class:`StepResult`:

- :meth:`Executor.apply` applies *all* of a step's actions as one unit: either every one of them
  holds afterwards, or none does (the ones already written are undone and ``rolled_back`` is
  set). An action whose value is already in place writes nothing (idempotent). With
  ``dry_run=True`` it validates and reads, reports what it would change, and writes nothing.
- :meth:`Executor.snapshot` reads the current limits of some instances; :meth:`Executor.restore`
  brings them back to a snapshot (used to restore the baselines when the loop stops).

Values are in firm's units, the same on every back end (:data:`UNITS`); ``math.inf`` means no
limit for the resources that can be unlimited (CPU quota, disk throttle, network rate).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ansible_collections.firm.core.plugins.module_utils.errors import FirmError, InvalidInputError

Value = float | str
"""A limit: a number in the resource's unit, or text for ``cpuset`` (a CPU list such as ``0-1``)."""

UNITS: Mapping[str, str] = {
    "cpu": "cores",
    "memory_bandwidth": "percent",
    "llc": "ways",
    "disk_io": "bytes/s",
    "network": "bit/s",
    "cpu_weight": "weight",
    "cpuset": "cpus",
    "memory": "bytes",
}
"""Every resource an action can set, with its unit. The first five are the agent's (FIRM's five
resources); ``cpu_weight`` (cgroup v2 units, 1..10000) and ``cpuset`` are for other deciders;
``memory`` (the memory limit) is set by the cluster executors (pod resize, the cgroup module)."""

UNLIMITABLE = frozenset({"cpu", "disk_io", "network", "memory"})
"""Resources whose value may be ``math.inf`` (no limit)."""


class ExecutorError(FirmError):
    """A step could not be applied (the message says why and what to do)."""


class ActionError(ExecutorError, InvalidInputError):
    """An action was rejected before anything was written."""


@dataclass(frozen=True)
class Action:
    """Set one resource of one instance to a target value.

    Raises :class:`ActionError` for an unknown resource or a value that is not a finite positive
    number (``inf`` allowed where :data:`UNLIMITABLE`), or not a CPU list for ``cpuset``.
    """

    instance: str
    """Instance name, e.g. ``compose-post-0``."""
    resource: str
    """One of :data:`UNITS`."""
    value: Value
    """Target, in ``unit``."""
    reason: str = ""
    """Why the decider asked for it (shown in the audit)."""
    service: str = ""
    """The instance's service (informative)."""

    def __post_init__(self) -> None:
        if self.resource not in UNITS:
            raise ActionError(
                f"action on {self.instance}: unknown resource {self.resource!r}",
                fix=f"use one of {', '.join(UNITS)}",
            )
        if self.resource == "cpuset":
            if not isinstance(self.value, str) or not self.value.strip():
                raise ActionError(
                    f"action on {self.instance}: cpuset {self.value!r} is not a CPU list",
                    fix="give the CPUs as the kernel lists them, e.g. '0-1' or '0,2'",
                )
            return
        if isinstance(self.value, (str, bool)):
            raise ActionError(
                f"action on {self.instance}: {self.resource} {self.value!r} is not a number",
                fix=f"give {self.resource} in {UNITS[self.resource]}",
            )
        value = float(self.value)
        if math.isnan(value) or value <= 0 or (math.isinf(value) and self.resource not in UNLIMITABLE):
            raise ActionError(
                f"action on {self.instance}: {self.resource} {self.value!r} is not a positive finite number",
                fix=f"give {self.resource} in {UNITS[self.resource]} above 0"
                + (" (inf for no limit)" if self.resource in UNLIMITABLE else ""),
            )
        object.__setattr__(self, "value", value)

    @property
    def unit(self) -> str:
        return UNITS[self.resource]

    def as_dict(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "service": self.service,
            "resource": self.resource,
            "value": json_value(self.value),
            "unit": self.unit,
            "reason": self.reason,
        }


def json_value(value: Value | None) -> float | str | None:
    """``inf`` as the text ``"unlimited"`` (JSON has no infinity)."""
    if isinstance(value, float) and math.isinf(value):
        return "unlimited"
    return value


@dataclass(frozen=True)
class Applied:
    """One action of a step: the value before and after (after = the target in a dry run)."""

    action: Action
    before: Value | None
    """What the node held before the step (None when it could not be read)."""
    after: Value | None
    """What it holds after the step (the planned value in a dry run; ``before`` again when the
    step was rolled back)."""
    changed: bool
    """Whether anything was (or, in a dry run, would be) written."""

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.action.as_dict(),
            "before": json_value(self.before),
            "after": json_value(self.after),
            "changed": self.changed,
        }


@dataclass(frozen=True)
class StepResult:
    """What a step did. ``error`` is None when every action holds."""

    applied: tuple[Applied, ...] = ()
    dry_run: bool = False
    rolled_back: bool = False
    """A part failed and what had been written was undone (or ``rollback_failures`` says what was not)."""
    error: str | None = None
    rollback_failures: tuple[str, ...] = ()
    duration_s: float = 0.0
    """Wall time of the step, seconds."""

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def changed(self) -> bool:
        return self.ok and not self.dry_run and any(a.changed for a in self.applied)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "dry_run": self.dry_run,
            "changed": self.changed,
            "rolled_back": self.rolled_back,
            "error": self.error,
            "rollback_failures": list(self.rollback_failures),
            "duration_ms": round(self.duration_s * 1000, 3),
            "actions": [a.as_dict() for a in self.applied],
        }


@dataclass(frozen=True)
class Snapshot:
    """Limits of some instances at one moment, enough for :meth:`Executor.restore` to bring them back."""

    taken_at: float
    """Seconds since the epoch."""
    limits: Mapping[str, Mapping[str, Value | None]]
    """instance -> resource -> value in :data:`UNITS` (None: the resource cannot be read there)."""
    raw: Mapping[str, Any] = field(default_factory=dict)
    """Back-end specific state for an exact restore (e.g. both disk throttles, the tc qdisc)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "taken_at": self.taken_at,
            "limits": {i: {r: json_value(v) for r, v in res.items()} for i, res in self.limits.items()},
        }


@runtime_checkable
class Executor(Protocol):
    """The contract every back end implements (see the module's docstring)."""

    def resources(self, instance: str) -> frozenset[str]:
        """The resources this back end can set on ``instance`` (e.g. no ``llc`` without resctrl)."""
        ...

    def apply(self, actions: Sequence[Action], *, dry_run: bool) -> StepResult:
        """Apply a step's actions as one unit (see the module's docstring); never raises for a failed step."""
        ...

    def snapshot(self, instances: Sequence[str]) -> Snapshot:
        """The current limits of ``instances``; raises :class:`ExecutorError` when one cannot be read."""
        ...

    def restore(self, snapshot: Snapshot) -> StepResult:
        """Bring the instances of ``snapshot`` back to it, as one unit."""
        ...


class MemoryExecutor:
    """An executor over limits held in memory: for tests, benchmarks and planning.

    ``limits`` maps instance -> resource -> value; ``fail_on`` names (instance, resource) pairs
    whose write fails, to exercise rollback.
    """

    def __init__(
        self, limits: Mapping[str, Mapping[str, Value]], *, fail_on: frozenset[tuple[str, str]] = frozenset()
    ) -> None:
        self.limits: dict[str, dict[str, Value]] = {i: dict(r) for i, r in limits.items()}
        self.fail_on = fail_on
        self.writes = 0

    def resources(self, instance: str) -> frozenset[str]:
        return frozenset(self.limits.get(instance, {}))

    def apply(self, actions: Sequence[Action], *, dry_run: bool) -> StepResult:
        started = time.perf_counter()
        for action in actions:
            if action.resource not in self.limits.get(action.instance, {}):
                return StepResult(
                    (),
                    dry_run,
                    error=f"{action.instance} has no {action.resource} here",
                    duration_s=time.perf_counter() - started,
                )
        done: list[Applied] = []
        for action in actions:
            before = self.limits[action.instance][action.resource]
            changed = before != action.value
            if not dry_run and changed:
                if (action.instance, action.resource) in self.fail_on:
                    for applied in reversed(done):
                        self.limits[applied.action.instance][applied.action.resource] = applied.before  # type: ignore[assignment]
                    undone = tuple(Applied(a.action, a.before, a.before, a.changed) for a in done)
                    return StepResult(
                        undone,
                        dry_run,
                        rolled_back=True,
                        error=f"writing {action.resource} of {action.instance} failed",
                        duration_s=time.perf_counter() - started,
                    )
                self.limits[action.instance][action.resource] = action.value
                self.writes += 1
            done.append(Applied(action, before, action.value, changed))
        return StepResult(tuple(done), dry_run, duration_s=time.perf_counter() - started)

    def snapshot(self, instances: Sequence[str]) -> Snapshot:
        missing = [i for i in instances if i not in self.limits]
        if missing:
            raise ExecutorError(
                f"unknown instances {', '.join(missing)}", fix="name instances this executor manages"
            )
        return Snapshot(time.time(), {i: dict(self.limits[i]) for i in instances})

    def restore(self, snapshot: Snapshot) -> StepResult:
        actions = [
            Action(i, r, v) for i, res in snapshot.limits.items() for r, v in res.items() if v is not None
        ]
        return self.apply(actions, dry_run=False)
