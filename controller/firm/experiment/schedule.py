"""The seeded anomaly schedule: the same anomalies, at the same times, beside the same services, for every policy.

:func:`plan_anomalies` spreads one anomaly per kind (cycling through the kinds when more are
asked) over the measured part of the run: starts evenly spaced from 10 % to 70 % of it with a
seeded jitter, each lasting 1.5 spacings (so each overlaps the next for about half its length, and
at most two run at once), every one ended by ``end_share`` of the run so that recovery is measured.
Anomalies that run at the same time are beside different services. Intensities are drawn from
``intensity`` (percent of the kind's full strength, see ``firm.core.anomaly``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ansible_collections.firm.core.plugins.module_utils.anomaly import KINDS
from firm.experiment import ExperimentInputError


@dataclass(frozen=True)
class PlannedAnomaly:
    """One anomaly of the schedule."""

    kind: str
    """One of ``firm.core.anomaly.KINDS``."""
    service: str
    """The service it is beside (its first instance)."""
    intensity: int
    """Percent of the kind's full strength, 0..100."""
    start_s: float
    """Seconds after the measured part of the run begins."""
    duration_s: int
    """Seconds it runs; it expires by itself."""

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "service": self.service,
            "intensity": self.intensity,
            "start_s": round(self.start_s, 3),
            "duration_s": self.duration_s,
        }


def parse_kinds(text: str, supported: Sequence[str] | None = None) -> list[str]:
    """``"cpu,disk_io"`` -> kinds; ``"none"`` -> []; ``"all"`` -> every kind of ``supported`` (or KINDS).

    Raises :class:`ExperimentInputError` naming an unknown or repeated kind.
    """
    text = text.strip()
    if text == "none":
        return []
    if text == "all":
        return list(supported if supported is not None else KINDS)
    kinds = [k.strip().replace("-", "_") for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ExperimentInputError(
            f"--anomalies: unknown kinds {', '.join(repr(k) for k in unknown) or '(none given)'}",
            fix=f"give some of {', '.join(KINDS)}, or 'all', or 'none'",
        )
    repeated = sorted({k for k in kinds if kinds.count(k) > 1})
    if repeated:
        raise ExperimentInputError(
            f"--anomalies names {', '.join(repeated)} twice", fix="name each kind once"
        )
    return kinds


def plan_anomalies(
    seed: int,
    duration_s: float,
    kinds: Sequence[str],
    services: Sequence[str],
    *,
    count: int | None = None,
    intensity: tuple[int, int] = (50, 80),
    end_share: float = 0.85,
) -> list[PlannedAnomaly]:
    """The schedule over ``duration_s`` measured seconds (see the module's docstring).

    ``services``: the candidates, at least two when anomalies overlap. Raises
    :class:`ExperimentInputError` when the run is too short for them (each needs 4 s at least).
    """
    n = len(kinds) if count is None else count
    if n == 0 or not kinds:
        return []
    if not services:
        raise ExperimentInputError("no service to put anomalies beside", fix="check the testbed's services")
    rng = np.random.default_rng(seed)
    first, last = 0.1 * duration_s, 0.7 * duration_s
    spacing = (last - first) / max(1, n - 1) if n > 1 else 0.3 * duration_s
    length = 1.5 * spacing if n > 1 else 0.4 * duration_s
    order = list(rng.permutation(len(services)))
    plans: list[PlannedAnomaly] = []
    for i in range(n):
        start = first + i * spacing + float(rng.uniform(-0.1, 0.1)) * spacing
        start = max(0.0, start)
        end = min(start + length, end_share * duration_s)
        seconds = int(end - start)
        if seconds < 4:
            raise ExperimentInputError(
                f"{duration_s:g} s is too short for {n} anomalies",
                fix="run longer (--duration), or give fewer kinds (--anomalies)",
            )
        busy = {p.service for p in plans if p.start_s < start + seconds and start < p.end_s}
        pick = next(
            (
                services[j]
                for j in order[i % len(order) :] + order[: i % len(order)]
                if services[j] not in busy
            ),
            None,
        )
        if pick is None:
            raise ExperimentInputError(
                f"{len(services)} services are too few for overlapping anomalies",
                fix="give fewer anomaly kinds",
            )
        level = int(rng.integers(intensity[0], intensity[1] + 1))
        plans.append(PlannedAnomaly(kinds[i % len(kinds)], pick, level, round(start, 3), seconds))
    return plans
