"""firm.core.cgroup on this machine's real cgroups: limits that measurably take effect."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ansible_collections.firm.core.plugins.module_utils import cgroup
from tests.helpers.measure import poll
from tests.helpers.modules import run_ansible_module


def busy_loop() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def cpu_share(group: cgroup.Group, seconds: float) -> float:
    """CPU the group used over ``seconds`` of wall time, in cores (a measurement window, not a wait)."""
    before, start = cgroup.read_stats(group).cpu_usage_ns or 0, time.monotonic()
    time.sleep(seconds)
    after, end = cgroup.read_stats(group).cpu_usage_ns or 0, time.monotonic()
    return (after - before) / 1e9 / (end - start)


def test_a_20_percent_quota_holds_a_busy_process_at_20_percent(
    layout: cgroup.Layout, group_path: str, spawn: list[subprocess.Popen[bytes]]
) -> None:
    spawn.append(busy_loop())
    moved = run_ansible_module("firm.core.cgroup", {"path": group_path, "pids": [spawn[0].pid]})
    assert moved["changed"] is True
    group = cgroup.group_at(layout, group_path)
    unlimited = cpu_share(group, 1.5)

    throttled_before = cgroup.read_stats(group).cpu_throttled_periods or 0
    limited = run_ansible_module(
        "firm.core.cgroup", {"path": group_path, "cpu_quota_us": 20000, "cpu_period_us": 100000}
    )
    assert limited["changed"] is True
    # The quota is in force once the kernel throttles the group (a few 100 ms periods later).
    enforced = poll(
        lambda: cgroup.read_stats(group).cpu_throttled_periods or 0,
        lambda n: n >= throttled_before + 2,
        timeout_s=10,
    )
    assert enforced.met, "the kernel never throttled the group under a 20 % quota"
    share = cpu_share(group, 3.0)
    stats = cgroup.read_stats(group)

    print(f"busy loop: {unlimited:.2f} cores unlimited, {share:.3f} cores at a 20 % quota")
    assert unlimited > 0.4
    assert 0.15 <= share <= 0.23
    assert (stats.cpu_throttled_periods or 0) > 10


def test_a_refused_write_restores_what_the_change_had_written(
    layout: cgroup.Layout, group_path: str, spawn: list[subprocess.Popen[bytes]]
) -> None:
    """The kernel refuses a memory limit below what an unswappable process holds (EBUSY)."""
    # It allocates only once it is in the group (a line on its standard input), so the 64 MiB are charged there.
    hold = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; sys.stdin.readline(); b = bytearray(64 << 20); "
            "print('ready', flush=True); time.sleep(60)",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    spawn.append(hold)
    if layout.hierarchy("memory").version == 2:
        pytest.skip("cgroup v2 reclaims or OOM-kills below usage instead of refusing the limit")
    group = cgroup.group_at(layout, group_path)
    cgroup.create_group(group)
    cgroup.attach_pids(cgroup.pids_to_attach(group, [hold.pid]))
    assert hold.stdin is not None and hold.stdout is not None
    hold.stdin.write(b"go\n")
    hold.stdin.close()
    assert hold.stdout.readline() == b"ready\n"
    charged = poll(
        lambda: cgroup.read_stats(group).memory_bytes or 0, lambda used: used >= 64 << 20, timeout_s=10
    )
    assert charged.met, f"only {charged.value >> 20} MiB charged to the group"
    with open("/proc/swaps") as swaps:
        if len(swaps.read().splitlines()) > 1:
            pytest.skip("this machine has swap, so the kernel can meet a small limit instead of refusing it")
    settings = cgroup.CgroupSettings(cpu_weight=300, memory_max=1 << 20)
    with pytest.raises(cgroup.CgroupWriteError, match="refused"):
        cgroup.apply_writes(cgroup.plan_writes(group, settings))
    assert cgroup.read_cpu_weight(group) == 100  # cpu.shares back at 1024
    assert cgroup.read_memory_max(group) == -1
    assert hold.poll() is None


def whole_disk_of(path: Path) -> str:
    device = os.stat(path).st_dev
    return cgroup.resolve_device(f"{os.major(device)}:{os.minor(device)}")


def direct_write_rate(target: Path, megabytes: int, group: cgroup.Group | None) -> float:
    """Bytes per second of ``dd oflag=direct``, run inside ``group`` when one is given."""

    def enter_group() -> None:
        if group is not None:
            cgroup.attach_pids({d: [os.getpid()] for d in group.distinct_dirs()})

    start = time.monotonic()
    subprocess.run(
        ["dd", "if=/dev/zero", f"of={target}", "bs=1M", f"count={megabytes}", "oflag=direct"],
        check=True,
        capture_output=True,
        preexec_fn=enter_group,
        timeout=120,
    )
    return megabytes * 1048576 / (time.monotonic() - start)


def test_a_disk_write_limit_throttles_direct_io(
    layout: cgroup.Layout, group_path: str, tmp_path: Path
) -> None:
    target = tmp_path / "dd.out"
    try:
        disk = whole_disk_of(tmp_path)
    except cgroup.CgroupNotFoundError:
        pytest.skip(f"{tmp_path} is not on a block device (tmpfs?), so nothing can throttle it")
    limit = 4 << 20
    result = run_ansible_module(
        "firm.core.cgroup", {"path": group_path, "devices": [{"device": disk, "write_bps": limit}]}
    )
    assert result["changed"] is True
    assert result["settings"]["disk"][disk]["write_bps"] == limit
    group = cgroup.group_at(layout, group_path)

    free_rate = direct_write_rate(target, 32, None)
    limited_rate = direct_write_rate(target, 16, group)
    print(
        f"dd oflag=direct: {free_rate / 1e6:.0f} MB/s free, {limited_rate / 1e6:.2f} MB/s at a 4 MiB/s limit"
    )
    assert limited_rate < limit * 1.3
    assert limited_rate > limit * 0.5
    assert free_rate > limit * 3
    assert (cgroup.read_stats(group).disk_write_bytes or 0) >= 16 << 20


def test_module_is_idempotent_and_check_mode_changes_nothing(layout: cgroup.Layout, group_path: str) -> None:
    args = {
        "path": group_path,
        "cpu_quota_us": 50000,
        "cpu_weight": 200,
        "cpuset_cpus": "0",
        "memory_max": "128M",
    }
    group = cgroup.group_at(layout, group_path)
    checked = run_ansible_module("firm.core.cgroup", args, check=True, diff=True)
    assert checked["changed"] is True
    assert not any(os.path.exists(d) for d in group.distinct_dirs())

    first = run_ansible_module("firm.core.cgroup", args, diff=True)
    second = run_ansible_module("firm.core.cgroup", args, diff=True)
    assert first["changed"] is True
    assert second["changed"] is False
    assert cgroup.read_cpu_max(group) == (50000, 100000)
    assert cgroup.read_cpu_weight(group) == 200
    assert cgroup.read_memory_max(group) == 128 << 20
    if group.version("cpu") == 1:  # what the kernel files hold, in v1's own units
        assert Path(group.file("cpu", "cpu.shares")).read_text().strip() == "2048"

    changed_check = run_ansible_module("firm.core.cgroup", dict(args, cpu_quota_us=70000), check=True)
    assert changed_check["changed"] is True
    assert cgroup.read_cpu_max(group) == (50000, 100000)

    gone = run_ansible_module("firm.core.cgroup", {"path": group_path, "state": "absent"})
    again = run_ansible_module("firm.core.cgroup", {"path": group_path, "state": "absent"})
    assert (gone["changed"], again["changed"]) == (True, False)
    assert not any(os.path.exists(d) for d in group.distinct_dirs())


def test_the_groups_of_this_process_are_found_by_pid(layout: cgroup.Layout) -> None:
    group = cgroup.group_of_pid(layout, os.getpid())
    for controller, directory in ((c, group.dir(c)) for c in layout.hierarchies):
        procs = Path(directory, "cgroup.procs").read_text().split()
        assert str(os.getpid()) in procs, controller
