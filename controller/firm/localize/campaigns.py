"""Dataset rows from a recorded campaign and the traces of the same time.

The traces are cut into consecutive windows of ``window_us``; each window is compared with the
latest earlier window that no injection touched at all (the reference; windows that no injection
touched are rows too, all negative), and every instance of it is labelled by :func:`firm.localize.labels.label_window` (positive when injections labelling it
covered at least half of the window). Windows before any quiet window have no reference and are
skipped. A request belongs to the window its longest root span starts in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from firm.localize.labels import LabelledInjection, label_window
from firm.localize.train import rows_of_window
from firm.tracing.culprit_features import CulpritFeatureConfig, culprit_features
from firm.tracing.model import Trace

__all__ = ["campaign_rows"]


def _root_start(t: Trace) -> int:
    ids = {s.span_id for s in t.spans}
    roots = [s for s in t.spans if s.parent_id is None or s.parent_id not in ids]
    return max(roots, key=lambda s: (s.duration, -s.start)).start


def campaign_rows(
    traces: Sequence[Trace],
    recorded: Sequence[LabelledInjection],
    window_us: int,
    *,
    campaign: str = "",
    sharing: Callable[[LabelledInjection], Iterable[tuple[str, str]]] | None = None,
    min_requests: int = 10,
    feature_config: CulpritFeatureConfig | None = None,
) -> list[dict[str, Any]]:
    """Labelled dataset rows of every window of ``traces`` that has a quiet reference before it.

    Windows with fewer than ``min_requests`` requests are skipped. Raises ``ValueError`` for a
    window length <= 0.
    """
    if window_us <= 0:
        raise ValueError(f"the window length must be > 0 us, not {window_us}")
    if not traces:
        return []
    starts = sorted((_root_start(t), k) for k, t in enumerate(traces))
    t0 = starts[0][0]
    buckets: dict[int, list[Trace]] = {}
    for st, k in starts:
        buckets.setdefault((st - t0) // window_us, []).append(traces[k])
    cfg = feature_config or CulpritFeatureConfig()
    rows: list[dict[str, Any]] = []
    reference: list[Trace] | None = None
    for b in range(max(buckets) + 1):
        lo, hi = t0 + b * window_us, t0 + (b + 1) * window_us
        window = buckets.get(b, [])
        touched = [i for i in recorded if i.start_us < hi and i.end_us > lo]
        if len(window) >= min_requests and reference is not None:
            cw = culprit_features(window, reference, cfg)
            keys = [(i.service, i.instance) for i in cw.instances]
            labels = label_window(lo, hi, keys, recorded, sharing=sharing)
            positives = {k: v.positive for k, v in labels.items()}
            targets = [k for k, v in labels.items() if v.target]
            kinds = sorted({kd for v in labels.values() if v.positive for kd in v.kinds}) or ["none"]
            rows.extend(
                rows_of_window(
                    f"{campaign}-{lo}",
                    cw,
                    positives,
                    source="campaign",
                    graph=campaign,
                    kind="+".join(kinds),
                    targets=targets,
                )
            )
        if not touched and len(window) >= min_requests:
            reference = window
    return rows
