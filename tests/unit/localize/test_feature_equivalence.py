"""The array computation of culprit features gives what the per-object one gave.

The oracle is the implementation before vectorisation (``reference_features.py``, kept verbatim).
Compared on the recorded DeathStarBench traces, on seeded fault windows built from them (with
duplicated traces, clock offsets, uninstrumented callees and changed request mixes), on random
perturbations of the recorded traces, and on random span trees (hypothesis): every feature equal
up to floating-point rounding (the sums are taken in another order), every count equal, FIRM's
RI/CI/cp_share equal, and the rankings in the same order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, cast

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firm.localize import Localizer
from firm.localize.synthetic import FAULT_KINDS, dsb_templates, make_case
from firm.tracing import Span, Trace, load_traces
from firm.tracing.culprit_features import (
    CulpritFeatureConfig,
    CulpritWindow,
    TracePartsCache,
    culprit_features,
    profile_window,
    window_parts,
)
from tests.unit.localize import reference_features as old
from tests.unit.localize.helpers import dsb_dir

REL = 1e-9
ABS = 1e-6


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=REL, abs_tol=ABS)


def assert_same(new: CulpritWindow, ref: CulpritWindow) -> None:
    assert new.requests == ref.requests
    assert new.reference_requests == ref.reference_requests
    assert new.reference_used == ref.reference_used
    assert _close(new.latency_p50_us, ref.latency_p50_us)
    assert _close(new.reference_latency_p50_us, ref.reference_latency_p50_us)
    assert {k: v for k, v in new.notes.items() if v} == {k: v for k, v in ref.notes.items() if v}
    assert [(i.service, i.instance) for i in new.instances] == [
        (i.service, i.instance) for i in ref.instances
    ]
    for a, b in zip(new.instances, ref.instances, strict=True):
        assert set(a.features) == set(b.features)
        bad = {
            k: (a.features[k], b.features[k]) for k in a.features if not _close(a.features[k], b.features[k])
        }
        assert not bad, f"{a.service}/{a.instance}: {bad}"
    if ref.paths is None:
        assert new.paths is None
        return
    assert new.paths is not None
    pa, pb = new.paths.as_dict(), ref.paths.as_dict()
    wa, wb = pa["window"], pb["window"]
    assert isinstance(wa, dict) and isinstance(wb, dict)
    assert wa.keys() == wb.keys()
    for name, value in wb.items():
        assert value == wa[name] if not isinstance(value, float) else _close(wa[name], value), name
    ia = {(i["service"], i["instance"]): i for i in cast(list[dict[str, Any]], pa["instances"])}
    ib = {(i["service"], i["instance"]): i for i in cast(list[dict[str, Any]], pb["instances"])}
    assert ia.keys() == ib.keys()
    for k, v in ib.items():
        assert ia[k]["flags"] == v["flags"] and ia[k]["samples"] == v["samples"]
        for name in ("ri", "ci", "p50", "p99", "mean", "cpShare", "onPathRatio"):
            assert _close(ia[k][name], v[name]), (k, name, ia[k][name], v[name])


def assert_same_ranking(window: Sequence[Trace], reference: Sequence[Trace] | None) -> None:
    loc = Localizer.rules()
    new = loc.rank_features(culprit_features(window, reference, loc.feature_config))
    ref = loc.rank_features(old.culprit_features(window, reference, old.CulpritFeatureConfig()))  # type: ignore[arg-type]
    assert [(i.service, i.instance, i.culprit) for i in new.instances] == [
        (i.service, i.instance, i.culprit) for i in ref.instances
    ]
    assert new.flags == ref.flags


def compare(
    window: Sequence[Trace], reference: Sequence[Trace] | None, config: CulpritFeatureConfig | None = None
) -> None:
    cfg = config or CulpritFeatureConfig()
    old_cfg = old.CulpritFeatureConfig(**{k: getattr(cfg, k) for k in cfg.__dataclass_fields__})
    assert_same(culprit_features(window, reference, cfg), old.culprit_features(window, reference, old_cfg))  # type: ignore[arg-type]


def _dsb() -> list[Trace]:
    return [t for f in sorted(dsb_dir().glob("*.json")) for t in load_traces(f)]


def test_the_recorded_deathstarbench_traces() -> None:
    traces = _dsb()
    compare(traces, None)
    compare(traces[:6], traces[6:])
    compare(traces, traces)
    compare(traces, None, CulpritFeatureConfig(min_samples=2))


@pytest.mark.parametrize("kind", FAULT_KINDS)
@pytest.mark.parametrize("seed", [11, 12, 13])
def test_seeded_fault_windows_from_the_recorded_shapes(kind: str, seed: int) -> None:
    case = make_case(dsb_templates(dsb_dir()), kind, seed, requests=(20, 120))
    window, reference = case.traces()
    compare(window, reference)
    compare(window, None)
    compare(window, reference, CulpritFeatureConfig(trim=0.2, tail_quantile=1.0, min_calls=5, min_samples=5))
    assert_same_ranking(window, reference)


def _perturb(traces: Sequence[Trace], rng: np.random.Generator, tag: str) -> list[Trace]:
    """Copies of ``traces`` with new IDs, durations and starts moved at random (children may
    start before or end after their parents), some spans dropped, some traces repeated."""
    out = []
    for k in range(int(rng.integers(10, 60))):
        t = traces[int(rng.integers(len(traces)))]
        spans = []
        for s in t.spans:
            if s.parent_id is not None and rng.random() < 0.05:
                continue  # a lost span: its children become roots
            dur = max(0, int(s.duration * rng.lognormal(0, 0.4)))
            spans.append(replace(s, start=s.start + int(rng.normal(0, 200)), duration=dur))
        out.append(Trace(f"{tag}{k}", tuple(spans)))
        if rng.random() < 0.05:
            out.append(out[-1])
    return out


@pytest.mark.parametrize("seed", range(8))
def test_random_perturbations_of_the_recorded_traces(seed: int) -> None:
    rng = np.random.default_rng(seed)
    traces = _dsb()
    window, reference = _perturb(traces, rng, "w"), _perturb(traces, rng, "r")
    compare(window, reference)
    compare(window, None)
    assert_same_ranking(window, reference)


def test_profile_and_cache_agree_with_the_per_object_profile() -> None:
    traces = _dsb()
    a, b = profile_window(traces + traces[:2]), old.profile_window(traces + traces[:2])
    assert a.traces == b.traces and dict(a.notes) == dict(b.notes) and a.latencies == b.latencies
    for name in ("own", "leaf", "req", "resp"):
        got: Mapping[object, list[int]] = getattr(a, name)
        want: Mapping[object, list[int]] = getattr(b, name)
        assert {k: sorted(v) for k, v in got.items()} == {k: sorted(v) for k, v in want.items()}
    cache = TracePartsCache(max_traces=8)
    window, reference = cache.window(traces[:6]), cache.window(traces[6:])
    assert_same(culprit_features(window, reference), old.culprit_features(traces[:6], traces[6:]))  # type: ignore[arg-type]
    assert len(cache) == 8  # bounded: the oldest went first
    again = cache.window(traces[6:])
    assert cache.computed == 12 and [t.trace_id for t in again] == [t.trace_id for t in traces[6:]]
    assert_same(
        culprit_features(window_parts(traces[:6]), traces[6:]),
        old.culprit_features(traces[:6], traces[6:]),  # type: ignore[arg-type]
    )


SERVICES = ["a", "b", "c"]


@st.composite
def _trace(draw: st.DrawFn, tag: str) -> Trace:
    n = draw(st.integers(1, 9))
    spans: list[Span] = []
    for i in range(n):
        parent = None if i == 0 else f"s{draw(st.integers(-1, i - 1))}"  # s-1: a parent not in the trace
        svc = draw(st.sampled_from(SERVICES))
        spans.append(
            Span(
                f"s{i}",
                svc,
                f"{svc}-{draw(st.integers(0, 1))}",
                draw(st.sampled_from(["op", "op_client", "Client call"])),
                1_700_000_000_000_000 + draw(st.integers(-2_000, 10_000)),
                draw(st.integers(0, 5_000)),
                parent,
                kind=draw(st.sampled_from(["", "client", "server", "producer", "internal"])),
            )
        )
    return Trace(f"{tag}{draw(st.integers(0, 40))}", tuple(spans))


@settings(max_examples=80, deadline=None)
@given(
    window=st.lists(_trace("w"), min_size=1, max_size=30),
    reference=st.lists(_trace("w"), max_size=30),
    min_calls=st.integers(1, 3),
)
def test_random_span_trees(window: list[Trace], reference: list[Trace], min_calls: int) -> None:
    cfg = CulpritFeatureConfig(min_calls=min_calls, min_samples=3)
    compare(window, reference or None, cfg)
