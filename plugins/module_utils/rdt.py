# Copyright: firm developers
# Apache License 2.0 (see galaxy.yml)
"""What a node lets firm control: RDT hardware, kernel, resctrl, cgroups, tc and libpqos.

Everything here only reads. libpqos is probed in a child process: its initialisation in MSR or
AUTO mode aborts the whole interpreter on machines without RDT, which must never take the caller
(an Ansible module, the controller) down with it.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from ansible_collections.firm.core.plugins.module_utils import cgroup, resctrl
from ansible_collections.firm.core.plugins.module_utils.errors import FirmError

# Linux names the flags of Intel RDT and AMD PQoS alike; smba and bmec exist on AMD only.
RDT_FLAGS = (
    "rdt_a",
    "cat_l3",
    "cat_l2",
    "cdp_l3",
    "cdp_l2",
    "mba",
    "cqm",
    "cqm_llc",
    "cqm_occup_llc",
    "cqm_mbm_total",
    "cqm_mbm_local",
    "smba",
    "bmec",
)
MIN_KERNEL = (4, 12)

_PQOS_PROBE = r"""
import json, sys
try:
    from pqos import Pqos
    from pqos.capability import PqosCap
except Exception as exc:
    print(json.dumps({"available": False, "error": "pqos Python package: %s" % exc})); sys.exit(0)
lib = Pqos()
try:
    lib.init(sys.argv[1])
except Exception as exc:
    print(json.dumps({"available": False, "error": "pqos init in %s mode: %s" % (sys.argv[1], exc)})); sys.exit(0)
try:
    cap = PqosCap()
    found = {}
    for kind in ("l3ca", "l2ca", "mba", "mon"):
        try:
            found[kind] = cap.get_type(kind) is not None
        except Exception:
            found[kind] = False
    print(json.dumps({"available": True, "interface": sys.argv[1], "capabilities": found}))
finally:
    lib.fini()
"""


@dataclass(frozen=True)
class Capability:
    """Whether firm can control one resource on this node, and why not when it cannot."""

    available: bool
    how: str


@dataclass(frozen=True)
class NodeFacts:
    vendor: str
    cpu_flags: dict[str, bool]
    kernel: str
    kernel_supported: bool
    resctrl_in_kernel: bool
    resctrl_mount: str | None
    resctrl_mount_options: list[str]
    resctrl_mount_problem: str
    cgroup_versions: dict[str, int]
    tc_path: str | None
    pqos: dict[str, Any]
    capabilities: dict[str, Capability] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def cpu_flags(cpuinfo: str) -> dict[str, bool]:
    """The RDT flags of the first processor in ``/proc/cpuinfo``."""
    flags = re.search(r"^flags\s*:\s*(.*)$", cpuinfo, flags=re.M)
    present = set(flags.group(1).split()) if flags else set()
    return {flag: flag in present for flag in RDT_FLAGS}


def kernel_supported(release: str) -> bool:
    """True for kernels of at least 4.12, where resctrl has CAT, CDP and MBA."""
    numbers = re.match(r"(\d+)\.(\d+)", release)
    return numbers is not None and (int(numbers.group(1)), int(numbers.group(2))) >= MIN_KERNEL


def probe_pqos(interface: str = "OS", python: str | None = None, timeout: float = 20.0) -> dict[str, Any]:
    # OS mode drives RDT through resctrl; MSR mode (direct register access) is what aborts without RDT.
    """Initialise libpqos in a child process and report what it found; never aborts the caller."""
    command = [python or sys.executable, "-c", _PQOS_PROBE, interface]
    try:
        proc = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=dict(os.environ, LC_ALL="C"),
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"available": False, "error": f"pqos probe did not finish: {exc}"}
    if proc.returncode != 0:
        return {
            "available": False,
            "error": f"pqos probe died with status {proc.returncode}",
            "stderr": proc.stderr.strip()[-500:],
        }
    try:
        result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {
            "available": False,
            "error": "pqos probe printed no result",
            "stderr": proc.stderr.strip()[-500:],
        }
    return result


def gather(
    cgroup_root: str = "/sys/fs/cgroup",
    proc_root: str = "/proc",
    resctrl_root: str = "/sys/fs/resctrl",
    probe_libpqos: bool = True,
    pqos_python: str | None = None,
) -> NodeFacts:
    """Every fact firm's preflight and the controller need about this node."""
    cpuinfo = os.path.join(proc_root, "cpuinfo")
    try:
        mount: str | None = resctrl_root
        options = list(resctrl.mount_options(resctrl_root, os.path.join(proc_root, "mounts")))
        mount_problem = ""
    except resctrl.ResctrlNotFoundError as exc:
        mount, options, mount_problem = None, [], str(exc)
    try:
        layout: cgroup.Layout | None = cgroup.detect_layout(cgroup_root)
    except FirmError:
        layout = None
    versions = layout.versions() if layout is not None else {}
    release = platform.release()
    facts = NodeFacts(
        vendor=resctrl.read_vendor(cpuinfo),
        cpu_flags=cpu_flags(_read(cpuinfo)),
        kernel=release,
        kernel_supported=kernel_supported(release),
        resctrl_in_kernel="resctrl" in _read(os.path.join(proc_root, "filesystems")).split(),
        resctrl_mount=mount,
        resctrl_mount_options=options,
        resctrl_mount_problem=mount_problem,
        cgroup_versions=versions,
        tc_path=shutil.which("tc"),
        pqos=probe_pqos(python=pqos_python) if probe_libpqos else {"available": False, "error": "not probed"},
    )
    return _with_capabilities(facts, resctrl_root, layout)


# The interface files each capability needs, in v1 (present in the root group) and v2 (present in
# child groups only), and the kernel option that provides them when they are missing.
_KNOB_FILES: dict[str, tuple[str, tuple[str, ...], tuple[str, ...], str]] = {
    "cpu": ("cpu", ("cpu.cfs_quota_us", "cpu.cfs_period_us"), ("cpu.max",), "CONFIG_CFS_BANDWIDTH"),
    "cpu_weight": ("cpu", ("cpu.shares",), ("cpu.weight",), "CONFIG_FAIR_GROUP_SCHED"),
    "cpuset": ("cpuset", ("cpuset.cpus", "cpuset.mems"), ("cpuset.cpus", "cpuset.mems"), "CONFIG_CPUSETS"),
    "memory": ("memory", ("memory.limit_in_bytes",), ("memory.max",), "CONFIG_MEMCG"),
    "disk_io": (
        "blkio",
        ("blkio.throttle.read_bps_device", "blkio.throttle.write_bps_device"),
        ("io.max",),
        "CONFIG_BLK_DEV_THROTTLING",
    ),
}


def probe_knob(layout: cgroup.Layout | None, capability: str) -> tuple[bool, str]:
    """Whether the files ``capability`` writes exist on this node, with why or why not.

    v1 groups inherit the root's interface files, so the root tells. v2 shows a controller's files
    only in child groups: the first child group with the controller enabled tells; with none yet,
    the controller being available is all that can be said, and the answer says so.
    """
    controller, v1_files, v2_files, option = _KNOB_FILES[capability]
    hierarchy = layout.hierarchies.get(controller) if layout is not None else None
    if hierarchy is None:
        return False, f"no {controller} cgroup controller is mounted"
    if hierarchy.version == 1:
        missing = [f for f in v1_files if not os.path.exists(os.path.join(hierarchy.mount, f))]
        if missing:
            return False, (
                f"the {controller} controller has no {', '.join(missing)}: the kernel was built "
                f"without {option}"
            )
        return True, "cgroup v1"
    for entry in (
        sorted(os.scandir(hierarchy.mount), key=lambda e: e.name) if os.path.isdir(hierarchy.mount) else []
    ):
        if entry.is_dir(follow_symlinks=False) and os.path.exists(os.path.join(entry.path, v2_files[0])):
            return True, "cgroup v2"
    for entry in sorted(os.scandir(hierarchy.mount), key=lambda e: e.name):
        if entry.is_dir(follow_symlinks=False) and os.path.exists(
            os.path.join(entry.path, "cgroup.controllers")
        ):
            enabled = _read(os.path.join(entry.path, "cgroup.controllers")).split()
            if cgroup.V2_NAMES[controller] in enabled:
                return False, (
                    f"group {entry.name} has the {controller} controller but no {v2_files[0]}: "
                    f"the kernel was built without {option}"
                )
    return True, "cgroup v2 (not verified: no child group shows the controller's files yet)"


def _with_capabilities(facts: NodeFacts, resctrl_root: str, layout: cgroup.Layout | None = None) -> NodeFacts:
    def controller(name: str, knob: str) -> Capability:
        available, how = probe_knob(layout, name)
        return Capability(available, f"{knob} ({how})" if available else how)

    def rdt(flag: str, info_dir: str, what: str) -> Capability:
        if not facts.cpu_flags.get(flag):
            return Capability(False, f"the CPU has no {flag} flag (no {what} hardware)")
        if facts.resctrl_mount is None:
            return Capability(False, facts.resctrl_mount_problem)
        if not os.path.isdir(os.path.join(resctrl_root, "info", info_dir)):
            return Capability(False, f"resctrl shows no info/{info_dir}: the kernel has {what} disabled")
        return Capability(True, f"resctrl {info_dir}")

    capabilities = {
        "cpu": controller("cpu", "CFS bandwidth (quota and period)"),
        "cpu_weight": controller("cpu_weight", "CPU weight"),
        "cpuset": controller("cpuset", "CPU and memory-node pinning"),
        "memory": controller("memory", "memory limit"),
        "disk_io": controller("disk_io", "per-device throttling"),
        "network": Capability(True, f"tc HTB/TBF shaping ({facts.tc_path})")
        if facts.tc_path
        else Capability(False, "tc is not installed: apt-get install iproute2"),
        "llc": rdt("cat_l3", "L3", "cache allocation (CAT)"),
        "memory_bandwidth": rdt("mba", "MB", "memory bandwidth allocation (MBA)"),
        "llc_monitoring": rdt("cqm_occup_llc", "L3_MON", "cache monitoring (CMT)"),
        "memory_bandwidth_monitoring": rdt("cqm_mbm_total", "L3_MON", "bandwidth monitoring (MBM)"),
    }
    return NodeFacts(**{**facts.__dict__, "capabilities": capabilities})


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""
