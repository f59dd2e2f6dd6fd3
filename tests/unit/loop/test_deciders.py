"""The deciders on hand-computed cases."""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import ValidationError

from firm.loop.config import FirmDecider as FirmSettings
from firm.loop.config import Guard, LoopConfig, Reclaim, default_guards
from firm.loop.deciders import AimdDecider, FirmDecider, NoneDecider
from tests.unit.loop.fakes import FakeAgent, FakeLocalizer, bounds, build_state, observation, view, window

GUARDS = {**default_guards(cpus=2), "cpu": Guard(min=0.1, max=2.0, max_step=0.5, cooldown_s=6)}
CONFIG = LoopConfig(guards=GUARDS)
CPU = frozenset({"cpu"})
PATHS = {"compose-post": ["compose-post-0", "text-0"], "read-home-timeline": ["home-timeline-0"]}


def violated_window() -> list:  # type: ignore[type-arg]
    return window({"compose-post": [300.0] * 10, "read-home-timeline": [50.0] * 10}, PATHS)


def slack_window() -> list:  # type: ignore[type-arg]
    return window({"compose-post": [100.0] * 10, "read-home-timeline": [50.0] * 10}, PATHS)


def views(**cpu: float) -> list:  # type: ignore[type-arg]
    base = {"frontend-0": 1.0, "compose-post-0": 0.5, "text-0": 0.4, "home-timeline-0": 0.5}
    return [
        view(n, {"cpu": cpu.get(n.replace("-", "_"), c)}, baseline={"cpu": c}, resources=CPU)
        for n, c in base.items()
    ]


def firm(localizer: FakeLocalizer, agent: FakeAgent, config: LoopConfig = CONFIG) -> FirmDecider:
    return FirmDecider(
        config,
        localizer,
        agent,
        build_state=build_state,
        bounds=bounds,
        request_types=["compose-post", "read-home-timeline", "read-user-timeline"],
    )


def targets(actions: list) -> dict[str, float]:  # type: ignore[type-arg]
    return {a.instance: round(a.value, 6) for a in actions}


def test_aimd_multiplies_every_instance_on_a_violated_type_and_nothing_else() -> None:
    decider = AimdDecider(CONFIG)
    actions = decider.decide(observation(violated_window(), views()))
    # 1.5 x: frontend 1.0 -> 1.5, compose-post 0.5 -> 0.75, text 0.4 -> 0.6; home-timeline serves only reads
    assert targets(actions) == {"frontend-0": 1.5, "compose-post-0": 0.75, "text-0": 0.6}
    assert all(a.resource == "cpu" for a in actions)
    assert decider.explanation.mode == "raise"


def test_aimd_subtracts_after_the_hold_and_stops_at_the_baseline() -> None:
    decider = AimdDecider(CONFIG)
    raised = views(compose_post_0=0.8, text_0=0.42)
    assert decider.decide(observation(slack_window(), raised, now=100.0)) == []
    assert decider.explanation.mode == "hold"
    actions = decider.decide(observation(slack_window(), raised, now=111.0))
    # 0.8 - 0.05 = 0.75; text 0.42 - 0.05 stops at its baseline 0.4
    assert targets(actions) == {"compose-post-0": 0.75, "text-0": 0.4}


def test_firm_acts_on_the_flagged_culprits_with_the_agents_limits() -> None:
    localizer = FakeLocalizer({"compose-post-0": 0.9, "text-0": 0.7, "home-timeline-0": 0.2})
    agent = FakeAgent(factor=2.0)
    decider = firm(localizer, agent)
    actions = decider.decide(observation(violated_window(), views()))
    assert targets(actions) == {"compose-post-0": 1.0, "text-0": 0.8}
    assert [c["instance"] for c in decider.explanation.culprits] == ["compose-post-0", "text-0"]
    assert decider.explanation.culprits[0]["score"] == 0.9
    state = agent.states[0]
    assert state["slo_ms"] == 250.0 and state["p99_ms"] == 300.0  # the worst type the culprit serves
    assert state["mix"] == [0.5, 0.5, 0.0]
    assert "culprit (score 0.90) of compose-post p99 300 ms / SLO 250 ms" in actions[0].reason


def test_firm_keeps_cuts_for_later_while_an_slo_is_in_danger() -> None:
    decider = firm(FakeLocalizer({"compose-post-0": 0.9}), FakeAgent(factor=0.5))
    assert decider.decide(observation(violated_window(), views())) == []


def test_firm_falls_back_to_the_top_of_the_ranking_when_nothing_is_flagged() -> None:
    decider = firm(FakeLocalizer({"text-0": 0.3, "compose-post-0": 0.1}), FakeAgent(factor=1.5))
    actions = decider.decide(observation(violated_window(), views()))
    assert targets(actions) == {"text-0": pytest.approx(0.6)}
    assert any("no instance flagged" in n for n in decider.explanation.notes)


def test_firm_at_risk_raises_too() -> None:
    at_risk = window({"compose-post": [240.0] * 10, "read-home-timeline": [50.0] * 10}, PATHS)
    decider = firm(FakeLocalizer({"compose-post-0": 0.9}), FakeAgent(factor=1.2))
    assert targets(decider.decide(observation(at_risk, views()))) == {"compose-post-0": 0.6}


def test_firm_reclaims_with_the_agents_decrease_or_a_bounded_step() -> None:
    raised = views(compose_post_0=1.0)
    agent = FakeAgent(factor=0.8)
    decider = firm(FakeLocalizer({}), agent)
    assert decider.decide(observation(slack_window(), raised, now=100.0)) == []
    assert targets(decider.decide(observation(slack_window(), raised, now=111.0))) == {"compose-post-0": 0.8}
    stubborn = firm(FakeLocalizer({}), FakeAgent(factor=1.0))
    stubborn.decide(observation(slack_window(), raised, now=100.0))
    # excess 0.5 over the baseline: max(0.15 x 0.5, 0.2 x max_step 0.5) = 0.1 -> 0.9
    assert targets(stubborn.decide(observation(slack_window(), raised, now=111.0))) == {"compose-post-0": 0.9}


def test_firm_reclaims_below_the_baseline_only_with_floor_min() -> None:
    at_baseline = views()
    decider = firm(FakeLocalizer({}), FakeAgent(factor=1.0))
    decider.decide(observation(slack_window(), at_baseline, now=100.0))
    assert decider.decide(observation(slack_window(), at_baseline, now=111.0)) == []
    lean = LoopConfig(guards=GUARDS, reclaim=Reclaim(floor="min", instances_per_step=1))
    decider = firm(FakeLocalizer({}), FakeAgent(factor=1.0), lean)
    decider.decide(observation(slack_window(), at_baseline, now=100.0))
    # the largest excess over min 0.1 is frontend's 1.0: step max(0.15 x 0.9, 0.1) = 0.135
    assert targets(decider.decide(observation(slack_window(), at_baseline, now=111.0))) == {
        "frontend-0": 0.865
    }


def test_none_decides_nothing() -> None:
    assert NoneDecider().decide(observation(violated_window(), views())) == []


def test_firm_gives_a_culprit_that_leaves_its_quota_unused_the_smallest_raise() -> None:
    """compose-post-0 uses 0.1 of its 0.5 cores (20 %, under unused_cpu 0.5): the agent's 1.0 becomes
    0.5 x (1 + 2 x 0.02) = 0.52, a raise (so its placement widens) without quota it would not use;
    text-0 uses 0.3 of 0.4 (75 %) and gets the agent's 0.8."""
    config = LoopConfig(guards=GUARDS, firm=FirmSettings(unused_cpu=0.5))
    localizer = FakeLocalizer({"compose-post-0": 0.9, "text-0": 0.7})
    decider = firm(localizer, FakeAgent(factor=2.0), config)
    cpu = {"frontend-0": 1.0, "compose-post-0": 0.5, "text-0": 0.4, "home-timeline-0": 0.5}
    used = {"compose-post-0": 0.1, "text-0": 0.3}
    instances = [view(n, {"cpu": c}, resources=CPU, usage={"cpu": used.get(n, 0.3)}) for n, c in cpu.items()]
    actions = decider.decide(observation(violated_window(), instances))
    assert targets(actions) == {"compose-post-0": 0.52, "text-0": 0.8}
    reason = next(a.reason for a in actions if a.instance == "compose-post-0")
    assert reason.startswith("smallest raise (widens its CPUs): uses 20% of its CPU limit")
    # 0 turns it off: the agent's limits as they are
    decider = firm(
        localizer, FakeAgent(factor=2.0), LoopConfig(guards=GUARDS, firm=FirmSettings(unused_cpu=0))
    )
    assert targets(decider.decide(observation(violated_window(), instances))) == {
        "compose-post-0": 1.0,
        "text-0": 0.8,
    }


def pinned(usage: dict[str, float], cpus: dict[str, str]) -> list:  # type: ignore[type-arg]
    """The four instances with cpusets: frontend, compose-post and home-timeline on CPU 0, text on CPU 1
    (as the testbed pins them, with capacity 2: the node's CPUs); frontend serves compose-post too."""
    cpu = {"frontend-0": 1.0, "compose-post-0": 0.5, "text-0": 0.4, "home-timeline-0": 0.5}
    types = {"frontend-0": frozenset({"compose-post", "read-home-timeline"})}
    return [
        view(
            n,
            {"cpu": c, "cpuset": cpus.get(n, "1" if n == "text-0" else "0")},
            resources=frozenset({"cpu", "cpuset"}),
            usage={"cpu": usage.get(n, 0.3)},
            types=types.get(n, frozenset()),
        )
        for n, c in cpu.items()
    ]


def test_firm_passes_over_a_culprit_that_waits_for_cpu_while_it_already_runs_on_every_cpu() -> None:
    """compose-post-0's cpuset is already 0-1 (both of the node's CPUs): a raise would not widen it,
    so the next flagged culprit, text-0 (busy: the agent's 0.8), is acted on instead."""
    decider = firm(FakeLocalizer({"compose-post-0": 0.9, "text-0": 0.7}), FakeAgent(factor=2.0))
    instances = pinned({"compose-post-0": 0.1}, {"compose-post-0": "0-1"})
    actions = decider.decide(observation(violated_window(), instances))
    assert targets(actions) == {"text-0": 0.8}
    assert any(n.startswith("compose-post-0 (score 0.90) passed over") for n in decider.explanation.notes)
    # nothing flagged while an SLO is violated: the fallback to the top of the ranking passes over it too
    unflagged = FakeLocalizer({"compose-post-0": 0.4, "text-0": 0.1}, threshold=0.5)
    decider = firm(unflagged, FakeAgent(factor=2.0))
    assert targets(decider.decide(observation(violated_window(), instances))) == {"text-0": 0.8}
    assert any("acting on the top-ranked text-0" in n for n in decider.explanation.notes)


def test_firm_gives_a_throttled_culprit_the_agents_raise_however_low_its_average_use() -> None:
    """compose-post-0 uses 0.1 of its 0.5 cores (20 %) but was throttled in 30 % of its CFS periods
    (above firm.throttled_cpu 0.05): its bursts lack quota, so it gets the agent's 1.0, not 0.52;
    throttled in 2 % it is starved for a CPU as before."""
    decider = firm(FakeLocalizer({"compose-post-0": 0.9}), FakeAgent(factor=2.0))
    cpu = {"frontend-0": 1.0, "compose-post-0": 0.5, "text-0": 0.4, "home-timeline-0": 0.5}

    def instances(throttled: float) -> list:  # type: ignore[type-arg]
        used = {"compose-post-0": {"cpu": 0.1, "cpu_throttled": throttled}}
        return [view(n, {"cpu": c}, resources=CPU, usage=used.get(n, {"cpu": 0.3})) for n, c in cpu.items()]

    assert targets(decider.decide(observation(violated_window(), instances(0.3)))) == {"compose-post-0": 1.0}
    decider = firm(FakeLocalizer({"compose-post-0": 0.9}), FakeAgent(factor=2.0))
    assert targets(decider.decide(observation(violated_window(), instances(0.02)))) == {
        "compose-post-0": 0.52
    }


def test_firm_raises_first_every_instance_that_waits_for_a_cpu_beside_a_neighbour() -> None:
    """A neighbour on CPU 0: frontend-0 waits 0.3 s per s (3 s per CPU-second it runs) and
    compose-post-0 0.2 s per s (5 per CPU-second), both above firm.cpu_wait_s 0.05 and cpu_wait_ratio
    1.5; home-timeline-0 waits 0.06 s per s but runs 0.12 (0.5 per CPU-second: busy, not contended).
    The traces flag only text-0 on CPU 1. The two contended ones get the smallest raise (1.0 x 1.04,
    0.5 x 1.04), which widens their cpusets, and fill max_culprits 2, so text-0 waits a step."""
    ranks = {"text-0": 0.9, "frontend-0": 0.2, "compose-post-0": 0.1, "home-timeline-0": 0.05}
    usage = {
        "frontend-0": {"cpu": 0.1, "cpu_wait": 0.3},
        "compose-post-0": {"cpu": 0.04, "cpu_wait": 0.2},
        "home-timeline-0": {"cpu": 0.12, "cpu_wait": 0.06},
        "text-0": {"cpu": 0.3, "cpu_wait": 0.01},
    }

    def instances(cpus: dict[str, str]) -> list:  # type: ignore[type-arg]
        out = pinned({}, cpus)
        return [dataclasses.replace(v, usage=usage[v.name]) for v in out]

    decider = firm(FakeLocalizer(ranks, threshold=0.5), FakeAgent(factor=2.0))
    actions = decider.decide(observation(violated_window(), instances({})))
    assert targets(actions) == {"frontend-0": 1.04, "compose-post-0": 0.52}
    reason = next(a.reason for a in actions if a.instance == "frontend-0")
    assert reason.startswith("waits for a CPU 0.30 s per s (3.0 s per CPU-second run): a neighbour contends")
    assert reason.endswith("smallest raise (widens its CPUs)")
    assert {c["instance"]: c.get("cpu_wait_s_per_s") for c in decider.explanation.culprits} == {
        "frontend-0": 0.3,
        "compose-post-0": 0.2,
    }
    # one already on both CPUs cannot be widened: the flagged text-0 takes its place
    decider = firm(FakeLocalizer(ranks, threshold=0.5), FakeAgent(factor=2.0))
    actions = decider.decide(observation(violated_window(), instances({"frontend-0": "0-1"})))
    assert targets(actions) == {"compose-post-0": 0.52, "text-0": 0.8}
    # off: the traces' culprit only
    config = LoopConfig(guards=GUARDS, firm=FirmSettings(cpu_wait_s=None))
    decider = firm(FakeLocalizer(ranks, threshold=0.5), FakeAgent(factor=2.0), config)
    assert targets(decider.decide(observation(violated_window(), instances({})))) == {"text-0": 0.8}
    # every SLO met: nothing is raised, however long anything waits
    decider = firm(FakeLocalizer(ranks, threshold=0.5), FakeAgent(factor=2.0))
    assert decider.decide(observation(slack_window(), instances({}))) == []


# -- placement: off the CPUs that work outside the managed instances keeps busy ---------------------------

WAITING = {
    "frontend-0": {"cpu": 0.1, "cpu_wait": 0.3},
    "compose-post-0": {"cpu": 0.04, "cpu_wait": 0.2},
    "home-timeline-0": {"cpu": 0.12, "cpu_wait": 0.01},
    "text-0": {"cpu": 0.3, "cpu_wait": 0.01},
}
NEIGHBOUR_ON_0 = {0: 0.79, 1: 0.05}
"""Foreign load per CPU, cores: 0.79 on CPU 0 (above firm.foreign_cpu 0.3), CPU 1 quiet."""


def waiting(cpus: dict[str, str]) -> list:  # type: ignore[type-arg]
    return [dataclasses.replace(v, usage=WAITING[v.name]) for v in pinned({}, cpus)]


def by_resource(actions: list) -> dict[tuple[str, str], object]:  # type: ignore[type-arg]
    return {(a.instance, a.resource): a.value for a in actions}


def test_firm_moves_an_instance_waiting_for_a_cpu_off_the_cpu_a_neighbour_keeps_busy() -> None:
    """CPU 0 is 0.79 cores busy with work outside the managed instances, CPU 1 0.05 (room for both
    below firm.placement_busy 0.6). frontend-0 (on
    CPU 0) and compose-post-0 (already on both CPUs, so a widening raise could not help it) wait for
    a CPU: both are moved to CPU 1, with no change of quota; without the per-CPU load (a cluster) or
    with placement off, frontend-0 gets the smallest raise as before and compose-post-0, on every
    CPU, is passed over."""
    ranks = {"text-0": 0.9, "frontend-0": 0.2, "compose-post-0": 0.1, "home-timeline-0": 0.05}
    decider = firm(FakeLocalizer(ranks, threshold=0.5), FakeAgent(factor=2.0))
    obs = observation(violated_window(), waiting({"compose-post-0": "0-1"}), cpus=NEIGHBOUR_ON_0)
    actions = decider.decide(obs)
    assert by_resource(actions) == {("frontend-0", "cpuset"): "1", ("compose-post-0", "cpuset"): "1"}
    reason = next(a.reason for a in actions if a.instance == "frontend-0")
    assert reason.startswith("waits for a CPU 0.30 s per s (3.0 s per CPU-second run)")
    assert "keeps its CPUs busy (CPU 0 0.79 cores): moved to CPUs 1" in reason
    for cpus, config in (
        (None, CONFIG),
        (NEIGHBOUR_ON_0, LoopConfig(guards=GUARDS, firm=FirmSettings(placement=False))),
    ):
        decider = firm(FakeLocalizer(ranks, threshold=0.5), FakeAgent(factor=2.0), config)
        obs = observation(violated_window(), waiting({"compose-post-0": "0-1"}), cpus=cpus)
        assert by_resource(decider.decide(obs)) == {("frontend-0", "cpu"): 1.04, ("text-0", "cpu"): 0.8}


def test_a_waiting_instance_is_widened_by_its_cpuset_alone_where_placement_knows_the_cpus() -> None:
    """Foreign load 0.29 on CPU 0 (below 0.3): nothing to move off; frontend-0 and compose-post-0
    (CPU 0, waiting, not throttled) lack a CPU, not quota: each is widened onto CPU 1 by a cpuset
    change alone (a raise would grow the quota for nothing). Both CPUs busy with other work (0.79
    and 0.58 cores): nowhere quieter, so each may run on both, wherever a turn comes first. Without
    the per-CPU load (a cluster) the smallest raise widens them, as before placement."""
    ranks = {"frontend-0": 0.2, "compose-post-0": 0.1}
    widened = {("frontend-0", "cpuset"): "0-1", ("compose-post-0", "cpuset"): "0-1"}
    each: list[dict[int, float | tuple[float, float]]] = [{0: 0.29, 1: 0.05}, {0: 0.79, 1: 0.58}]
    for loads in each:
        decider = firm(FakeLocalizer(ranks, threshold=0.5), FakeAgent(factor=2.0))
        actions = decider.decide(observation(violated_window(), waiting({}), cpus=loads))
        assert by_resource(actions) == widened
        reason = next(a.reason for a in actions if a.instance == "frontend-0")
        assert reason.endswith("widened onto CPUs 0-1 (no quota change: it lacks a CPU, not quota)")
    decider = firm(FakeLocalizer(ranks, threshold=0.5), FakeAgent(factor=2.0))
    actions = decider.decide(observation(violated_window(), waiting({}), cpus=None))
    assert by_resource(actions) == {("frontend-0", "cpu"): 1.04, ("compose-post-0", "cpu"): 0.52}


def test_a_starved_culprit_is_widened_by_its_cpuset_alone() -> None:
    """The flagged compose-post-0 uses 0.1 of its 0.5 cores (20 %, seldom throttled): the agent's
    raise would reach it only through a wider cpuset, which it gets alone, onto the quiet CPU 1."""
    decider = firm(FakeLocalizer({"compose-post-0": 0.9}), FakeAgent(factor=2.0))
    instances = pinned({"compose-post-0": 0.1}, {})
    actions = decider.decide(observation(violated_window(), instances, cpus={0: 0.1, 1: 0.05}))
    assert by_resource(actions) == {("compose-post-0", "cpuset"): "0-1"}
    assert next(a.reason for a in actions).startswith(
        "widened onto CPUs 0-1 (no quota change): uses 20% of its CPU limit"
    )


def test_the_agents_cpu_raise_widens_only_onto_uncontended_cpus() -> None:
    """text-0 (CPU 1, 0.4 cores, busy: the agent's raise to 0.8) while CPU 0 is contended: its cpuset
    stays 1 (given beside the raise, so the executor does not add CPU 0); with CPU 0 quiet, the raise
    comes with 0-1. The agent's raise to 1.6 cores of home-timeline-0 (CPU 0, contended) moves it to
    CPU 1, the only uncontended one, although 1.6 cores would want two."""
    decider = firm(FakeLocalizer({"text-0": 0.9, "home-timeline-0": 0.8}), FakeAgent(factor=2.0))
    busy = [dataclasses.replace(v, usage={"cpu": 0.35}) for v in pinned({}, {})]
    actions = decider.decide(observation(violated_window(), busy, cpus=NEIGHBOUR_ON_0))
    assert by_resource(actions) == {
        ("text-0", "cpu"): 0.8,
        ("text-0", "cpuset"): "1",
        ("home-timeline-0", "cpu"): 1.0,
        ("home-timeline-0", "cpuset"): "1",
    }
    assert next(a.reason for a in actions if a.resource == "cpuset").endswith("not the contended 0")
    decider = firm(FakeLocalizer({"text-0": 0.9}), FakeAgent(factor=2.0))
    actions = decider.decide(observation(violated_window(), busy, cpus={0: 0.1, 1: 0.05}))
    assert by_resource(actions) == {("text-0", "cpu"): 0.8, ("text-0", "cpuset"): "0-1"}


def test_placement_moves_only_as_much_as_the_quiet_cpu_has_room_for() -> None:
    """CPU 1 is 0.45 cores busy, 0.4 of them with managed instances (so not contended): 0.15 of
    headroom below firm.placement_busy 0.6. frontend-0 (0.1
    cores used) moves there first; compose-post-0 (0.08) would not fit in the 0.05 left, so it gets
    the smallest raise without a cpuset (the executor widens it as without placement): packing every
    instance onto the one quiet CPU of a small machine would make that CPU the contended one."""
    usage = {**WAITING, "compose-post-0": {"cpu": 0.08, "cpu_wait": 0.2}}
    instances = [dataclasses.replace(v, usage=usage[v.name]) for v in pinned({}, {})]
    ranks = {"frontend-0": 0.2, "compose-post-0": 0.1}
    decider = firm(FakeLocalizer(ranks, threshold=0.5), FakeAgent(factor=2.0))
    actions = decider.decide(observation(violated_window(), instances, cpus={0: 0.79, 1: (0.45, 0.4)}))
    assert by_resource(actions) == {("frontend-0", "cpuset"): "1", ("compose-post-0", "cpu"): 0.52}
    # the next decision starts afresh: with CPU 1 at 0.3, both fit
    actions = decider.decide(observation(violated_window(), instances, cpus={0: 0.79, 1: (0.3, 0.25)}))
    assert by_resource(actions) == {("frontend-0", "cpuset"): "1", ("compose-post-0", "cpuset"): "1"}


def test_an_instance_behind_a_saturated_cpu_may_fill_the_quiet_cpu_up_to_placement_busy_max() -> None:
    """CPU 0 is 0.97 cores busy with work outside the managed instances (above firm.placement_busy_max
    0.85), CPU 1 0.7 busy with managed instances: no room below placement_busy 0.6, but behind a
    saturated CPU an instance waits longer than on a busier quiet one, so CPU 1 may be filled up to
    0.85. frontend-0 (CPU 0, 0.1 cores used) brings all its use: 0.7 + 0.1 fits; compose-post-0 (on
    0-1, 0.08 cores used, half of them on CPU 1 already) brings 0.04: 0.8 + 0.04 fits. With CPU 0 at
    0.8 (contended, not saturated) the cap stays 0.6: frontend-0 gets the smallest raise without a
    cpuset and compose-post-0, on every CPU with nowhere to go, is left as it is."""
    usage = {**WAITING, "compose-post-0": {"cpu": 0.08, "cpu_wait": 0.2}}
    instances = [dataclasses.replace(v, usage=usage[v.name]) for v in pinned({}, {"compose-post-0": "0-1"})]
    ranks = {"frontend-0": 0.2, "compose-post-0": 0.1}
    decider = firm(FakeLocalizer(ranks, threshold=0.5), FakeAgent(factor=2.0))
    actions = decider.decide(observation(violated_window(), instances, cpus={0: 0.97, 1: (0.7, 0.6)}))
    assert by_resource(actions) == {("frontend-0", "cpuset"): "1", ("compose-post-0", "cpuset"): "1"}
    # a third instance's 0.1 cores would not fit in what is left below 0.85 (0.01)
    crowded: dict[int, float | tuple[float, float]] = {0: 0.97, 1: (0.74, 0.6)}
    decider = firm(FakeLocalizer(ranks, threshold=0.5), FakeAgent(factor=2.0))
    actions = decider.decide(observation(violated_window(), instances, cpus=crowded))
    assert by_resource(actions) == {("frontend-0", "cpuset"): "1", ("compose-post-0", "cpu"): 0.52}
    decider = firm(FakeLocalizer(ranks, threshold=0.5), FakeAgent(factor=2.0))
    actions = decider.decide(observation(violated_window(), instances, cpus={0: 0.8, 1: (0.7, 0.6)}))
    assert by_resource(actions) == {("frontend-0", "cpu"): 1.04}


def test_placement_busy_above_placement_busy_max_is_refused_naming_both() -> None:
    with pytest.raises(ValidationError, match=r"placement_busy \(0.9\) must be at most placement_busy_max"):
        FirmSettings(placement_busy=0.9)
    assert FirmSettings(placement_busy=0.9, placement_busy_max=0.95).placement_busy == 0.9


def test_no_raise_for_an_instance_that_waits_where_no_cpu_it_could_add_has_room() -> None:
    """Work outside the managed instances keeps CPU 1 busy (0.79 cores); frontend-0 and compose-post-0
    wait for a CPU on CPU 0, which is not contended. A raise would widen them only onto CPU 1, which
    placement refuses, so the quota would grow for nothing: neither is raised (the allocation stays
    as it is), and the flagged frontend-0 is passed over, saying why. Throttled in 30 % of its
    periods, frontend-0 lacks quota as well: it gets the smallest raise, pinned to CPU 0."""
    ranks = {"frontend-0": 0.9, "compose-post-0": 0.1}
    loads: dict[int, float | tuple[float, float]] = {0: (0.5, 0.45), 1: 0.79}
    decider = firm(FakeLocalizer(ranks, threshold=0.5), FakeAgent(factor=2.0))
    assert decider.decide(observation(violated_window(), waiting({}), cpus=loads)) == []
    assert any(
        n.startswith("frontend-0 (score 0.90) passed over")
        and "every CPU it could add is contended or full" in n
        for n in decider.explanation.notes
    )
    throttled = [
        dataclasses.replace(v, usage={**v.usage, "cpu_throttled": 0.3}) if v.name == "frontend-0" else v
        for v in waiting({})
    ]
    decider = firm(FakeLocalizer(ranks, threshold=0.5), FakeAgent(factor=2.0))
    actions = decider.decide(observation(violated_window(), throttled, cpus=loads))
    assert by_resource(actions) == {("frontend-0", "cpu"): 1.04, ("frontend-0", "cpuset"): "0"}


def test_while_no_slo_is_at_risk_instances_on_a_contended_cpu_move_where_there_is_room() -> None:
    """Every SLO met with slack, CPU 0 0.79 cores busy with other work, CPU 1 0.05: up to
    firm.placement_idle_moves (2) instances on CPU 0 move to CPU 1, the longest waiting first
    (frontend-0 0.3 s per s, compose-post-0 0.2), with no quota change; home-timeline-0, the third,
    waits for a later step. Nothing moves with placement_idle_moves 0, or with CPU 0 below
    firm.foreign_cpu."""
    decider = firm(FakeLocalizer({}), FakeAgent(factor=2.0))
    slack = observation(slack_window(), waiting({}), cpus=NEIGHBOUR_ON_0)
    actions = decider.decide(slack)
    assert [(a.instance, a.resource, a.value) for a in actions if a.resource == "cpuset"] == [
        ("frontend-0", "cpuset", "1"),
        ("compose-post-0", "cpuset", "1"),
    ]
    assert next(a.reason for a in actions if a.resource == "cpuset").endswith(
        "moved to CPUs 1 before an SLO is at risk"
    )
    assert "placement: frontend-0, compose-post-0 moved off contended CPUs 0" in decider.explanation.notes
    config = LoopConfig(guards=GUARDS, firm=FirmSettings(placement_idle_moves=0))
    decider = firm(FakeLocalizer({}), FakeAgent(factor=2.0), config)
    assert [a for a in decider.decide(slack) if a.resource == "cpuset"] == []
    decider = firm(FakeLocalizer({}), FakeAgent(factor=2.0))
    quiet = observation(slack_window(), waiting({}), cpus={0: 0.29, 1: 0.05})
    assert [a for a in decider.decide(quiet) if a.resource == "cpuset"] == []
