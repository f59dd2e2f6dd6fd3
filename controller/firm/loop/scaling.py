"""Scale-in: the loop gives back the instances a service was scaled out to.

When every SLO has held with slack for ``scale_in.hold_s`` (no SLO at risk, no limit raised) and
a service runs more instances than it did when the loop started (its *baseline*, at least one),
the loop asks its scaler to remove one instance of that service: the one above its baseline by
the most instances (ties: the lowest CPU use per core of limit, then the name). Bounded: one
instance per request, the hold counted again after each, no service scaled in sooner than
``scale_in.cooldown_s`` after its last scale-out or scale-in, excluded services never, and nothing
while the scaler is busy (it refuses, and the audit says so). The scaler (the testbed's:
:class:`firm.loop.testbed.TestbedScaler`, through :func:`firm.testbed.scale.scale_in`) drains the
instance before it stops it, so no request is dropped.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from firm.loop.config import ScaleIn
from firm.loop.observe import InstanceView, Observation

__all__ = ["ScaleInChoice", "ScaleInPolicy", "instance_counts"]


def instance_counts(views: Iterable[InstanceView]) -> dict[str, int]:
    """Instances per service."""
    return dict(Counter(v.service for v in views))


@dataclass(frozen=True)
class ScaleInChoice:
    """One scale-in the policy asks for."""

    service: str
    instances: int
    """Instances the service runs now."""
    baseline: int
    """Instances it ran when the loop started (at least 1)."""
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {
            "service": self.service,
            "direction": "in",
            "instances": self.instances,
            "baseline": self.baseline,
            "reason": self.reason,
        }


class ScaleInPolicy:
    """Decides when and which service to scale in (see the module's docstring); keeps the calm
    time and the time of each service's last scale event."""

    def __init__(self, config: ScaleIn, *, exclude: Iterable[str] = ()) -> None:
        self.config = config
        self.exclude = frozenset(exclude)
        self.baseline: dict[str, int] = {}
        self.calm_since: float | None = None
        self.last_event: dict[str, float] = {}

    def start(self, counts: Mapping[str, int]) -> None:
        """The instances per service when the loop starts: never scaled in below these."""
        self.baseline = {s: max(1, n) for s, n in counts.items()}

    def note(self, service: str, moment: float) -> None:
        """A scale-out or scale-in of ``service`` was requested or finished at ``moment`` (s)."""
        self.last_event[service] = max(moment, self.last_event.get(service, -math.inf))

    def decide(self, observation: Observation, *, raised: bool) -> tuple[ScaleInChoice | None, str]:
        """The scale-in to request now, or None and why not (for the audit)."""
        now = observation.time
        if not self.config.enabled:
            return None, "scale-in disabled"
        if raised or not observation.all_slack:
            self.calm_since = None
            return None, "not every SLO holds with slack"
        if self.calm_since is None:
            self.calm_since = now
        calm = now - self.calm_since
        counts = instance_counts(observation.instances.values())
        above = {s: n for s, n in counts.items() if n > self.baseline.get(s, 1) and s not in self.exclude}
        if not above:
            return None, "no service runs more instances than its baseline"
        if calm < self.config.hold_s:
            return None, f"slack for {calm:.0f} of {self.config.hold_s:g} s before scaling in"
        ready = {
            s: n
            for s, n in above.items()
            if now - self.last_event.get(s, -math.inf) >= self.config.cooldown_s
        }
        if not ready:
            waiting = ", ".join(sorted(above))
            return None, f"{waiting} scaled less than {self.config.cooldown_s:g} s ago"
        load = _cpu_load(observation.instances.values())
        service = min(ready, key=lambda s: (-(ready[s] - self.baseline.get(s, 1)), load.get(s, 0.0), s))
        base = self.baseline.get(service, 1)
        return ScaleInChoice(
            service,
            ready[service],
            base,
            f"every SLO with slack for {calm:.0f} s; {service} runs {ready[service]} instances, "
            f"{base} at the start",
        ), ""

    def requested(self, choice: ScaleInChoice, moment: float) -> None:
        """A scale-in was requested: the service's cool-down and the hold start again."""
        self.note(choice.service, moment)
        self.calm_since = moment


def _cpu_load(views: Iterable[InstanceView]) -> dict[str, float]:
    """Per service: CPU used over CPU limit, summed over its instances (0 when unknown)."""
    used: dict[str, float] = {}
    limit: dict[str, float] = {}
    for v in views:
        cap = v.limits.get("cpu")
        if isinstance(cap, float | int) and math.isfinite(cap) and cap > 0:
            used[v.service] = used.get(v.service, 0.0) + v.usage.get("cpu", 0.0)
            limit[v.service] = limit.get(v.service, 0.0) + float(cap)
    return {s: used[s] / limit[s] for s in used if limit.get(s)}
