"""Culprit localization on the embedded testbed: real processes, real CPU contention, real traces.

A CPU anomaly is started beside one service (its workers pinned to that service's CPU) while the
testbed is under load; the traces of the 25 s before it and of the 30 s during it are read from
the testbed's trace store, and ranked. Ground truth on a shared resource (DESIGN.md): every
instance pinned to the contended CPU is a culprit, the target marked; the top of the ranking must
be one of them, and the labels derived from the anomaly's own record (time-aligned with the
windows) must agree.

The testbed under test has its own names and a subnet no route of the machine uses, so it never collides with one
a developer keeps running or with the testbed's own tests. Everything it makes is removed at the end.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from firm.localize import Localizer
from firm.localize.labels import injections, label_window
from firm.testbed import config as testbed_config
from firm.testbed import experiment, lifecycle, network
from firm.testbed.store import RedisTraceStore
from tests.helpers.redis_db import REDIS_URL

TARGET = "compose-post"


def free_subnet() -> str:
    """A /24 for the testbed that no route of this machine overlaps (the host's own network included)."""
    routes = json.loads(
        subprocess.run(["ip", "-j", "route"], check=True, capture_output=True, text=True).stdout
    )
    used = [
        ipaddress.ip_network(r["dst"], strict=False) for r in routes if r.get("dst", "default") != "default"
    ]
    for candidate in ("198.18.7.0/24", "198.19.7.0/24", "100.127.7.0/24"):
        net = ipaddress.ip_network(candidate)
        if not any(net.overlaps(u) for u in used):
            return candidate
    pytest.skip("every candidate subnet for the testbed overlaps a route of this machine")


@pytest.fixture(scope="module")
def testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[testbed_config.TestbedConfig]:
    if os.geteuid() != 0:
        pytest.skip("the testbed needs root")
    root = tmp_path_factory.mktemp("testbed-localize")
    config = dataclasses.replace(
        testbed_config.load(),
        subnet=free_subnet(),
        bridge="firmtbz0",
        namespace_prefix="firmtbz-",
        veth_prefix="ftz",
        cgroup_parent="firm-testbed-localize",
        state_dir=str(root / "state"),
        data_dir=str(root / "data"),
        telemetry_redis=REDIS_URL,
    )
    try:
        lifecycle.up(config)
        yield config
    finally:
        lifecycle.down(config)
        if network.namespaces(config.namespace_prefix) or Path("/sys/class/net", config.bridge).exists():
            lifecycle.down(config)  # a second pass for what a failed start left half-made
    assert network.namespaces(config.namespace_prefix) == []
    assert not Path("/sys/class/net", config.bridge).exists()


def test_cpu_contention_beside_a_service_is_localized_on_its_cpu(
    testbed: testbed_config.TestbedConfig,
) -> None:
    state = lifecycle.read_state(testbed)
    assert state is not None
    target_cpus = next(s.cpus for s in testbed.services if s.name == TARGET)
    sharing = {(i.spec.name, i.name) for i in testbed.instances() if i.spec.cpus == target_cpus}
    assert sharing, f"no instance on {TARGET}'s CPUs {target_cpus}"
    plan = experiment.AnomalyPlan("cpu", TARGET, 60, 30, 40)
    report = experiment.run(testbed, experiment.RunPlan(duration_s=65, anomaly=plan))
    assert report.anomaly is not None, "the anomaly left no record"
    started = int(float(report.anomaly["started_at"]) * 1e6)
    store = RedisTraceStore.of(state)
    deadline = time.monotonic() + 20
    while True:  # the services flush spans in batches: wait until the window's last seconds are in
        after = store.traces(started + 3_000_000, started + 33_000_000)
        if (
            len(after) >= 30 and max(t.start for t in after) > started + 30_000_000
        ) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    before = store.traces(started - 25_000_000, started - 1_000_000)
    assert len(before) >= 30 and len(after) >= 30, (len(before), len(after))

    ranking = Localizer.rules().rank(after, before)
    print(
        "top of the ranking:",
        [(i.service, i.instance, round(i.score, 4)) for i in ranking.top(5)],
        "flags:",
        ranking.flags,
    )
    top = ranking.instances[0]
    by_name = {i.name: (i.spec.name, i.name) for i in testbed.instances()}
    assert (top.service, top.instance) in sharing or by_name.get(top.instance) in sharing, (
        f"top-1 {top.service}/{top.instance} is not on the contended CPU {target_cpus}: {sorted(sharing)}"
    )

    # The labels of the same window, from the anomaly's record: the CPU's instances are positive.
    entry = {
        "event": "started",
        **report.anomaly,
        "labels": {**(report.anomaly.get("labels") or {}), "service": TARGET, "placement": "beside"},
    }
    recorded = injections([entry])
    keys = [(i.service, i.instance) for i in ranking.instances]
    labels = label_window(
        started + 3_000_000,
        started + 33_000_000,
        keys,
        recorded,
        sharing=lambda _: {k for k in keys if k in sharing or by_name.get(k[1]) in sharing},
    )
    assert labels[(top.service, top.instance)].positive
    early = label_window(
        started - 25_000_000, started - 1_000_000, keys, recorded, sharing=lambda _: set(keys)
    )
    assert not any(v.positive for v in early.values())
