"""The result of localization: instances ranked by blame."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["InstanceScore", "Ranking"]


def _num(v: float | None) -> float | None:
    if v is None or not math.isfinite(v):
        return None
    return round(float(v), 6)


@dataclass(frozen=True)
class InstanceScore:
    """How much one service instance is to blame in a window."""

    service: str
    instance: str
    score: float
    """Higher is more to blame; comparable within one ranking. For the rules, the instance's share
    of the latency growth relative to the reference latency (ratio); for the SVM, its decision value."""
    culprit: bool
    """The ranker's verdict: a culprit of the window's latency."""
    features: Mapping[str, float | None]
    """The features the score was computed from (names and units in
    :data:`firm.tracing.culprit_features.FEATURE_DOCS`); ``None`` when not computable."""

    def as_dict(self) -> dict[str, Any]:
        """Stable JSON form."""
        return {
            "service": self.service,
            "instance": self.instance,
            "score": _num(self.score),
            "culprit": self.culprit,
            "features": {k: _num(v) for k, v in self.features.items()},
        }


@dataclass(frozen=True)
class Ranking:
    """Every instance of a window, most to blame first."""

    instances: tuple[InstanceScore, ...]
    """Sorted by score, highest first (ties: service, then instance)."""
    reference_used: bool
    """Whether a reference window was compared with (otherwise the window alone was ranked)."""
    flags: tuple[str, ...] = ()
    """What limits the ranking: ``no_reference``, ``partial_overlap``, ``few_requests``,
    ``few_reference_requests``, ``no_latency_growth``, ``model_needs_reference`` ..."""
    method: str = "rules"
    """``rules``, ``svm`` or ``cp_share_growth``."""
    window: Mapping[str, Any] = field(default_factory=dict)
    """Requests and median latencies (us) of the window and the reference, and what was odd in them."""

    @property
    def culprits(self) -> tuple[InstanceScore, ...]:
        """The instances the ranker calls culprits, most to blame first."""
        return tuple(i for i in self.instances if i.culprit)

    def top(self, n: int = 1) -> tuple[InstanceScore, ...]:
        """The ``n`` instances most to blame."""
        return self.instances[:n]

    def as_dict(self) -> dict[str, Any]:
        """Stable JSON form: ``{"instances": [...], "referenceUsed", "flags", "method", "window"}``."""
        return {
            "instances": [i.as_dict() for i in self.instances],
            "referenceUsed": self.reference_used,
            "flags": list(self.flags),
            "method": self.method,
            "window": dict(self.window),
        }
