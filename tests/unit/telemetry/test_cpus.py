"""Per-CPU load (firm.telemetry.cpus) on kernel-shaped trees: a cgroup v1 tree whose parent group has
``cpuacct.usage_percpu`` and a ``/proc/stat`` laid out as proc(5) documents (the lines below were read
from this project's test machine, a 2-CPU VM, and then advanced by hand)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ansible_collections.firm.core.plugins.module_utils import cgroup
from firm.telemetry.cpus import CpuLoadReader, OtherWorkMeter, read_cpu_times
from tests.unit.plugins.cgroup_tree import FakeCgroupRoot

STAT = """cpu  {total}
cpu0 {cpu0}
cpu1 {cpu1}
intr 1234 0 9
ctxt 5678
btime 1764647309
processes 2601
procs_running 3
procs_blocked 0
"""
CPU0 = [163219, 206, 16414, 93587, 455, 0, 1204, 1012, 0, 0]
CPU1 = [168035, 439, 18645, 84214, 1116, 0, 2291, 1074, 0, 0]


def write_stat(proc: Path, cpu0: list[int], cpu1: list[int]) -> None:
    total = [a + b for a, b in zip(cpu0, cpu1, strict=True)]
    line = " ".join
    (proc / "stat").write_text(
        STAT.format(total=line(map(str, total)), cpu0=line(map(str, cpu0)), cpu1=line(map(str, cpu1)))
    )


def advanced(fields: list[int], user: int = 0, system: int = 0, idle: int = 0, steal: int = 0) -> list[int]:
    out = list(fields)
    out[0] += user
    out[2] += system
    out[3] += idle
    out[7] += steal
    return out


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def tree(tmp_path: Path) -> tuple[FakeCgroupRoot, Path, Path]:
    fake = FakeCgroupRoot(tmp_path / "cgroup", 1, cpus="0-1")
    parent = cgroup.group_at(cgroup.detect_layout(str(fake.root)), "firm-testbed")
    for directory in parent.distinct_dirs():
        fake.mkdir(directory)
    (fake.root / "cpuset" / "firm-testbed" / "cpuset.cpus").write_text("0-1\n")
    usage = fake.root / "cpuacct" / "firm-testbed" / "cpuacct.usage_percpu"
    usage.write_text("1000000000 2000000000 0 0 \n")
    proc = tmp_path / "proc"
    proc.mkdir()
    write_stat(proc, CPU0, CPU1)
    return fake, proc, usage


def test_proc_stat_gives_busy_and_steal_ticks_per_cpu(tree: tuple[FakeCgroupRoot, Path, Path]) -> None:
    _, proc, _ = tree
    # busy: user + nice + system + irq + softirq (iowait and idle are not busy)
    assert read_cpu_times(str(proc)) == {
        0: (163219 + 206 + 16414 + 0 + 1204, 1012),
        1: (168035 + 439 + 18645 + 0 + 2291, 1074),
    }


def test_foreign_load_is_the_busy_time_the_managed_instances_did_not_use(
    tree: tuple[FakeCgroupRoot, Path, Path],
) -> None:
    """Over 2 s (100 ticks a second): CPU 0 busy 160 ticks (0.8 cores) of which the managed group
    used 0.2 s (0.1 cores): 0.7 foreign; CPU 1 busy 60 ticks (0.3 cores), the group 0.5 s (0.25):
    0.05 foreign; steal 0.05 cores on CPU 1. The first reading only primes."""
    fake, proc, usage = tree
    clock = Clock()
    reader = CpuLoadReader(
        "firm-testbed", cgroup_root=str(fake.root), proc_root=str(proc), ticks_per_s=100, clock=clock
    )
    assert reader.read() is None
    clock.now += 2.0
    write_stat(
        proc, advanced(CPU0, user=120, system=40, idle=40), advanced(CPU1, user=50, system=10, steal=10)
    )
    usage.write_text("1200000000 2500000000 0 0 \n")
    loads = reader.read()
    assert loads is not None and sorted(loads) == [0, 1]
    assert loads[0].busy == pytest.approx(0.8) and loads[0].managed == pytest.approx(0.1)
    assert loads[0].foreign == pytest.approx(0.7)
    assert loads[1].foreign == pytest.approx(0.05) and loads[1].steal == pytest.approx(0.05)
    assert loads[0].as_dict() == {"cpu": 0, "busy": 0.8, "managed": 0.1, "foreign": 0.7, "steal": 0.0}


def test_only_the_parents_cpus_are_reported_and_foreign_load_is_never_negative(
    tree: tuple[FakeCgroupRoot, Path, Path],
) -> None:
    """The parent may run on CPU 1 only; there the group used more than /proc/stat's coarse ticks
    counted (1 tick against 0.012 s): foreign 0, not below."""
    fake, proc, usage = tree
    (fake.root / "cpuset" / "firm-testbed" / "cpuset.cpus").write_text("1\n")
    clock = Clock()
    reader = CpuLoadReader(
        "firm-testbed", cgroup_root=str(fake.root), proc_root=str(proc), ticks_per_s=100, clock=clock
    )
    reader.read()
    clock.now += 1.0
    write_stat(proc, advanced(CPU0, user=90), advanced(CPU1, user=1))
    usage.write_text("1000000000 2012000000 0 0 \n")
    loads = reader.read()
    assert loads is not None and list(loads) == [1]
    assert loads[1].foreign == 0.0 and loads[1].managed == pytest.approx(0.012)


def test_too_short_an_interval_keeps_the_previous_reading(tree: tuple[FakeCgroupRoot, Path, Path]) -> None:
    fake, proc, _ = tree
    clock = Clock()
    reader = CpuLoadReader(
        "firm-testbed", cgroup_root=str(fake.root), proc_root=str(proc), ticks_per_s=100, clock=clock
    )
    reader.read()
    clock.now += 0.1
    assert reader.read() is None
    clock.now += 0.9
    write_stat(proc, advanced(CPU0, user=50), CPU1)
    loads = reader.read()
    assert loads is not None and loads[0].busy == pytest.approx(0.5)  # 50 ticks over the whole 1.0 s


def test_no_per_cpu_figure_means_no_answer(tmp_path: Path, tree: tuple[FakeCgroupRoot, Path, Path]) -> None:
    """cgroup v2 keeps no per-CPU usage of a group; a parent that is gone, or a /proc without stat,
    cannot be read: None every time, never an error."""
    v2 = FakeCgroupRoot(tmp_path / "v2", 2)
    _, proc, _ = tree
    reader = CpuLoadReader("firm-testbed", cgroup_root=str(v2.root), proc_root=str(proc))
    assert reader.read() is None and reader.read() is None
    fake, _, _ = tree
    gone = CpuLoadReader("no-such-parent", cgroup_root=str(fake.root), proc_root=str(proc))
    assert gone.read() is None and gone.read() is None
    empty = tmp_path / "empty-proc"
    empty.mkdir()
    missing = CpuLoadReader("firm-testbed", cgroup_root=str(fake.root), proc_root=str(empty))
    assert missing.read() is None and missing.read() is None


# -- other work: what a run does not account for --------------------------------------------------------


def write_process(
    proc: Path, pid: int, ppid: int, ticks: tuple[int, int, int, int], cgroup_path: str = "/"
) -> None:
    """``/proc/PID/stat`` as proc(5) lays it out (utime, stime, cutime, cstime are fields 14-17), with
    a name holding a space and parentheses, and ``/proc/PID/cgroup`` (cgroup v1 lines)."""
    utime, stime, cutime, cstime = ticks
    directory = proc / str(pid)
    directory.mkdir(exist_ok=True)
    (directory / "stat").write_text(
        f"{pid} (py (worker) {pid}) S {ppid} {pid} {pid} 0 -1 4194560 900 0 0 0 "
        f"{utime} {stime} {cutime} {cstime} 20 0 1 0 5000 100000 200 18446744073709551615\n"
    )
    (directory / "cgroup").write_text(f"5:cpu,cpuacct:{cgroup_path}\n3:memory:{cgroup_path}\n2:cpuset:/\n")


def test_other_work_is_busy_time_less_the_runs_groups_and_processes(tmp_path: Path) -> None:
    """1 s with 1.5 cores busy: the testbed's group used 0.5, the anomalies' 0.3, the run's process 100
    and its child 101 0.1 each, the daemon 200 (the sampler, not a descendant) 0.05; 102, the run's
    child inside the testbed group, is counted once (with the group). Other work: 1.5 - 0.5 - 0.3 -
    0.25 = 0.45 cores. Then 101 ends and 100 reaps it: its 0.05 s of the next second reach 100's
    cutime with the 0.2 s counted before, which is not counted twice; the hypervisor took 0.1 s of
    CPU 1 (steal), which counts (1.0 busy + 0.1 stolen - 0.05 = 1.05 other); the anomalies' group is
    removed and made again (its counter starts afresh) and counts from 0."""
    fake = FakeCgroupRoot(tmp_path / "cgroup", 1, cpus="0-1")
    layout = cgroup.detect_layout(str(fake.root))
    usage = {}
    for name in ("firm-testbed", "firm-anomaly"):
        for directory in cgroup.group_at(layout, name).distinct_dirs():
            fake.mkdir(directory)
        usage[name] = fake.root / "cpuacct" / name / "cpuacct.usage_percpu"
        usage[name].write_text("0 0 \n")
    proc = tmp_path / "proc"
    proc.mkdir()
    write_stat(proc, CPU0, CPU1)
    write_process(proc, 100, 1, (10, 0, 0, 0))
    write_process(proc, 101, 100, (10, 10, 0, 0))
    write_process(proc, 102, 100, (50, 0, 0, 0), "/firm-testbed/text-0")
    write_process(proc, 200, 1, (3, 0, 0, 0))
    write_process(proc, 300, 1, (7, 0, 0, 0))
    clock = Clock()
    meter = OtherWorkMeter(
        ["firm-testbed", "/firm-anomaly/"],
        daemons=lambda: [200, 999],  # 999: gone
        root_pid=100,
        layout=layout,
        proc_root=str(proc),
        ticks_per_s=100,
        clock=clock,
    )
    assert meter.read() is None  # primes
    clock.now += 1.0
    write_stat(proc, advanced(CPU0, user=80), advanced(CPU1, user=50, system=20))
    usage["firm-testbed"].write_text("250000000 250000000 \n")
    usage["firm-anomaly"].write_text("300000000 0 \n")
    write_process(proc, 100, 1, (20, 0, 0, 0))
    write_process(proc, 101, 100, (15, 15, 0, 0))
    write_process(proc, 102, 100, (100, 0, 0, 0), "/firm-testbed/text-0")
    write_process(proc, 200, 1, (8, 0, 0, 0))
    write_process(proc, 300, 1, (52, 0, 0, 0))
    assert meter.read() == pytest.approx(0.45)
    clock.now += 0.1
    assert meter.read() is None  # too short: the previous reading is kept
    clock.now += 0.9
    write_stat(proc, advanced(CPU0, user=130), advanced(CPU1, user=100, system=20, steal=10))
    (proc / "101" / "stat").unlink()
    write_process(proc, 100, 1, (20, 0, 35, 0))  # reaped 101: its 15 + 15 + the last 5
    usage["firm-anomaly"].write_text("0 0 \n")  # removed and made again
    assert meter.read() == pytest.approx(1.05)


def test_other_work_without_proc_stat_is_unknown(tmp_path: Path) -> None:
    meter = OtherWorkMeter(
        ["firm-testbed"], proc_root=str(tmp_path), cgroup_root=str(tmp_path), ticks_per_s=100
    )
    assert meter.read() is None
    assert meter.read() is None
