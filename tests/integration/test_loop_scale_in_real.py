"""The control loop scales a service back in on the embedded testbed, for real, under load.

A service is scaled out after the loop started (so its baseline is one instance); every SLO holds
with slack (generous SLOs), so after the hold the loop asks the testbed's scaler to remove the
extra instance, which is drained first: no request fails. The testbed has its own names and subnet
(198.18.6.0/24); everything is removed at the end, and the test checks that.
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
from firm.loop.audit import AuditLog, read_recent
from firm.loop.config import LoopConfig, Reclaim, ScaleIn
from firm.loop.deciders import NoneDecider
from firm.loop.runner import ControlLoop
from firm.testbed import config as testbed_config
from firm.testbed import lifecycle, scale
from tests.helpers.redis_db import REDIS_URL
from tests.integration.test_scale_real import BackgroundLoad, assert_gone, poll
from tests.integration.test_testbed_real import assert_nothing_left

SCALED = "post-storage"


@pytest.fixture(scope="module")
def testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[testbed_config.TestbedConfig]:
    if os.geteuid() != 0:
        pytest.skip("the testbed needs root (namespaces, cgroups)")
    root = tmp_path_factory.mktemp("scale-in")
    path = root / "testbed.yml"
    path.write_text(
        yaml.safe_dump(
            {
                "subnet": "198.18.6.0/24",
                "bridge": "firmtbi0",
                "namespace_prefix": "firmtbi-",
                "veth_prefix": "fti",
                "cgroup_parent": "firm-testbed-scalein",
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


def test_the_loop_scales_a_service_back_in_with_slack_and_drops_no_request(
    testbed: testbed_config.TestbedConfig, tmp_path: Path
) -> None:
    state = lifecycle.read_state(testbed)
    assert state is not None
    config = LoopConfig(
        interval_s=1.0,
        decider="none",
        reclaim=Reclaim(enabled=False),
        scale_in=ScaleIn(hold_s=4.0, cooldown_s=0.0),
        slo_ms=dict.fromkeys(testbed.slo_ms, 60_000.0),
    )  # every SLO with slack
    target = loop_testbed.TestbedTarget.discover(testbed, horizon_s=testbed.slo_window_s + 10)
    scaler = loop_testbed.TestbedScaler(testbed, cooldown_s=0.0)
    loop = ControlLoop(
        config,
        target,
        NoneDecider(),
        slo_ms=config.slo_ms,
        window_s=testbed.slo_window_s,
        audit=AuditLog(None, path=tmp_path / "audit.jsonl"),
        scaler=scaler,
    )
    loop.start()  # the baseline: one instance of every service
    load = BackgroundLoad(testbed, state.frontend)
    stop = threading.Event()
    runner = threading.Thread(target=loop.run, kwargs={"stop": stop}, name="loop", daemon=True)
    load.start()
    try:
        instance = scale.scale_out(testbed, SCALED, progress=print)
        assert scale.replicas(testbed, SCALED) == [f"{SCALED}-0", instance.name]
        runner.start()
        poll(
            "the loop scales the service back in",
            lambda: scale.replicas(testbed, SCALED) == [f"{SCALED}-0"],
            timeout_s=120,
        )
        poll(
            "the scale-in is audited as done",
            lambda: [
                e
                for r in read_recent(path=tmp_path / "audit.jsonl", last=1000)
                for e in r.get("scale_events", [])
                if e.get("direction") == "in"
            ],
            timeout_s=30,
        )
    finally:
        stop.set()
        runner.join(timeout=60)
        scaler.wait()
        summary = load.stop()
        loop.finish("keep")
    records = read_recent(path=tmp_path / "audit.jsonl", last=1000)
    asked: list[dict[str, Any]] = [q for r in records for q in r.get("scale_requests", [])]
    done = [e for r in records for e in r.get("scale_events", [])]
    failed = Counter(r.error for r in load.collector.records if r.error)
    statuses = Counter(r.get("status") for r in records)
    print(
        f"steps {dict(statuses)}; scale requests {asked}; events {done}; load: {summary.overall.sent} sent, "
        f"{summary.overall.succeeded} succeeded, failures {dict(failed)}"
    )
    assert [(q["service"], q["direction"], q["started"], q["baseline"]) for q in asked] == [
        (SCALED, "in", True, 1)
    ]
    assert [(e["service"], e["direction"], e["outcome"], e["instance"]) for e in done] == [
        (SCALED, "in", "done", instance.name)
    ]
    assert_gone(testbed, instance)
    assert (
        summary.overall.sent > 0 and failed == Counter() and summary.overall.succeeded == summary.overall.sent
    )
