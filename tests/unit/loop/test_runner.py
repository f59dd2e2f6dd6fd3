"""The loop's steps with a target in memory: dry run, stale data, rollback, audit, metrics, exit."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from prometheus_client import generate_latest

from firm.loop.audit import AuditLog, read_recent, recent_rows
from firm.loop.config import FirmDecider as FirmSettings
from firm.loop.config import Guard, LoopConfig, Reclaim, default_guards
from firm.loop.deciders import FirmDecider
from firm.loop.metrics import Metrics
from firm.loop.runner import ControlLoop
from firm.telemetry.cpus import CpuLoad
from tests.unit.loop.fakes import (
    REDIS_DOWN,
    SLO,
    FakeAgent,
    FakeLocalizer,
    MemoryTarget,
    bounds,
    build_state,
    sample,
    window,
)

GUARDS = {**default_guards(cpus=2), "cpu": Guard(min=0.1, max=2.0, max_step=0.5, cooldown_s=0)}
# the agent's values as they are (the fakes' instances use little of their CPU limits)
CONFIG = LoopConfig(guards=GUARDS, reclaim=Reclaim(hold_s=0), firm=FirmSettings(unused_cpu=0))
LIMITS = {"frontend-0": {"cpu": 1.0}, "compose-post-0": {"cpu": 0.5}, "text-0": {"cpu": 0.4}}
PATHS = {"compose-post": ["compose-post-0", "text-0"]}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def setup(
    tmp_path: Path,
    *,
    dry_run: bool = False,
    fail_on: frozenset[tuple[str, str]] = frozenset(),
    scores: dict[str, float] | None = None,
) -> tuple[ControlLoop, MemoryTarget, FakeLocalizer, Clock, Metrics]:
    target = MemoryTarget(LIMITS, fail_on=fail_on)
    clock = Clock()
    localizer = FakeLocalizer(scores or {"compose-post-0": 0.9, "text-0": 0.8})
    decider = FirmDecider(
        CONFIG,
        localizer,
        FakeAgent(2.0),
        build_state=build_state,
        bounds=bounds,
        request_types=["compose-post"],
    )
    metrics = Metrics()
    loop = ControlLoop(
        CONFIG,
        target,
        decider,
        slo_ms=SLO,
        window_s=5.0,
        dry_run=dry_run,
        audit=AuditLog(None, path=tmp_path / "audit.jsonl"),
        metrics=metrics,
        clock=clock,
    )
    loop.start()
    return loop, target, localizer, clock, metrics


def violate(target: MemoryTarget, clock: Clock) -> None:
    target.traces = window({"compose-post": [400.0] * 10}, PATHS)
    target.samples = {n: sample(n, clock.now - 0.5) for n in LIMITS}


def test_a_dry_run_decides_and_audits_but_writes_nothing(tmp_path: Path) -> None:
    loop, target, _, clock, metrics = setup(tmp_path, dry_run=True)
    violate(target, clock)
    record = loop.step()
    assert record["status"] == "acted" and record["dry_run"] is True
    assert target.executor.writes == 0
    assert target.executor.limits == LIMITS
    changed = {a["instance"]: a["after"] for a in record["result"]["actions"] if a["changed"]}
    assert changed == {"compose-post-0": 1.0, "text-0": 0.8}
    assert [c["instance"] for c in record["decision"]["culprits"]] == ["compose-post-0", "text-0"]
    assert {"read", "slo", "decide", "guard", "apply"} <= set(record["stages_ms"])
    assert "localize" in record["decision"]["stages_ms"]
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["step"] == 1
    text = generate_latest(metrics.registry).decode()
    assert 'firm_actions_total{outcome="dry_run",resource="cpu"} 2.0' in text
    assert 'firm_slo_violations_total{type="compose-post"} 1.0' in text
    assert 'firm_p99_ms{type="compose-post"} 400.0' in text


def test_a_real_step_applies_and_the_next_waits_for_telemetry(tmp_path: Path) -> None:
    loop, target, _, clock, _ = setup(tmp_path)
    violate(target, clock)
    assert loop.step()["status"] == "acted"
    assert target.executor.limits["compose-post-0"]["cpu"] == 1.0
    clock.now += 2
    target.samples = {n: sample(n, clock.now - 1.2, interval=1.0) for n in LIMITS}  # began before the action
    record = loop.step()
    assert record["status"] == "no_action"
    assert all("not yet visible" in r["rejected"] for r in record["rejected"])
    clock.now += 2
    target.samples = {n: sample(n, clock.now - 0.1, interval=1.0) for n in LIMITS}  # began after it
    assert loop.step()["status"] == "acted"
    assert target.executor.limits["compose-post-0"]["cpu"] == 1.5  # one max_step of 0.5


def test_stale_data_decides_nothing(tmp_path: Path) -> None:
    loop, target, localizer, clock, metrics = setup(tmp_path)
    target.samples = {n: sample(n, clock.now - 0.5) for n in LIMITS}
    record = loop.step()  # no traces
    assert record["status"] == "stale" and "no requests" in record["reason"]
    violate(target, clock)
    target.samples = {n: sample(n, clock.now - 10.0) for n in LIMITS}  # more than two intervals old
    record = loop.step()
    assert record["status"] == "stale" and "telemetry is 10.0 s old" in record["reason"]
    violate(target, clock)
    target.telemetry_error = REDIS_DOWN
    record = loop.step()
    assert record["status"] == "stale" and "telemetry unreachable" in record["reason"]
    assert record["errors"][0]["kind"] == "telemetry"
    target.telemetry_error = None
    target.trace_error = REDIS_DOWN
    assert loop.step()["status"] == "stale"
    assert localizer.calls == [] and target.executor.writes == 0
    target.trace_error = None
    assert loop.step()["status"] == "acted"  # back as soon as the data is
    text = generate_latest(metrics.registry).decode()
    assert 'firm_steps_total{status="stale"} 4.0' in text
    assert 'firm_loop_errors_total{kind="telemetry"} 1.0' in text


def test_an_instance_with_stale_telemetry_gets_no_action(tmp_path: Path) -> None:
    loop, target, _, clock, _ = setup(tmp_path)
    violate(target, clock)
    target.samples["text-0"] = sample("text-0", clock.now - 30)
    record = loop.step()
    assert {a["instance"] for a in record["result"]["actions"]} == {"compose-post-0"}
    assert any(r["instance"] == "text-0" and r["rejected"] == "stale telemetry" for r in record["rejected"])


def test_an_executor_failure_halfway_rolls_the_step_back_and_is_audited(tmp_path: Path) -> None:
    loop, target, _, clock, metrics = setup(tmp_path, fail_on=frozenset({("text-0", "cpu")}))
    violate(target, clock)
    record = loop.step()
    assert record["status"] == "failed"
    assert record["result"]["rolled_back"] is True and "text-0" in record["result"]["error"]
    assert target.executor.limits == LIMITS
    assert record["errors"] == [{"kind": "executor", "error": record["result"]["error"]}]
    rows = recent_rows(read_recent(path=tmp_path / "audit.jsonl"))
    assert "rolled back" in rows[-1]["actions"]
    assert 'firm_loop_errors_total{kind="executor"} 1.0' in generate_latest(metrics.registry).decode()


def test_on_exit_restore_brings_the_baselines_back_and_keep_leaves_them(tmp_path: Path) -> None:
    loop, target, _, clock, _ = setup(tmp_path)
    violate(target, clock)
    loop.step()
    assert target.executor.limits != LIMITS
    loop.finish("keep")
    assert target.executor.limits["compose-post-0"]["cpu"] == 1.0
    result = loop.finish("restore")
    assert result is not None and result.ok
    assert target.executor.limits == LIMITS


def test_run_stops_when_the_stop_event_is_set_after_the_step_under_way(tmp_path: Path) -> None:
    target = MemoryTarget(LIMITS)
    stop = threading.Event()
    seen: list[int] = []

    def on_step(record: dict) -> None:  # type: ignore[type-arg]
        seen.append(record["step"])
        if len(seen) == 3:
            stop.set()

    decider = FirmDecider(
        CONFIG,
        FakeLocalizer({}),
        FakeAgent(1.0),
        build_state=build_state,
        bounds=bounds,
        request_types=["compose-post"],
    )
    loop = ControlLoop(
        LoopConfig(guards=GUARDS, interval_s=0.01), target, decider, slo_ms=SLO, window_s=5.0, on_step=on_step
    )
    loop.start()
    assert loop.run(stop=stop) == 3
    assert seen == [1, 2, 3]


def test_the_targets_per_cpu_load_is_audited_and_served_and_an_unreadable_one_is_survived(
    tmp_path: Path,
) -> None:
    loop, target, _, clock, metrics = setup(tmp_path, dry_run=True)
    violate(target, clock)
    target.cpus = {0: CpuLoad(0, 0.9, 0.1, 0.0), 1: CpuLoad(1, 0.3, 0.25, 0.02)}
    record = loop.step()
    assert record["inputs"]["cpus"] == [
        {"cpu": 0, "busy": 0.9, "managed": 0.1, "foreign": 0.8, "steal": 0.0},
        {"cpu": 1, "busy": 0.3, "managed": 0.25, "foreign": 0.05, "steal": 0.02},
    ]
    text = generate_latest(metrics.registry).decode()
    assert 'firm_cpu_busy_cores{by="foreign",cpu="0"} 0.8' in text
    assert 'firm_cpu_busy_cores{by="managed",cpu="1"} 0.25' in text

    def unreadable() -> None:
        raise OSError(5, "Input/output error", "/proc/stat")

    target.cpu_load = unreadable  # type: ignore[method-assign]
    clock.now += 2
    record = loop.step()
    assert record["status"] != "failed" and record["inputs"]["cpus"] is None
    assert [e["kind"] for e in record["errors"]] == ["cpu_load"]
