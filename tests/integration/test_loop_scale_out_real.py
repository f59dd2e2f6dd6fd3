"""The control loop scales a service out and back in on the embedded testbed, for real, under load.

The firm decider runs with its step rule as the estimator (deterministic: more CPU on a violation,
another instance once the CPU sits at its guardrail's max) and a localizer that always blames
``post-storage-0`` (localization is tested elsewhere; here it only has to name the culprit). Every
request type's SLO is set to 1 ms, so every window violates it: the decider asks for another instance
of post-storage, the loop hands the request to the testbed's scaler, which starts the instance in its
own namespace and cgroups and adds it to its callers' balancing while requests flow. The loop then
manages it (discovery, executor), and the instance serves requests. Once the scale-out is under way
the SLOs are relaxed to one minute (the pressure is over): after the hold and the cool-down the loop
asks the scaler to scale in, which drains the instance first. No request fails, the audit shows both
requests with their reasons and both outcomes, and the loop forgets the instance once it is gone.

The testbed has its own names and subnet (198.18.10.0/24); everything is removed at the end, and
the test checks that.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from firm.loop import testbed as loop_testbed
from firm.loop.audit import AuditLog, Record, read_recent, recent_rows
from firm.loop.config import Guard, LoopConfig, Reclaim, ScaleIn
from firm.loop.deciders import StepAgent, make_decider
from firm.loop.runner import ControlLoop
from firm.testbed import config as testbed_config
from firm.testbed import lifecycle, scale
from firm.testbed.store import RedisTraceStore
from tests.helpers.redis_db import REDIS_URL
from tests.integration.test_scale_real import BackgroundLoad, assert_gone, now_us, poll, served
from tests.integration.test_testbed_real import assert_nothing_left
from tests.unit.loop.fakes import FakeLocalizer

SCALED = "post-storage"
"""Every request type reaches it (compose stores a post, both reads fetch posts)."""
FIRST = f"{SCALED}-0"
TIGHT_SLO_MS = 1.0
"""Every request takes longer: every window violates every SLO."""
RELAXED_SLO_MS = 60_000.0


@pytest.fixture(scope="module")
def testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[testbed_config.TestbedConfig]:
    if os.geteuid() != 0:
        pytest.skip("the testbed needs root (namespaces, cgroups)")
    root = tmp_path_factory.mktemp("scale-out")
    path = root / "testbed.yml"
    path.write_text(
        yaml.safe_dump(
            {
                "subnet": "198.18.10.0/24",
                "bridge": "firmtbo0",
                "namespace_prefix": "firmtbo-",
                "veth_prefix": "fto",
                "cgroup_parent": "firm-testbed-scaleout",
                "state_dir": str(root / "state"),
                "data_dir": str(root / "data"),
                "telemetry_redis": REDIS_URL,
                "seed_posts": 100,
            }
        )
    )
    config = testbed_config.load(path)
    try:
        lifecycle.up(config)
        yield config
    finally:
        lifecycle.down(config)
    assert_nothing_left(config)


def _instance(config: testbed_config.TestbedConfig, name: str) -> testbed_config.Instance:
    state = lifecycle.read_state(config)
    assert state is not None
    return next(i for i in lifecycle.state_instances(state) if i.name == name)


def _scaled_out(config: testbed_config.TestbedConfig) -> list[str] | None:
    found = scale.replicas(config, SCALED)
    return found if len(found) == 2 else None


def _loop(testbed: testbed_config.TestbedConfig, audit_path: Path) -> ControlLoop:
    """The loop over the testbed: the firm decider (step rule, a localizer blaming post-storage-0),
    the testbed's scaler, SLOs of 1 ms until the scale-out is under way, one minute after."""
    config = LoopConfig(
        interval_s=1.0,
        decider="firm",
        reclaim=Reclaim(enabled=False),
        scale_in=ScaleIn(hold_s=4.0, cooldown_s=15.0),
        # the CPU of post-storage may not grow past its baseline (half a core): the step rule's
        # condition for asking another instance is met at once
        services={SCALED: {"cpu": Guard(min=0.1, max=0.5, max_step=0.1, cooldown_s=0.0)}},
    )
    decider = make_decider(
        config,
        request_types=list(testbed.mix or testbed.slo_ms),
        localizer=FakeLocalizer({FIRST: 0.9}),
        agent=StepAgent(),
    )
    holder: list[ControlLoop] = []

    def relax_once_scaling_out(record: Record) -> None:
        """The pressure ends as soon as the scale-out is under way (in the loop's own thread)."""
        if any(q["direction"] == "out" and q["started"] for q in record.get("scale_requests", [])):
            holder[0].slo_ms = dict.fromkeys(testbed.slo_ms, RELAXED_SLO_MS)

    loop = ControlLoop(
        config,
        loop_testbed.TestbedTarget.discover(testbed, horizon_s=testbed.slo_window_s + 10),
        decider,
        slo_ms=dict.fromkeys(testbed.slo_ms, TIGHT_SLO_MS),
        window_s=testbed.slo_window_s,
        audit=AuditLog(None, path=audit_path),
        scaler=loop_testbed.TestbedScaler(testbed, cooldown_s=0.0),
        on_step=relax_once_scaling_out,
    )
    holder.append(loop)
    return loop


def test_the_loop_scales_the_culprits_service_out_under_load_then_back_in_dropping_no_request(
    testbed: testbed_config.TestbedConfig, tmp_path: Path
) -> None:
    torch = pytest.importorskip("torch", reason="the firm decider needs torch")
    torch.set_num_threads(1)
    state = lifecycle.read_state(testbed)
    assert state is not None
    store = RedisTraceStore.of(state)
    audit_path = tmp_path / "audit.jsonl"
    loop = _loop(testbed, audit_path)
    target, scaler = loop.target, loop.scaler
    assert isinstance(target, loop_testbed.TestbedTarget) and isinstance(scaler, loop_testbed.TestbedScaler)
    loop.start()  # the baseline: one instance of every service
    load = BackgroundLoad(testbed, state.frontend)
    stop = threading.Event()
    runner = threading.Thread(target=loop.run, kwargs={"stop": stop}, name="loop", daemon=True)
    started = now_us()
    load.start()
    runner.start()
    try:
        replicas = poll("the loop scales the culprit's service out", lambda: _scaled_out(testbed), 120)
        assert replicas[0] == FIRST
        new = replicas[1]
        scaled_out = now_us()
        instance = _instance(testbed, new)
        poll(f"the loop manages {new}", lambda: new in target.executor.targets and new in target.names())
        poll(f"{new} serves requests", lambda: served(store, SCALED, scaled_out)[new] >= 20, timeout_s=60)
        poll(
            "the loop scales the service back in",
            lambda: scale.replicas(testbed, SCALED) == [FIRST],
            timeout_s=120,
        )
        scaled_in = now_us()
        poll(
            f"the loop forgets {new}",
            lambda: new not in target.executor.targets and new not in target.names(),
            timeout_s=30,
        )
        poll(
            "the scale-in is audited as done",
            lambda: [
                e
                for r in read_recent(path=audit_path, last=1000)
                for e in r.get("scale_events", [])
                if e.get("direction") == "in"
            ],
            timeout_s=30,
        )
        poll(
            "the load goes on after the scale-in",
            lambda: served(store, "frontend", scaled_in)["frontend-0"] >= 50,
            timeout_s=60,
        )
    finally:
        stop.set()
        runner.join(timeout=60)
        scaler.wait()
        summary = load.stop()
        loop.finish("keep")
    assert not runner.is_alive()
    by_instance = served(store, SCALED, started)
    records = read_recent(path=audit_path, last=10_000)
    failed = Counter(r.error for r in load.collector.records if r.error)
    print(
        f"steps {dict(Counter(r.get('status') for r in records))}; {SCALED} requests by instance "
        f"{dict(by_instance)}; scale-out to scale-in {(scaled_in - scaled_out) / 1e6:.1f} s; load: "
        f"{summary.overall.sent} sent, {summary.overall.succeeded} succeeded, failures {dict(failed)}"
    )
    _assert_audited(records, new)
    # the loop forgot the instance: nothing of it stays in its state
    assert new not in loop.baseline and new not in loop.guard.unconfirmed
    assert not any(name == new for name, _ in loop.guard.changed_at)
    # the new instance took requests beside the first, and scaling in dropped none
    assert by_instance[new] >= 20 and by_instance[FIRST] > 0
    assert_gone(testbed, instance)
    assert summary.overall.sent > 0 and failed == Counter()
    assert summary.overall.succeeded == summary.overall.sent


def _assert_audited(records: list[Record], new: str) -> None:
    """Both requests with their reasons, both outcomes, the instance coming and going, in the table."""
    asked: list[dict[str, Any]] = [q for r in records for q in r.get("scale_requests", [])]
    done = [e for r in records for e in r.get("scale_events", [])]
    print(f"scale requests {asked}; events {done}")
    assert [(q["service"], q["direction"]) for q in asked if q["started"]] == [
        (SCALED, "out"),
        (SCALED, "in"),
    ]
    out = next(q for q in asked if q["direction"] == "out")
    assert out["reason"] == f"the agent asked for another instance of {SCALED} (culprit {FIRST})"
    inward = next(q for q in asked if q["direction"] == "in")
    assert inward["baseline"] == 1 and inward["instances"] == 2
    assert [(e["service"], e["direction"], e["outcome"], e["instance"]) for e in done] == [
        (SCALED, "out", "done", new),
        (SCALED, "in", "done", new),
    ]
    assert any(new in (r.get("inputs") or {}).get("added_instances", []) for r in records)
    assert any(new in (r.get("inputs") or {}).get("removed_instances", []) for r in records)
    actions = " ".join(row["actions"] for row in recent_rows(records))
    assert f"scale-out {SCALED} requested" in actions and f"scale-in {SCALED} requested" in actions
    assert f"scale-in {SCALED} done: {new}" in actions
