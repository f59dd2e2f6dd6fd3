"""Per-instance telemetry features of a window, against a reference window.

The telemetry sampler (:mod:`firm.telemetry`) writes one :class:`~firm.telemetry.model.Sample`
per instance and interval into Redis: CPU used and CFS throttling, disk and network bytes per
second. :func:`telemetry_features` averages each instance's samples over a window (and over the
reference window when one is given) and compares them; :class:`~firm.localize.Localizer` adds the
results to every instance's features (prefix ``tm_``, :data:`TELEMETRY_FEATURE_DOCS`) when it is
given telemetry. Instances are matched by name: the instance name of the telemetry (the
testbed's ``compose-post-0``, a pod's name) is the trace's instance (the ``hostname`` tag).

These features say mostly what an instance *used*: contention from outside its cgroup (a slow
shared disk, loss on its link) leaves them almost unchanged, which is why the classifier's inputs do
not include them (docs/localization.md, "Telemetry"). The exception is ``tm_cpu_wait``, what its
tasks waited for a CPU, which a noisy neighbour on its CPUs raises; the control loop's FIRM decider
acts on it directly (``firm.cpu_wait_s``). They explain a ranking (an instance whose CPU use or throttling grew) and are there
for a model trained where contention comes from inside instances.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TELEMETRY_FEATURE_DOCS", "TelemetryWindows", "telemetry_features"]

TELEMETRY_FEATURE_DOCS: Mapping[str, str] = {
    "tm_cpu_cores": "CPU used in the window, mean over its samples (cores).",
    "tm_cpu_ratio": "tm_cpu_cores over the reference's (ratio; None without reference samples).",
    "tm_throttled": "share of CFS periods in which the instance was throttled, window mean (0..1).",
    "tm_throttled_growth": "tm_throttled minus the reference's (-1..1).",
    "tm_cpu_wait": "seconds the instance's tasks waited for a CPU per second, window mean (s/s; "
    "schedstat's run delay: a neighbour contending for its CPUs shows here).",
    "tm_cpu_wait_growth": "tm_cpu_wait minus the reference's (s/s).",
    "tm_disk_bps": "bytes read and written per second, window mean (B/s).",
    "tm_disk_ratio": "tm_disk_bps over the reference's (ratio; None when the reference wrote nothing).",
    "tm_net_bps": "bytes received and sent per second, window mean (B/s).",
    "tm_net_ratio": "tm_net_bps over the reference's (ratio; None when the reference sent nothing).",
    "tm_samples": "telemetry samples of the instance in the window (count).",
}
"""Every telemetry feature with its unit and how it is computed."""

SampleLike = Mapping[str, Any]
"""A telemetry sample as a mapping (``Sample.as_dict()`` or a Redis entry's fields, parsed)."""


@dataclass(frozen=True)
class TelemetryWindows:
    """Telemetry samples of a window and of its reference, by instance name."""

    window: Mapping[str, Sequence[Any]]
    """Instance name -> its samples in the window (:class:`~firm.telemetry.model.Sample` or mappings)."""
    reference: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    """Instance name -> its samples in the reference window (empty: no comparison)."""


def _as_map(sample: Any) -> SampleLike:
    if isinstance(sample, Mapping):
        return sample
    as_dict = getattr(sample, "as_dict", None)
    return as_dict() if callable(as_dict) else {}


def _mean(samples: Iterable[SampleLike], *keys: str) -> float | None:
    """Mean over the samples of the sum of ``keys`` (a sample lacking all of them is skipped)."""
    values = []
    for s in samples:
        parts = [s.get(k) for k in keys]
        nums = [float(v) for v in parts if isinstance(v, (int, float)) and math.isfinite(float(v))]
        if nums:
            values.append(sum(nums))
    return sum(values) / len(values) if values else None


def _ratio(now: float | None, then: float | None, floor: float) -> float | None:
    if now is None or then is None or then <= floor:
        return None
    return now / then


def telemetry_features(
    window: Mapping[str, Sequence[Any]], reference: Mapping[str, Sequence[Any]] | None = None
) -> dict[str, dict[str, float | None]]:
    """The ``tm_*`` features of every instance with samples in ``window`` (instance name ->
    feature -> value; see :data:`TELEMETRY_FEATURE_DOCS`). Missing figures (a sampler that cannot
    read the network, no reference samples) are ``None``; nothing raises on odd samples."""
    out: dict[str, dict[str, float | None]] = {}
    for name, raw in window.items():
        now = [_as_map(s) for s in raw]
        then = [_as_map(s) for s in (reference or {}).get(name, ())]
        cpu, cpu_ref = _mean(now, "cpu_cores"), _mean(then, "cpu_cores")
        thr, thr_ref = _mean(now, "cpu_throttled_ratio"), _mean(then, "cpu_throttled_ratio")
        wait, wait_ref = _mean(now, "cpu_wait_s_per_s"), _mean(then, "cpu_wait_s_per_s")
        disk = _mean(now, "disk_read_bps", "disk_write_bps")
        disk_ref = _mean(then, "disk_read_bps", "disk_write_bps")
        net, net_ref = _mean(now, "net_rx_bps", "net_tx_bps"), _mean(then, "net_rx_bps", "net_tx_bps")
        out[name] = {
            "tm_cpu_cores": cpu,
            "tm_cpu_ratio": _ratio(cpu, cpu_ref, 1e-4),
            "tm_throttled": thr,
            "tm_throttled_growth": None if thr is None or thr_ref is None else thr - thr_ref,
            "tm_cpu_wait": wait,
            "tm_cpu_wait_growth": None if wait is None or wait_ref is None else wait - wait_ref,
            "tm_disk_bps": disk,
            "tm_disk_ratio": _ratio(disk, disk_ref, 1.0),
            "tm_net_bps": net,
            "tm_net_ratio": _ratio(net, net_ref, 1.0),
            "tm_samples": float(len(now)),
        }
    return out
