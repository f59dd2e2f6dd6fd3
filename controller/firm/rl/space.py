"""State, action and reward of the resource estimator: the one definition every environment shares.

State (FIRM, Qiu et al., OSDI 2020, section 3.4), a float32 vector of ``2 + K + 5`` entries for ``K``
request types (``K = 3`` by default, hence 10 entries)::

    index  0        SR   SLO retainment, slo_ms / p99_ms, clipped to [0, AgentConfig.sr_clip]
    index  1        WC   workload change, rate_rps / prev_rate_rps, clipped to [0, AgentConfig.wc_clip]
    index  2..K+1   RC   request composition: share of each request type (sums to 1, or all 0)
    index  K+2..    RU   utilisation usage_r / limit_r of each resource in RESOURCES order, clipped to [0, 1]

Action: one value in [-1, 1] per resource (RESOURCES order). :func:`apply_actions` is the only place
that turns it into a limit in the resource's units: a multiplicative move of the current limit,
``new = current * max_step ** a``, clipped to the resource's ``[min, max]`` (see docs/rl.md for why
moves and not absolute targets). Resources the node cannot control are masked: their outputs are
ignored, their limits never written.

Reward (FIRM's ``alpha * SR * |R| + (1 - alpha) * sum_r RU_r / RLT_r``, with usage / limit for the
ratio): ``s * (alpha * |R| + (1 - alpha) * sum_r RU_r)`` with ``s = min(SR, 1)``, over the
controllable resources R. SR is clipped at 1 so that latency below the SLO earns nothing more (only
then do fewer resources pay), and it gates the utilisation term, so that starving a service does not
pay either (see :func:`reward` and docs/rl.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from firm.rl.errors import StateError

RESOURCES: Final = ("cpu", "memory_bandwidth", "llc", "disk_io", "network")
"""The five resources, in the order of the action vector and of the RU part of the state."""

UNITS: Final = {
    "cpu": "cores (CFS quota / period)",
    "memory_bandwidth": "percent of the node's memory bandwidth (MBA)",
    "llc": "cache ways",
    "disk_io": "bytes/s",
    "network": "bits/s",
}
"""Unit of every resource's limit and usage."""

N_RESOURCES: Final = len(RESOURCES)

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ResourceBounds:
    """The range a resource's limit may take on a node, in the resource's unit (see :data:`UNITS`).

    Raises :class:`StateError` when ``min`` is not positive and finite or ``max`` is below ``min``.
    """

    min: float
    """Smallest limit the agent may set, resource unit (> 0)."""
    max: float
    """Largest limit the node can give, resource unit (>= min); asking for more means scale-out."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.min) and self.min > 0):
            raise StateError(f"ResourceBounds.min is {self.min}", "give a positive, finite minimum")
        if not (math.isfinite(self.max) and self.max >= self.min):
            raise StateError(
                f"ResourceBounds.max is {self.max} (min {self.min})",
                "give a finite maximum at least as large as the minimum",
            )


def state_names(n_request_types: int) -> tuple[str, ...]:
    """Names of the state's entries, in order: ``SR, WC, RC_0..RC_{K-1}, RU_<resource>...``."""
    return ("SR", "WC", *(f"RC_{k}" for k in range(n_request_types)), *(f"RU_{r}" for r in RESOURCES))


def state_size(n_request_types: int) -> int:
    """Length of the state vector: ``2 + n_request_types + 5``."""
    return 2 + n_request_types + N_RESOURCES


def _finite(name: str, value: float, *, positive: bool = False) -> float:
    v = float(value)
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        kind = "positive" if positive else "non-negative"
        raise StateError(f"{name} is {value!r}", f"pass a finite, {kind} number")
    return v


def build_state(
    *,
    slo_ms: float,
    p99_ms: float,
    rate_rps: float,
    prev_rate_rps: float,
    mix: Sequence[float],
    usage: Mapping[str, float],
    limits: Mapping[str, float],
    sr_clip: float = 2.0,
    wc_clip: float = 4.0,
) -> npt.NDArray[np.float32]:
    """The agent's state of one instance, shape ``(2 + len(mix) + 5,)``, float32 (layout: module doc).

    ``slo_ms`` and ``p99_ms``: the SLO and the measured p99 latency, milliseconds (a p99 of 0, no
    requests, counts as meeting the SLO: SR = ``sr_clip``). ``rate_rps`` / ``prev_rate_rps``: arrival
    rate now and one step before, requests/s (WC = 1 when the previous rate is 0). ``mix``: weight of
    each request type, any non-negative scale (normalised here). ``usage`` and ``limits``: per resource
    name, in the units of :data:`UNITS`; a resource missing from either (or with no positive limit)
    gets RU = 0, so masked resources keep the layout fixed.

    Raises :class:`StateError` for negative or non-finite numbers and unknown resource names.
    """
    slo = _finite("slo_ms", slo_ms, positive=True)
    p99 = _finite("p99_ms", p99_ms)
    rate = _finite("rate_rps", rate_rps)
    prev = _finite("prev_rate_rps", prev_rate_rps)
    for name, m in (("usage", usage), ("limits", limits)):
        unknown = sorted(set(m) - set(RESOURCES))
        if unknown:
            raise StateError(f"{name} names unknown resources {unknown}", f"use only {list(RESOURCES)}")
    sr = sr_clip if p99 == 0 else min(slo / p99, sr_clip)
    wc = 1.0 if prev == 0 else min(rate / prev, wc_clip)
    weights = np.array([_finite(f"mix[{i}]", w) for i, w in enumerate(mix)], dtype=np.float64)
    total = float(weights.sum())
    rc = weights / total if total > 0 else weights
    ru = np.zeros(N_RESOURCES)
    for i, r in enumerate(RESOURCES):
        if r in usage and r in limits:
            u = _finite(f"usage[{r!r}]", usage[r])
            lim = _finite(f"limits[{r!r}]", limits[r])
            ru[i] = min(u / lim, 1.0) if lim > 0 else 0.0
    return np.concatenate([[sr, wc], rc, ru]).astype(np.float32)


def apply_actions(
    raw: FloatArray,
    current: FloatArray,
    lo: FloatArray,
    hi: FloatArray,
    mask: npt.NDArray[np.bool_],
    *,
    max_step: float,
    scale_out_threshold: float,
) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """The one place where actions in [-1, 1] become limits in each resource's [min, max].

    Shapes broadcast over leading batch dimensions; the last axis is RESOURCES. ``raw``: actions
    (clipped to [-1, 1] here); ``current``, ``lo``, ``hi``: limits and bounds, resource units;
    ``mask``: True where the resource is controllable. Returns ``(new_limits, scale_out)``:
    ``new = clip(current * max_step ** raw, lo, hi)`` where controllable, ``current`` elsewhere, and
    ``scale_out`` (shape without the last axis) True where the CPU is controllable, its limit already
    sits at its maximum and the CPU action asks for more than ``scale_out_threshold``.
    """
    a = np.clip(np.nan_to_num(raw, nan=0.0), -1.0, 1.0)
    cur = np.clip(current, lo, hi)
    wanted = cur * np.power(max_step, a)
    new = np.where(mask, np.clip(wanted, lo, hi), current)
    cpu = RESOURCES.index("cpu")
    at_bound = cur[..., cpu] >= hi[..., cpu] * (1 - 1e-9)
    scale_out = mask[..., cpu] & at_bound & (a[..., cpu] > scale_out_threshold)
    return new, scale_out


def reward(
    sr: FloatArray,
    ru: FloatArray,
    mask: npt.NDArray[np.bool_],
    *,
    alpha: float,
) -> FloatArray:
    """FIRM's reward with the SLO gating utilisation (module doc, docs/rl.md)::

        s = min(SR, 1)
        r = alpha * s * |R| + (1 - alpha) * s * sum_{r in R} RU_r

    ``sr``: SLO retainment, shape ``(...)``; ``ru``: utilisation in [0, 1], shape ``(..., 5)``;
    ``mask``: controllable resources R, shape ``(..., 5)``. Range ``[0, |R|]``. While the SLO is met
    (SR >= 1) this is FIRM's formula; under a violation the utilisation term shrinks with SR, so
    starving every resource (RU = 1, SR near 0) no longer scores as much as meeting the SLO.
    """
    n = mask.sum(axis=-1)
    s = np.clip(sr, 0.0, 1.0)
    return np.asarray(alpha * s * n + (1 - alpha) * s * np.where(mask, ru, 0.0).sum(axis=-1))
