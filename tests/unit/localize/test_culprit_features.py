"""Culprit features: own time, gaps, leaf calls, growth against a reference, messy windows."""

from __future__ import annotations

import numpy as np
import pytest

from firm.tracing import Trace
from firm.tracing.culprit_features import (
    FEATURE_DOCS,
    CulpritFeatureConfig,
    _pool_sparse,
    culprit_features,
    profile_window,
)
from tests.unit.localize.helpers import chain_trace, span


def _window(n: int, seed: int, **kw: int) -> list[Trace]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        jitter = {k: int(v * rng.uniform(0.9, 1.1)) if k != "offset_b" else v for k, v in kw.items()}
        out.append(chain_trace(f"{seed}-{i}", 1_700_000_000_000_000 + i * 10_000, **jitter))
    return out


def test_profile_cuts_a_request_into_own_time_gaps_and_leaf_calls() -> None:
    prof = profile_window([chain_trace("t", 1_000_000, own_b=100, req_gap=30, resp_gap=70, db=200)])
    fe, be = ("frontend", "frontend"), ("backend", "backend")
    assert prof.own[(be, "Serve")] == [100]  # 300 us server span minus the 200 us db call
    assert prof.own[(fe, "GET /")] == [200]  # 600 us minus the 400 us outgoing call
    assert prof.req[(fe, be, "Serve")] == [30]
    assert prof.resp[(fe, be, "Serve")] == [70]
    assert prof.leaf[(be, "db.query")] == [200]
    assert prof.notes["client_without_server"] == 1
    assert prof.latencies == [600]


def test_a_clock_offset_makes_gaps_negative_but_not_their_growth() -> None:
    ref = _window(40, 1, offset_b=-500)
    win = _window(40, 2, offset_b=-500, resp_gap=3000)
    prof = profile_window(win)
    assert prof.notes["negative_gaps"] > 0
    cw = culprit_features(win, ref)
    by = {i.service: i.features for i in cw.instances}
    assert by["backend"]["resp_in_growth_us"] == pytest.approx(2950, rel=0.1)
    assert by["backend"]["req_in_growth_us"] == pytest.approx(0, abs=50)
    assert (by["backend"]["blame_us"] or 0.0) > (by["frontend"]["blame_us"] or 0.0)


def test_own_time_growth_is_charged_to_the_instance() -> None:
    ref = _window(40, 3)
    win = _window(40, 4, own_b=2000)
    cw = culprit_features(win, ref)
    by = {i.service: i.features for i in cw.instances}
    assert by["backend"]["own_growth_us"] == pytest.approx(1900, rel=0.1)
    assert by["backend"]["blame_own_us"] == pytest.approx(1900, rel=0.1)
    assert by["frontend"]["blame_us"] == pytest.approx(0, abs=50)
    assert by["backend"]["own_ratio"] == pytest.approx(20, rel=0.15)


def test_every_feature_is_documented_and_none_is_nan() -> None:
    cw = culprit_features(_window(30, 5), _window(30, 6))
    for inst in cw.instances:
        assert set(inst.features) == set(FEATURE_DOCS)
        for v in inst.features.values():
            assert v is None or np.isfinite(v)


def test_without_a_reference_growth_is_none_and_blame_is_time() -> None:
    cw = culprit_features(_window(30, 7))
    assert not cw.reference_used
    by = {i.service: i.features for i in cw.instances}
    assert by["backend"]["own_growth_us"] is None
    assert (by["backend"]["blame_us"] or 0.0) > 0
    assert sum(f["blame_share"] or 0.0 for f in by.values()) == pytest.approx(1.0)


def test_duplicated_and_split_traces_are_one_request() -> None:
    t = chain_trace("x", 1_000_000)
    part1 = Trace("x", t.spans[:2])
    part2 = Trace("x", t.spans[2:])
    prof = profile_window([t, t, part1, part2])
    assert prof.traces == 1
    assert prof.notes["duplicate_traces"] == 3
    prof2 = profile_window([part1, part2])
    assert prof2.own == profile_window([t]).own


def test_an_empty_window_has_no_instances() -> None:
    cw = culprit_features([], None)
    assert cw.requests == 0 and cw.instances == ()


def test_a_server_calling_another_server_directly_and_odd_children() -> None:
    spans = (
        span("r", "web", 0, 1000, op="root"),
        span("s", "api", 100, 500, "r", op="direct"),  # no client span in between
        span("f", "web", 200, 100, "r", op="internal work"),  # same-instance internal span: own time
        span("z", "web", 700, 0, "r", kind="client", op="zero"),
    )
    prof = profile_window([Trace("t", spans)])
    assert prof.own[(("web", "web"), "root")] == [500]
    assert prof.req[(("web", "web"), ("api", "api"), "direct")] == [100]


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="trim"):
        CulpritFeatureConfig(trim=0.7)
    with pytest.raises(ValueError, match="caller_prior"):
        CulpritFeatureConfig(caller_prior=2)
    with pytest.raises(ValueError, match="tail_quantile"):
        CulpritFeatureConfig(tail_quantile=0.2)


def test_a_slow_tail_counts_though_the_trimmed_mean_leaves_it_out() -> None:
    ref = _window(60, 8)
    win = _window(60, 9)
    # 9 % of the calls into the backend wait 50 ms for a retransmission
    slow = [chain_trace(f"slow{i}", 1_800_000_000_000_000 + i, resp_gap=50_000) for i in range(6)]
    by_tail = {i.service: i.features for i in culprit_features(win + slow, ref).instances}
    no_tail = {
        i.service: i.features
        for i in culprit_features(win + slow, ref, CulpritFeatureConfig(tail_quantile=1.0)).instances
    }
    assert (by_tail["backend"]["blame_us"] or 0.0) > 300 > (no_tail["backend"]["blame_us"] or 0.0)


def test_rare_operations_of_an_edge_are_pooled() -> None:
    a, b = ("a", "a"), ("b", "b")
    win = {(a, b, "x"): [1, 2, 3], (a, b, "rare1"): [10], (a, b, "rare2"): [11]}
    ref = {(a, b, "x"): [1, 2], (a, b, "rare1"): [5], (a, b, "rare3"): [6]}
    w, r = _pool_sparse(win, ref, 2)
    assert w[(a, b, "x")] == [1, 2, 3] and sorted(w[(a, b, "*")]) == [10, 11] and len(w) == 2
    assert sorted(r[(a, b, "*")]) == [5, 6] and r[(a, b, "x")] == [1, 2]
