"""The control loop on the embedded testbed, for real: processes, cgroups, tc, Redis, traces, anomalies.

The testbed under test has its own names and subnet (198.18.2.0/24), and its telemetry goes to a
Redis server of the test's own (on a free port), which one test stops and starts again. Everything
is removed at the end, and the test checks that.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from ansible_collections.firm.core.plugins.module_utils import cgroup, tc
from ansible_collections.firm.core.plugins.module_utils.kernel import Kernel
from firm.actuate.executor import Action
from firm.actuate.local import LocalExecutor
from firm.loop import config as loop_config
from firm.loop import testbed as loop_testbed
from firm.loop.audit import AuditLog
from firm.loop.deciders import Explanation, make_decider
from firm.loop.observe import Observation
from firm.loop.runner import ControlLoop
from firm.testbed import config as testbed_config
from firm.testbed import experiment, lifecycle, network
from tests.helpers.measure import poll

FIRM = [sys.executable, "-c", "import sys; from firm.cli import main; sys.argv[0] = 'firm'; main()"]
INTERVAL_S = 2.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A redis-server of this module's own on a free loopback port, which a test may stop and restart."""

    def __init__(self, directory: Path) -> None:
        self.port = _free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        assert poll(lambda: _pings(client), bool, timeout_s=10).met, "the test's Redis did not start"

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    if os.geteuid() != 0:
        pytest.skip("the testbed needs root")
    server = PrivateRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def testbed(
    tmp_path_factory: pytest.TempPathFactory, private_redis: PrivateRedis
) -> Iterator[tuple[testbed_config.TestbedConfig, Path]]:
    """The testbed up, and a YAML file of its settings (for ``firm run --config``)."""
    root = tmp_path_factory.mktemp("testbed")
    overrides = {
        "subnet": "198.18.2.0/24",
        "bridge": "firmtbl0",
        "namespace_prefix": "firmtbl-",
        "veth_prefix": "ftl",
        "cgroup_parent": "firm-testbed-loop",
        "state_dir": str(root / "state"),
        "data_dir": str(root / "data"),
        "telemetry_redis": private_redis.url,
    }
    path = root / "testbed.yml"
    path.write_text(yaml.safe_dump(overrides))
    config = testbed_config.load(path)
    try:
        lifecycle.up(config)
        yield config, path
    finally:
        lifecycle.down(config)
    assert network.namespaces(config.namespace_prefix) == []
    layout = cgroup.detect_layout()
    assert not any(os.path.exists(d) for d in cgroup.group_at(layout, config.cgroup_parent).distinct_dirs())


def kernel_state(config: testbed_config.TestbedConfig) -> dict[str, str]:
    """Every limit file of every instance's cgroups, and every qdisc of every veth (both ends)."""
    state = lifecycle.read_state(config)
    assert state is not None
    layout = cgroup.detect_layout()
    knobs = (
        "cpu.cfs_quota_us",
        "cpu.cfs_period_us",
        "cpu.shares",
        "cpu.max",
        "cpu.weight",
        "cpuset.cpus",
        "blkio.throttle.read_bps_device",
        "blkio.throttle.write_bps_device",
        "io.max",
        "memory.limit_in_bytes",
        "memory.max",
    )
    found = {}
    for entry in state.instances:
        for directory in cgroup.group_at(layout, entry["cgroup"]).distinct_dirs():
            for knob in knobs:
                path = Path(directory, knob)
                if path.exists():
                    found[str(path)] = path.read_text()
        found[f"tc {entry['host_interface']}"] = tc.run_command(
            ["tc", "qdisc", "show", "dev", entry["host_interface"]]
        )
        found[f"tc {entry['namespace']} eth0"] = tc.run_command(
            ["tc", "-n", entry["namespace"], "qdisc", "show", "dev", "eth0"]
        )
    return found


class Load:
    """Load (and optionally one anomaly) from ``experiment.run`` in a thread."""

    def __init__(
        self,
        config: testbed_config.TestbedConfig,
        duration_s: float,
        anomaly: experiment.AnomalyPlan | None = None,
    ) -> None:
        self.report: experiment.RunReport | None = None
        self.error: BaseException | None = None
        plan = experiment.RunPlan(duration_s=duration_s, anomaly=anomaly)

        def run() -> None:
            try:
                self.report = experiment.run(config, plan)
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.started = time.time()
        self.thread.start()

    def join(self) -> experiment.RunReport:
        self.thread.join()
        if self.error is not None:
            raise self.error
        assert self.report is not None
        return self.report


def loop_for(
    config: testbed_config.TestbedConfig,
    private_redis: PrivateRedis,
    tmp_path: Path,
    *,
    use: Any = None,
    executor: LocalExecutor | None = None,
    **settings: Any,
) -> ControlLoop:
    cfg = loop_config.load(None, redis_url=private_redis.url, **settings)
    target = loop_testbed.TestbedTarget.discover(
        config, redis_url=private_redis.url, executor=executor, horizon_s=config.slo_window_s + 10
    )
    chosen = use or make_decider(cfg, request_types=list(config.mix))
    audit = AuditLog(
        redis.Redis.from_url(private_redis.url, socket_timeout=2, socket_connect_timeout=2),
        path=tmp_path / "audit.jsonl",
    )
    loop = ControlLoop(
        cfg,
        target,
        chosen,
        slo_ms={**config.slo_ms, **cfg.slo_ms},
        window_s=cfg.window_s or config.slo_window_s,
        audit=audit,
    )
    loop.start()
    return loop


def wait_for_traffic(loop: ControlLoop) -> None:
    """Steps until one decides on fresh data (the load's first window is complete)."""
    seen = poll(lambda: loop.step()["status"], lambda s: s != "stale", timeout_s=30, interval_s=INTERVAL_S)
    assert seen.met, f"the loop saw no fresh data in 30 s: {loop.last_record}"


# --------------------------------------------------------------------------------------------------
# the bar: a dry run under load


def test_a_dry_run_under_load_writes_nothing_audits_every_interval_and_serves_metrics(
    testbed: tuple[testbed_config.TestbedConfig, Path], private_redis: PrivateRedis, tmp_path: Path
) -> None:
    config, testbed_file = testbed
    loop_file = tmp_path / "loop.yml"
    loop_file.write_text(yaml.safe_dump({"testbed_config": str(testbed_file)}))
    audit_file, port, duration = tmp_path / "audit.jsonl", _free_port(), 60
    before = kernel_state(config)
    load = Load(config, duration_s=duration + 15)
    run = subprocess.Popen(
        [
            *FIRM,
            "run",
            "--config",
            str(loop_file),
            "--dry-run",
            "--duration",
            str(duration),
            "--audit-log",
            str(audit_file),
            "--metrics-port",
            str(port),
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        scraped = poll(lambda: _scrape(port), lambda text: "firm_p99_ms{" in text, timeout_s=40, interval_s=1)
        out, err = run.communicate(timeout=duration + 60)
    finally:
        if run.poll() is None:
            run.kill()
    load.join()
    assert run.returncode == 0, err
    assert scraped.met, f"no firm_ metrics while it ran: {scraped.value[:500]}"
    for metric in ("firm_slo_ms{", "firm_steps_total{", "firm_limit{", "firm_stage_seconds_bucket{"):
        assert metric in scraped.value, metric
    records = [json.loads(line) for line in audit_file.read_text().splitlines()]
    steps = [r for r in records if r["status"] != "exit"]
    print(
        f"{len(steps)} decisions in {duration} s: "
        + ", ".join(
            f"{s} {sum(1 for r in steps if r['status'] == s)}"
            for s in ("acted", "no_action", "stale", "failed")
        )
    )
    assert len(steps) >= duration / INTERVAL_S - 2  # one per interval (the last may fall after the end)
    assert all(r["dry_run"] for r in records)
    assert sum(1 for r in steps if r["status"] != "stale") >= len(steps) - 3  # the first window fills up
    assert not any((r.get("result") or {}).get("changed") for r in records)
    assert kernel_state(config) == before, "a dry run changed a limit"
    assert "steps" in out and "steps" not in err  # the summary is a result: stdout


def _scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return str(response.read().decode())
    except OSError:
        return ""


# --------------------------------------------------------------------------------------------------
# a CPU anomaly: mitigated, then reclaimed

MITIGATION_INTERVALS = 8
"""Intervals (2 s) from a violated window to the second window in a row with every SLO met. Judged
for every violation that begins at least this many intervals before the anomaly's end (a later one
may be ended by the anomaly ending, which proves nothing about the loop)."""
MAX_VIOLATED_SHARE = 0.5
"""Most of the anomaly's intervals with an SLO violated. Without the loop, a CPU anomaly at 60 beside
compose-post keeps its p99 over the SLO for most of its length (tests/integration/test_testbed_real.py
shows the anomaly breaking the SLO)."""
RECLAIM_INTERVALS = 20
"""Intervals after the anomaly's end by which at least half of the CPU given above the baselines is back."""


def test_a_cpu_anomaly_beside_compose_post_is_mitigated_and_the_cpu_reclaimed_after(
    testbed: tuple[testbed_config.TestbedConfig, Path], private_redis: PrivateRedis, tmp_path: Path
) -> None:
    """Placement moves the instances that wait beside the anomaly off its CPU (while the other CPU
    has room) and raises widen only onto uncontended CPUs. Measured on a 2-core machine
    (2026-12-02): met in 3 of 3 quiet runs (episodes closed after 5 and 4 intervals, 4 and 3 of the
    20 intervals violated) and once beside a 2-CPU stress-ng at 60 % (closed after 3, 3, 4); before
    placement it was met in 2 of 3 runs, as every instance ended up on both CPUs beside the hog."""
    config, _ = testbed
    loop = loop_for(
        config,
        private_redis,
        tmp_path,
        interval_s=INTERVAL_S,
        slack=0.8,
        guards={"cpu": {"min": 0.1, "max": 2.0, "max_step": 0.5, "cooldown_s": 4.0}},
        reclaim={"hold_s": 6.0, "min_step": 1.0, "instances_per_step": 3},
    )
    baseline = {n: v["cpu"] for n, v in loop.baseline.items()}
    anomaly_at, anomaly_for = 12.0, 40
    load = Load(
        config,
        duration_s=anomaly_at + anomaly_for + RECLAIM_INTERVALS * INTERVAL_S + 15,
        anomaly=experiment.AnomalyPlan("cpu", "compose-post", 60, anomaly_at, anomaly_for),
    )
    records: list[dict[str, Any]] = []
    try:
        wait_for_traffic(loop)
        loop.on_step = records.append
        loop.run(duration_s=anomaly_at + anomaly_for + RECLAIM_INTERVALS * INTERVAL_S)
        final = loop.target.executor.snapshot(list(baseline)).limits
        report = load.join()
    finally:
        restored = loop.finish("restore")
    assert restored is not None and restored.ok, restored
    began, ended = report.anomaly["started_at"], report.anomaly["ended_at"]  # type: ignore[index]
    during = [r for r in records if began <= r["time"] <= ended and r["status"] != "exit"]
    flags = [_violated(r) for r in during]
    assert any(flags), "the anomaly broke no SLO, so there was nothing to mitigate"
    starts = [i for i, v in enumerate(flags) if v and (i == 0 or not flags[i - 1])]
    closed = {
        i: next((k - i for k in range(i + 1, len(during)) if _met(during[k - 1]) and _met(during[k])), None)
        for i in starts
    }
    judged = {i: n for i, n in closed.items() if i + MITIGATION_INTERVALS < len(during)}
    raised = {
        a["instance"]: a["after"]
        for r in during
        for a in (r.get("result") or {}).get("actions", [])
        if a.get("changed") and a["resource"] in ("cpu", "cpuset")
    }
    timeline = "".join(
        "V" if v else ("?" if r["status"] == "stale" else ".") for v, r in zip(flags, during, strict=True)
    )
    print(
        f"during the anomaly (V: an SLO violated): {timeline}; violation episodes closed after "
        f"{[closed[i] for i in starts]} intervals; CPU raised or moved: {raised}; foreign load per CPU: "
        f"{[[c['foreign'] for c in r['inputs']['cpus'] or []] for r in during]}"
    )
    assert sum(flags) <= MAX_VIOLATED_SHARE * len(during), f"{sum(flags)} of {len(during)} intervals violated"
    assert all(n is not None and n <= MITIGATION_INTERVALS for n in judged.values()), (
        f"a violation that began {MITIGATION_INTERVALS}+ intervals before the anomaly's end lasted longer"
    )
    # Reclaim may begin while the anomaly still runs: a raise widens the culprit's cpuset away from
    # the contended CPU (placement moves it off), and a reclaim lowers the quota but never narrows
    # the cpuset again, so once the SLOs hold with slack the extra quota comes back while the
    # mitigation stays. Placement alone (cpusets moved, no quota raised) gives no CPU to reclaim.
    if not any(_raises(r) for r in records):
        assert raised, "the SLO came back with no CPU raised and no instance moved"
        return
    raised_at = min(r["time"] for r in records if _raises(r))
    reclaims = [
        (r["time"], a)
        for r in records
        if r["time"] > raised_at
        for a in (r.get("result") or {}).get("actions", [])
        if a.get("changed") and a["reason"].startswith("every SLO with slack")
    ]
    peak = max(_extra(baseline, r["limits_cpu"]) for r in _with_limits(records, baseline))
    left = _extra(baseline, {n: final[n]["cpu"] for n in baseline})
    print(
        f"{len(reclaims)} reclaims ({sum(1 for t, _ in reclaims if t > ended)} after the anomaly); extra CPU "
        f"{peak:.2f} cores at the peak, {left:.2f} at the end"
    )
    assert peak > 0, "no CPU was given"
    assert reclaims, "nothing was reclaimed after the raises"
    assert left <= 0.5 * peak, f"less than half of the extra CPU came back: {left:.2f} of {peak:.2f} cores"


def _raises(record: dict[str, Any]) -> bool:
    return any(
        a.get("changed") and a["resource"] == "cpu" and not a["reason"].startswith("every SLO with slack")
        for a in (record.get("result") or {}).get("actions", [])
    )


def _with_limits(records: list[dict[str, Any]], baseline: dict[str, Any]) -> list[dict[str, Any]]:
    """Each record with ``limits_cpu``: every instance's CPU limit after its step."""
    current = dict(baseline)
    out = []
    for record in records:
        for action in (record.get("result") or {}).get("actions", []):
            if (
                action.get("changed")
                and action["resource"] == "cpu"
                and not record["result"].get("rolled_back")
            ):
                current[action["instance"]] = action["after"]
        out.append({**record, "limits_cpu": dict(current)})
    return out


def _extra(baseline: dict[str, Any], limits: dict[str, Any]) -> float:
    """CPU cores given above the baselines (an unlimited value counts as no extra)."""
    return sum(
        max(0.0, float(v) - float(baseline[n]))
        for n, v in limits.items()
        if isinstance(v, float | int)
        and isinstance(baseline.get(n), float | int)
        and math.isfinite(v)
        and math.isfinite(baseline[n])
    )


def _violated(record: dict[str, Any]) -> bool:
    return any(s["state"] == "violated" for s in record["slo"])


def _met(record: dict[str, Any]) -> bool:
    return record["status"] != "stale" and all(
        s["state"] != "violated" for s in record["slo"] if s.get("slo_ms") is not None
    )


# --------------------------------------------------------------------------------------------------
# Redis stopped and started again mid-run


def test_redis_stopped_and_restarted_mid_run_is_survived_without_acting_on_stale_data(
    testbed: tuple[testbed_config.TestbedConfig, Path], private_redis: PrivateRedis, tmp_path: Path
) -> None:
    config, _ = testbed
    cfg_settings: dict[str, Any] = {
        "interval_s": INTERVAL_S,
        "decider": "aimd",
        "confirm": False,
        "slo_ms": {t: 1.0 for t in config.slo_ms},
        "guards": {"cpu": {"min": 0.1, "max": 2.0, "max_step": 0.05, "cooldown_s": 0}},
    }
    loop = loop_for(config, private_redis, tmp_path, **cfg_settings)
    load = Load(config, duration_s=90)
    records: list[dict[str, Any]] = []
    try:
        wait_for_traffic(loop)
        loop.on_step = records.append
        assert loop.step()["status"] == "acted"
        private_redis.stop()
        outage = [loop.step() for _ in range(4)]
        private_redis.start()
        back = poll(loop.step, lambda r: r["status"] == "acted", timeout_s=40, interval_s=INTERVAL_S)
    finally:
        private_redis.start() if private_redis.process is None else None
        restored = loop.finish("restore")
        load.join()
    assert restored is not None and restored.ok
    for record in outage:
        assert record["status"] == "stale" and "telemetry unreachable" in record["reason"], record["reason"]
        assert record["result"] is None
    assert back.met, f"the loop did not act again after Redis came back: {back.value.get('reason')}"
    stored = redis.Redis.from_url(private_redis.url).xlen("firm:audit")
    assert stored >= len(outage) + 1  # the records of the outage waited and went in afterwards
    file_steps = [json.loads(line)["step"] for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert set(range(file_steps[0], file_steps[-1] + 1)) <= set(file_steps)


# --------------------------------------------------------------------------------------------------
# an executor failure halfway


class Scripted:
    """A decider that always proposes the same actions."""

    name = "scripted"

    def __init__(self, actions: list[Action]) -> None:
        self.actions = actions
        self.explanation = Explanation(mode="raise")

    def decide(self, observation: Observation) -> list[Action]:
        return list(self.actions)


def test_an_executor_failure_halfway_rolls_the_step_back_and_is_audited(
    testbed: tuple[testbed_config.TestbedConfig, Path], private_redis: PrivateRedis, tmp_path: Path
) -> None:
    config, _ = testbed
    state = lifecycle.read_state(config)
    assert state is not None

    class RefusingTc(Kernel):  # the kernel, except that its tc refuses to shape
        def run(self, argv: Any) -> str:
            if "qdisc" in argv and ("replace" in argv or "add" in argv):
                raise tc.TcCommandError(
                    "tc refused the qdisc",
                    command=list(argv),
                    rc=2,
                    stdout="",
                    stderr="RTNETLINK answers: Operation not permitted",
                )
            return super().run(argv)

    executor = LocalExecutor([loop_testbed.target_of(e, None) for e in state.instances], kernel=RefusingTc())
    decider = Scripted(
        [
            Action("compose-post-0", "cpu", 0.9),
            Action("text-0", "cpu", 0.8),
            Action("compose-post-0", "network", 50e6),
        ]
    )
    loop = loop_for(config, private_redis, tmp_path, executor=executor, use=decider, interval_s=INTERVAL_S)
    before = kernel_state(config)
    load = Load(config, duration_s=25)
    try:
        wait_for_traffic(loop)
        record = loop.last_record
    finally:
        load.join()
    assert record is not None
    assert record["status"] == "failed", record
    assert record["result"]["rolled_back"] is True and record["result"]["rollback_failures"] == []
    assert "network of compose-post-0" in record["result"]["error"]
    assert kernel_state(config) == before
    audited = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert audited[-1]["result"]["rolled_back"] is True


# --------------------------------------------------------------------------------------------------
# SIGTERM


def test_sigterm_finishes_the_step_restores_the_baselines_and_exits_0(
    testbed: tuple[testbed_config.TestbedConfig, Path], private_redis: PrivateRedis, tmp_path: Path
) -> None:
    config, testbed_file = testbed
    loop_file = tmp_path / "loop.yml"
    loop_file.write_text(
        yaml.safe_dump(
            {
                "testbed_config": str(testbed_file),
                "decider": "aimd",
                "confirm": False,
                "slo_ms": {t: 1.0 for t in config.slo_ms},
            }
        )
    )
    audit_file = tmp_path / "audit.jsonl"
    before = kernel_state(config)
    load = Load(config, duration_s=40)
    run = subprocess.Popen(
        [
            *FIRM,
            "run",
            "--config",
            str(loop_file),
            "--audit-log",
            str(audit_file),
            "--on-exit",
            "restore",
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        acted = poll(lambda: _statuses(audit_file), lambda s: "acted" in s, timeout_s=40, interval_s=0.5)
        changed = kernel_state(config) != before
        run.send_signal(signal.SIGTERM)
        out, err = run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
        load.join()
    assert acted.met and changed, "the loop never changed a limit before the signal"
    assert run.returncode == 0, err
    records = [json.loads(line) for line in audit_file.read_text().splitlines()]
    assert records[-1]["status"] == "exit" and records[-1]["result"]["ok"] is True
    assert kernel_state(config) == before
    assert "baselines restored" in out


def _statuses(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [json.loads(line)["status"] for line in path.read_text().splitlines() if line.strip()]
