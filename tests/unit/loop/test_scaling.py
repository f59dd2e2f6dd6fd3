"""Scale-in: when, which service, how often, and what the audit says (the policy and the loop)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from firm.loop.audit import AuditLog
from firm.loop.config import Guard, LoopConfig, Reclaim, ScaleIn, default_guards
from firm.loop.deciders import NoneDecider
from firm.loop.metrics import Metrics
from firm.loop.runner import ControlLoop
from firm.loop.scaling import ScaleInPolicy
from tests.unit.loop.fakes import SLO, MemoryTarget, observation, sample, view, window

SLACK = {"compose-post": [50.0] * 10, "read-home-timeline": [30.0] * 10}  # far under 250 and 120 ms
VIOLATED = {"compose-post": [400.0] * 10}


def _views(counts: dict[str, int], cpu_use: dict[str, float] | None = None) -> list[Any]:
    return [
        view(f"{s}-{i}", {"cpu": 1.0}, usage={"cpu": (cpu_use or {}).get(s, 0.3)})
        for s, n in counts.items()
        for i in range(n)
    ]


def _policy(*, hold_s: float, cooldown_s: float) -> ScaleInPolicy:
    policy = ScaleInPolicy(ScaleIn(hold_s=hold_s, cooldown_s=cooldown_s), exclude=("redis",))
    policy.start({"text": 1, "media": 1, "redis": 1, "frontend": 1})
    return policy


def test_nothing_before_every_slo_held_with_slack_for_the_hold() -> None:
    policy = _policy(hold_s=30, cooldown_s=0)
    views = _views({"text": 2, "frontend": 1})
    choice, why = policy.decide(observation(window(SLACK), views, now=100), raised=False)
    assert choice is None and "slack for 0 of 30 s" in why
    choice, _ = policy.decide(observation(window(SLACK), views, now=120), raised=False)
    assert choice is None
    choice, why = policy.decide(observation(window(VIOLATED), views, now=125), raised=False)
    assert choice is None and why == "not every SLO holds with slack"  # the hold starts again
    choice, _ = policy.decide(observation(window(SLACK), views, now=140), raised=False)
    assert choice is None
    choice, _ = policy.decide(observation(window(SLACK), views, now=170), raised=False)
    assert choice is not None and (choice.service, choice.instances, choice.baseline) == ("text", 2, 1)


def test_never_below_the_baseline_nor_an_excluded_service() -> None:
    policy = _policy(hold_s=0, cooldown_s=0)
    choice, why = policy.decide(observation(window(SLACK), _views({"text": 1, "redis": 3})), raised=False)
    assert choice is None and "no service runs more instances than its baseline" in why
    policy.start({"text": 2})
    choice, _ = policy.decide(observation(window(SLACK), _views({"text": 2})), raised=False)
    assert choice is None


def test_the_service_furthest_above_its_baseline_first_then_the_least_loaded() -> None:
    policy = _policy(hold_s=0, cooldown_s=0)
    choice, _ = policy.decide(observation(window(SLACK), _views({"text": 3, "media": 2})), raised=False)
    assert choice is not None and choice.service == "text"
    choice, _ = policy.decide(
        observation(window(SLACK), _views({"text": 2, "media": 2}, {"text": 0.9, "media": 0.1})), raised=False
    )
    assert choice is not None and choice.service == "media"


def test_a_cool_down_after_any_scale_event_and_the_hold_again_after_each_removal() -> None:
    policy = _policy(hold_s=10, cooldown_s=60)
    views = _views({"text": 2})
    policy.note("text", 95.0)  # scaled out at 95 s
    policy.decide(observation(window(SLACK), views, now=100), raised=False)
    choice, why = policy.decide(observation(window(SLACK), views, now=120), raised=False)
    assert choice is None and "scaled less than 60 s ago" in why
    choice, _ = policy.decide(observation(window(SLACK), views, now=156), raised=False)
    assert choice is not None
    policy.requested(choice, 156)
    policy.note("text", 160)  # the scale-in finished
    choice, _ = policy.decide(observation(window(SLACK), _views({"text": 3}), now=170), raised=False)
    assert choice is None  # the hold counts again from the request, and text is in its cool-down


def test_a_raise_breaks_the_calm() -> None:
    policy = _policy(hold_s=0, cooldown_s=0)
    choice, why = policy.decide(observation(window(SLACK), _views({"text": 2})), raised=True)
    assert choice is None and why == "not every SLO holds with slack"


def test_disabled() -> None:
    policy = ScaleInPolicy(ScaleIn(enabled=False))
    assert policy.decide(observation(window(SLACK), _views({"text": 2})), raised=False) == (
        None,
        "scale-in disabled",
    )


# -- in the loop ------------------------------------------------------------------------------------


class FakeScaler:
    def __init__(self, accept: bool = True) -> None:
        self.accept = accept
        self.requests: list[tuple[str, str]] = []
        self.done: list[dict[str, Any]] = []

    def request(self, service: str, direction: str) -> bool:
        self.requests.append((service, direction))
        return self.accept

    def events(self) -> list[dict[str, Any]]:
        done, self.done = self.done, []
        return done


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _loop(
    tmp_path: Path, scaler: FakeScaler | None, *, dry_run: bool = False
) -> tuple[ControlLoop, MemoryTarget, Clock, Metrics]:
    config = LoopConfig(
        guards={**default_guards(cpus=2), "cpu": Guard(min=0.1, max=2.0, max_step=0.5)},
        reclaim=Reclaim(enabled=False),
        scale_in=ScaleIn(hold_s=10, cooldown_s=30),
    )
    target = MemoryTarget({"frontend-0": {"cpu": 1.0}, "text-0": {"cpu": 0.5}})
    clock = Clock()
    metrics = Metrics()
    loop = ControlLoop(
        config,
        target,
        NoneDecider(),
        slo_ms=SLO,
        window_s=5.0,
        dry_run=dry_run,
        audit=AuditLog(None, path=tmp_path / "audit.jsonl"),
        metrics=metrics,
        scaler=scaler,
        clock=clock,
    )
    loop.start()
    target.executor.limits["text-1"] = {"cpu": 0.5}  # scaled out after the start
    target.traces = window(SLACK)
    return loop, target, clock, metrics


def _steps(loop: ControlLoop, target: MemoryTarget, clock: Clock, n: int) -> list[dict[str, Any]]:
    records = []
    for _ in range(n):
        clock.now += 2
        target.samples = {name: sample(name, clock.now - 0.5) for name in target.names()}
        records.append(loop.step())
    return records


def test_the_loop_scales_in_after_the_hold_once_per_cool_down_and_audits_it(tmp_path: Path) -> None:
    scaler = FakeScaler()
    loop, target, clock, metrics = _loop(tmp_path, scaler)
    records = _steps(loop, target, clock, 30)
    assert scaler.requests == [("text", "in"), ("text", "in")]  # 60 s of slack: one per 30 s cool-down
    asked = [r for r in records if r.get("scale_requests")]
    first = asked[0]["scale_requests"][0]
    assert first["service"] == "text" and first["direction"] == "in" and first["started"] is True
    assert first["instances"] == 2 and first["baseline"] == 1 and "slack" in first["reason"]
    assert asked[0]["step"] == 6  # 10 s of slack (first calm step + 5 x 2 s)
    waiting = [r.get("scale_in") for r in records[:5]]
    assert all(w and "before scaling in" in w for w in waiting)
    from prometheus_client import generate_latest  # noqa: PLC0415

    text = generate_latest(metrics.registry).decode()
    assert 'firm_scale_total{direction="in",outcome="started",service="text"} 2.0' in text


def test_a_violation_or_a_dry_run_scales_nothing_in(tmp_path: Path) -> None:
    scaler = FakeScaler()
    loop, target, clock, _ = _loop(tmp_path, scaler)
    target.traces = window(VIOLATED)
    _steps(loop, target, clock, 10)
    assert scaler.requests == []
    loop, target, clock, _ = _loop(tmp_path, None, dry_run=True)
    records = _steps(loop, target, clock, 8)
    asked = [q for r in records for q in r.get("scale_requests", [])]
    assert [(q["service"], q["started"], q["why"]) for q in asked] == [("text", False, "dry run")]


def test_a_busy_scaler_is_asked_again_next_step(tmp_path: Path) -> None:
    scaler = FakeScaler(accept=False)
    loop, target, clock, _ = _loop(tmp_path, scaler)
    records = _steps(loop, target, clock, 8)
    assert len(scaler.requests) == 3  # steps 6, 7, 8
    assert "busy" in records[-1]["scale_requests"][0]["why"]
