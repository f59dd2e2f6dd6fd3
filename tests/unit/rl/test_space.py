"""State layout, action scaling, bounds, masks and reward (firm.rl.space, firm.rl.agent)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from firm.rl import RESOURCES, Agent, AgentConfig, ResourceBounds, StateError, build_state, state_names
from firm.rl.space import apply_actions, reward

BOUNDS = {
    "cpu": ResourceBounds(0.05, 2.0),
    "memory_bandwidth": ResourceBounds(10.0, 100.0),
    "llc": ResourceBounds(1.0, 11.0),
    "disk_io": ResourceBounds(1e6, 2e8),
    "network": ResourceBounds(1e6, 1e9),
}


@pytest.fixture(scope="module")
def agent() -> Agent:
    torch.manual_seed(3)
    torch.set_num_threads(1)
    return Agent(AgentConfig())


def test_state_layout_and_values() -> None:
    s = build_state(
        slo_ms=100,
        p99_ms=200,
        rate_rps=60,
        prev_rate_rps=40,
        mix=[1, 6, 3],
        usage={"cpu": 0.5, "disk_io": 3e6},
        limits={"cpu": 1.0, "disk_io": 2e6, "network": 1e8},
    )
    assert s.dtype == np.float32
    assert s.shape == (10,) == (len(state_names(3)),)
    assert state_names(3) == (
        "SR",
        "WC",
        "RC_0",
        "RC_1",
        "RC_2",
        "RU_cpu",
        "RU_memory_bandwidth",
        "RU_llc",
        "RU_disk_io",
        "RU_network",
    )
    np.testing.assert_allclose(s, [0.5, 1.5, 0.1, 0.6, 0.3, 0.5, 0, 0, 1.0, 0], rtol=1e-6)


def test_state_edge_cases_are_clipped_not_refused() -> None:
    s = build_state(slo_ms=100, p99_ms=0, rate_rps=10, prev_rate_rps=0, mix=[0, 0, 0], usage={}, limits={})
    assert s[0] == 2.0 and s[1] == 1.0 and not s[2:].any()
    s = build_state(slo_ms=100, p99_ms=1, rate_rps=1000, prev_rate_rps=1, mix=[1, 1, 1], usage={}, limits={})
    assert s[0] == 2.0 and s[1] == 4.0


@pytest.mark.parametrize(
    ("field", "value"),
    [("slo_ms", 0.0), ("p99_ms", -1.0), ("rate_rps", math.nan), ("prev_rate_rps", math.inf)],
)
def test_state_refuses_bad_numbers_naming_the_field(field: str, value: float) -> None:
    kwargs: dict[str, object] = {
        "slo_ms": 100.0,
        "p99_ms": 50.0,
        "rate_rps": 1.0,
        "prev_rate_rps": 1.0,
        "mix": [1.0],
        "usage": {},
        "limits": {},
    }
    kwargs[field] = value
    with pytest.raises(StateError, match=field):
        build_state(**kwargs)  # type: ignore[arg-type]


def test_state_refuses_unknown_resources() -> None:
    with pytest.raises(StateError, match="unknown resources"):
        build_state(slo_ms=1, p99_ms=1, rate_rps=1, prev_rate_rps=1, mix=[1], usage={"gpu": 1}, limits={})


def test_bounds_are_validated() -> None:
    with pytest.raises(StateError, match="min"):
        ResourceBounds(0.0, 1.0)
    with pytest.raises(StateError, match="max"):
        ResourceBounds(2.0, 1.0)


def test_apply_actions_is_a_bounded_multiplicative_move() -> None:
    cur = np.array([1.0, 50.0, 4.0, 1e7, 1e8])
    lo = np.array([b.min for b in BOUNDS.values()])
    hi = np.array([b.max for b in BOUNDS.values()])
    on = np.ones(5, bool)
    new, out = apply_actions(
        np.array([1.0, -1.0, 0.0, 0.5, 2.0]), cur, lo, hi, on, max_step=2.0, scale_out_threshold=0.5
    )
    np.testing.assert_allclose(new, [2.0, 25.0, 4.0, 1e7 * math.sqrt(2), 2e8])
    assert not out
    new, out = apply_actions(
        np.array([0.9, 0, 0, 0, 0]),
        new,
        lo,
        hi,
        ~on | (np.arange(5) == 0),
        max_step=2.0,
        scale_out_threshold=0.5,
    )
    assert new[0] == 2.0 and out  # at the CPU bound and wanting more: scale out


def test_reward_is_firms_with_sr_clipped_at_one_and_gating_utilisation() -> None:
    on = np.ones(5, bool)
    # SLO met: FIRM's formula, alpha * SR * |R| + (1 - alpha) * sum RU, with SR clipped at 1.
    assert reward(np.array(3.0), np.full(5, 0.5), on, alpha=0.5) == pytest.approx(0.5 * 5 + 0.5 * 2.5)
    # Violated: the utilisation term shrinks with SR, so starving pays nothing.
    assert reward(np.array(0.5), np.full(5, 1.0), on, alpha=0.5) == pytest.approx(0.5 * (0.5 * 5 + 0.5 * 5))
    assert reward(np.array(0.0), np.full(5, 1.0), on, alpha=0.5) == 0.0
    two = np.array([True, False, False, True, False])
    assert reward(np.array(1.0), np.full(5, 1.0), two, alpha=0.5) == pytest.approx(0.5 * 2 + 0.5 * 2)


def test_decide_reports_masked_resources_and_gives_no_limit_for_them(agent: Agent) -> None:
    s = build_state(
        slo_ms=100,
        p99_ms=90,
        rate_rps=10,
        prev_rate_rps=10,
        mix=[1, 1, 1],
        usage={"cpu": 0.4},
        limits={"cpu": 0.5},
    )
    mask = {"cpu": True, "disk_io": True, "network": True, "llc": False}
    d = agent.decide(s, current={"cpu": 0.5, "disk_io": 1e7, "network": 1e8}, bounds=BOUNDS, mask=mask)
    assert set(d.limits) == {"cpu", "disk_io", "network"}
    assert d.masked == ("memory_bandwidth", "llc")
    assert d.raw.shape == (5,)
    assert not d.scale_out


def test_decide_validates_before_deciding(agent: Agent) -> None:
    s = np.zeros(10, np.float32)
    with pytest.raises(StateError, match=r"shape \(9,\)"):
        agent.decide(s[:9], current={}, bounds={}, mask={})
    with pytest.raises(StateError, match="NaN"):
        agent.decide(np.full(10, np.nan), current={}, bounds={}, mask={})
    with pytest.raises(StateError, match="no current"):
        agent.decide(s, current={}, bounds=BOUNDS, mask={"cpu": True})
    with pytest.raises(StateError, match="unknown"):
        agent.decide(s, current={}, bounds=BOUNDS, mask={"gpu": True})
    with pytest.raises(StateError, match="current"):
        agent.decide(s, current={"cpu": -1.0}, bounds=BOUNDS, mask={"cpu": True})


finite = st.floats(min_value=0.0, max_value=1e3, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(
    sr=finite,
    wc=finite,
    mix=st.lists(finite, min_size=3, max_size=3),
    ru=st.lists(finite, min_size=5, max_size=5),
    fractions=st.lists(st.floats(0.0, 1.0), min_size=5, max_size=5),
    mask=st.lists(st.booleans(), min_size=5, max_size=5),
)
def test_actions_always_respect_bounds_and_masks(
    agent: Agent,
    sr: float,
    wc: float,
    mix: list[float],
    ru: list[float],
    fractions: list[float],
    mask: list[bool],
) -> None:
    state = np.array([sr, wc, *mix, *ru], np.float32)
    current = {
        r: BOUNDS[r].min + f * (BOUNDS[r].max - BOUNDS[r].min)
        for r, f in zip(RESOURCES, fractions, strict=True)
    }
    current = {r: max(v, BOUNDS[r].min) for r, v in current.items()}
    m = dict(zip(RESOURCES, mask, strict=True))
    d = agent.decide(state, current=current, bounds=BOUNDS, mask=m)
    assert set(d.limits) == {r for r in RESOURCES if m[r]}
    assert set(d.masked) == {r for r in RESOURCES if not m[r]}
    for r, v in d.limits.items():
        assert BOUNDS[r].min <= v <= BOUNDS[r].max
    assert np.all(np.abs(d.raw) <= 1.0)
    if d.scale_out:
        assert m["cpu"] and current["cpu"] >= BOUNDS["cpu"].max * (1 - 1e-9)


@settings(max_examples=100, deadline=None)
@given(
    raw=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=5, max_size=5),
    fractions=st.lists(st.floats(0.0, 1.0), min_size=5, max_size=5),
)
def test_apply_actions_bounds_hold_for_any_raw_output(raw: list[float], fractions: list[float]) -> None:
    lo = np.array([b.min for b in BOUNDS.values()])
    hi = np.array([b.max for b in BOUNDS.values()])
    cur = lo + np.array(fractions) * (hi - lo)
    new, _ = apply_actions(
        np.array(raw), cur, lo, hi, np.ones(5, bool), max_step=2.0, scale_out_threshold=0.5
    )
    assert np.all(new >= lo) and np.all(new <= hi)
