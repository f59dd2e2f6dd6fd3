"""Anomalies on this machine, for real: measured contention against a victim, and relief after.

LLC contention is not measured here: the two vCPUs of this machine share no last-level cache a
victim can feel (a cache-resident victim on one CPU runs as fast with a 128 MiB cache walker on the
other), so the llc kind is checked for the working set it holds instead.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ansible_collections.firm.core.plugins.module_utils import anomaly, cgroup, tc
from tests.helpers.modules import REPO_ROOT, VENV_BIN, run_ansible_module
from tests.integration.netpair import IPERF3_PORT, NetPair, iperf3_server, iperf3_throughput, veth_pair


@pytest.fixture
def env(tmp_path: Path, layout: cgroup.Layout) -> Iterator[anomaly.Environment]:
    """A private state directory; every anomaly still in it is stopped afterwards."""
    environment = anomaly.Environment(state_dir=str(tmp_path / "anomalies"), sysbench_dir=str(tmp_path / "sysbench"))
    yield environment
    for record in anomaly.Store(environment.state_dir).all():
        anomaly.stop(record.spec.name, environment)
    assert not Path(layout.hierarchy("cpu").mount, anomaly.CGROUP_PARENT).exists()


def start(env: anomaly.Environment, kind: str, intensity: int, duration: int, name: str = "a1", *,
          cgroup: str | None = None, namespace: str | None = None, interface: str | None = None,
          link_rate_bps: int | None = None, peer: str | None = None) -> anomaly.Record:
    spec = anomaly.AnomalySpec(name, kind, intensity, duration, anomaly.Target(cgroup, namespace, interface),
                               link_rate_bps, peer)
    changed, record, _ = anomaly.start(spec, env)
    assert changed
    return record


def wait_until_ended(env: anomaly.Environment, name: str, timeout: float = 15.0) -> None:
    store = anomaly.Store(env.state_dir)
    deadline = time.monotonic() + timeout
    while store.load(name) is not None:
        assert time.monotonic() < deadline, f"anomaly {name} did not expire"
        time.sleep(0.1)


def history(env: anomaly.Environment) -> list[dict[str, object]]:
    path = Path(env.state_dir, "history.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def workers_alive(record: anomaly.Record) -> bool:
    return any(w.alive() for w in record.workers)


# CPU -------------------------------------------------------------------------------------------------


def cpu_share(group: cgroup.Group, seconds: float) -> float:
    before, start_time = cgroup.read_stats(group).cpu_usage_ns or 0, time.monotonic()
    time.sleep(seconds)
    return ((cgroup.read_stats(group).cpu_usage_ns or 0) - before) / 1e9 / (time.monotonic() - start_time)


def test_cpu_anomaly_beside_a_service_slows_it_by_intensity_and_relief_follows(
        env: anomaly.Environment, layout: cgroup.Layout, group_path: str,
        spawn: list[subprocess.Popen[bytes]]) -> None:
    victim = cgroup.group_at(layout, group_path)
    cgroup.create_group(victim)
    cgroup.apply_writes(cgroup.plan_writes(victim, cgroup.CgroupSettings(cpuset_cpus="0")))
    spawn.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
    cgroup.attach_pids(cgroup.pids_to_attach(victim, [spawn[0].pid]))
    alone = cpu_share(victim, 1.5)

    start(env, "cpu", 100, 30, cgroup=group_path)
    at_full = cpu_share(victim, 2.0)
    start(env, "cpu", 25, 30, cgroup=group_path)  # the same name, another intensity: replaced
    at_quarter = cpu_share(victim, 2.0)
    assert anomaly.stop("a1", env)
    relieved = cpu_share(victim, 1.5)

    print(f"victim CPU: {alone:.2f} alone, {at_full:.2f} at intensity 100, {at_quarter:.2f} at 25, "
          f"{relieved:.2f} after")
    assert at_full < 0.8 * alone  # on a quiet machine, half the CPU goes to the anomaly's worker
    assert at_quarter > at_full + 0.05
    assert relieved > 0.85 * alone


# Disk ------------------------------------------------------------------------------------------------


def prepare_sysbench(directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    subprocess.run(["sysbench", "fileio", "--file-total-size=128M", "--file-num=4", "prepare"], cwd=directory,
                   check=True, capture_output=True, timeout=120)


def direct_write_rate(target: Path) -> float:
    start_time = time.monotonic()
    subprocess.run(["dd", "if=/dev/zero", f"of={target}", "bs=64k", "count=2000", "oflag=direct"], check=True,
                   capture_output=True, timeout=120)
    return 2000 * 65536 / (time.monotonic() - start_time)


def test_disk_anomaly_cuts_a_victims_direct_io_until_it_expires(env: anomaly.Environment, tmp_path: Path) -> None:
    assert env.sysbench_dir is not None
    prepare_sysbench(env.sysbench_dir)
    victim = tmp_path / "victim.out"
    alone = max(direct_write_rate(victim) for _ in range(3))
    record = start(env, "disk_io", 100, 6)
    time.sleep(0.5)
    contended = direct_write_rate(victim)
    wait_until_ended(env, "a1")
    assert not workers_alive(record)
    # The host may still be writing back the anomaly's random writes: give the disk up to 20 s to settle.
    relieved, deadline = 0.0, time.monotonic() + 20
    while relieved <= 0.7 * alone and time.monotonic() < deadline:
        relieved = max(relieved, direct_write_rate(victim))
    print(f"dd oflag=direct: {alone / 1e6:.0f} MB/s alone, {contended / 1e6:.0f} MB/s under disk_io 100, "
          f"{relieved / 1e6:.0f} MB/s after expiry")
    assert contended < 0.75 * alone
    assert relieved > 0.7 * alone
    assert not workers_alive(record)


# Memory bandwidth and cache ----------------------------------------------------------------------------


def memory_bandwidth(cpu: int, seconds: int = 2) -> float:
    """MiB/s a victim writes to memory on ``cpu`` (sysbench memory, 64 MiB blocks: far beyond any cache)."""
    out = subprocess.run(["taskset", "-c", str(cpu), "sysbench", "memory", "--memory-block-size=64M",
                          "--memory-total-size=4000G", "--memory-oper=write", f"--time={seconds}", "run"],
                         check=True, capture_output=True, text=True, timeout=60).stdout
    match = re.search(r"\(([\d.]+) MiB/sec\)", out)
    assert match, out
    return float(match.group(1))


def test_memory_bandwidth_anomaly_on_one_cpu_slows_a_victim_on_the_other(
        env: anomaly.Environment, layout: cgroup.Layout, group_path: str) -> None:
    """One CPU of STREAM takes 5 to 30 % of a victim's bandwidth on the other vCPU here, depending on where
    the host runs the two: the victim is measured in alternating pairs, alone then contended, and the
    anomaly's own duty cycle is checked too."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs: the anomaly on one, the victim on the other")
    neighbour = cgroup.group_at(layout, group_path)
    cgroup.create_group(neighbour)
    cgroup.apply_writes(cgroup.plan_writes(neighbour, cgroup.CgroupSettings(cpuset_cpus="0")))
    alone, contended = [], []
    for pair in range(4):
        alone.append(memory_bandwidth(1))
        record = start(env, "memory_bandwidth", 100, 20, name=f"mb{pair}", cgroup=group_path)
        time.sleep(1.0)  # STREAM first allocates and fills its arrays
        assert record.cgroup_path is not None
        anomaly_group = cgroup.group_at(layout, record.cgroup_path)
        contended.append(memory_bandwidth(1))
        busy = cpu_share(anomaly_group, 1.0)
        anomaly.stop(record.spec.name, env)
    ratio = sum(contended) / sum(alone)
    print(f"victim memory bandwidth: {sum(alone) / 4:.0f} MiB/s alone, {sum(contended) / 4:.0f} beside "
          f"memory_bandwidth 100 on the other CPU (ratio {ratio:.2f}; pairs {[round(c / a, 2) for a, c in zip(alone, contended, strict=True)]}); "
          f"the anomaly used {busy:.2f} CPU")
    assert busy > 0.8  # intensity 100: one STREAM worker on its CPU, all the time
    assert ratio < 0.97
    relieved = memory_bandwidth(1)
    assert relieved > 0.85 * max(alone)


def test_llc_anomaly_holds_a_working_set_that_follows_intensity(env: anomaly.Environment,
                                                               layout: cgroup.Layout) -> None:
    resident = {}
    for intensity in (25, 100):
        record = start(env, "llc", intensity, 20, name=f"llc{intensity}")
        time.sleep(1.5)  # the workers write their whole working set once
        assert record.cgroup_path is not None
        resident[intensity] = cgroup.read_stats(cgroup.group_at(layout, record.cgroup_path)).memory_bytes or 0
        anomaly.stop(record.spec.name, env)
    llc = anomaly.llc_bytes()
    print(f"llc anomaly resident memory: {resident[25] >> 20} MiB at 25, {resident[100] >> 20} MiB at 100 "
          f"(LLC {llc >> 20} MiB)")
    assert resident[100] >= 0.6 * llc
    assert resident[100] > 2 * resident[25]


# Network ---------------------------------------------------------------------------------------------


@pytest.fixture
def pair() -> Iterator[NetPair]:
    with veth_pair("anom") as created:
        yield created


def test_bandwidth_anomaly_shapes_the_link_and_restores_its_previous_shaping(env: anomaly.Environment,
                                                                             pair: NetPair) -> None:
    tc.apply_shaping(pair.if_a, tc.shaping_for(pair.if_a, "htb", "800mbit", namespace=pair.ns_a), pair.ns_a)
    before = tc.read_shaping(pair.if_a, pair.ns_a)
    alone = iperf3_throughput(pair)
    start(env, "network_bandwidth", 90, 30, namespace=pair.ns_a, interface=pair.if_a, link_rate_bps=1_000_000_000)
    contended = iperf3_throughput(pair)
    anomaly.stop("a1", env)
    relieved = iperf3_throughput(pair)
    print(f"iperf3 over the veth: {alone / 1e6:.0f} Mbit/s, {contended / 1e6:.0f} under network_bandwidth 90 "
          f"of 1 Gbit/s, {relieved / 1e6:.0f} after")
    assert contended < 0.12e9
    assert alone > 0.5e9 and relieved > 0.5e9
    restored = tc.read_shaping(pair.if_a, pair.ns_a)
    assert restored is not None and before is not None
    assert (restored.kind, restored.rate_bps, restored.ceil_bps) == (before.kind, before.rate_bps, before.ceil_bps)


def test_bandwidth_flood_takes_its_share_of_a_capped_link(env: anomaly.Environment, pair: NetPair) -> None:
    tc.apply_shaping(pair.if_a, tc.shaping_for(pair.if_a, "tbf", "200mbit", namespace=pair.ns_a), pair.ns_a)
    alone = iperf3_throughput(pair)
    with iperf3_server(pair, port=IPERF3_PORT + 1):
        start(env, "network_bandwidth", 80, 20, namespace=pair.ns_a, link_rate_bps=200_000_000,
              peer=f"{pair.addr_b}:{IPERF3_PORT + 1}")
        time.sleep(0.5)
        contended = iperf3_throughput(pair)
        anomaly.stop("a1", env)
    print(f"victim over a 200 Mbit/s link: {alone / 1e6:.0f} Mbit/s alone, {contended / 1e6:.0f} beside a "
          "160 Mbit/s flood")
    assert contended < 0.7 * alone


def ping_loss(pair: NetPair, count: int = 200) -> float:
    out = subprocess.run(["ip", "netns", "exec", pair.ns_a, "ping", "-q", "-c", str(count), "-i", "0.005", "-W", "1",
                          pair.addr_b], capture_output=True, text=True, timeout=60, check=False).stdout
    match = re.search(r"([\d.]+)% packet loss", out)
    assert match, out
    return float(match.group(1))


def test_loss_anomaly_drops_its_share_of_packets_until_stopped(env: anomaly.Environment, pair: NetPair) -> None:
    start(env, "network_loss", 40, 30, namespace=pair.ns_a, interface=pair.if_a)
    during = ping_loss(pair)
    anomaly.stop("a1", env)
    after = ping_loss(pair)
    tables = subprocess.run(["ip", "netns", "exec", pair.ns_a, "nft", "list", "tables"], capture_output=True,
                            text=True, check=True).stdout
    print(f"ping loss: {during:.0f} % under network_loss 40, {after:.0f} % after")
    assert 25 <= during <= 55
    assert after == 0
    assert "firm_anomaly" not in tables


# Expiry ----------------------------------------------------------------------------------------------


def test_an_anomaly_outlives_its_killed_starter_and_still_expires_on_time(env: anomaly.Environment) -> None:
    args = {"name": "orphan", "kind": "cpu", "intensity": 30, "duration": 4, "state_dir": env.state_dir}
    starter = subprocess.Popen([str(VENV_BIN / "ansible"), "localhost", "-m", "firm.core.anomaly", "-a",
                                json.dumps(args)], cwd=REPO_ROOT, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=dict(os.environ, ANSIBLE_CONFIG=str(REPO_ROOT / "ansible.cfg")))
    store = anomaly.Store(env.state_dir)
    deadline = time.monotonic() + 60
    while store.load("orphan") is None:
        assert time.monotonic() < deadline and starter.poll() is None, "the anomaly never started"
        time.sleep(0.05)
    os.killpg(starter.pid, signal.SIGKILL)  # the ansible run and everything in its process group
    starter.wait()
    record = store.load("orphan")
    assert record is not None and workers_alive(record)
    wait_until_ended(env, "orphan")
    ended = next(h for h in history(env) if h["name"] == "orphan")
    assert abs(float(ended["ended_at"]) - record.expires_at) < 1.0  # type: ignore[arg-type]
    assert not workers_alive(record)


def test_workers_expire_even_when_the_supervisor_is_killed(env: anomaly.Environment, layout: cgroup.Layout) -> None:
    record = start(env, "cpu", 20, 2)
    assert record.supervisor is not None
    os.kill(record.supervisor.pid, signal.SIGKILL)
    time.sleep(3.5)
    assert not workers_alive(record)  # stress-ng's own --timeout
    assert anomaly.active(env) == []  # the sweep filed it and removed its cgroup
    assert not Path(layout.hierarchy("cpu").mount, anomaly.CGROUP_PARENT).exists()
    assert [h["name"] for h in history(env)] == ["a1"]


# The module ------------------------------------------------------------------------------------------


def test_module_check_mode_idempotence_query_and_absent(env: anomaly.Environment) -> None:
    args = {"name": "m1", "kind": "cpu", "intensity": 10, "duration": 60, "state_dir": env.state_dir}
    checked = run_ansible_module("firm.core.anomaly", args, check=True)
    assert checked["changed"] is True
    assert anomaly.Store(env.state_dir).load("m1") is None

    first = run_ansible_module("firm.core.anomaly", args, diff=True)
    second = run_ansible_module("firm.core.anomaly", args)
    assert (first["changed"], second["changed"]) == (True, False)
    assert first["anomaly"]["started_at"] == second["anomaly"]["started_at"]

    listed = run_ansible_module("firm.core.anomaly", {"state": "query", "state_dir": env.state_dir})
    assert [a["name"] for a in listed["anomalies"]] == ["m1"]

    stopped = run_ansible_module("firm.core.anomaly", {"name": "m1", "state": "absent", "state_dir": env.state_dir})
    again = run_ansible_module("firm.core.anomaly", {"name": "m1", "state": "absent", "state_dir": env.state_dir})
    assert (stopped["changed"], again["changed"]) == (True, False)
    assert anomaly.active(env) == []


@pytest.mark.parametrize(("args", "message"), [
    ({"name": "x", "kind": "cpu", "intensity": 150, "duration": 5}, "outside 0..100"),
    ({"name": "x", "kind": "cpu", "intensity": 50, "duration": 99999}, "outside 1..3600 s"),
    ({"name": "x", "kind": "disk", "intensity": 50, "duration": 5}, "value of kind must be one of"),
    ({"name": "x", "kind": "cpu", "intensity": 50}, "missing: duration"),
    ({"name": "x", "kind": "cpu", "intensity": 50, "duration": 5, "target_cgroup": "no/such"}, "does not exist"),
])
def test_module_refuses_bad_requests_and_starts_nothing(env: anomaly.Environment, args: dict[str, object],
                                                        message: str) -> None:
    result = run_ansible_module("firm.core.anomaly", {**args, "state_dir": env.state_dir})
    assert result.get("failed") is True
    assert message in result["msg"]
    assert anomaly.Store(env.state_dir).all() == []
