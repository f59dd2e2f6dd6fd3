"""Node facts: RDT flags, kernel, resctrl mount, capabilities, and the libpqos probe."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ansible_collections.firm.core.plugins.module_utils import rdt
from ansible_collections.firm.core.plugins.modules import rdt_facts
from tests.helpers.modules import run_module
from tests.unit.plugins.cgroup_tree import FakeCgroupRoot

# Excerpts of real /proc/cpuinfo flag lines (flags unrelated to RDT trimmed).
INTEL_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz
flags\t\t: fpu vme de pse tsc msr pae cqm rdt_a avx512f cqm_llc cqm_occup_llc cqm_mbm_total cqm_mbm_local cat_l3 cdp_l3 mba
"""
AMD_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9654 96-Core Processor
flags\t\t: fpu vme de cat_l3 cdp_l3 mba cqm cqm_llc cqm_occup_llc cqm_mbm_total cqm_mbm_local smba bmec
"""
VM_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr
"""


@pytest.mark.parametrize(
    ("cpuinfo", "present", "absent"),
    [
        (INTEL_CPUINFO, {"cat_l3", "cdp_l3", "mba", "cqm_occup_llc", "rdt_a"}, {"smba", "cat_l2"}),
        (AMD_CPUINFO, {"cat_l3", "mba", "smba", "bmec"}, {"rdt_a"}),
        (VM_CPUINFO, set(), set(rdt.RDT_FLAGS)),
    ],
)
def test_rdt_flags_of_intel_amd_and_a_vm(cpuinfo: str, present: set[str], absent: set[str]) -> None:
    flags = rdt.cpu_flags(cpuinfo)
    assert {f for f in present if flags[f]} == present
    assert not any(flags[f] for f in absent)


@pytest.mark.parametrize(
    ("release", "ok"),
    [
        ("4.12.0", True),
        ("4.11.9-generic", False),
        ("6.1.0-18-amd64", True),
        ("3.10.0-1160.el7.x86_64", False),
        ("weird", False),
    ],
)
def test_kernel_must_be_at_least_4_12(release: str, ok: bool) -> None:
    assert rdt.kernel_supported(release) is ok


def fake_proc(tmp_path: Path, cpuinfo: str, mounts: str) -> Path:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cpuinfo").write_text(cpuinfo)
    (proc / "mounts").write_text(mounts)
    (proc / "filesystems").write_text("nodev\tsysfs\nnodev\tresctrl\n")
    return proc


def test_an_rdt_node_with_resctrl_mounted_can_control_cache_and_bandwidth(tmp_path: Path) -> None:
    cgroups = FakeCgroupRoot(tmp_path / "cg", 2)
    resctrl = tmp_path / "resctrl"
    for info in ("L3", "MB", "L3_MON"):
        (resctrl / "info" / info).mkdir(parents=True)
    proc = fake_proc(tmp_path, INTEL_CPUINFO, f"resctrl {resctrl} resctrl rw 0 0\n")
    (proc / "mounts").write_text(f"resctrl {resctrl} resctrl rw,relatime,cdp,mba_MBps 0 0\n")
    facts = rdt.gather(str(cgroups.root), str(proc), str(resctrl), probe_libpqos=False)
    assert facts.vendor == "intel"
    assert facts.resctrl_mount == str(resctrl)
    assert facts.resctrl_mount_options == ["rw", "relatime", "cdp", "mba_MBps"]
    assert facts.resctrl_in_kernel
    assert all(c.available for c in facts.capabilities.values())  # tc comes with iproute2
    assert facts.capabilities["llc"].how == "resctrl L3"
    assert facts.cgroup_versions["blkio"] == 2


def test_a_node_without_rdt_still_has_cpu_disk_and_memory(tmp_path: Path) -> None:
    cgroups = FakeCgroupRoot(tmp_path / "cg", 1)
    proc = fake_proc(tmp_path, VM_CPUINFO, "sysfs /sys sysfs rw 0 0\n")
    facts = rdt.gather(str(cgroups.root), str(proc), str(tmp_path / "none"), probe_libpqos=False)
    caps = facts.capabilities
    assert caps["cpu"].available and caps["disk_io"].available and caps["memory"].available
    assert not caps["llc"].available and "no cat_l3 flag" in caps["llc"].how
    assert not caps["memory_bandwidth"].available


def test_rdt_hardware_without_a_resctrl_mount_says_how_to_mount_it(tmp_path: Path) -> None:
    cgroups = FakeCgroupRoot(tmp_path / "cg", 1)
    proc = fake_proc(tmp_path, INTEL_CPUINFO, "sysfs /sys sysfs rw 0 0\n")
    facts = rdt.gather(str(cgroups.root), str(proc), str(tmp_path / "none"), probe_libpqos=False)
    assert "mount -t resctrl" in facts.capabilities["llc"].how
    assert facts.vendor == "intel"


def test_the_pqos_probe_survives_an_aborting_library(tmp_path: Path) -> None:
    """A libpqos that aborts (as MSR mode does without RDT) kills the child, not the caller."""
    python = tmp_path / "python"
    python.write_text("#!/bin/sh\nkill -ABRT $$\n")
    python.chmod(0o755)
    result = rdt.probe_pqos(python=str(python))
    assert result["available"] is False
    assert "died with status" in result["error"]


def test_the_pqos_probe_on_this_machine_reports_instead_of_crashing() -> None:
    result = rdt.probe_pqos()
    assert isinstance(result["available"], bool)
    if not result["available"]:
        assert result["error"]
    print(f"libpqos here: {result}")


def test_the_facts_module_returns_them_under_firm_rdt(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_module(rdt_facts.main, {"probe_pqos": False}, capsys=capsys)
    facts = result["ansible_facts"]["firm_rdt"]
    assert result["changed"] is False
    assert facts["kernel"] == os.uname().release
    assert set(facts["capabilities"]) >= {"cpu", "disk_io", "network", "llc", "memory_bandwidth"}


def test_a_kernel_without_cfs_bandwidth_does_not_claim_cpu_quotas(tmp_path: Path) -> None:
    cgroups = FakeCgroupRoot(tmp_path / "cg", 1)
    for name in ("cpu.cfs_quota_us", "cpu.cfs_period_us"):
        (cgroups.root / "cpu" / name).unlink()
    proc = fake_proc(tmp_path, VM_CPUINFO, "sysfs /sys sysfs rw 0 0\n")
    caps = rdt.gather(str(cgroups.root), str(proc), str(tmp_path / "none"), probe_libpqos=False).capabilities
    assert not caps["cpu"].available
    assert "CONFIG_CFS_BANDWIDTH" in caps["cpu"].how and "cpu.cfs_quota_us" in caps["cpu"].how
    assert caps["cpu_weight"].available  # cpu.shares is still there


def test_a_kernel_without_blkio_throttling_does_not_claim_disk_limits(tmp_path: Path) -> None:
    cgroups = FakeCgroupRoot(tmp_path / "cg", 1)
    for name in ("blkio.throttle.read_bps_device", "blkio.throttle.write_bps_device"):
        (cgroups.root / "blkio" / name).unlink()
    proc = fake_proc(tmp_path, VM_CPUINFO, "sysfs /sys sysfs rw 0 0\n")
    caps = rdt.gather(str(cgroups.root), str(proc), str(tmp_path / "none"), probe_libpqos=False).capabilities
    assert not caps["disk_io"].available and "CONFIG_BLK_DEV_THROTTLING" in caps["disk_io"].how


def test_cgroup_v2_is_judged_by_a_child_group(tmp_path: Path) -> None:
    cgroups = FakeCgroupRoot(tmp_path / "cg", 2)
    proc = fake_proc(tmp_path, VM_CPUINFO, "sysfs /sys sysfs rw 0 0\n")
    child = cgroups.root / "system.slice"
    child.mkdir()
    (child / "cgroup.controllers").write_text("cpu memory io\n")
    (child / "memory.max").write_text("max\n")
    (child / "io.max").write_text("")
    caps = rdt.gather(str(cgroups.root), str(proc), str(tmp_path / "none"), probe_libpqos=False).capabilities
    assert not caps["cpu"].available and "cpu.max" in caps["cpu"].how  # cpu enabled there, cpu.max missing
    assert caps["memory"].available and caps["disk_io"].available
