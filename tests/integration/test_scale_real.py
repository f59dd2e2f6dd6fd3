"""Scaling a service of the embedded testbed under open-loop load, for real: a new instance in its own
namespace and cgroups takes requests, and scaling back in drops none.

The testbed under test has its own names and subnet (198.18.0.0/24, a benchmarking range), so it
never collides with one a developer keeps running; everything it makes (scaled-out instances
included) is removed at the end, and the test checks that.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from click.testing import CliRunner

from ansible_collections.firm.core.plugins.module_utils import cgroup
from ansible_collections.firm.core.plugins.module_utils.process import ProcessRef
from firm.cli import main
from firm.load.generator import LoadGenerator
from firm.load.stats import Summary
from firm.telemetry.redis_store import RedisTelemetrySource
from firm.testbed import config as testbed_config
from firm.testbed import experiment, lifecycle, network, scale
from firm.testbed.store import RedisTraceStore
from tests.helpers.redis_db import REDIS_URL
from tests.integration.test_testbed_real import assert_nothing_left

T = TypeVar("T")

SCALED = "post-storage"
"""Every request type reaches it (compose stores a post, both reads fetch posts)."""


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("scale")
    path = root / "testbed.yml"
    path.write_text(
        yaml.safe_dump(
            {
                "subnet": "198.18.0.0/24",
                "bridge": "firmtbs0",
                "namespace_prefix": "firmtbs-",
                "veth_prefix": "fts",
                "cgroup_parent": "firm-testbed-scale",
                "state_dir": str(root / "state"),
                "data_dir": str(root / "data"),
                "telemetry_redis": REDIS_URL,
                "seed_posts": 100,
            }
        )
    )
    return path


@pytest.fixture(scope="module")
def testbed(config_file: Path) -> Iterator[testbed_config.TestbedConfig]:
    if os.geteuid() != 0:
        pytest.skip("the testbed needs root (namespaces, cgroups)")
    config = testbed_config.load(config_file)
    try:
        lifecycle.up(config)
        yield config
    finally:
        lifecycle.down(config)
    assert_nothing_left(config)


def poll(what: str, check: Callable[[], T | None], timeout_s: float = 60.0) -> T:
    """``check()`` once it gives something true, or a failure naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout_s:g} s (last: {value!r})")
        time.sleep(0.2)


def now_us() -> int:
    return int(time.time() * 1e6)


def served(store: RedisTraceStore, service: str, start_us: int, end_us: int | None = None) -> Counter[str]:
    """Requests each instance of ``service`` handled that began in [start_us, end_us] (its server spans)."""
    end = end_us if end_us is not None else now_us()
    return Counter(
        r["instance"]
        for r in store.records(start_us, end)
        if r.get("kind") == "server" and r["service"] == service and start_us <= r["start_us"] <= end
    )


class BackgroundLoad:
    """The project's open-loop generator in a thread of its own, until stop()."""

    def __init__(self, config: testbed_config.TestbedConfig, url: str) -> None:
        spec = experiment.load_spec(config, experiment.RunPlan(duration_s=600, seed=7), url)
        self.collector = experiment.Collector(None)
        self.generator = LoadGenerator(spec, sink=self.collector)
        self.loop = asyncio.new_event_loop()
        self.summary: Summary | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="load", daemon=True)

    def _run(self) -> None:
        try:
            self.summary = self.loop.run_until_complete(self.generator.run())
        except BaseException as exc:
            self.error = exc

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> Summary:
        self.loop.call_soon_threadsafe(self.generator.stop)
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "the load generator did not stop"
        self.loop.close()
        if self.error is not None:
            raise self.error
        assert self.summary is not None
        return self.summary


def entry_of(config: testbed_config.TestbedConfig, name: str) -> dict[str, Any] | None:
    state = lifecycle.read_state(config)
    return next((e for e in (state.instances if state else ()) if e["name"] == name), None)


def cgroup_dirs(instance: testbed_config.Instance) -> list[str]:
    return [
        d
        for d in cgroup.group_at(cgroup.detect_layout(), instance.cgroup).distinct_dirs()
        if os.path.isdir(d)
    ]


def processes_naming(marker: str) -> list[str]:
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            if marker in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").replace(
                "\0", " "
            ):
                found.append(pid)
        except OSError:
            continue
    return found


def assert_running(config: testbed_config.TestbedConfig, instance: testbed_config.Instance) -> None:
    """In the state file (discovery), with its veth and cgroups, its server alive and in its cgroups."""
    entry = entry_of(config, instance.name)
    assert (
        entry is not None and entry["cgroup"] == instance.cgroup == f"{config.cgroup_parent}/{instance.name}"
    )
    assert entry["host_interface"] == instance.host_interface and entry["address"] == instance.address
    assert Path("/sys/class/net", instance.host_interface).exists() and cgroup_dirs(instance)
    assert ProcessRef(**entry["process"]).alive()
    in_group = cgroup.group_pids(cgroup.group_at(cgroup.detect_layout(), instance.cgroup))
    assert in_group and all(entry["process"]["pid"] in pids for pids in in_group.values())


def assert_gone(config: testbed_config.TestbedConfig, instance: testbed_config.Instance) -> None:
    assert instance.namespace not in network.namespaces(instance.namespace)
    # the kernel destroys a veth whose other end was in a deleted namespace in the background
    poll(
        f"{instance.host_interface} removed with its namespace",
        lambda: not Path("/sys/class/net", instance.host_interface).exists(),
        timeout_s=15.0,
    )
    assert cgroup_dirs(instance) == []
    assert entry_of(config, instance.name) is None
    peers = json.loads(Path(config.state_dir, "peers.json").read_text())
    assert instance.address not in peers[instance.service]
    assert (
        processes_naming(f"--instance {instance.name} ")
        == processes_naming(f"--instance {instance.name}")
        == []
    )
    assert processes_naming(f"name={instance.name},") == []  # its telemetry sampler


def test_scaled_out_instance_takes_requests_under_load_and_scaling_in_drops_none(
    testbed: testbed_config.TestbedConfig,
) -> None:
    state = lifecycle.read_state(testbed)
    assert state is not None
    store = RedisTraceStore.of(state)
    first = f"{SCALED}-0"
    load = BackgroundLoad(testbed, state.frontend)
    started = now_us()
    load.start()
    try:
        poll(f"{first} serves the load", lambda: served(store, SCALED, started)[first] >= 40)
        scaling_out = now_us()
        before = served(store, SCALED, started, scaling_out)

        began = time.monotonic()
        instance = scale.scale_out(testbed, SCALED, progress=print)
        out_s = time.monotonic() - began
        scaled_out = now_us()
        assert scale.replicas(testbed, SCALED) == [first, instance.name]
        assert_running(testbed, instance)

        poll(
            f"{instance.name} serves requests", lambda: served(store, SCALED, scaled_out)[instance.name] >= 40
        )
        scaling_in = now_us()
        during = served(store, SCALED, scaled_out, scaling_in)
        telemetry = RedisTelemetrySource(REDIS_URL)
        samples = poll(
            f"telemetry of {instance.name}",
            lambda: telemetry.window(instance.name, scaled_out / 1e6, time.time()),
            timeout_s=20,
        )

        # slow the new instance down (10 % of a CPU), so that requests are under way at it when it leaves
        group = cgroup.group_at(cgroup.detect_layout(), instance.cgroup)
        cgroup.apply_writes(cgroup.plan_writes(group, cgroup.CgroupSettings(cpu_quota_us=10000)))
        busy = poll(
            f"requests under way at {instance.name}",
            lambda: (asyncio.run(scale._health(testbed, instance.address)) or {}).get("in_flight"),
        )
        began, leaving = time.monotonic(), now_us()
        removed = scale.scale_in(testbed, SCALED, progress=print)
        in_s = time.monotonic() - began
        scaled_in = now_us()
        poll(
            "the load goes on after the scale-in",
            lambda: served(store, "frontend", scaled_in)["frontend-0"] >= 100,
        )
    finally:
        summary = load.stop()
    after = served(store, SCALED, scaled_in)
    finished_late = [
        r
        for r in store.records(leaving - 10_000_000, scaled_in)
        if r.get("kind") == "server"
        and r["instance"] == instance.name
        and r["start_us"] + r["duration_us"] > leaving
    ]
    records = load.collector.records
    failed = Counter(r.error for r in records if r.error)
    print(
        f"{SCALED} requests before scale-out ({(scaling_out - started) / 1e6:.1f} s): {dict(before)}; "
        f"after it ({(scaling_in - scaled_out) / 1e6:.1f} s): {dict(during)}; "
        f"after scale-in: {dict(after)}; scale-out took {out_s:.2f} s, scale-in {in_s:.2f} s; "
        f"telemetry samples of {instance.name}: {len(samples)}; at scale-in {busy} requests were under way at "
        f"it and {len(finished_late)} of its requests ended after it left the peers; "
        f"load: {summary.overall.sent} sent, {summary.overall.succeeded} succeeded, failures {dict(failed)}"
    )

    assert set(before) == {first}
    assert during[instance.name] >= 0.3 * sum(during.values())  # round robin, give or take
    assert during[first] > 0
    assert removed == instance.name
    assert scale.replicas(testbed, SCALED) == [first]
    assert_gone(testbed, instance)
    assert set(after) == {first}
    assert summary.overall.sent == len(records) > 0
    assert failed == Counter() and summary.overall.succeeded == summary.overall.sent


def test_a_scale_out_that_fails_halfway_removes_what_it_made(
    testbed: testbed_config.TestbedConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = lifecycle.read_state(testbed)
    assert state is not None
    peers = Path(testbed.state_dir, "peers.json").read_text()
    planned, _ = scale.plan_instance(testbed, state, "text")
    # the new instance starts and answers, is written into the state and the peers, but its callers
    # never confirm: the last step fails, and every step before it is undone
    monkeypatch.setattr(scale, "routes_to", lambda report, service, address: False)
    impatient = dataclasses.replace(testbed, scale_timeout_s=15.0)
    with pytest.raises(
        scale.ScaleError, match=r"scale-out of text failed and was rolled back: .* had not caught up"
    ):
        scale.scale_out(impatient, "text", progress=print)
    assert_gone(testbed, planned)
    assert Path(testbed.state_dir, "peers.json").read_text() == json.dumps(json.loads(peers))
    assert scale.replicas(testbed, "text") == ["text-0"]
    assert lifecycle.is_up(testbed)


def test_the_command_scales_and_down_removes_scaled_out_instances(
    testbed: testbed_config.TestbedConfig, config_file: Path
) -> None:
    runner = CliRunner()
    result = runner.invoke(
        main, ["testbed", "scale", "text", "--replicas", "3", "--config", str(config_file), "--json"]
    )
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["replicas"] == ["text-0", *answer["added"]] and len(answer["added"]) == 2
    assert scale.replicas(testbed, "text") == answer["replicas"]
    result = runner.invoke(
        main, ["testbed", "scale", "text", "--replicas", "0", "--config", str(config_file)]
    )
    assert result.exit_code == 2  # never below one
    result = runner.invoke(main, ["testbed", "down", "--config", str(config_file), "--json"])
    assert result.exit_code == 0, result.output
    assert all(
        f"{testbed.namespace_prefix}{name}" in json.loads(result.stdout)["removed"]
        for name in answer["added"]
    )
    assert_nothing_left(testbed)
