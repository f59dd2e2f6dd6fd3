# Copyright: firm developers
# Apache License 2.0 (see galaxy.yml)
"""Control groups: one implementation of each knob for cgroup v1 and v2.

The version is detected per controller from the layout under the cgroup root, so hybrid hosts
(v1 controllers plus an empty unified tree, as on this project's test machines) work as well as
pure v2 hosts. Values are expressed in firm's units, whatever the version:

- CPU bandwidth: ``quota_us`` per ``period_us`` (``None`` quota = unlimited),
- CPU weight: cgroup v2 units, 1..10000, default 100 (v1 ``cpu.shares`` = weight * 1024 / 100),
- cpuset: canonical CPU / memory-node lists (``"0-2,5"``),
- disk: bytes and I/O per second per whole-disk device ``MAJ:MIN`` (``None`` = no limit),
- memory: bytes (``None`` = unlimited).

Nothing is written until every value has been validated; a change that writes several files is
rolled back when one of them is refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import os
import re
import signal
import stat
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ansible_collections.firm.core.plugins.module_utils import units
from ansible_collections.firm.core.plugins.module_utils.errors import (
    FirmError,
    InvalidInputError,
    KernelWriteError,
    NotFoundError,
)
from ansible_collections.firm.core.plugins.module_utils.kernel import KERNEL, Change, FileWrite, Kernel
from ansible_collections.firm.core.plugins.module_utils.sysfs import (
    Rollback,
    confined_path,
    read_text,
    write_text,
)

# Controllers firm manages, by their v1 names; the v2 name differs only for blkio.
CONTROLLERS = ("cpu", "cpuacct", "cpuset", "blkio", "memory", "pids")
V2_NAMES = {
    "cpu": "cpu",
    "cpuacct": "cpu",
    "cpuset": "cpuset",
    "blkio": "io",
    "memory": "memory",
    "pids": "pids",
}

CPU_PERIOD_MIN_US = 1000
CPU_PERIOD_MAX_US = 1000000
CPU_QUOTA_MIN_US = 1000
CPU_WEIGHT_MIN, CPU_WEIGHT_MAX, CPU_WEIGHT_DEFAULT = 1, 10000, 100
CPU_SHARES_MIN, CPU_SHARES_MAX = 2, 262144
MEMORY_MIN_BYTES = 4096
LIST_ID_LIMIT = 8192
"""CPU and memory-node IDs in cpuset lists are below this (the kernel's largest NR_CPUS)."""
# cgroup v1 reports "no limit" as PAGE_COUNTER_MAX pages; anything this large means unlimited.
MEMORY_V1_UNLIMITED_FLOOR = 1 << 62
DISK_FIELDS = ("read_bps", "write_bps", "read_iops", "write_iops")
_V1_DISK_FILES = {
    "read_bps": "blkio.throttle.read_bps_device",
    "write_bps": "blkio.throttle.write_bps_device",
    "read_iops": "blkio.throttle.read_iops_device",
    "write_iops": "blkio.throttle.write_iops_device",
}
_V2_IO_KEYS = {"read_bps": "rbps", "write_bps": "wbps", "read_iops": "riops", "write_iops": "wiops"}
_CONTAINER_ID = re.compile(r"[0-9a-f]{12,64}")
# A pod's metadata.uid (dashed, or with underscores as the systemd driver writes it), or the 32 hex
# digits of a static pod's kubernetes.io/config.hash, which the kubelet uses as its (mirror pod's) UID;
# in any case, and with the "pod" prefix of its cgroup's name.
_POD_UID = re.compile(
    r"(?:pod)?([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}|[0-9a-f]{32})"
)
# A container's cgroup name as each runtime makes it: "cri-containerd-ID.scope", "crio-ID(.scope)",
# "docker-ID.scope"; the runtime it names.
_CONTAINER_SCOPE = re.compile(r"(cri-containerd|crio|docker)-([0-9a-f]{12,64})(?:\.scope)?")
_SCOPE_RUNTIMES = {"cri-containerd": "containerd", "crio": "cri-o", "docker": "docker"}
CPU_QUOTA_MAX_US = (1 << 44) - 1
"""The kernel's max_cfs_runtime (MAX_BW us, "more than 203 days"): larger quotas are refused, and on
cgroup v2 a quota whose nanoseconds pass 2^64 wraps silently into a small one."""
MEMORY_MAX_BYTES = (1 << 62) - 1
"""Larger limits read back as unlimited on v1 (and overflow the kernel's parser at 2^64): use -1."""
DISK_BPS_MAX = (1 << 64) - 2
"""A throttle of U64_MAX bytes/s is the kernel's "no limit", and larger values wrap in v1's parser."""
DISK_IOPS_MAX = (1 << 32) - 2
"""The kernel keeps IOPS throttles in 32 bits and clamps larger ones to UINT_MAX, its "no limit"."""


def normalise_pod_uid(pod_uid: str) -> str:
    """A pod UID in the form the cgroupfs driver names it (dashed, lower case; a static pod's 32
    hex digits as they are), from any form the kubelet, kubectl or a cgroup path shows.

    Accepts upper case, underscores for dashes (the systemd driver's slice names), a ``pod``
    prefix and surrounding whitespace; refuses anything else before a path is built from it.
    """
    text = pod_uid.strip().lower() if isinstance(pod_uid, str) else ""
    match = _POD_UID.fullmatch(text)
    if not match:
        raise CgroupInputError(
            f"pod_uid {pod_uid!r} is not a pod UID",
            fix="give metadata.uid of the pod, e.g. 6f1c1f4e-1e1b-4c57-9d5b-0b6d3c2d9a10, or a "
            "static pod's kubernetes.io/config.hash (32 hex digits)",
        )
    return match.group(1).replace("_", "-")


class CgroupInputError(InvalidInputError):
    """A cgroup request was rejected before anything was written."""


class CgroupNotFoundError(NotFoundError):
    """A cgroup, controller, process or device does not exist."""


class CgroupWriteError(KernelWriteError):
    """The kernel refused a cgroup write; the change was rolled back."""


# --------------------------------------------------------------------------------------------------
# Layout: where each controller lives and which version it is


@dataclass(frozen=True)
class Hierarchy:
    """A mounted controller: its version and the directory of its root group."""

    controller: str
    version: int
    mount: str


@dataclass(frozen=True)
class Layout:
    """The controllers firm can use under one cgroup root."""

    root: str
    hierarchies: Mapping[str, Hierarchy]

    def versions(self) -> dict[str, int]:
        return {name: h.version for name, h in self.hierarchies.items()}

    def hierarchy(self, controller: str) -> Hierarchy:
        try:
            return self.hierarchies[controller]
        except KeyError:
            raise CgroupNotFoundError(
                f"the {controller} controller is not mounted under {self.root}",
                fix=f"mount it (v1: mount -t cgroup -o {controller} cgroup {self.root}/{controller}; "
                f"v2: enable +{V2_NAMES[controller]} in cgroup.subtree_control) or leave its options unset",
            ) from None


def detect_layout(root: str = "/sys/fs/cgroup") -> Layout:
    """Find each managed controller under ``root``: a v1 hierarchy of its own, or the v2 tree.

    Pure v2: ``root/cgroup.controllers`` exists. Otherwise v1 hierarchies are ``root/<name>``
    (co-mounts such as ``cpu,cpuacct`` are links to one directory) and the v2 tree, if any, is
    ``root/unified`` with only the controllers no v1 hierarchy took.
    """
    if not os.path.isdir(root):
        raise CgroupNotFoundError(
            f"cgroup root {root} does not exist", fix="mount cgroups or set cgroup_root"
        )
    unified = (
        root if os.path.exists(os.path.join(root, "cgroup.controllers")) else os.path.join(root, "unified")
    )
    v2_available = _v2_controllers(unified)
    hierarchies: dict[str, Hierarchy] = {}
    for name in CONTROLLERS:
        v1_dir = os.path.join(root, name)
        if unified != root and os.path.isfile(os.path.join(v1_dir, "cgroup.procs")):
            hierarchies[name] = Hierarchy(name, 1, os.path.realpath(v1_dir))
        elif V2_NAMES[name] in v2_available or (name == "cpuacct" and "cpu" in v2_available):
            hierarchies[name] = Hierarchy(name, 2, unified)
        elif name == "cpuacct" and os.path.exists(os.path.join(unified, "cgroup.controllers")):
            # v2 accounts CPU time in cpu.stat for every group, even without the cpu controller.
            hierarchies[name] = Hierarchy(name, 2, unified)
    return Layout(root, hierarchies)


def _v2_controllers(unified: str) -> list[str]:
    try:
        return read_text(os.path.join(unified, "cgroup.controllers")).split()
    except NotFoundError:
        return []


# --------------------------------------------------------------------------------------------------
# Targets: a group's directory in every hierarchy


@dataclass(frozen=True)
class Group:
    """One cgroup, as a directory per controller (v1 hierarchies may place a process differently)."""

    layout: Layout
    paths: Mapping[str, str]  # controller -> path relative to that hierarchy's root

    def dir(self, controller: str) -> str:
        hierarchy = self.layout.hierarchy(controller)
        return confined_path(hierarchy.mount, self.paths.get(controller, ""), "cgroup path")

    def version(self, controller: str) -> int:
        return self.layout.hierarchy(controller).version

    def distinct_dirs(self) -> list[str]:
        """Every directory of this group once, even when hierarchies are co-mounted."""
        seen: dict[str, None] = {}
        for controller in self.layout.hierarchies:
            seen.setdefault(self.dir(controller), None)
        return list(seen)

    def exists(self) -> bool:
        return all(os.path.isdir(d) for d in self.distinct_dirs())

    def file(self, controller: str, name: str) -> str:
        return os.path.join(self.dir(controller), name)


def group_at(layout: Layout, path: str) -> Group:
    """The group at the same ``path`` in every hierarchy; refuses paths that escape the root."""
    clean = path if path.startswith("/") else path.strip("/")  # absolute paths are refused below
    for hierarchy in layout.hierarchies.values():
        confined_path(hierarchy.mount, clean, "cgroup path")
    return Group(layout, {name: clean for name in layout.hierarchies})


def group_of_pid(layout: Layout, pid: int, proc_root: str = "/proc") -> Group:
    """The groups a process belongs to, from ``/proc/PID/cgroup``."""
    try:
        content = read_text(os.path.join(proc_root, str(pid), "cgroup"))
    except NotFoundError:
        raise CgroupNotFoundError(
            f"process {pid} does not exist", fix="give the PID of a running process"
        ) from None
    v1_paths: dict[str, str] = {}
    v2_path: str | None = None
    for line in content.splitlines():
        _, controllers, member = line.split(":", 2)
        if controllers == "":
            v2_path = member.lstrip("/")
        for controller in controllers.split(","):
            v1_paths[controller] = member.lstrip("/")
    paths = {}
    for name, hierarchy in layout.hierarchies.items():
        path = v1_paths.get(name) if hierarchy.version == 1 else v2_path
        if path is not None:
            paths[name] = path
    return Group(layout, paths)


_QOS_DIRS_CGROUPFS = ("kubepods", "kubepods/burstable", "kubepods/besteffort")
_QOS_DIRS_SYSTEMD = (
    ("kubepods.slice", "kubepods"),
    ("kubepods.slice/kubepods-burstable.slice", "kubepods-burstable"),
    ("kubepods.slice/kubepods-besteffort.slice", "kubepods-besteffort"),
)
_RUNTIME_PREFIXES = {"containerd": "cri-containerd", "cri-o": "crio", "docker": "docker"}


def kubernetes_candidates(
    pod_uid: str, container_id: str | None = None, driver: str = "auto", runtime: str = "auto"
) -> list[str]:
    """Every path the kubelet may give a pod (or one of its containers), most likely first.

    cgroupfs driver: ``kubepods[/<qos>]/pod<uid>[/<id>]`` (CRI-O: ``crio-<id>``); systemd driver:
    ``kubepods.slice[/kubepods-<qos>.slice]/kubepods[-<qos>]-pod<uid_>.slice[/<prefix>-<id>.scope]``.
    """
    uid_dashes = normalise_pod_uid(pod_uid)
    inferred_runtime, cid = _split_container_id(container_id) if container_id is not None else (None, None)
    if runtime == "auto":
        runtimes = [inferred_runtime] if inferred_runtime else list(_RUNTIME_PREFIXES)
    else:
        runtimes = [runtime]
    drivers = ["cgroupfs", "systemd"] if driver == "auto" else [driver]
    uid_unders = uid_dashes.replace("-", "_")
    candidates: list[str] = []
    for drv in drivers:
        if drv == "cgroupfs":
            for qos in _QOS_DIRS_CGROUPFS:
                pod = f"{qos}/pod{uid_dashes}"
                if cid is None:
                    candidates.append(pod)
                for rt in runtimes if cid else []:
                    candidates.append(f"{pod}/crio-{cid}" if rt == "cri-o" else f"{pod}/{cid}")
        else:
            for qos_dir, prefix in _QOS_DIRS_SYSTEMD:
                pod = f"{qos_dir}/{prefix}-pod{uid_unders}.slice"
                if cid is None:
                    candidates.append(pod)
                for rt in runtimes if cid else []:
                    candidates.append(f"{pod}/{_RUNTIME_PREFIXES[rt]}-{cid}.scope")
    return list(dict.fromkeys(candidates))


def _split_container_id(container_id: str) -> tuple[str | None, str]:
    """``containerd://abc`` -> ("containerd", "abc"); a bare ID has no runtime.

    Also reads the container's cgroup name (``cri-containerd-abc.scope``, ``crio-abc``,
    ``docker-abc.scope``), upper case and surrounding whitespace.
    """
    runtime = None
    text = container_id.strip().lower()
    if "://" in text:
        scheme, text = text.split("://", 1)
        runtime = {"containerd": "containerd", "cri-o": "cri-o", "crio": "cri-o", "docker": "docker"}.get(
            scheme
        )
        if runtime is None:
            raise CgroupInputError(
                f"container runtime {scheme!r} of container_id {container_id!r} is not known",
                fix="use a containerd://, cri-o:// or docker:// container ID",
            )
    scope = _CONTAINER_SCOPE.fullmatch(text)
    if scope and runtime in (None, _SCOPE_RUNTIMES[scope.group(1)]):
        runtime, text = _SCOPE_RUNTIMES[scope.group(1)], scope.group(2)
    if not _CONTAINER_ID.fullmatch(text):
        raise CgroupInputError(
            f"container_id {container_id!r} is not a container ID",
            fix="give status.containerStatuses[].containerID of the pod (e.g. containerd://<64 hex digits>)",
        )
    return runtime, text


def group_of_pod(
    layout: Layout, pod_uid: str, container_id: str | None = None, driver: str = "auto", runtime: str = "auto"
) -> Group:
    """The existing group of a Kubernetes pod or container, whatever its QoS class and driver."""
    candidates = kubernetes_candidates(pod_uid, container_id, driver, runtime)
    probe = "cpu" if "cpu" in layout.hierarchies else next(iter(layout.hierarchies))
    for candidate in candidates:
        group = group_at(layout, candidate)
        if os.path.isdir(group.dir(probe)):
            return group
    raise CgroupNotFoundError(
        f"no cgroup of pod {pod_uid}{' container ' + container_id if container_id else ''} under "
        f"{layout.hierarchy(probe).mount}",
        fix="check that the pod runs on this node; set cgroup_driver / container_runtime if they are known",
        candidates=candidates,
    )


# --------------------------------------------------------------------------------------------------
# Groups: create, remove, attach


def create_group(group: Group, rollback: Rollback | None = None, *, kernel: Kernel = KERNEL) -> list[str]:
    """Create the group in every hierarchy where it is missing; returns the directories made.

    A new v1 cpuset group starts with no CPUs or memory nodes, so it inherits its parent's; on v2
    the parent must delegate the controllers, so they are enabled in its ``cgroup.subtree_control``.
    """
    made: list[str] = []
    for directory in group.distinct_dirs():
        if os.path.isdir(directory):
            continue
        parents = _missing_ancestors(directory)
        for path in parents:
            if _is_v2_dir(group, path):
                _delegate_v2_controllers(group, os.path.dirname(path), rollback, kernel)
            try:
                kernel.mkdir(path)
            except OSError as exc:
                raise CgroupWriteError(
                    f"cannot create cgroup {path}: {exc.strerror}",
                    fix="check that the cgroup root is mounted read-write and you are root",
                ) from exc
            made.append(path)
            if rollback is not None:
                rollback.record(functools.partial(kernel.rmdir, path))
    if "cpuset" in group.layout.hierarchies and group.version("cpuset") == 1:
        for directory in made:
            if os.path.realpath(directory).startswith(group.layout.hierarchy("cpuset").mount + os.sep):
                _inherit_cpuset(directory, kernel)
    return made


def _missing_ancestors(directory: str) -> list[str]:
    missing = []
    while not os.path.isdir(directory):
        missing.append(directory)
        directory = os.path.dirname(directory)
    return list(reversed(missing))


def _is_v2_dir(group: Group, path: str) -> bool:
    return any(
        h.version == 2 and path.startswith(h.mount + os.sep) for h in group.layout.hierarchies.values()
    )


def _delegate_v2_controllers(group: Group, parent: str, rollback: Rollback | None, kernel: Kernel) -> None:
    wanted = sorted(
        {V2_NAMES[n] for n, h in group.layout.hierarchies.items() if h.version == 2 and n != "cpuacct"}
    )
    control = os.path.join(parent, "cgroup.subtree_control")
    enabled = read_text(control).split()
    available = read_text(os.path.join(parent, "cgroup.controllers")).split()
    missing = [c for c in wanted if c not in enabled and c in available]
    if missing:
        write_text(control, " ".join(f"+{c}" for c in missing), kernel)
        if rollback is not None:
            rollback.record(lambda: write_text(control, " ".join(f"-{c}" for c in missing), kernel))


def _inherit_cpuset(directory: str, kernel: Kernel) -> None:
    parent = os.path.dirname(directory)
    for name in ("cpuset.cpus", "cpuset.mems"):
        if read_text(os.path.join(directory, name)) == "":
            write_text(os.path.join(directory, name), read_text(os.path.join(parent, name)), kernel)


def remove_group(group: Group, *, kernel: Kernel = KERNEL) -> list[str]:
    """Remove the group (and its sub-groups, deepest first) from every hierarchy.

    Refuses, before removing anything, while a process is still inside: the kernel would refuse
    too, and half the hierarchies would be gone.
    """
    existing = [d for d in group.distinct_dirs() if os.path.isdir(d)]
    busy = {d: pids for d in existing for pids in [_pids_below(d)] if pids}
    if busy:
        directory, pids = next(iter(busy.items()))
        raise CgroupInputError(
            f"cgroup {directory} still holds processes {sorted(pids)[:10]}",
            fix="stop those processes or move them to another group first",
        )
    removed: list[str] = []
    for directory in existing:
        for sub, _, _ in sorted(os.walk(directory), key=lambda entry: -entry[0].count(os.sep)):
            try:
                kernel.rmdir(sub)
            except OSError as exc:
                raise CgroupWriteError(
                    f"cannot remove cgroup {sub}: {exc.strerror}",
                    fix="check that no process is left in it and retry",
                ) from exc
            removed.append(sub)
    return removed


def join(group: Group) -> None:
    """Move the calling process into the group in every hierarchy (as a ``preexec_fn``, so that a
    child runs not one instruction outside it)."""
    attach_pids({directory: [os.getpid()] for directory in group.distinct_dirs()})


def signal_members(group: Group, sig: int = signal.SIGKILL) -> int:
    """Signal every process in the group and its sub-groups, in every hierarchy; returns how many."""
    pids = {
        pid
        for directory in group.distinct_dirs()
        if os.path.isdir(directory)
        for pid in _pids_below(directory)
    }
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    return len(pids)


def remove_group_when_empty(group: Group, wait_s: float = 5.0, *, kernel: Kernel = KERNEL) -> list[str]:
    """``remove_group``, retried while processes just killed are still being reaped."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return remove_group(group, kernel=kernel)
        except CgroupInputError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _pids_below(directory: str) -> list[int]:
    pids: list[int] = []
    for sub, _, files in os.walk(directory):
        if "cgroup.procs" in files:
            pids.extend(int(p) for p in read_text(os.path.join(sub, "cgroup.procs")).split())
    return pids


def group_pids(group: Group) -> dict[str, list[int]]:
    """The processes directly in the group, per distinct hierarchy directory."""
    return {
        d: sorted(int(p) for p in read_text(os.path.join(d, "cgroup.procs")).split())
        for d in group.distinct_dirs()
    }


def pids_to_attach(group: Group, pids: Iterable[int], proc_root: str = "/proc") -> dict[str, list[int]]:
    """Per hierarchy directory, the processes not yet in it; refuses PIDs that do not exist."""
    wanted = sorted(set(pids))
    for pid in wanted:
        if pid <= 0 or not os.path.isdir(os.path.join(proc_root, str(pid))):
            raise CgroupNotFoundError(f"process {pid} does not exist", fix="give PIDs of running processes")
    current = group_pids(group) if group.exists() else {d: [] for d in group.distinct_dirs()}
    return {
        d: [p for p in wanted if p not in inside]
        for d, inside in current.items()
        if any(p not in inside for p in wanted)
    }


def attach_pids(plan: Mapping[str, Sequence[int]], *, kernel: Kernel = KERNEL) -> None:
    """Move processes into groups: one write of each PID to each separately mounted hierarchy."""
    for directory, pids in plan.items():
        for pid in pids:
            write = Write("pids", os.path.join(directory, "cgroup.procs"), str(pid))
            try:
                write_text(write.path, write.value, kernel)
            except KernelWriteError as exc:
                message, fix = explain_refusal(write, exc)
                raise CgroupWriteError(message, fix=fix, **exc.details) from exc


# --------------------------------------------------------------------------------------------------
# Settings: what can be asked for, validated and normalised


@dataclass(frozen=True)
class DiskLimit:
    """Throttles of one whole-disk device; ``None`` means no limit for that field."""

    device: str  # MAJ:MIN of the whole disk
    read_bps: int | None = None
    write_bps: int | None = None
    read_iops: int | None = None
    write_iops: int | None = None

    def as_dict(self) -> dict[str, int | None]:
        return {name: getattr(self, name) for name in DISK_FIELDS}


@dataclass(frozen=True)
class CgroupSettings:
    """Wanted values; a ``None`` field (or empty ``disk``) is left as it is.

    ``cpu_quota_us`` of -1 and ``memory_max`` of -1 mean unlimited.
    """

    cpu_quota_us: int | None = None
    cpu_period_us: int | None = None
    cpu_weight: int | None = None
    cpuset_cpus: str | None = None
    cpuset_mems: str | None = None
    memory_max: int | None = None
    disk: tuple[DiskLimit, ...] = field(default_factory=tuple)


def validate(settings: CgroupSettings) -> None:
    """Refuse values no kernel accepts, before anything is read or written."""
    quota, period = settings.cpu_quota_us, settings.cpu_period_us
    if period is not None and not CPU_PERIOD_MIN_US <= period <= CPU_PERIOD_MAX_US:
        raise CgroupInputError(
            f"cpu_period_us {period} is outside [{CPU_PERIOD_MIN_US}, {CPU_PERIOD_MAX_US}]",
            fix="use a period between 1 ms and 1 s; 100000 (100 ms) is the kernel default",
        )
    if quota is not None and quota != -1 and quota < CPU_QUOTA_MIN_US:
        raise CgroupInputError(
            f"cpu_quota_us {quota} is {'negative' if quota < 0 else 'below 1 ms'}",
            fix=f"use -1 for unlimited or a quota of at least {CPU_QUOTA_MIN_US} us (1 ms)",
        )
    if quota is not None and quota > CPU_QUOTA_MAX_US:
        raise CgroupInputError(
            f"cpu_quota_us {quota} is above the kernel's largest quota, {CPU_QUOTA_MAX_US} us (about 203 days)",
            fix="use -1 for unlimited, or a quota of at most cpu_period_us times the number of CPUs",
        )
    if settings.cpu_weight is not None and not CPU_WEIGHT_MIN <= settings.cpu_weight <= CPU_WEIGHT_MAX:
        raise CgroupInputError(
            f"cpu_weight {settings.cpu_weight} is outside [{CPU_WEIGHT_MIN}, {CPU_WEIGHT_MAX}]",
            fix="use a cgroup v2 weight; 100 is the default share",
        )
    for name in ("cpuset_cpus", "cpuset_mems"):
        value = getattr(settings, name)
        if value is not None:
            parse_list(value, name)
    memory = settings.memory_max
    if memory is not None and memory != -1 and memory < MEMORY_MIN_BYTES:
        raise CgroupInputError(
            f"memory_max {memory} is below one page", fix="use -1 for unlimited or at least 4096 bytes"
        )
    if memory is not None and memory > MEMORY_MAX_BYTES:
        raise CgroupInputError(
            f"memory_max {memory} is above {MEMORY_MAX_BYTES} bytes, more than any kernel holds as a limit",
            fix="use 'max' (or -1) for no limit, or a size such as 512M",
        )
    seen = set()
    for limit in settings.disk:
        if limit.device in seen:
            raise CgroupInputError(f"device {limit.device} is listed twice", fix="give one entry per device")
        seen.add(limit.device)
        for name, value in limit.as_dict().items():
            if value is not None and value <= 0:
                raise CgroupInputError(
                    f"{name} {value} of device {limit.device} is not positive",
                    fix="omit the field for no limit, or give a positive number",
                )
            most = DISK_IOPS_MAX if name.endswith("iops") else DISK_BPS_MAX
            if value is not None and value > most:
                raise CgroupInputError(
                    f"{name} {value} of device {limit.device} is above {most}, which the kernel reads as "
                    "no limit or cannot hold",
                    fix=f"omit {name} for no limit, or give at most {most}",
                )


def parse_list(text: str, what: str = "list") -> list[int]:
    """``"0-2,5"`` -> [0, 1, 2, 5], the kernel's list format for CPUs and memory nodes."""
    numbers: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = re.fullmatch(r"([0-9]+)(?:-([0-9]+))?", part)
        if not match or (match.group(2) is not None and int(match.group(2)) < int(match.group(1))):
            raise CgroupInputError(
                f"{what} {text!r} is not a list like '0-3,6'",
                fix="use comma-separated numbers and ascending ranges",
            )
        low, high = int(match.group(1)), int(match.group(2) or match.group(1))
        if high >= LIST_ID_LIMIT:
            raise CgroupInputError(
                f"{what} {text!r} names {high}, beyond any CPU or memory node ID",
                fix=f"use IDs below {LIST_ID_LIMIT} (the kernel's NR_CPUS limit)",
            )
        numbers.extend(range(low, high + 1))
    return sorted(set(numbers))


def format_list(numbers: Iterable[int]) -> str:
    """[0, 1, 2, 5] -> ``"0-2,5"``."""
    ranges: list[list[int]] = []
    for n in sorted(set(numbers)):
        if ranges and n == ranges[-1][1] + 1:
            ranges[-1][1] = n
        else:
            ranges.append([n, n])
    return ",".join(str(low) if low == high else f"{low}-{high}" for low, high in ranges)


def resolve_device(device: str, sysfs_root: str = "/sys") -> str:
    """A block device path or ``MAJ:MIN`` -> ``MAJ:MIN`` of its whole disk.

    Throttling happens after partitions are remapped to their disk, so limits go on the disk.
    """
    if re.fullmatch(r"[0-9]+:[0-9]+", device):
        majmin = device
    else:
        if "\x00" in device:
            raise CgroupInputError(
                f"device {device!r} contains a NUL byte",
                fix="give a block device path such as /dev/sda, or MAJ:MIN from lsblk",
            )
        try:
            info = os.stat(device)
        except OSError:
            raise CgroupNotFoundError(
                f"device {device} does not exist",
                fix="give a block device path such as /dev/sda, or MAJ:MIN from lsblk",
            ) from None
        if not stat.S_ISBLK(info.st_mode):
            raise CgroupInputError(
                f"{device} is not a block device", fix="give a block device path such as /dev/sda"
            )
        majmin = f"{os.major(info.st_rdev)}:{os.minor(info.st_rdev)}"
    entry = os.path.join(sysfs_root, "dev", "block", majmin)
    if not os.path.exists(entry):
        raise CgroupNotFoundError(
            f"block device {majmin} is not known to the kernel",
            fix="list devices with lsblk and use a disk's MAJ:MIN",
        )
    if os.path.exists(os.path.join(entry, "partition")):
        return read_text(os.path.join(os.path.dirname(os.path.realpath(entry)), "dev"))
    return majmin


# --------------------------------------------------------------------------------------------------
# Reading and writing the knobs


@dataclass(frozen=True)
class Write:
    """One planned write of a control file."""

    knob: str
    path: str
    value: str


def read_settings(group: Group, settings: CgroupSettings) -> dict[str, object]:
    """The current values of the knobs ``settings`` names, in firm's units."""
    current: dict[str, object] = {}
    if settings.cpu_quota_us is not None or settings.cpu_period_us is not None:
        current["cpu_quota_us"], current["cpu_period_us"] = read_cpu_max(group)
    if settings.cpu_weight is not None:
        current["cpu_weight"] = read_cpu_weight(group)
    for name in ("cpuset_cpus", "cpuset_mems"):
        if getattr(settings, name) is not None:
            current[name] = format_list(parse_list(read_text(group.file("cpuset", name.replace("_", ".")))))
    if settings.memory_max is not None:
        current["memory_max"] = read_memory_max(group)
    if settings.disk:
        limits = read_disk_limits(group)
        current["disk"] = {
            d.device: limits.get(d.device, DiskLimit(d.device)).as_dict() for d in settings.disk
        }
    return current


def read_cpu_max(group: Group) -> tuple[int, int]:
    """(quota_us, period_us); quota -1 when unlimited."""
    if group.version("cpu") == 2:
        quota, period = read_text(group.file("cpu", "cpu.max")).split()
        return (-1 if quota == "max" else int(quota)), int(period)
    return int(read_text(group.file("cpu", "cpu.cfs_quota_us"))), int(
        read_text(group.file("cpu", "cpu.cfs_period_us"))
    )


def read_cpu_weight(group: Group) -> int:
    if group.version("cpu") == 2:
        return int(read_text(group.file("cpu", "cpu.weight")))
    return shares_to_weight(int(read_text(group.file("cpu", "cpu.shares"))))


def weight_to_shares(weight: int) -> int:
    return max(CPU_SHARES_MIN, min(CPU_SHARES_MAX, round(weight * 1024 / 100)))


def shares_to_weight(shares: int) -> int:
    return max(CPU_WEIGHT_MIN, min(CPU_WEIGHT_MAX, round(shares * 100 / 1024)))


def read_memory_max(group: Group) -> int:
    """Bytes, or -1 when unlimited."""
    if group.version("memory") == 2:
        value = read_text(group.file("memory", "memory.max"))
        return -1 if value == "max" else int(value)
    value = read_text(group.file("memory", "memory.limit_in_bytes"))
    return -1 if int(value) >= MEMORY_V1_UNLIMITED_FLOOR else int(value)


def read_disk_limits(group: Group) -> dict[str, DiskLimit]:
    """Per device MAJ:MIN, its throttles."""
    fields: dict[str, dict[str, int | None]] = {}
    if group.version("blkio") == 2:
        for line in read_text(group.file("blkio", "io.max")).splitlines():
            device, *pairs = line.split()
            values = dict(pair.split("=", 1) for pair in pairs)
            fields[device] = {
                name: None if values.get(key, "max") == "max" else int(values[key])
                for name, key in _V2_IO_KEYS.items()
            }
    else:
        for name, filename in _V1_DISK_FILES.items():
            for line in read_text(group.file("blkio", filename)).splitlines():
                device, value = line.split()
                fields.setdefault(device, dict.fromkeys(DISK_FIELDS))[name] = int(value)
    return {device: DiskLimit(device, **values) for device, values in fields.items()}


def plan_writes(group: Group, settings: CgroupSettings, sysfs_root: str = "/sys") -> list[Write]:
    """The writes that bring the group to ``settings``; empty when it is already there.

    Validates first and reads the current values, so a group that does not exist yet plans every
    write of its knobs.
    """
    settings = resolve_devices(settings, sysfs_root)
    writes: list[Write] = []
    if settings.cpu_quota_us is not None or settings.cpu_period_us is not None:
        writes += _plan_cpu_max(group, settings)
    if settings.cpu_weight is not None:
        writes += _plan_cpu_weight(group, settings.cpu_weight)
    writes += _plan_cpuset(group, settings)
    if settings.memory_max is not None:
        writes += _plan_memory(group, settings.memory_max)
    if settings.disk:
        writes += _plan_disk(group, settings.disk)
    return writes


def resolve_devices(settings: CgroupSettings, sysfs_root: str = "/sys") -> CgroupSettings:
    """Validated settings whose disk limits name whole disks by ``MAJ:MIN``."""
    validate(settings)
    if not settings.disk:
        return settings
    disk = tuple(
        DiskLimit(resolve_device(d.device, sysfs_root), d.read_bps, d.write_bps, d.read_iops, d.write_iops)
        for d in settings.disk
    )
    validate(CgroupSettings(disk=disk))  # two paths may name one disk
    return dataclasses.replace(settings, disk=disk)


def _exists(path: str) -> bool:
    return os.path.exists(path)


def _plan_cpu_max(group: Group, settings: CgroupSettings) -> list[Write]:
    quota_now, period_now = read_cpu_max(group) if _exists(group.dir("cpu")) else (None, None)
    quota = settings.cpu_quota_us if settings.cpu_quota_us is not None else quota_now
    period = settings.cpu_period_us if settings.cpu_period_us is not None else period_now or 100000
    if (quota, period) == (quota_now, period_now):
        return []
    if group.version("cpu") == 2:
        text = f"{'max' if quota in (None, -1) else quota} {period}"
        return [Write("cpu_max", group.file("cpu", "cpu.max"), text)]
    period_write = Write("cpu_period_us", group.file("cpu", "cpu.cfs_period_us"), str(period))
    if quota is None or quota == quota_now:
        return [period_write]
    quota_write = Write("cpu_quota_us", group.file("cpu", "cpu.cfs_quota_us"), str(quota))
    if period == period_now or period_now is None:
        return [quota_write] if period == period_now else [period_write, quota_write]
    return _order_v1_cpu_writes(
        quota_now,
        period_now,
        quota,
        period,
        quota_write,
        period_write,
        has_limited_children=_has_limited_children(group.dir("cpu")),
    )


def _has_limited_children(directory: str) -> bool:
    """Whether a child group of ``directory`` (v1 cpu hierarchy) has a CFS quota of its own."""
    for entry in os.scandir(directory) if os.path.isdir(directory) else []:
        quota_file = os.path.join(entry.path, "cpu.cfs_quota_us")
        if (
            entry.is_dir(follow_symlinks=False)
            and os.path.exists(quota_file)
            and read_text(quota_file) != "-1"
        ):
            return True
    return False


def _order_v1_cpu_writes(
    quota_now: int | None,
    period_now: int,
    quota: int,
    period: int,
    quota_write: Write,
    period_write: Write,
    *,
    has_limited_children: bool = True,
) -> list[Write]:
    """Quota and period of a v1 group, written so that no state in between is refused.

    The kernel checks quota/period on every write against the parent's (it may not exceed it) and
    against every child's (they may not exceed it). Both the old and the new ratio pass those checks,
    so any ratio between them does too: of the two orders, take one whose intermediate ratio lies
    between. When neither does, a group without limited children only has its parent to respect, so
    the order whose intermediate ratio is the lower one is safe. Otherwise (a pod whose containers sit
    at its ratio, with period and quota growing together) go through an unlimited quota, which v1
    always accepts (the group then inherits its parent's bandwidth for the microseconds in between),
    where runc's retry in the other order would be refused too.
    """
    if quota_now is None or quota_now == -1:
        return [period_write, quota_write]  # unlimited now: the period alone changes nothing
    if quota == -1:
        return [quota_write, period_write]
    low, high = sorted((quota_now / period_now, quota / period))
    if low <= quota_now / period <= high:
        return [period_write, quota_write]
    if low <= quota / period_now <= high:
        return [quota_write, period_write]
    if not has_limited_children:
        return (
            [quota_write, period_write]
            if quota / period_now < quota_now / period
            else [period_write, quota_write]
        )
    unlimited = Write("cpu_quota_us", quota_write.path, "-1")
    return [unlimited, period_write, quota_write]


def _plan_cpu_weight(group: Group, weight: int) -> list[Write]:
    now = read_cpu_weight(group) if _exists(group.dir("cpu")) else None
    if group.version("cpu") == 2:
        return [] if now == weight else [Write("cpu_weight", group.file("cpu", "cpu.weight"), str(weight))]
    shares = weight_to_shares(weight)
    current_shares = int(read_text(group.file("cpu", "cpu.shares"))) if now is not None else None
    return (
        []
        if current_shares == shares
        else [Write("cpu_weight", group.file("cpu", "cpu.shares"), str(shares))]
    )


def _plan_cpuset(group: Group, settings: CgroupSettings) -> list[Write]:
    writes = []
    for name in ("cpuset_cpus", "cpuset_mems"):
        value = getattr(settings, name)
        if value is None:
            continue
        filename = name.replace("_", ".")
        wanted = parse_list(value, name)
        allowed = _parent_cpuset(group, filename)
        outside = sorted(set(wanted) - set(allowed))
        if outside or not wanted:
            raise CgroupInputError(
                f"{name} {value!r} is {'empty' if not wanted else 'not within ' + repr(format_list(allowed))}",
                fix=f"choose from the parent group's {filename}: {format_list(allowed)}",
            )
        path = group.file("cpuset", filename)
        now = parse_list(read_text(path)) if _exists(path) else None
        if now != wanted:
            writes.append(Write(name, path, format_list(wanted)))
    return writes


def _parent_cpuset(group: Group, filename: str) -> list[int]:
    directory = group.dir("cpuset")
    parent = os.path.dirname(directory) if directory != group.layout.hierarchy("cpuset").mount else directory
    while not os.path.isdir(parent):
        parent = os.path.dirname(parent)
    effective = os.path.join(
        parent, filename.replace(".cpus", ".cpus.effective").replace(".mems", ".mems.effective")
    )
    return parse_list(
        read_text(
            effective
            if group.version("cpuset") == 2 and _exists(effective)
            else os.path.join(parent, filename)
        )
    )


def kernel_memory_limit(limit: int) -> int:
    """The value the kernel will hold for a memory limit of ``limit`` bytes: whole pages, rounded
    down (``page_counter_memparse``), so that a second run compares equal; -1 stays unlimited."""
    if limit == -1:
        return -1
    page = os.sysconf("SC_PAGE_SIZE")
    return limit // page * page


def _plan_memory(group: Group, limit: int) -> list[Write]:
    now = read_memory_max(group) if _exists(group.dir("memory")) else None
    if now == kernel_memory_limit(limit):
        return []
    if group.version("memory") == 2:
        return [Write("memory_max", group.file("memory", "memory.max"), "max" if limit == -1 else str(limit))]
    return [Write("memory_max", group.file("memory", "memory.limit_in_bytes"), str(limit))]


def _plan_disk(group: Group, limits: Sequence[DiskLimit]) -> list[Write]:
    current = read_disk_limits(group) if _exists(group.dir("blkio")) else {}
    writes = []
    for limit in limits:
        now = current.get(limit.device, DiskLimit(limit.device))
        if now == limit:
            continue
        if group.version("blkio") == 2:
            pairs = " ".join(
                f"{key}={'max' if getattr(limit, name) is None else getattr(limit, name)}"
                for name, key in _V2_IO_KEYS.items()
            )
            writes.append(Write("disk", group.file("blkio", "io.max"), f"{limit.device} {pairs}"))
            continue
        for name, filename in _V1_DISK_FILES.items():
            if getattr(limit, name) != getattr(now, name):
                # v1 removes a device's rule when its value is 0.
                writes.append(
                    Write(
                        "disk", group.file("blkio", filename), f"{limit.device} {getattr(limit, name) or 0}"
                    )
                )
    return writes


def apply_writes(
    writes: Sequence[Write], rollback: Rollback | None = None, *, kernel: Kernel = KERNEL
) -> None:
    """Write each planned value; on a refusal, restore what was already written and raise."""
    own = rollback is None
    log = rollback if rollback is not None else Rollback()
    try:
        for write in writes:
            restore = _restorer(write, kernel)
            try:
                write_text(write.path, write.value, kernel)
            except KernelWriteError as exc:
                message, fix = explain_refusal(write, exc)
                raise CgroupWriteError(message, fix=fix, **exc.details) from exc
            log.record(restore)  # a refused write left the old value: nothing to undo for it
    except Exception:
        if own:
            failures = log.undo()
            if failures:
                raise CgroupWriteError(
                    "the change failed and could not be fully undone",
                    fix="inspect the group by hand",
                    rollback_failures=failures,
                ) from None
        raise


def explain_refusal(write: Write, exc: KernelWriteError) -> tuple[str, str]:
    """What refused ``write`` and how to fix it: the constraint the kernel checked, read from the tree.

    Returns (message, fix). Covers the refusals cgroup v1 and v2 document: CFS bandwidth against the
    parent and the children (EINVAL), ``cpu.max.burst`` above the quota, a memory limit below usage
    (EBUSY) or above the swap limit (v1, EINVAL), v2's no-internal-processes rule (EBUSY), empty
    ``cpuset.cpus`` / ``cpuset.mems`` (ENOSPC), CPUs outside the parent or still used by a child, a
    disk that is not a whole block device, and missing permission. Anything else keeps the kernel's
    own words with generic advice.
    """
    code = exc.details.get("errno")
    name = os.path.basename(write.path)
    directory = os.path.dirname(write.path)
    refused = f"the kernel refused {write.value!r} in {write.path}"
    if isinstance(code, int):
        refused += f" ({errno.errorcode.get(code, code)})"
    try:
        if code in (errno.EACCES, errno.EPERM):
            return (
                f"{refused}: permission denied",
                "run as root, or delegate the group to this user (v2: chown the directory and its cgroup.procs)",
            )
        if name in ("cpu.cfs_quota_us", "cpu.cfs_period_us", "cpu.max") and code == errno.EINVAL:
            return _explain_cpu(write, directory, refused)
        if name in ("memory.limit_in_bytes", "memory.max"):
            explained = _explain_memory(write, directory, refused, code)
            if explained is not None:
                return explained
        if name == "cgroup.subtree_control" and code == errno.EBUSY:
            return (
                f"{refused}: v2's no-internal-processes rule: the group has processes of its own, so it "
                "cannot give controllers to children",
                "move its processes into a leaf group below it first",
            )
        if name in ("cgroup.procs", "tasks"):
            if code == errno.ENOSPC:
                return (
                    f"{refused}: the group's cpuset.cpus or cpuset.mems is empty",
                    "set cpuset.cpus and cpuset.mems of the group (firm's cpuset_cpus / cpuset_mems) first",
                )
            if code == errno.EBUSY:
                return (
                    f"{refused}: v2's no-internal-processes rule: the group gives controllers to its "
                    "children (cgroup.subtree_control)",
                    "attach the process to a leaf group",
                )
        if name in ("cpuset.cpus", "cpuset.mems"):
            if code == errno.EBUSY:
                return (
                    f"{refused}: a child group still uses CPUs or memory nodes this would remove",
                    "shrink the children's cpusets first, then this group's",
                )
            if code == errno.EINVAL:
                parent = read_text(os.path.join(os.path.dirname(directory), name))
                return (
                    f"{refused}: not within the parent's {name} ({parent or 'empty'})",
                    f"choose from {parent}, or widen the parent first",
                )
        if name.startswith(("blkio.throttle.", "io.max")) and code in (errno.EINVAL, errno.ENODEV):
            return (
                f"{refused}: device {write.value.split()[0]} is not a whole block device the controller "
                "throttles (a partition, or a device without a request queue)",
                "give the whole disk (firm resolves /dev paths to it), e.g. 8:0 for /dev/sda",
            )
    except FirmError:
        pass  # the tree could not be read to say more: fall back to the kernel's words
    return f"{refused}: {exc.message}", exc.fix


def _ratio_text(quota: int, period: int) -> str:
    return "unlimited" if quota < 0 else f"{quota}/{period} us ({quota / period:.2f} CPUs)"


def _cpu_max_at(directory: str) -> tuple[int, int] | None:
    """(quota, period) of the group at ``directory`` (v1 or v2), None when it has no such files."""
    v1 = os.path.join(directory, "cpu.cfs_quota_us")
    if os.path.exists(v1):
        return int(read_text(v1)), int(read_text(os.path.join(directory, "cpu.cfs_period_us")))
    v2 = os.path.join(directory, "cpu.max")
    if os.path.exists(v2):
        quota, period = read_text(v2).split()
        return (-1 if quota == "max" else int(quota)), int(period)
    return None


def _explain_cpu(write: Write, directory: str, refused: str) -> tuple[str, str]:
    now = _cpu_max_at(directory) or (-1, 100000)
    if write.path.endswith("cpu.max"):
        quota_text, period_text = write.value.split()
        wanted = (-1 if quota_text == "max" else int(quota_text), int(period_text))
        burst_file = os.path.join(directory, "cpu.max.burst")
        if os.path.exists(burst_file) and wanted[0] >= 0 and int(read_text(burst_file)) > wanted[0]:
            burst = read_text(burst_file)
            return (
                f"{refused}: cpu.max.burst ({burst} us) is larger than the new quota",
                f"lower cpu.max.burst to at most {wanted[0]} us first, or keep a larger quota",
            )
    elif write.path.endswith("cpu.cfs_quota_us"):
        wanted = (int(write.value), now[1])
    else:
        wanted = (now[0], int(write.value))
    if wanted[0] < 0:
        return (
            f"{refused}: the kernel refused an unlimited quota",
            "check the group's parent and children by hand",
        )
    ratio = wanted[0] / wanted[1]
    parent = _cpu_max_at(os.path.dirname(directory))
    if parent is not None and parent[0] >= 0 and ratio > parent[0] / parent[1]:
        return (
            f"{refused}: it would allow {_ratio_text(*wanted)}, more than the parent group's "
            f"{_ratio_text(*parent)}",
            "raise the parent's quota first, or ask for less",
        )
    children = []
    for entry in sorted(os.listdir(directory)):
        child = (
            _cpu_max_at(os.path.join(directory, entry))
            if os.path.isdir(os.path.join(directory, entry))
            else None
        )
        if child is not None and child[0] >= 0 and child[0] / child[1] > ratio:
            children.append(f"{entry} ({_ratio_text(*child)})")
    if children:
        return (
            f"{refused}: it would allow {_ratio_text(*wanted)}, less than its children {', '.join(children)}",
            "lower the children's quotas first, or ask for more",
        )
    return (
        f"{refused}: quota and period must be at least 1 ms, the period at most 1 s, and the ratio within "
        "the parent's and above every child's",
        "check the values against the parent and the children",
    )


def _explain_memory(write: Write, directory: str, refused: str, code: object) -> tuple[str, str] | None:
    wanted = -1 if write.value in ("max", "-1") else int(write.value)
    usage_file = os.path.join(
        directory, "memory.usage_in_bytes" if write.path.endswith("limit_in_bytes") else "memory.current"
    )
    if code == errno.EBUSY and os.path.exists(usage_file):
        usage = read_text(usage_file)
        return (
            f"{refused}: the group uses {usage} bytes, more than the new limit, and the kernel could not "
            "reclaim enough",
            f"raise the limit above {usage} bytes, or free memory in the group first",
        )
    swap_file = os.path.join(directory, "memory.memsw.limit_in_bytes")
    if code == errno.EINVAL and os.path.exists(swap_file) and wanted > int(read_text(swap_file)):
        swap = read_text(swap_file)
        return (
            f"{refused}: the memory+swap limit (memory.memsw.limit_in_bytes) is {swap} bytes, below the new "
            "memory limit",
            "raise memory.memsw.limit_in_bytes first, or ask for less memory",
        )
    return None


def _restorer(write: Write, kernel: Kernel = KERNEL) -> _Restore:
    return _Restore(write, _undo_value(write), kernel)


@dataclass(frozen=True)
class _Restore:
    write: Write
    previous: str | None
    kernel: Kernel = KERNEL

    def __call__(self) -> None:
        if self.previous is not None:
            write_text(self.write.path, self.previous, self.kernel)


def _undo_value(write: Write) -> str | None:
    """The text that restores a control file to what it holds now (None if nothing to restore)."""
    if not os.path.exists(write.path):
        return None
    current = read_text(write.path)
    name = os.path.basename(write.path)
    if name.startswith("blkio.throttle."):
        device = write.value.split()[0]
        old = dict(line.split() for line in current.splitlines()).get(device, "0")
        return f"{device} {old}"
    if name == "io.max":
        device = write.value.split()[0]
        for line in current.splitlines():
            if line.split()[0] == device:
                return line
        return f"{device} rbps=max wbps=max riops=max wiops=max"
    if name == "memory.limit_in_bytes" and int(current) >= MEMORY_V1_UNLIMITED_FLOOR:
        return "-1"
    return current


# --------------------------------------------------------------------------------------------------
# Statistics


@dataclass(frozen=True)
class CgroupStats:
    """Cumulative counters of a group, in the same units on v1 and v2."""

    cpu_usage_ns: int | None
    cpu_periods: int | None
    cpu_throttled_periods: int | None
    cpu_throttled_ns: int | None
    memory_bytes: int | None
    disk_read_bytes: int | None
    disk_write_bytes: int | None
    pids: int | None

    def as_dict(self) -> dict[str, int | None]:
        return dict(self.__dict__)


def read_stats(group: Group) -> CgroupStats:
    """Usage and throttling counters; a controller that is not mounted gives ``None`` fields."""
    has = group.layout.hierarchies
    cpu_stat = _keyed(read_text(group.file("cpu", "cpu.stat"))) if "cpu" in has else {}
    usage: int | None = None
    if "cpuacct" in has:
        if group.version("cpuacct") == 1:
            usage = int(read_text(group.file("cpuacct", "cpuacct.usage")))
        else:
            usage = _keyed(read_text(group.file("cpuacct", "cpu.stat"))).get("usage_usec", 0) * 1000
    v2_cpu = "cpu" in has and group.version("cpu") == 2
    throttled = cpu_stat.get("throttled_usec", 0) * 1000 if v2_cpu else cpu_stat.get("throttled_time")
    read_bytes, write_bytes = _disk_bytes(group) if "blkio" in has else (None, None)
    memory = None
    if "memory" in has:
        name = "memory.current" if group.version("memory") == 2 else "memory.usage_in_bytes"
        memory = int(read_text(group.file("memory", name)))
    pids = int(read_text(group.file("pids", "pids.current"))) if "pids" in has else None
    return CgroupStats(
        usage,
        cpu_stat.get("nr_periods"),
        cpu_stat.get("nr_throttled"),
        throttled,
        memory,
        read_bytes,
        write_bytes,
        pids,
    )


def read_usage_percpu(group: Group) -> list[int] | None:
    """CPU time the group and its descendants used on each CPU, nanoseconds since the group was
    made, indexed by CPU number (``cpuacct.usage_percpu``, cgroup v1; one entry per possible CPU).
    None where the kernel keeps no such figure: no cpuacct hierarchy, or cgroup v2 (whose
    ``cpu.stat`` has no per-CPU usage). Raises :class:`NotFoundError` when the group does not exist."""
    if "cpuacct" not in group.layout.hierarchies or group.version("cpuacct") != 1:
        return None
    return [int(v) for v in read_text(group.file("cpuacct", "cpuacct.usage_percpu")).split()]


def _keyed(text: str) -> dict[str, int]:
    pairs = (line.split() for line in text.splitlines())
    return {p[0]: int(p[1]) for p in pairs if len(p) == 2 and p[1].lstrip("-").isdigit()}


def _disk_bytes(group: Group) -> tuple[int, int]:
    read_total = write_total = 0
    if group.version("blkio") == 2:
        for line in read_text(group.file("blkio", "io.stat")).splitlines():
            values = dict(pair.split("=", 1) for pair in line.split()[1:])
            read_total += int(values.get("rbytes", 0))
            write_total += int(values.get("wbytes", 0))
        return read_total, write_total
    for line in read_text(group.file("blkio", "blkio.throttle.io_service_bytes")).splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == "Read":
            read_total += int(parts[2])
        elif len(parts) == 3 and parts[1] == "Write":
            write_total += int(parts[2])
    return read_total, write_total


def read_run_delays(group: Group, proc_root: str = "/proc") -> dict[int, int] | None:
    """Per task (thread ID) of the group and its descendants, the nanoseconds it has spent runnable
    but waiting for a CPU since it started: the second field of ``/proc/<tid>/schedstat``
    (Documentation/scheduler/sched-stats.rst, "run_delay"). CPU contention from outside the group
    (a noisy neighbour on its CPUs) shows here and not in its own usage or throttling counters.

    Tasks are listed from ``tasks`` (v1) or ``cgroup.threads`` (v2) of the CPU hierarchy's
    directory. A task that exits while it is read is left out. Returns None when the kernel keeps
    no schedstat (built without ``CONFIG_SCHED_INFO``) for any task of the group, ``{}`` when the
    group holds none. Raises :class:`NotFoundError` when the group's directory does not exist.
    """
    controller = next((c for c in ("cpu", "cpuacct") if c in group.layout.hierarchies), None)
    directory = group.dir(controller) if controller else group.distinct_dirs()[0]
    listing = "tasks" if controller and group.version(controller) == 1 else "cgroup.threads"
    if not os.path.isdir(directory):
        raise CgroupNotFoundError(f"{directory} does not exist", fix="check that the group exists")
    tids: list[int] = []
    for sub, _, files in os.walk(directory):
        name = listing if listing in files else "cgroup.procs"
        with contextlib.suppress(NotFoundError, OSError, ValueError):
            tids.extend(int(t) for t in read_text(os.path.join(sub, name)).split())
    delays: dict[int, int] = {}
    unsupported = 0
    for tid in tids:
        try:
            with open(os.path.join(proc_root, str(tid), "schedstat"), encoding="ascii") as handle:
                fields = handle.read().split()
        except FileNotFoundError:
            if os.path.isdir(os.path.join(proc_root, str(tid))):
                unsupported += 1
            continue
        except OSError:
            continue  # the task exited between the listing and the read
        if len(fields) >= 2 and fields[1].isdigit():
            delays[tid] = int(fields[1])
    if tids and not delays and unsupported:
        return None
    return delays


def run_delay_growth(before: Mapping[int, int], after: Mapping[int, int]) -> int:
    """Nanoseconds of waiting for a CPU between two :func:`read_run_delays` readings, summed over
    the tasks of the second: a task new since the first counts all of its delay, a task that
    exited in between counts nothing, and a task ID reused by a new task never counts negative."""
    total = 0
    for tid, value in after.items():
        earlier = before.get(tid, 0)
        total += value - earlier if value >= earlier else value
    return total


def enable_disk_accounting(layout: Layout, sysfs_root: str = "/sys", *, kernel: Kernel = KERNEL) -> list[str]:
    """Make cgroup v1 count every group's disk bytes on every block device; returns the devices
    (``MAJ:MIN``) this call enabled.

    Since Linux 6.10 blk-throttle is set up on a device only when a group first gets a throttle rule
    on it, and v1's ``blkio.throttle.io_service_bytes`` counts nothing before that: on a fresh boot
    every group reads 0 bytes (measured: ``dd oflag=direct`` of 32 MB read as ``Total 0``). Writing
    ``MAJ:MIN 0`` (no limit) to the root group's ``blkio.throttle.read_bps_device`` sets it up
    without limiting anything. A device that already holds a rule in the root is left alone, so no
    limit is ever removed. Nothing to do on v2 (``io.stat`` always counts) or without blkio.

    Raises :class:`CgroupWriteError` (via ``write_text``) when the kernel refuses the write."""
    hierarchy = layout.hierarchies.get("blkio")
    if hierarchy is None or hierarchy.version != 1:
        return []
    rules = os.path.join(hierarchy.mount, "blkio.throttle.read_bps_device")
    if not os.path.exists(rules):
        return []
    held = {line.split()[0] for line in read_text(rules).splitlines() if line.split()}
    enabled = []
    block = os.path.join(sysfs_root, "block")
    for name in sorted(os.listdir(block)) if os.path.isdir(block) else []:
        try:
            device = read_text(os.path.join(block, name, "dev"))
        except FirmError:
            continue
        if device in held or not re.fullmatch(r"[0-9]+:[0-9]+", device):
            continue
        write_text(rules, f"{device} 0", kernel)
        enabled.append(device)
    return enabled


def parse_size(value: str | int) -> int:
    """A memory size in bytes (:func:`units.parse_size`: ``"512M"`` -> 536870912, powers of 1024);
    ``"max"`` or -1 -> -1 (unlimited). ``"512Mb"`` is refused as ambiguous."""
    text = str(value).strip()
    if text in ("max", "-1"):
        return -1
    try:
        return units.parse_size(value, "memory size")
    except units.UnitError as exc:
        raise CgroupInputError(exc.message, fix=exc.fix + ", or 'max' for no limit") from None


# --------------------------------------------------------------------------------------------------
# One call for a group: what the module, the testbed, the anomalies and the executor use


@dataclass(frozen=True, kw_only=True)
class CgroupChange(Change[dict[str, object]]):
    """What :func:`ensure_cgroup` did: ``before`` / ``after`` are the asked-for knobs in firm's units
    (:func:`read_settings`), ``before`` None when the group did not exist; ``writes`` the control
    files written; ``attached`` the processes moved in, per hierarchy directory."""

    attached: Mapping[str, Sequence[int]] = field(default_factory=dict)


def ensure_cgroup(
    group: Group,
    desired: CgroupSettings | None,
    *,
    pids: Iterable[int] = (),
    create: bool = True,
    check_mode: bool = False,
    sysfs_root: str = "/sys",
    proc_root: str = "/proc",
    kernel: Kernel = KERNEL,
    rollback: Rollback | None = None,
) -> CgroupChange:
    """Bring ``group`` to ``desired`` (None: remove it) and move ``pids`` into it.

    Validates everything, reads the current values and plans the writes before the first one; writes
    only what differs; creates the group where it is missing (when ``create``; else
    CgroupNotFoundError). A failure undoes what this call did (a new group is removed, written files
    get their old values back) and raises CgroupWriteError; with ``rollback`` given, the undo steps
    are recorded there instead, for the caller to undo together with its other changes. After
    writing, the group is read back: if it does not hold ``desired`` the change is undone and
    CgroupWriteError says what the kernel holds. In check mode nothing is written and ``after``
    is what the group would hold.
    """
    target = group.paths.get("cpu") or next(iter(group.paths.values()), "")
    _refuse_root(group)
    if desired is None:
        return _ensure_absent(group, target, check_mode, kernel)
    settings = resolve_devices(desired, sysfs_root)
    existed = group.exists()
    if not existed and not create:
        raise CgroupNotFoundError(
            f"the group {target} does not exist in every hierarchy",
            fix="check the target; only groups given by path are created",
        )
    before = read_settings(group, settings) if existed else None
    writes = plan_writes(group, settings, sysfs_root)
    attach = pids_to_attach(group, pids, proc_root)
    changed = not existed or bool(writes) or bool(attach)
    if changed and not check_mode:
        undo: contextlib.AbstractContextManager[Rollback] = (
            Rollback() if rollback is None else contextlib.nullcontext(rollback)
        )
        with undo as log:
            if not existed:
                create_group(group, log, kernel=kernel)
                writes = plan_writes(group, settings, sysfs_root)  # after the values a new group inherits
            apply_writes(writes, log, kernel=kernel)
            attach_pids(attach, kernel=kernel)
            _verify(group, settings, sysfs_root)
    exists_now = group.exists()
    after = read_settings(group, settings) if exists_now else planned_settings(settings)
    return CgroupChange(
        target=target,
        before=before,
        after=after,
        changed=changed,
        created=not existed,
        writes=tuple(FileWrite(w.path, w.value) for w in writes),
        attached=attach,
        check_mode=check_mode,
    )


def _refuse_root(group: Group) -> None:
    """The root group is the whole machine's: its knobs are not limits (the kernel refuses most of
    them) and moving processes there takes them out of every limit, so firm never targets it."""
    for controller in group.paths:
        directory = group.dir(controller)
        if os.path.realpath(directory) == os.path.realpath(group.layout.hierarchy(controller).mount):
            raise CgroupInputError(
                f"the target is the root cgroup ({directory}), which firm does not change",
                fix="give the path of a group below the root, e.g. firm/web (an empty path, '.' or a "
                "process of the root group names the root)",
            )


def _verify(group: Group, settings: CgroupSettings, sysfs_root: str) -> None:
    """The kernel accepted every write; check that it holds what was asked (nothing left to write)."""
    left = plan_writes(group, settings, sysfs_root)
    if left:
        held = read_settings(group, settings)
        raise CgroupWriteError(
            f"the kernel accepted the change but {left[0].path} does not hold {left[0].value!r}; "
            f"the group holds {held}",
            fix="check whether another agent (the kubelet, systemd) manages this group",
            left=[w.path for w in left],
        )


def planned_settings(settings: CgroupSettings) -> dict[str, object]:
    """What a group that check mode did not create would hold, in :func:`read_settings`' terms."""
    planned: dict[str, object] = {k: v for k, v in settings.__dict__.items() if v not in (None, ())}
    if settings.disk:
        planned["disk"] = {d.device: d.as_dict() for d in settings.disk}
    return planned


def _ensure_absent(group: Group, target: str, check_mode: bool, kernel: Kernel) -> CgroupChange:
    existed = any(os.path.isdir(d) for d in group.distinct_dirs())
    if existed and not check_mode:
        remove_group(group, kernel=kernel)
    return CgroupChange(
        target=target,
        before={"exists": True} if existed else None,
        after=None,
        changed=existed,
        removed=existed,
        check_mode=check_mode,
    )
