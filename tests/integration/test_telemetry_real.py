"""Telemetry of real cgroups, veths and namespaces on this machine, stored in a real Redis.

Needs root, cgroup v1 (or v2) writable, `ip`, `ping`, `iperf3`, and the Redis that `make test`
starts on 127.0.0.1 (FIRM_REDIS_PORT, default 6379; database 15, keys removed afterwards).
Every group, process, namespace and veth made here is removed afterwards, also on failure.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import redis

from ansible_collections.firm.core.plugins.module_utils import cgroup
from firm.telemetry import (
    Instance,
    LocalCollector,
    MemoryTelemetry,
    RedisTelemetrySink,
    RedisTelemetrySource,
    Sample,
    Sampler,
)
from firm.telemetry.cpus import CpuLoadReader, OtherWorkMeter
from tests.helpers.measure import poll
from tests.helpers.redis_db import REDIS_URL, connect
from tests.integration.netpair import iperf3_throughput, veth_pair

BUSY = ["sh", "-c", "while :; do :; done"]


@pytest.fixture
def store() -> Iterator[redis.Redis]:
    client = connect()
    yield client
    names = [str(n) for n in client.smembers("firm:telemetry:instances") if str(n).startswith("firm-test-")]
    for name in names:
        client.delete(f"firm:telemetry:{name}")
    if names:
        client.srem("firm:telemetry:instances", *names)
    client.close()


def start_in_group(
    layout: cgroup.Layout, path: str, argv: list[str], spawn: list[subprocess.Popen[bytes]], **kwargs: object
) -> subprocess.Popen[bytes]:
    group = cgroup.group_at(layout, path)
    cgroup.create_group(group)
    proc: subprocess.Popen[bytes] = subprocess.Popen(argv, **kwargs)  # type: ignore[call-overload]
    spawn.append(proc)
    cgroup.attach_pids(cgroup.pids_to_attach(group, [proc.pid]))
    return proc


def process_cpu_s(pid: int) -> float:
    """User and system CPU seconds of a process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_sampler(sampler: Sampler, enough: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Run the sampler until ``enough()`` holds (polled), failing after ``timeout_s`` seconds."""
    sampler.start()
    try:
        assert poll(enough, bool, timeout_s=timeout_s).met, (
            f"the sampler did not sample enough in {timeout_s:g} s"
        )
    finally:
        sampler.stop()


def go(proc: subprocess.Popen[bytes]) -> None:
    """Release a process that waits for a line on its standard input (it is in its cgroup now)."""
    assert proc.stdin is not None
    proc.stdin.write(b"go\n")
    proc.stdin.close()


def test_a_busy_process_uses_one_core_and_its_samples_land_in_redis(
    layout: cgroup.Layout, group_path: str, spawn: list[subprocess.Popen[bytes]], store: redis.Redis
) -> None:
    busy = start_in_group(layout, group_path, BUSY, spawn)
    name = group_path  # firm-test-<pid>-<n>
    started = time.time()
    cpu_before, mono_before = process_cpu_s(busy.pid), time.monotonic()
    sampler = Sampler(
        [Instance("busy", name, group_path)], sinks=[RedisTelemetrySink(REDIS_URL)], interval_s=0.5
    )
    run_sampler(sampler, lambda: store.xlen(f"firm:telemetry:{name}") >= 6)
    process_cores = (process_cpu_s(busy.pid) - cpu_before) / (time.monotonic() - mono_before)
    assert store.sismember("firm:telemetry:instances", name)
    assert store.xlen(f"firm:telemetry:{name}") >= 5
    source = RedisTelemetrySource(REDIS_URL)
    assert name in source.instances()
    samples = source.window(name, started, time.time())
    assert len(samples) >= 5
    cores = sum((s.cpu_cores or 0) * s.interval_s for s in samples) / sum(s.interval_s for s in samples)
    # One busy loop: about a core, or what the other work on this machine leaves it, as the kernel
    # accounted it to the process itself.
    assert 0.4 < cores < 1.1, f"{cores:.2f} cores for one busy loop"
    assert cores == pytest.approx(process_cores, abs=0.1)
    latest = source.latest(name)
    assert latest is not None and latest.pids == 1 and latest.memory_bytes is not None
    assert latest.cpu_throttled_ratio == 0.0  # no quota
    stats = sampler.stats()
    print(f"sampler: {stats.cpu_ms_per_round:.3f} ms CPU per round of 1 instance (with the Redis write)")


def test_a_cpu_quota_shows_as_throttling(
    layout: cgroup.Layout, group_path: str, spawn: list[subprocess.Popen[bytes]]
) -> None:
    group = cgroup.group_at(layout, group_path)
    cgroup.create_group(group)
    cgroup.apply_writes(
        cgroup.plan_writes(group, cgroup.CgroupSettings(cpu_quota_us=20000, cpu_period_us=100000))
    )
    busy = start_in_group(layout, group_path, BUSY, spawn)
    memory = MemoryTelemetry()
    sampler = Sampler([Instance("busy", "throttled", group_path)], sinks=[memory], interval_s=0.5)
    cpu_before, mono_before = process_cpu_s(busy.pid), time.monotonic()
    run_sampler(sampler, lambda: len(memory.window("throttled", 0, time.time())) >= 5)
    process_cores = (process_cpu_s(busy.pid) - cpu_before) / (time.monotonic() - mono_before)
    samples = memory.window("throttled", 0, time.time())
    assert len(samples) >= 3
    cores = statistics.median(s.cpu_cores or 0 for s in samples)
    assert 0.1 < cores < 0.23  # the quota caps it at 0.2
    assert cores == pytest.approx(process_cores, abs=0.05)
    assert statistics.median(s.cpu_throttled_ratio or 0 for s in samples) > 0.5
    # Throttled for most of each 100 ms period (about 80 ms when it gets its whole quota).
    assert statistics.median(s.cpu_throttled_s_per_s or 0 for s in samples) > 0.4


def test_memory_and_disk_writes_are_counted(
    layout: cgroup.Layout, group_path: str, spawn: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    collector = LocalCollector()
    # Each process waits until it is in the group before it allocates or writes, so all is charged there.
    holder = start_in_group(
        layout,
        group_path,
        [
            sys.executable,
            "-c",
            "import sys, time; sys.stdin.readline(); b = bytearray(64 << 20); "
            "print('ready', flush=True); time.sleep(60)",
        ],
        spawn,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    go(holder)
    assert holder.stdout is not None and holder.stdout.readline() == b"ready\n"
    instance = Instance("store", "writer", group_path)
    before = collector.read(instance)
    assert before.stats.memory_bytes is not None and before.stats.memory_bytes >= 64 << 20
    dd = start_in_group(
        layout,
        group_path,
        [
            "sh",
            "-c",
            f"read -r line; exec dd if=/dev/zero of={tmp_path / 'blob'} bs=1M count=32 oflag=direct",
        ],
        spawn,
        stdin=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    go(dd)
    assert dd.wait(timeout=60) == 0
    after = collector.read(instance)
    assert before.stats.disk_write_bytes is not None and after.stats.disk_write_bytes is not None
    assert after.stats.disk_write_bytes - before.stats.disk_write_bytes >= 32 << 20


def wait_in_namespace(pid: int, namespace: str) -> None:
    target = os.stat(f"/run/netns/{namespace}").st_ino
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if os.stat(f"/proc/{pid}/ns/net").st_ino == target:
                return
        time.sleep(0.02)
    raise AssertionError(f"process {pid} did not enter {namespace}")


def test_network_bytes_of_an_instance_in_a_namespace(
    layout: cgroup.Layout, group_path: str, spawn: list[subprocess.Popen[bytes]]
) -> None:
    with veth_pair("tm") as pair:
        proc = start_in_group(layout, group_path, ["ip", "netns", "exec", pair.ns_a, "sleep", "60"], spawn)
        wait_in_namespace(proc.pid, pair.ns_a)
        memory = MemoryTelemetry()
        collector = LocalCollector()
        sender = Instance("client", "sender", group_path, interface=pair.if_a, namespace=pair.ns_a)
        sampler = Sampler([sender], sinks=[memory], collector=collector, interval_s=0.5)
        started = time.time()
        with sampler:
            # A sample before the flood (its counters are the baseline), and one whose interval ends after it.
            assert poll(lambda: memory.latest("sender"), lambda s: s is not None, timeout_s=10).met
            bits_per_s = iperf3_throughput(pair, seconds=2)
            flood_ended = time.time()
            assert poll(
                lambda: memory.latest("sender"),
                lambda s: s is not None and s.timestamp > flood_ended + 0.5,
                timeout_s=10,
            ).met
        samples = memory.window("sender", started, time.time())
        sent = sum((s.net_tx_bps or 0) * s.interval_s for s in samples)
        received = sum((s.net_rx_bps or 0) * s.interval_s for s in samples)
        assert sent >= 0.8 * bits_per_s / 8 * 2  # the payload iperf3 counted, plus headers
        assert received < sent / 10  # only ACKs came back
        assert collector.subprocess_reads() == 0  # read through the process in the namespace
        # Without a process of the instance in the namespace, `ip -n` gives the same counters.
        other = Instance("server", "receiver", group_path, interface=pair.if_b, namespace=pair.ns_b)
        counters = collector.read(other)
        assert counters.net_rx_bytes is not None and counters.net_rx_bytes >= 0.8 * bits_per_s / 8 * 2
        assert collector.subprocess_reads() == 1


@contextlib.contextmanager
def host_veth() -> Iterator[tuple[str, str, str]]:
    """A namespace whose veth's other end is in the host namespace (no address on the host end)."""
    pid = os.getpid()
    namespace, host_end, inner_end = f"firm-tmh-{pid}", f"fth{pid}"[:15], f"ftn{pid}"[:15]

    def ip(*args: str) -> None:
        subprocess.run(
            ["ip", *args], check=True, capture_output=True, timeout=15, env=dict(os.environ, LC_ALL="C")
        )

    try:
        ip("netns", "add", namespace)
        ip("link", "add", host_end, "type", "veth", "peer", "name", inner_end, "netns", namespace)
        ip("link", "set", host_end, "up")
        ip("-n", namespace, "addr", "add", "198.51.100.1/24", "dev", inner_end)
        ip("-n", namespace, "link", "set", inner_end, "up")
        mac = Path(f"/sys/class/net/{host_end}/address").read_text().strip()
        # Packets to .2 go to the host end, which has no address and drops them after counting.
        ip(
            "-n",
            namespace,
            "neigh",
            "add",
            "198.51.100.2",
            "lladdr",
            mac,
            "dev",
            inner_end,
            "nud",
            "permanent",
        )
        yield namespace, host_end, inner_end
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            ip("netns", "del", namespace)  # deletes the veth pair with it
        with contextlib.suppress(subprocess.SubprocessError):
            if Path(f"/sys/class/net/{host_end}").exists():
                ip("link", "del", host_end)


def test_the_host_end_of_a_veth_counts_what_the_instance_sent(layout: cgroup.Layout, group_path: str) -> None:
    cgroup.create_group(cgroup.group_at(layout, group_path))
    with host_veth() as (namespace, host_end, _):
        collector = LocalCollector()
        instance = Instance("svc", "pinger", group_path, interface=host_end)
        before = collector.read(instance)
        subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                namespace,
                "ping",
                "-c",
                "5",
                "-i",
                "0.2",
                "-s",
                "1000",
                "-W",
                "1",
                "198.51.100.2",
            ],
            capture_output=True,
            timeout=30,
            check=False,
        )
        after = collector.read(instance)
    assert before.net_tx_bytes is not None and after.net_tx_bytes is not None
    assert before.net_rx_bytes is not None and after.net_rx_bytes is not None
    sent = after.net_tx_bytes - before.net_tx_bytes
    received = after.net_rx_bytes - before.net_rx_bytes
    assert sent >= 5 * (1000 + 8 + 20 + 14)  # five echo requests: payload, ICMP, IPv4, Ethernet
    assert received < 2000  # nothing answered them


def test_a_cgroup_that_disappears_is_skipped_while_the_others_are_sampled(
    layout: cgroup.Layout,
    group_path: str,
    spawn: list[subprocess.Popen[bytes]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    child = f"{group_path}/gone"
    start_in_group(layout, group_path, BUSY, spawn)
    doomed = start_in_group(layout, child, ["sleep", "60"], spawn)
    memory = MemoryTelemetry()
    sampler = Sampler(
        [Instance("svc", "stays", group_path), Instance("svc", "goes", child)], sinks=[memory], interval_s=0.2
    )
    with sampler:
        assert poll(lambda: len(memory.window("goes", 0, time.time())), lambda n: n >= 2, timeout_s=10).met
        doomed.kill()
        doomed.wait(timeout=10)
        removed_at = time.time()
        deadline = time.monotonic() + 5
        while True:
            try:
                cgroup.remove_group(cgroup.group_at(layout, child))
                break
            except cgroup.CgroupInputError:  # the killed process is not reaped by the kernel yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        kept = poll(
            lambda: (sampler.stats().skipped, len(memory.window("stays", removed_at + 0.3, time.time()))),
            lambda seen: seen[0] >= 3 and seen[1] >= 3,
            timeout_s=10,
        )
        assert kept.met, (
            f"skipped {kept.value[0]} rounds of the gone group, {kept.value[1]} samples of the other"
        )
        assert sampler.running
    assert sampler.stats().skipped >= 3
    assert len(memory.window("stays", removed_at + 0.3, time.time())) >= 3
    assert not memory.window("goes", removed_at + 0.3, time.time())
    assert any("skipping goes" in r.getMessage() for r in caplog.records)


def test_sampling_cost_of_many_instances(
    layout: cgroup.Layout, group_path: str, spawn: list[subprocess.Popen[bytes]]
) -> None:
    """Prints the CPU a round costs for 12 instances (not asserted: a figure for the docs)."""
    instances = []
    for i in range(12):
        path = f"{group_path}/svc{i}"
        cgroup.create_group(cgroup.group_at(layout, path))
        instances.append(Instance(f"svc{i}", f"cost{i}", path, interface="lo", namespace=None))
    sampler = Sampler(instances, interval_s=0.05)
    rounds: list[Sample] = []
    lock = threading.Lock()

    class Keep:
        def write(self, samples: Sequence[Sample]) -> None:
            with lock:
                rounds.extend(samples)

    sampler.sinks.append(Keep())
    run_sampler(sampler, lambda: len(rounds) >= 12 * 10)
    stats = sampler.stats()
    assert stats.samples == len(rounds) >= 12 * 10
    print(
        f"sampler: {stats.rounds} rounds of 12 instances, {stats.cpu_ms_per_round:.3f} ms CPU per round, "
        f"{stats.cpu_ms_per_instance:.3f} ms per instance"
    )


def test_a_neighbour_on_the_same_cpu_shows_as_waiting_for_a_cpu(
    layout: cgroup.Layout, group_path: str, spawn: list[subprocess.Popen[bytes]]
) -> None:
    """Contention from outside the group (another busy loop, in a sibling group pinned to its one
    CPU) leaves its own usage counters near a share of the CPU but shows as schedstat's run delay of
    its tasks."""
    if "cpuset" not in layout.hierarchies:
        pytest.skip("this machine has no cpuset controller")
    if not Path(f"/proc/{os.getpid()}/schedstat").exists():
        pytest.skip("this kernel keeps no schedstat (CONFIG_SCHED_INFO)")
    cpu = sorted(os.sched_getaffinity(0))[-1]
    group = cgroup.group_at(layout, group_path)
    cgroup.create_group(group)
    cgroup.apply_writes(cgroup.plan_writes(group, cgroup.CgroupSettings(cpuset_cpus=str(cpu))))
    victim = start_in_group(layout, group_path, BUSY, spawn)
    collector = LocalCollector()
    instance = Instance("victim", "victim", group_path)

    def waiting_per_cpu_second() -> tuple[float, float]:
        """(seconds waited per second, seconds waited per CPU-second used) over about 1.5 s."""
        collector.sample(instance)  # primes
        deadline = time.monotonic() + 1.5
        poll(time.monotonic, lambda now: now >= deadline, timeout_s=3, interval_s=0.1)
        sample = collector.sample(instance)
        assert sample is not None and sample.cpu_wait_s_per_s is not None and sample.cpu_cores
        return sample.cpu_wait_s_per_s, sample.cpu_wait_s_per_s / sample.cpu_cores

    alone = waiting_per_cpu_second()
    # The neighbour runs in a group of its own on the same CPU. Left in this test's group (the
    # root, an autogroup with it), it would share one scheduling entity with whatever else of this
    # session runs on both CPUs, and that entity's weight on this CPU shrinks with its load there:
    # under a CPU hog of the same session the victim kept 0.73 of the CPU and waited 0.26 s/s.
    neighbour_path = f"{group_path}-neighbour"
    neighbour = cgroup.group_at(layout, neighbour_path)
    try:
        cgroup.create_group(neighbour)
        cgroup.apply_writes(cgroup.plan_writes(neighbour, cgroup.CgroupSettings(cpuset_cpus=str(cpu))))
        start_in_group(layout, neighbour_path, BUSY, spawn)
        shared = waiting_per_cpu_second()
    finally:
        for proc in spawn[1:]:
            proc.kill()
            proc.wait(timeout=10)
        cgroup.remove_group_when_empty(neighbour)
    print(
        f"victim on CPU {cpu} (pid {victim.pid}): waited {alone[0]:.2f} s/s alone "
        f"({alone[1]:.2f} per CPU-second), {shared[0]:.2f} s/s beside a busy loop ({shared[1]:.2f})"
    )
    # Two busy loops on one CPU: each runs about half the time and waits the other half.
    assert shared[0] >= 0.3, f"waited only {shared[0]:.2f} s/s beside a busy loop on its CPU"
    if alone[0] >= ALREADY_SHARED_S_PER_S:  # measured, not assumed: other work shared the CPU already
        pytest.skip(
            f"CPU {cpu} was busy with other work before the neighbour started (the victim waited "
            f"{alone[0]:.2f} s/s alone, {alone[1]:.2f} per CPU-second), so the neighbour's share of the "
            f"wait cannot be told apart; beside it {shared[0]:.2f} s/s ({shared[1]:.2f})"
        )
    assert shared[1] >= alone[1] + 0.5, f"wait per CPU-second {alone[1]:.2f} alone, {shared[1]:.2f} beside"


ALREADY_SHARED_S_PER_S = 0.15
"""A victim alone on a quiet CPU waits 0.00 to 0.06 s/s here; from this much on, something else ran on its
CPU (a busy loop elsewhere that the scheduler put there), and the comparison with the neighbour says
nothing: the scheduler may move that other work away once the pinned neighbour comes."""


def test_per_cpu_load_tells_work_outside_the_managed_group_from_the_groups_own(
    layout: cgroup.Layout, group_path: str, spawn: list[subprocess.Popen[bytes]]
) -> None:
    """A busy loop in an instance's group below the managed parent, pinned to one CPU, and another
    outside the parent (a neighbour), pinned to the other: over a second and a half the parent's CPU
    shows as managed, the neighbour's as foreign (firm.telemetry.cpus, as the loop reads it)."""
    if "cpuset" not in layout.hierarchies or layout.hierarchies["cpuacct"].version != 1:
        pytest.skip("per-CPU usage of a group needs cpuacct and cpuset on cgroup v1")
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip(f"one CPU only ({cpus}): nothing to tell apart")
    mine, theirs = cpus[-1], cpus[-2]
    parent = cgroup.group_at(layout, group_path)
    cgroup.create_group(parent)
    cgroup.apply_writes(cgroup.plan_writes(parent, cgroup.CgroupSettings(cpuset_cpus=f"{theirs},{mine}")))
    instance = cgroup.group_at(layout, f"{group_path}/instance")
    neighbour = cgroup.group_at(layout, f"{group_path}-neighbour")
    try:
        for group, cpu in ((instance, mine), (neighbour, theirs)):
            cgroup.create_group(group)
            cgroup.apply_writes(cgroup.plan_writes(group, cgroup.CgroupSettings(cpuset_cpus=str(cpu))))
        start_in_group(layout, f"{group_path}/instance", BUSY, spawn)
        start_in_group(layout, f"{group_path}-neighbour", BUSY, spawn)
        reader = CpuLoadReader(group_path, layout=layout)
        assert reader.read() is None  # primes
        deadline = time.monotonic() + 1.5
        poll(time.monotonic, lambda now: now >= deadline, timeout_s=3, interval_s=0.1)
        loads = reader.read()
    finally:
        for proc in spawn:
            proc.kill()
            proc.wait(timeout=10)
        for group in (instance, neighbour):
            cgroup.remove_group_when_empty(group)
    assert loads is not None and set(loads) == {mine, theirs}
    print({c: load.as_dict() for c, load in loads.items()})
    # Each busy loop has a CPU of its own: close to 1 core each, whatever else runs (other work on
    # either CPU adds to both foreign figures alike, so the claims are differences).
    assert loads[mine].managed >= 0.5, loads[mine]
    assert loads[mine].managed - loads[theirs].managed >= 0.4
    assert loads[theirs].foreign - loads[mine].foreign >= 0.4


def test_other_work_is_the_cpu_of_processes_outside_the_runs_groups_and_its_own_tree(
    layout: cgroup.Layout, group_path: str, spawn: list[subprocess.Popen[bytes]]
) -> None:
    """Three busy loops share this machine's CPUs: one in a group the run accounts for, one a child
    of this process, one a stranger (its parent exits, so it belongs to no one here). Over a
    second and a half the meter (firm.telemetry.cpus.OtherWorkMeter, as the experiment reads it)
    finds the stranger's CPU time (read from its /proc/PID/stat over the same stretch) and not the
    other two's, give or take what else ran here."""
    if layout.hierarchies["cpuacct"].version != 1:
        pytest.skip("a group's CPU time is read from cpuacct on cgroup v1")
    meter = OtherWorkMeter([group_path], layout=layout)

    def over(seconds: float) -> float | None:
        meter.read()
        deadline = time.monotonic() + seconds
        poll(time.monotonic, lambda now: now >= deadline, timeout_s=seconds + 2, interval_s=0.1)
        return meter.read()

    quiet = over(1.0)
    assert quiet is not None
    if quiet > 0.2:
        pytest.skip(f"other work took {quiet:.2f} cores before the test began: it would blur the figure")
    stranger = 0
    try:
        start_in_group(layout, group_path, BUSY, spawn)
        spawn.append(subprocess.Popen(BUSY))
        launcher = subprocess.run(
            ["sh", "-c", "timeout 30 sh -c 'while :; do :; done' >/dev/null 2>&1 & echo $!"],
            capture_output=True,
            text=True,
            check=True,
        )
        stranger = int(launcher.stdout.split()[0])
        children = poll(
            lambda: [p for p in Path("/proc").glob("[0-9]*") if _parent(p) == stranger],
            bool,
            timeout_s=5,
        )
        assert children.met, "the stranger's busy loop did not start"
        loop = int(children.value[0].name)
        meter.read()
        before = process_cpu_s(loop)
        started = time.monotonic()
        deadline = started + 1.5
        poll(time.monotonic, lambda now: now >= deadline, timeout_s=3.5, interval_s=0.1)
        other = meter.read()
        theirs = (process_cpu_s(loop) - before) / (time.monotonic() - started)
    finally:
        if stranger:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stranger, 15)
        for proc in spawn:
            proc.kill()
            proc.wait(timeout=10)
        cgroup.remove_group_when_empty(cgroup.group_at(layout, group_path))
    print(f"other work {other} cores; the stranger used {theirs:.2f}; before the test {quiet:.2f}")
    assert other is not None and theirs >= 0.3, (other, theirs)
    # counting the group's or the child's loop (each about as busy as the stranger) would add 0.3+
    assert abs(other - theirs) <= 0.25, (other, theirs)


def _parent(proc_dir: Path) -> int | None:
    try:
        return int((proc_dir / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None
