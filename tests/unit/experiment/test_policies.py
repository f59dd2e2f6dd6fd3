"""The baselines' rules against hand-computed cases: HPA's formula, tolerance band, sync period and
scale-down stabilisation window; the static and ceiling policies; policy parsing."""

from __future__ import annotations

import math

import pytest

from firm.experiment import ExperimentInputError
from firm.experiment.policies import (
    HPA,
    HPA_FAST,
    CeilingDecider,
    HpaConfig,
    HpaDecider,
    Stabilizer,
    StaticDecider,
    ceiling_actions,
    hpa_desired,
    make_policy,
    parse_policies,
    service_utilization,
)
from firm.loop.config import LoopConfig
from firm.loop.deciders import AimdDecider
from firm.loop.observe import InstanceView, Observation


def test_hpa_defaults_are_kubernetes_defaults() -> None:
    assert (HPA.tolerance, HPA.sync_s, HPA.window_s) == (0.1, 15.0, 300.0)
    assert (HPA_FAST.tolerance, HPA_FAST.sync_s, HPA_FAST.window_s) == (0.1, 1.0, 20.0)


@pytest.mark.parametrize(
    ("current", "utilization", "expected"),
    [
        (2, 0.5625, 3),  # ratio 1.125 -> ceil(2.25) = 3
        (2, 0.546875, 2),  # ratio 1.09375: inside the 0.1 band, no change
        (2, 0.453125, 2),  # ratio 0.90625: inside the band
        (2, 0.4375, 2),  # ratio 0.875 -> ceil(1.75) = 2
        (4, 0.25, 2),  # ratio 0.5 -> 2
        (4, 0.0, 0),  # idle: ceil(0) (the caller clamps to min_replicas)
        (3, 1.0, 6),  # ratio 2 -> 6
        (1, 0.75, 2),  # ratio 1.5 -> ceil(1.5) = 2
    ],
)
def test_hpa_desired(current: int, utilization: float, expected: int) -> None:
    assert hpa_desired(current, utilization, 0.5, 0.1) == expected


def test_hpa_tolerance_band_is_inclusive() -> None:
    # ratio exactly 1.125 and 0.875 with tolerance 0.125 (both exact in binary): no change
    assert hpa_desired(4, 0.5625, 0.5, 0.125) == 4
    assert hpa_desired(4, 0.4375, 0.5, 0.125) == 4
    # just outside
    assert hpa_desired(4, 0.5625, 0.5, 0.0625) == 5  # ceil(4.5)
    assert hpa_desired(4, 0.4375, 0.5, 0.0625) == 4  # ceil(3.5) = 4


def test_hpa_desired_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="current"):
        hpa_desired(0, 0.5, 0.5, 0.1)
    with pytest.raises(ValueError):
        hpa_desired(1, math.nan, 0.5, 0.1)


def test_stabilizer_scales_up_at_once_and_down_after_the_window() -> None:
    s = Stabilizer(300.0)
    assert s.stabilize(0.0, 4, 2) == 4  # up at once
    assert s.stabilize(15.0, 1, 4) == 4  # max(4, 1) within 300 s
    assert s.stabilize(300.0, 1, 4) == 4  # t=0 is still inside [0, 300]
    assert s.stabilize(315.0, 2, 4) == 2  # window [15, 315]: max(1, 1, 2) = 2
    assert s.stabilize(330.0, 1, 2) == 2  # window [30, 330]: max(1, 2, 1) = 2
    assert s.stabilize(616.0, 1, 2) == 1  # every 2 is older than 300 s


def test_stabilizer_down_never_below_a_recent_peak_and_up_not_limited() -> None:
    s = Stabilizer(20.0)
    assert s.stabilize(0.0, 3, 3) == 3
    assert s.stabilize(1.0, 1, 3) == 3
    assert s.stabilize(19.0, 2, 3) == 3
    assert s.stabilize(21.0, 1, 3) == 2  # window [1, 21]: max(1, 2, 1) = 2
    assert s.stabilize(22.0, 5, 2) == 5
    assert s.stabilize(23.0, 2, 5) == 5


class Setter:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def set_replicas(self, service: str, count: int) -> None:
        self.calls.append((service, count))

    def replicas(self, service: str) -> int | None:
        return None


def _view(name: str, service: str, limit: float, usage: float | None) -> InstanceView:
    return InstanceView(
        name,
        service,
        {"cpu": limit},
        {"cpu": limit},
        frozenset({"cpu"}),
        {} if usage is None else {"cpu": usage},
    )


def _observation(time: float, views: list[InstanceView]) -> Observation:
    return Observation(time, (time - 5, time), [], None, {}, {v.name: v for v in views}, 0.0, 0.0, {})


def test_service_utilization_sums_use_over_limits() -> None:
    views = [
        _view("a-0", "a", 0.5, 0.4),
        _view("a-1", "a", 1.0, 0.2),
        _view("a-2", "a", 0.5, None),
        _view("a-3", "a", math.inf, 1.0),
    ]
    assert service_utilization(views) == pytest.approx(0.6 / 1.5)
    assert service_utilization([_view("b-0", "b", 0.5, None)]) is None


def test_hpa_decider_syncs_every_period_and_stabilizes() -> None:
    setter = Setter()
    decider = HpaDecider("hpa", HpaConfig(sync_s=15.0, window_s=300.0), setter, {"text": 4, "user": 4})
    busy = [
        _view("text-0", "text", 0.5, 0.5),
        _view("user-0", "user", 0.5, 0.25),
        _view("frontend-0", "frontend", 1.0, 1.0),
    ]
    assert decider.decide(_observation(100.0, busy)) == []
    # text: 100 % of 50 % target -> 2; user: exactly at target -> 1 (no call); frontend not scalable
    assert setter.calls == [("text", 2)]
    assert decider.explanation.mode == "raise"
    decider.decide(_observation(110.0, busy))  # before the next sync: nothing evaluated
    assert setter.calls == [("text", 2)]
    assert decider.explanation.mode == "hold"
    idle = [_view("text-0", "text", 0.5, 0.05), _view("text-1", "text", 0.5, 0.05)]
    decider.decide(_observation(115.0, idle))  # wants 1, but 2 was recommended 15 s ago
    assert setter.calls == [("text", 2)]
    decider.decide(_observation(401.0, idle))  # the recommendation of 2 at t=100 has left the window
    assert setter.calls == [("text", 2), ("text", 1)]
    assert decider.explanation.mode == "reclaim"


def test_hpa_decider_clamps_to_max_replicas() -> None:
    setter = Setter()
    decider = HpaDecider("hpa", HPA, setter, {"text": 3})
    decider.decide(_observation(0.0, [_view("text-0", "text", 0.5, 2.0)]))  # ratio 8 -> 8, clamped to 3
    assert setter.calls == [("text", 3)]


def test_static_and_ceiling() -> None:
    obs = _observation(0.0, [_view("text-0", "text", 0.5, 0.5)])
    assert StaticDecider().decide(obs) == [] and StaticDecider.name == "static"
    assert CeilingDecider().decide(obs) == [] and CeilingDecider.name == "none"
    actions = ceiling_actions({"text-0": "text", "redis": "redis"}, lambda name: 2.0, exclude=("redis",))
    assert [(a.instance, a.resource, a.value) for a in actions] == [("text-0", "cpu", 2.0)]


def test_make_policy_and_parse() -> None:
    config = LoopConfig()
    assert isinstance(make_policy("aimd", config, request_types=[]), AimdDecider)
    assert make_policy("static", config, request_types=[]).name == "static"
    assert make_policy("hpa-fast", config, request_types=[], replicas=Setter()).name == "hpa-fast"
    with pytest.raises(ExperimentInputError, match="needs a way to scale"):
        make_policy("hpa", config, request_types=[])
    assert parse_policies(" firm, hpa ,aimd") == ["firm", "hpa", "aimd"]
    with pytest.raises(ExperimentInputError, match="unknown 'kube'"):
        parse_policies("firm,kube")
    with pytest.raises(ExperimentInputError, match="twice"):
        parse_policies("firm,firm")
    with pytest.raises(ExperimentInputError, match="no policy"):
        parse_policies(" , ")
    with pytest.raises(ExperimentInputError, match="tolerance"):
        HpaConfig(tolerance=-1)
