"""Instances, samples and the local collector against fake cgroup, sysfs, proc and netns trees."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from ansible_collections.firm.core.plugins.module_utils import cgroup
from firm.telemetry import Counters, Instance, InstanceError, InstanceGoneError, LocalCollector, Sample, rates
from tests.unit.plugins.cgroup_tree import FakeCgroupRoot

GROUP = "firm/testbed/compose-post-0"


def instance(**kwargs: str | None) -> Instance:
    values: dict[str, str | None] = {
        "service": "compose-post",
        "name": "compose-post-0",
        "cgroup_path": GROUP,
    }
    values.update(kwargs)
    return Instance(**values)  # type: ignore[arg-type]


def stats(**kwargs: int | None) -> cgroup.CgroupStats:
    values: dict[str, int | None] = dict.fromkeys(
        (
            "cpu_usage_ns",
            "cpu_periods",
            "cpu_throttled_periods",
            "cpu_throttled_ns",
            "memory_bytes",
            "disk_read_bytes",
            "disk_write_bytes",
            "pids",
        ),
        0,
    )
    values.update(kwargs)
    return cgroup.CgroupStats(**values)


# Instance and Sample ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"name": "instances"}, "is not usable"),
        ({"name": "-x"}, "is not usable"),
        ({"name": "a b"}, "is not usable"),
        ({"service": ""}, "has no service"),
        ({"cgroup_path": "/"}, "not a group below the root"),
        ({"cgroup_path": "a/../../etc"}, "not a group below the root"),
        ({"interface": "a/b"}, "is not a name"),
        ({"namespace": ""}, "is not a name"),
    ],
)
def test_bad_instances_are_refused(kwargs: dict[str, str], words: str) -> None:
    with pytest.raises(InstanceError) as info:
        instance(**kwargs)
    assert words in str(info.value) and info.value.fix


def test_a_leading_slash_of_the_cgroup_path_is_ignored() -> None:
    assert instance(cgroup_path="/firm/x/").cgroup_path == "firm/x"


def test_sample_fields_round_trip_with_missing_figures() -> None:
    sample = Sample("a", "svc", 1700000000.25, 1.0, 0.5, 0.0, None, 1234, 10.0, 0.0, None, 2048.5, 3)
    fields = sample.to_fields()
    assert fields["net_rx_bps"] == "" and fields["memory_bytes"] == "1234"
    assert Sample.from_fields(fields) == sample


# rates --------------------------------------------------------------------------------------------


def test_rates_over_an_interval() -> None:
    before = Counters(
        100.0,
        1000.0,
        stats(
            cpu_usage_ns=0,
            cpu_periods=10,
            cpu_throttled_periods=2,
            cpu_throttled_ns=0,
            disk_read_bytes=0,
            disk_write_bytes=100,
        ),
        net_rx_bytes=0,
        net_tx_bytes=0,
    )
    after = Counters(
        102.0,
        1002.0,
        stats(
            cpu_usage_ns=3_000_000_000,
            cpu_periods=30,
            cpu_throttled_periods=12,
            cpu_throttled_ns=400_000_000,
            memory_bytes=4096,
            disk_read_bytes=8192,
            disk_write_bytes=4196,
            pids=7,
        ),
        net_rx_bytes=2000,
        net_tx_bytes=500,
    )
    sample = rates(instance(), before, after)
    assert sample is not None
    assert sample.cpu_cores == pytest.approx(1.5)  # 3 CPU-seconds in 2 s
    assert sample.cpu_throttled_ratio == pytest.approx(0.5)  # 10 of 20 periods
    assert sample.cpu_throttled_s_per_s == pytest.approx(0.2)
    assert (sample.disk_read_bps, sample.disk_write_bps) == (4096, 2048)
    assert (sample.net_rx_bps, sample.net_tx_bps) == (1000, 250)
    assert (sample.memory_bytes, sample.pids, sample.timestamp, sample.interval_s) == (4096, 7, 1002.0, 2.0)
    assert (sample.instance, sample.service) == ("compose-post-0", "compose-post")


def test_no_periods_means_no_throttling_and_missing_counters_stay_missing() -> None:
    before = Counters(0.0, 0.0, stats(memory_bytes=None, disk_read_bytes=None), None, None)
    after = Counters(1.0, 1.0, stats(cpu_usage_ns=10, memory_bytes=None, disk_read_bytes=None), None, None)
    sample = rates(instance(), before, after)
    assert sample is not None
    assert sample.cpu_throttled_ratio == 0.0
    assert (sample.memory_bytes, sample.disk_read_bps, sample.net_rx_bps) == (None, None, None)


def test_a_counter_that_went_backwards_gives_no_sample() -> None:
    before = Counters(0.0, 0.0, stats(cpu_usage_ns=5_000), 0, 0)
    after = Counters(1.0, 1.0, stats(cpu_usage_ns=10), 0, 0)  # the group was recreated
    assert rates(instance(), before, after) is None


def test_waiting_for_a_cpu_is_summed_over_the_tasks_that_lived_through_the_interval() -> None:
    # Task 11 waited 0.3 s more, 12 exited (nothing), 13 is new (all of its 0.1 s), and 14's ID was
    # reused by a new task whose counter restarted (its 0.05 s, never a negative growth).
    before = Counters(
        0.0, 0.0, stats(), None, None, {11: 1_000_000_000, 12: 5_000_000_000, 14: 9_000_000_000}
    )
    after = Counters(2.0, 2.0, stats(), None, None, {11: 1_300_000_000, 13: 100_000_000, 14: 50_000_000})
    sample = rates(instance(), before, after)
    assert sample is not None
    assert sample.cpu_wait_s_per_s == pytest.approx((0.3 + 0.1 + 0.05) / 2)
    no_schedstat = Counters(2.0, 2.0, stats(), None, None, None)
    assert rates(instance(), before, no_schedstat).cpu_wait_s_per_s is None  # type: ignore[union-attr]


# LocalCollector on fake trees ----------------------------------------------------------------------


def write(path: Path, text: str) -> None:
    path.write_text(text + "\n")


@pytest.fixture(params=[1, 2], ids=["v1", "v2"])
def fake(request: pytest.FixtureRequest, tmp_path: Path) -> FakeCgroupRoot:
    root = FakeCgroupRoot(tmp_path / "cgroup", request.param)
    root.make_group(GROUP)
    return root


def set_counters(
    fake: FakeCgroupRoot,
    cpu_ns: int,
    periods: int,
    throttled: int,
    throttled_ns: int,
    memory: int,
    read: int,
    written: int,
) -> None:
    if fake.version == 1:
        write(fake.group(GROUP, "cpuacct") / "cpuacct.usage", str(cpu_ns))
        write(
            fake.group(GROUP, "cpu") / "cpu.stat",
            f"nr_periods {periods}\nnr_throttled {throttled}\nthrottled_time {throttled_ns}",
        )
        write(fake.group(GROUP, "memory") / "memory.usage_in_bytes", str(memory))
        write(
            fake.group(GROUP, "blkio") / "blkio.throttle.io_service_bytes",
            f"8:0 Read {read}\n8:0 Write {written}\n8:0 Sync 0\nTotal {read + written}",
        )
    else:
        directory = fake.group(GROUP)
        write(
            directory / "cpu.stat",
            f"usage_usec {cpu_ns // 1000}\nuser_usec 0\nsystem_usec 0\n"
            f"nr_periods {periods}\nnr_throttled {throttled}\nthrottled_usec {throttled_ns // 1000}",
        )
        write(directory / "memory.current", str(memory))
        write(directory / "io.stat", f"8:0 rbytes={read} wbytes={written} rios=1 wios=1 dbytes=0 dios=0")


def test_collector_reads_the_cgroup_through_the_library(fake: FakeCgroupRoot) -> None:
    collector = LocalCollector(cgroup_root=str(fake.root))
    set_counters(fake, 1_000_000, 5, 1, 1000, 1 << 20, 0, 0)
    assert collector.sample(instance()) is None  # the first reading primes
    set_counters(fake, 501_000_000, 15, 6, 2_000_000, 2 << 20, 4096, 8192)
    sample = collector.sample(instance())
    assert sample is not None
    interval = sample.interval_s
    assert sample.cpu_cores == pytest.approx(0.5 / interval)
    assert sample.cpu_throttled_ratio == pytest.approx(0.5)
    assert sample.memory_bytes == 2 << 20
    assert sample.disk_read_bps == pytest.approx(4096 / interval)
    assert sample.disk_write_bps == pytest.approx(8192 / interval)
    assert sample.net_rx_bps is None  # no interface given


def test_a_missing_group_is_reported_as_gone(fake: FakeCgroupRoot) -> None:
    collector = LocalCollector(cgroup_root=str(fake.root))
    with pytest.raises(InstanceGoneError) as info:
        collector.sample(instance(cgroup_path="firm/testbed/nope"))
    assert "does not exist" in str(info.value)


def test_a_group_removed_after_it_was_read_is_reported_as_gone(tmp_path: Path) -> None:
    fake = FakeCgroupRoot(tmp_path / "cgroup", 1)
    fake.make_group(GROUP)
    collector = LocalCollector(cgroup_root=str(fake.root))
    collector.sample(instance())
    for controller in ("cpu", "cpuacct", "cpuset", "blkio", "memory", "pids"):
        directory = fake.group(GROUP, controller)
        for child in directory.iterdir():
            child.unlink()
        directory.rmdir()
    with pytest.raises(InstanceGoneError):
        collector.sample(instance())


def test_a_group_missing_in_some_hierarchies_gives_the_rest(tmp_path: Path) -> None:
    fake = FakeCgroupRoot(tmp_path / "cgroup", 1)
    for controller in ("cpu", "cpuacct"):  # as a runtime that only makes CPU groups
        directory = fake.group(GROUP, controller)
        directory.parent.parent.mkdir(exist_ok=True)
        directory.parent.mkdir(exist_ok=True)
        fake.mkdir(str(directory))
    collector = LocalCollector(cgroup_root=str(fake.root))
    collector.sample(instance())
    sample = collector.sample(instance())
    assert sample is not None
    assert sample.cpu_cores == 0.0
    assert (sample.memory_bytes, sample.disk_read_bps, sample.pids) == (None, None, None)


def test_host_side_veth_counters_are_swapped(fake: FakeCgroupRoot, tmp_path: Path) -> None:
    stats_dir = tmp_path / "sys" / "class" / "net" / "veth-cp0" / "statistics"
    stats_dir.mkdir(parents=True)
    write(stats_dir / "rx_bytes", "1000")  # the host side received what the service sent
    write(stats_dir / "tx_bytes", "50")
    collector = LocalCollector(cgroup_root=str(fake.root), sysfs_root=str(tmp_path / "sys"))
    inst = instance(interface="veth-cp0")
    first = collector.read(inst)
    assert (first.net_rx_bytes, first.net_tx_bytes) == (50, 1000)
    collector.sample(inst)
    write(stats_dir / "rx_bytes", "3000")
    write(stats_dir / "tx_bytes", "150")
    sample = collector.sample(inst)
    assert sample is not None and sample.net_tx_bps is not None and sample.net_rx_bps is not None
    assert sample.net_tx_bps * sample.interval_s == pytest.approx(2000)
    assert sample.net_rx_bps * sample.interval_s == pytest.approx(100)


def test_a_missing_interface_leaves_network_figures_out_and_logs_once(
    fake: FakeCgroupRoot, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    collector = LocalCollector(cgroup_root=str(fake.root), sysfs_root=str(tmp_path / "sys"))
    inst = instance(interface="gone0")
    collector.sample(inst)
    sample = collector.sample(inst)
    assert sample is not None and sample.net_rx_bps is None and sample.cpu_cores is not None
    assert [r.getMessage() for r in caplog.records].count(
        "no network figures for compose-post-0: interface gone0 does not exist"
    ) == 1


PROC_NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: {lo} 10 0 0 0 0 0 0 {lo} 10 0 0 0 0 0 0
  eth0: {rx} 20 0 0 0 0 0 0 {tx} 30 0 0 0 0 0 0
"""


def namespace_tree(tmp_path: Path, fake: FakeCgroupRoot, pid: int) -> tuple[Path, Path, Path]:
    """/run/netns/tb and /proc/PID whose ns/net is the same inode (a hard link), the pid in the group."""
    netns = tmp_path / "netns"
    netns.mkdir()
    write(netns / "tb", "")
    proc = tmp_path / "proc"
    (proc / str(pid) / "ns").mkdir(parents=True)
    (proc / str(pid) / "net").mkdir()
    os.link(netns / "tb", proc / str(pid) / "ns" / "net")
    directory = fake.group(GROUP, "cpu") if fake.version == 1 else fake.group(GROUP)
    write(directory / "cgroup.procs", str(pid))
    return netns, proc, proc / str(pid) / "net" / "dev"


def test_namespace_counters_come_from_a_process_in_it(fake: FakeCgroupRoot, tmp_path: Path) -> None:
    netns, proc, dev = namespace_tree(tmp_path, fake, 4242)
    dev.write_text(PROC_NET_DEV.format(lo=999, rx=100, tx=200))
    collector = LocalCollector(
        cgroup_root=str(fake.root), proc_root=str(proc), netns_dir=str(netns), ip_command="/nonexistent/ip"
    )
    inst = instance(namespace="tb")
    counters = collector.read(inst)
    assert (counters.net_rx_bytes, counters.net_tx_bytes) == (100, 200)  # lo left out
    assert collector.read(instance(namespace="tb", interface="lo")).net_rx_bytes == 999
    assert collector.subprocess_reads() == 0


def test_namespace_counters_fall_back_to_ip_without_a_process(fake: FakeCgroupRoot, tmp_path: Path) -> None:
    netns = tmp_path / "netns"
    netns.mkdir()
    write(netns / "tb", "")
    script = tmp_path / "ip"
    links = [
        {"ifname": "lo", "stats64": {"rx": {"bytes": 5}, "tx": {"bytes": 5}}},
        {"ifname": "eth0", "stats64": {"rx": {"bytes": 70}, "tx": {"bytes": 80}}},
    ]
    script.write_text(
        f"#!/bin/sh\nprintf '%s\\n' \"$@\" >> {tmp_path}/argv\ncat <<'EOF'\n{json.dumps(links)}\nEOF\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    collector = LocalCollector(
        cgroup_root=str(fake.root),
        proc_root=str(tmp_path / "proc"),
        netns_dir=str(netns),
        ip_command=str(script),
    )
    counters = collector.read(instance(namespace="tb"))
    assert (counters.net_rx_bytes, counters.net_tx_bytes) == (70, 80)
    assert (tmp_path / "argv").read_text().split() == ["-n", "tb", "-j", "-s", "link", "show"]
    assert collector.subprocess_reads() == 1


def test_a_missing_namespace_leaves_network_figures_out(fake: FakeCgroupRoot, tmp_path: Path) -> None:
    collector = LocalCollector(cgroup_root=str(fake.root), netns_dir=str(tmp_path))
    assert collector.read(instance(namespace="nope")).net_rx_bytes is None


def _tasks(fake: FakeCgroupRoot, relative: str, tids: list[int]) -> None:
    directory = fake.group(relative)
    directory.mkdir(parents=True, exist_ok=True)
    write(directory / ("tasks" if fake.version == 1 else "cgroup.threads"), "\n".join(map(str, tids)))


def test_run_delays_are_read_per_task_of_the_group_and_its_children(
    fake: FakeCgroupRoot, tmp_path: Path
) -> None:
    proc = tmp_path / "proc"
    for tid, text in ((101, "5000 1000 3"), (103, "7000 2000 1")):
        (proc / str(tid)).mkdir(parents=True)
        write(proc / str(tid) / "schedstat", text)
    _tasks(fake, GROUP, [101, 102])  # 102 exited after the listing: no /proc entry
    _tasks(fake, f"{GROUP}/sub", [103])
    group = cgroup.group_at(cgroup.detect_layout(str(fake.root)), GROUP)
    assert cgroup.read_run_delays(group, str(proc)) == {101: 1000, 103: 2000}
    collector = LocalCollector(cgroup_root=str(fake.root), proc_root=str(proc))
    set_counters(fake, 0, 0, 0, 0, 0, 0, 0)
    collector.sample(instance())
    write(proc / "101" / "schedstat", "5000 501000 4")
    sample = collector.sample(instance())
    assert sample is not None
    assert sample.cpu_wait_s_per_s == pytest.approx(500_000 * 1e-9 / sample.interval_s)


def test_a_kernel_without_schedstat_gives_no_waiting_figure(fake: FakeCgroupRoot, tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "101").mkdir(parents=True)  # the task exists, its schedstat does not
    _tasks(fake, GROUP, [101])
    group = cgroup.group_at(cgroup.detect_layout(str(fake.root)), GROUP)
    assert cgroup.read_run_delays(group, str(proc)) is None
    _tasks(fake, GROUP, [])
    assert cgroup.read_run_delays(group, str(proc)) == {}
