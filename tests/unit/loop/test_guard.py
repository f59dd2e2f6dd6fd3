"""Guardrails: random agent outputs never leave the bounds or exceed the step limit."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from firm.actuate.executor import Action, Applied, StepResult
from firm.loop.config import LoopConfig
from firm.loop.guard import Guardrails
from tests.unit.loop.fakes import observation, view

CONFIG = LoopConfig()
RESOURCES = ("cpu", "disk_io", "network", "memory_bandwidth", "llc")
ALL = frozenset(RESOURCES)


def _within(resource: str, low_share: float) -> float:
    guard = CONFIG.guard("compose-post", resource)
    top = min(guard.max, 2.0) if resource == "cpu" else guard.max
    return guard.min + low_share * (top - guard.min)


@settings(max_examples=300, deadline=None)
@given(
    resource=st.sampled_from(RESOURCES),
    current_share=st.floats(0, 1),
    proposal=st.one_of(st.floats(min_value=1e-9, max_value=1e12, allow_nan=False), st.just(math.inf)),
)
def test_random_proposals_never_leave_bounds_or_step_limits(
    resource: str, current_share: float, proposal: float
) -> None:
    current = _within(resource, current_share)
    obs = observation([], [view("compose-post-0", {resource: current}, resources=ALL, capacity=2.0)])
    if math.isinf(proposal) and resource not in ("cpu", "disk_io", "network"):
        return  # not a valid action for that resource (the Action refuses it)
    accepted, rejected = Guardrails(CONFIG).bound(
        [Action("compose-post-0", resource, proposal)], obs, now=100.0
    )
    guard = CONFIG.guard("compose-post", resource)
    top = min(guard.max, 2.0) if resource == "cpu" else guard.max
    for action in accepted:
        assert isinstance(action.value, float)
        assert guard.min <= action.value <= top
        assert abs(action.value - current) <= guard.max_step * (1 + 1e-9)
    assert len(accepted) + len(rejected) == 1


@settings(max_examples=200, deadline=None)
@given(proposal=st.floats(min_value=1e-3, max_value=1e12, allow_nan=False))
def test_from_no_limit_the_first_limit_is_within_one_step_of_the_maximum(proposal: float) -> None:
    obs = observation([], [view("post-storage-0", {"disk_io": math.inf}, resources=ALL)])
    accepted, _ = Guardrails(CONFIG).bound([Action("post-storage-0", "disk_io", proposal)], obs, now=100.0)
    guard = CONFIG.guard("post-storage", "disk_io")
    for action in accepted:
        assert guard.max - guard.max_step <= action.value < guard.max  # type: ignore[operator]


def test_cooldown_confirmation_masking_and_exclusion_refuse_with_reasons() -> None:
    guard = Guardrails(CONFIG)
    views = [
        view("text-0", {"cpu": 0.5}, telemetry_since=99.0),
        view("redis-0", {"cpu": 0.5}),
        view("user-0", {"cpu": 0.5}, resources=frozenset({"disk_io"})),
    ]
    obs = observation([], views, now=100.0)
    result = StepResult((Applied(Action("text-0", "cpu", 0.8), 0.5, 0.8, True),))
    guard.record(result, now=100.0)
    accepted, rejected = guard.bound(
        [
            Action("text-0", "cpu", 1.0),
            Action("redis-0", "cpu", 1.0),
            Action("user-0", "cpu", 1.0),
            Action("nobody-0", "cpu", 1.0),
        ],
        obs,
        now=101.0,
    )
    assert accepted == []
    reasons = {r.action.instance: r.reason for r in rejected}
    assert "not yet visible in telemetry" in reasons["text-0"]
    assert "excluded" in reasons["redis-0"]
    assert "masked" in reasons["user-0"]
    assert reasons["nobody-0"] == "unknown instance"
    # telemetry that began after the action confirms it; the cool-down still holds
    later = observation([], [view("text-0", {"cpu": 0.8}, telemetry_since=100.5)], now=102.0)
    guard.confirm(later)
    _, rejected = guard.bound([Action("text-0", "cpu", 1.0)], later, now=102.0)
    assert "cool-down" in rejected[0].reason
    after = observation([], [view("text-0", {"cpu": 0.8}, telemetry_since=107.0)], now=107.0)
    accepted, _ = guard.bound([Action("text-0", "cpu", 1.0)], after, now=107.0)
    assert [a.value for a in accepted] == [1.0]


def test_tiny_changes_and_limits_at_the_ceiling_of_unlimited_resources_are_no_actions() -> None:
    obs = observation([], [view("text-0", {"cpu": 1.0, "network": math.inf})])
    accepted, rejected = Guardrails(CONFIG).bound(
        [Action("text-0", "cpu", 1.01), Action("text-0", "network", 5e10)], obs, now=100.0
    )
    assert accepted == []
    assert all("no change" in r.reason for r in rejected)


def test_cpu_is_bounded_by_the_cores_of_the_cpuset() -> None:
    obs = observation([], [view("text-0", {"cpu": 0.9}, capacity=1.0)])
    accepted, _ = Guardrails(CONFIG).bound([Action("text-0", "cpu", 1.8)], obs, now=100.0)
    assert [a.value for a in accepted] == [1.0]
    assert "bounded from 1.8" in accepted[0].reason


def test_a_cpuset_in_force_stays_beside_a_cpu_raise_of_the_same_instance_and_only_there() -> None:
    """Placement's cpuset for a raise may be the one in force: beside the accepted raise it is kept (the
    executor then keeps the cpuset instead of widening it); alone, or beside a raise the guard
    refused, it is no action; a different cpuset is an action of its own."""
    obs = observation(
        [], [view("text-0", {"cpu": 0.5, "cpuset": "1"}, resources=frozenset({"cpu", "cpuset"}))]
    )
    pin = Action("text-0", "cpuset", "1")
    accepted, rejected = Guardrails(CONFIG).bound([Action("text-0", "cpu", 0.8), pin], obs, now=100.0)
    assert [(a.resource, a.value) for a in accepted] == [("cpu", 0.8), ("cpuset", "1")] and rejected == []
    accepted, rejected = Guardrails(CONFIG).bound([pin], obs, now=100.0)
    assert accepted == [] and [r.reason for r in rejected] == ["no change (within the deadband)"]
    accepted, rejected = Guardrails(CONFIG).bound([Action("text-0", "cpu", 0.505), pin], obs, now=100.0)
    assert accepted == [] and len(rejected) == 2
    accepted, _ = Guardrails(CONFIG).bound([Action("text-0", "cpuset", "0")], obs, now=100.0)
    assert [(a.resource, a.value) for a in accepted] == [("cpuset", "0")]
