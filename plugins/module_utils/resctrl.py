# Copyright: firm developers
# Apache License 2.0 (see galaxy.yml)
"""resctrl: last-level cache (CAT, CDP) and memory bandwidth (MBA) allocation groups.

The kernel's interface is the resctrl file system (Documentation/filesystems/resctrl.rst, formerly
Documentation/arch/x86/resctrl.rst). A group is a top-level directory with a class of service
(CLOSID); its ``schemata`` holds one line per resource (``L3:0=7ff;1=7ff``, ``L3CODE``/``L3DATA``
with CDP, ``MB:0=100;1=100``), its ``tasks`` the thread ids that use it, and ``mon_data`` the
monitoring counters. The root directory is the default group.

This module reads what the hardware offers (``info/``), checks a request against the kernel's rules
before anything is written, writes only the domains that differ, and undoes a change that fails part
way. It has no Ansible in it: ``firm.core.resctrl`` and the controller both call it.

Rules enforced before writing (the kernel's own checks, in ctrlmondata.c ``cbm_validate`` and
``bw_validate``):

- cache masks: within ``info/<res>/cbm_mask``; one run of 1s unless ``info/<res>/sparse_masks`` is 1;
  that run at least ``min_cbm_bits`` long; 0 only when ``min_cbm_bits`` is 0.
- MB in percent (Intel, and any CPU that is not AMD): ``min_bandwidth`` to 100 and a multiple of
  ``bandwidth_gran`` (the kernel would silently round up and the value would read back different).
- MB on AMD/Hygon: multiples of 1/8 GB/s, 0 to 2048 (``MAX_MBA_BW_AMD``; a larger value already
  shown by the default group raises this bound).
- MB with the ``mba_MBps`` mount option: MiB/s, 0 to 2**32-1, not rounded.
- no more groups than CLOSIDs (the smallest ``num_closids`` of the allocation resources, the default
  group included).

Every kernel change goes through a :class:`kernel.Kernel` (mkdir, rmdir, one write(2) each), given as the
``kernel`` keyword; unit tests give a model of the kernel (``tests/unit/plugins/resctrl_tree.py``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ansible_collections.firm.core.plugins.module_utils.errors import (
    FirmError,
    InvalidInputError,
    KernelWriteError,
    NotFoundError,
)
from ansible_collections.firm.core.plugins.module_utils.kernel import KERNEL, Change, FileWrite, Kernel
from ansible_collections.firm.core.plugins.module_utils.sysfs import Rollback, read_text

RESCTRL_ROOT = "/sys/fs/resctrl"
MOUNTS_FILE = "/proc/mounts"
CPUINFO_FILE = "/proc/cpuinfo"
PROC_ROOT = "/proc"

DEFAULT_GROUP = "/"
"""The name firm uses for the default (root) group, which owns every task not in another group."""

MOUNT_COMMAND = "mount -t resctrl resctrl /sys/fs/resctrl"
RESERVED_NAMES = ("info", "mon_groups", "mon_data")
NAME_MAX = 255

UNIT_PERCENT = "percent"
UNIT_AMD = "1/8 GB/s"
UNIT_MBPS = "MiB/s"
AMD_MAX_BANDWIDTH = 2048
"""``MAX_MBA_BW_AMD``: 2048 x 1/8 GB/s = 256 GB/s, the value of an unthrottled domain."""
MBPS_MAX = 2**32 - 1
"""``MBA_MAX_MBPS`` (U32_MAX): what an unlimited domain reads in mba_MBps mode."""

MON_EVENTS = ("llc_occupancy", "mbm_total_bytes", "mbm_local_bytes")


class ResctrlInputError(InvalidInputError):
    """A resctrl request broke one of the kernel's rules; nothing was written."""


class ResctrlNotFoundError(NotFoundError):
    """resctrl is not mounted where expected, or a group or resource does not exist."""


class ResctrlWriteError(KernelWriteError):
    """The kernel refused a resctrl change; ``details`` say what was rolled back."""


@dataclass(frozen=True)
class CacheInfo:
    """One cache allocation resource (``info/L3``, or ``info/L3CODE`` and ``info/L3DATA`` with CDP)."""

    resource: str
    cbm_mask: int
    """The mask that means the whole cache (all ways)."""
    min_cbm_bits: int
    """The fewest consecutive 1s a mask may have."""
    num_closids: int
    shareable_bits: int
    """Ways that devices (I/O) may also use."""
    sparse_masks: bool
    """Whether masks may have several runs of 1s (``info/<res>/sparse_masks``; AMD: yes)."""
    domains: tuple[int, ...]
    """Cache ids, from the default group's schemata."""

    @property
    def cbm_len(self) -> int:
        return self.cbm_mask.bit_length()

    def as_dict(self) -> dict[str, Any]:
        return {
            "cbm_mask": f"{self.cbm_mask:x}",
            "cbm_len": self.cbm_len,
            "min_cbm_bits": self.min_cbm_bits,
            "num_closids": self.num_closids,
            "shareable_bits": f"{self.shareable_bits:x}",
            "sparse_masks": self.sparse_masks,
            "domains": list(self.domains),
        }


@dataclass(frozen=True)
class MbaInfo:
    """Memory bandwidth allocation (``info/MB``) and the unit its schemata values are in."""

    min_bandwidth: int
    bandwidth_gran: int
    max_bandwidth: int
    num_closids: int
    delay_linear: bool | None
    unit: str
    """``percent`` (Intel and others), ``1/8 GB/s`` (AMD, Hygon) or ``MiB/s`` (mounted with mba_MBps)."""
    domains: tuple[int, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "min_bandwidth": self.min_bandwidth,
            "bandwidth_gran": self.bandwidth_gran,
            "max_bandwidth": self.max_bandwidth,
            "num_closids": self.num_closids,
            "delay_linear": self.delay_linear,
            "unit": self.unit,
            "domains": list(self.domains),
        }


@dataclass(frozen=True)
class MonInfo:
    """L3 monitoring (``info/L3_MON``)."""

    features: tuple[str, ...]
    num_rmids: int

    def as_dict(self) -> dict[str, Any]:
        return {"features": list(self.features), "num_rmids": self.num_rmids}


@dataclass(frozen=True)
class ResctrlInfo:
    """What a mounted resctrl offers on this machine."""

    root: str
    vendor: str
    """``intel``, ``amd`` (AMD and Hygon) or ``unknown``, from /proc/cpuinfo."""
    cdp: bool
    """L3 code/data prioritisation is on (mounted with ``-o cdp``): L3CODE and L3DATA replace L3."""
    mba_mbps: bool
    """Mounted with ``-o mba_MBps``: MB values are MiB/s."""
    mount_options: tuple[str, ...]
    caches: Mapping[str, CacheInfo]
    mba: MbaInfo | None
    mon: MonInfo | None
    num_closids: int
    """How many groups may exist, the default group included (0 when there is no allocation)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "vendor": self.vendor,
            "cdp": self.cdp,
            "mba_mbps": self.mba_mbps,
            "mount_options": list(self.mount_options),
            "num_closids": self.num_closids,
            "caches": {name: cache.as_dict() for name, cache in self.caches.items()},
            "mb": self.mba.as_dict() if self.mba else None,
            "monitoring": self.mon.as_dict() if self.mon else None,
        }


def is_cache_resource(resource: str) -> bool:
    """Cache resources (L2, L3 and their CODE/DATA halves) take hex masks; the others decimals."""
    return resource.startswith(("L2", "L3"))


def format_value(resource: str, value: int) -> str:
    return f"{value:x}" if is_cache_resource(resource) else str(value)


def format_line(resource: str, values: Mapping[int, int]) -> str:
    """A schemata line, e.g. ``L3:0=7f0;1=7ff``."""
    return resource + ":" + ";".join(f"{d}={format_value(resource, values[d])}" for d in sorted(values))


@dataclass(frozen=True)
class Schemata:
    """A parsed ``schemata`` file: resource -> domain id -> value (a mask, or a bandwidth)."""

    values: Mapping[str, Mapping[int, int]]

    def lines(self) -> list[str]:
        return [format_line(resource, domains) for resource, domains in self.values.items()]

    def text(self) -> str:
        return "".join(line + "\n" for line in self.lines())

    def get(self, resource: str, domain: int) -> int | None:
        return self.values.get(resource, {}).get(domain)

    def merged(self, changes: Mapping[str, Mapping[int, int]]) -> Schemata:
        values = {resource: dict(domains) for resource, domains in self.values.items()}
        for resource, domains in changes.items():
            values.setdefault(resource, {}).update(domains)
        return Schemata(values)

    def as_dict(self) -> dict[str, dict[str, int | str]]:
        """JSON-friendly: masks as hex strings (as the kernel shows them), bandwidths as integers."""
        out: dict[str, dict[str, int | str]] = {}
        for resource, domains in self.values.items():
            out[resource] = {
                str(d): (f"{v:x}" if is_cache_resource(resource) else v) for d, v in sorted(domains.items())
            }
        return out


def parse_schemata(text: str, source: str = "schemata") -> Schemata:
    """Parse what the kernel shows; names and values may be padded (``    MB:0=2048;1=  16``)."""
    values: dict[str, dict[int, int]] = {}
    for raw in text.splitlines():
        if not raw.strip():
            continue
        name, sep, rest = raw.partition(":")
        resource = name.strip()
        if not sep or not resource:
            raise FirmError(f"cannot parse {source} line {raw!r}", fix="check that resctrl is mounted there")
        base = 16 if is_cache_resource(resource) else 10
        domains: dict[int, int] = {}
        for part in rest.split(";"):
            if not part.strip():
                continue
            dom, _, value = part.partition("=")
            try:
                domains[int(dom.strip())] = int(value.strip(), base)
            except ValueError as exc:
                raise FirmError(
                    f"cannot parse {source} line {raw!r} (a pseudo-locked group shows 'uninitialized')",
                    fix="firm manages shareable groups only; leave pseudo-locked groups alone",
                ) from exc
        values[resource] = domains
    return Schemata(values)


# --------------------------------------------------------------------------------------------
# Mount, vendor and info/
# --------------------------------------------------------------------------------------------


def _unescape_mount_field(field: str) -> str:
    """/proc/mounts escapes space, tab, newline and backslash as octal (``\\040``)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_options(root: str = RESCTRL_ROOT, mounts_file: str = MOUNTS_FILE) -> tuple[str, ...]:
    """The options of the resctrl mounted at ``root``; ResctrlNotFoundError when none is."""
    try:
        with open(mounts_file, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        raise ResctrlNotFoundError(
            f"cannot read {mounts_file} to check that resctrl is mounted: {exc.strerror}",
            fix="give mounts_file the path of the mount table (normally /proc/mounts)",
        ) from exc
    real_root = os.path.realpath(root)
    found: tuple[str, ...] | None = None
    elsewhere: list[str] = []
    for line in lines:
        fields = line.split()
        if len(fields) < 4 or fields[2] != "resctrl":
            continue
        mountpoint = _unescape_mount_field(fields[1])
        if os.path.realpath(mountpoint) == real_root:
            found = tuple(fields[3].split(","))  # a later mount on the same point hides earlier ones
        else:
            elsewhere.append(mountpoint)
    if found is not None:
        return found
    if elsewhere:
        raise ResctrlNotFoundError(
            f"{root} is not a mounted resctrl; resctrl is mounted at {', '.join(elsewhere)}",
            fix=f"set resctrl_root to {elsewhere[-1]}, or mount it at {root}: "
            f"mount -t resctrl resctrl {root}",
        )
    raise ResctrlNotFoundError(
        f"{root} is not a mounted resctrl file system ({mounts_file} lists no resctrl mount there)",
        fix=f"mount it: {MOUNT_COMMAND} (add -o cdp for code/data prioritisation, -o mba_MBps for "
        "bandwidth in MiB/s); if the mount fails, this CPU or kernel has no RDT/PQoS: look for "
        "rdt_a, cat_l3 and mba in /proc/cpuinfo and for resctrl in /proc/filesystems",
    )


def read_vendor(cpuinfo_file: str = CPUINFO_FILE) -> str:
    """``intel``, ``amd`` (AMD and Hygon share the MBA unit) or ``unknown``."""
    try:
        with open(cpuinfo_file, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, sep, value = line.partition(":")
                if sep and key.strip() == "vendor_id":
                    return {"GenuineIntel": "intel", "AuthenticAMD": "amd", "HygonGenuine": "amd"}.get(
                        value.strip(), "unknown"
                    )
    except OSError:
        pass
    return "unknown"


def _read_int(path: str, base: int = 10) -> int:
    text = read_text(path)
    try:
        return int(text, base)
    except ValueError as exc:
        raise FirmError(
            f"{path} reads {text!r}, not a number", fix="check that resctrl is mounted there"
        ) from exc


def _read_optional(path: str) -> str | None:
    return read_text(path) if os.path.isfile(path) else None


def read_info(
    root: str = RESCTRL_ROOT, mounts_file: str = MOUNTS_FILE, cpuinfo_file: str = CPUINFO_FILE
) -> ResctrlInfo:
    """Check that resctrl is mounted at ``root`` and read what it offers.

    The mount table is always consulted (tests give a fake one): it holds the ``mba_MBps`` option,
    which nothing under info/ shows. Domain ids come from the default group's schemata.
    """
    options = mount_options(root, mounts_file)
    info_dir = os.path.join(root, "info")
    if not os.path.isdir(info_dir):
        raise ResctrlNotFoundError(
            f"{root} is mounted as resctrl but has no info/ directory",
            fix=f"remount it: umount {root} && mount -t resctrl resctrl {root}",
        )
    root_schemata_path = os.path.join(root, "schemata")
    root_schemata = (
        parse_schemata(read_text(root_schemata_path), root_schemata_path)
        if os.path.isfile(root_schemata_path)
        else Schemata({})
    )
    vendor = read_vendor(cpuinfo_file)
    mba_mbps = "mba_MBps" in options
    caches: dict[str, CacheInfo] = {}
    mba: MbaInfo | None = None
    mon: MonInfo | None = None
    for entry in sorted(os.listdir(info_dir)):
        path = os.path.join(info_dir, entry)
        if not os.path.isdir(path):
            continue
        domains = tuple(sorted(root_schemata.values.get(entry, {})))
        if os.path.isfile(os.path.join(path, "cbm_mask")):
            shareable = _read_optional(os.path.join(path, "shareable_bits"))
            sparse = _read_optional(os.path.join(path, "sparse_masks"))
            caches[entry] = CacheInfo(
                resource=entry,
                cbm_mask=_read_int(os.path.join(path, "cbm_mask"), 16),
                min_cbm_bits=_read_int(os.path.join(path, "min_cbm_bits")),
                num_closids=_read_int(os.path.join(path, "num_closids")),
                shareable_bits=int(shareable, 16) if shareable else 0,
                # Without the file (older kernels) only AMD accepted sparse masks.
                sparse_masks=(sparse == "1") if sparse is not None else vendor == "amd",
                domains=domains,
            )
        elif entry == "MB":
            delay = _read_optional(os.path.join(path, "delay_linear"))
            if mba_mbps:
                unit, maximum = UNIT_MBPS, MBPS_MAX
            elif vendor == "amd":
                shown = list(root_schemata.values.get("MB", {}).values())
                unit, maximum = UNIT_AMD, max([AMD_MAX_BANDWIDTH, *shown])
            else:
                unit, maximum = UNIT_PERCENT, 100
            mba = MbaInfo(
                min_bandwidth=_read_int(os.path.join(path, "min_bandwidth")),
                bandwidth_gran=max(1, _read_int(os.path.join(path, "bandwidth_gran"))),
                max_bandwidth=maximum,
                num_closids=_read_int(os.path.join(path, "num_closids")),
                delay_linear=(delay == "1") if delay is not None else None,
                unit=unit,
                domains=domains,
            )
        elif entry == "L3_MON":
            features = _read_optional(os.path.join(path, "mon_features")) or ""
            mon = MonInfo(
                features=tuple(features.split()),
                num_rmids=_read_int(os.path.join(path, "num_rmids")),
            )
    closid_counts = [cache.num_closids for cache in caches.values()]
    if mba is not None:
        closid_counts.append(mba.num_closids)
    return ResctrlInfo(
        root=root,
        vendor=vendor,
        cdp="L3CODE" in caches,
        mba_mbps=mba_mbps,
        mount_options=options,
        caches=caches,
        mba=mba,
        mon=mon,
        num_closids=min(closid_counts) if closid_counts else 0,
    )


# --------------------------------------------------------------------------------------------
# Groups
# --------------------------------------------------------------------------------------------


def check_group_name(name: str) -> None:
    """Reject names the kernel refuses or that would leave the resctrl root."""
    if name == DEFAULT_GROUP:
        return
    fix = f"give a plain directory name such as 'web' or 'batch', or {DEFAULT_GROUP!r} for the default group"
    if not name:
        raise ResctrlInputError("the group name is empty", fix=fix)
    if "/" in name:
        raise ResctrlInputError(
            f"group name {name!r} contains '/': resctrl groups are top-level directories "
            f"(monitoring subgroups are not managed here)",
            fix=fix,
        )
    if name in (".", ".."):
        raise ResctrlInputError(f"group name {name!r} is not a directory name", fix=fix)
    if "\n" in name or "\0" in name:
        raise ResctrlInputError(
            f"group name {name!r} contains a newline or NUL, which the kernel refuses", fix=fix
        )
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):  # as cgroup paths (sysfs.confined_path)
        raise ResctrlInputError(f"group name {name!r} contains a control character", fix=fix)
    if name in RESERVED_NAMES:
        raise ResctrlInputError(f"group name {name!r} is one of resctrl's own directories", fix=fix)
    if len(name.encode("utf-8")) > NAME_MAX:
        raise ResctrlInputError(f"group name is longer than {NAME_MAX} bytes", fix=fix)


def group_path(root: str, name: str) -> str:
    check_group_name(name)
    return root if name == DEFAULT_GROUP else os.path.join(root, name)


def group_exists(root: str, name: str) -> bool:
    return os.path.isdir(group_path(root, name))


def list_groups(root: str = RESCTRL_ROOT) -> list[str]:
    """The groups below the default group (top-level directories other than resctrl's own)."""
    return sorted(
        entry
        for entry in os.listdir(root)
        if entry not in RESERVED_NAMES
        and os.path.isdir(os.path.join(root, entry))
        and not os.path.islink(os.path.join(root, entry))
    )


def num_closids(root: str = RESCTRL_ROOT) -> int:
    """The smallest ``num_closids`` over the allocation resources (0 without allocation)."""
    info_dir = os.path.join(root, "info")
    counts = [
        _read_int(os.path.join(info_dir, entry, "num_closids"))
        for entry in (os.listdir(info_dir) if os.path.isdir(info_dir) else [])
        if os.path.isfile(os.path.join(info_dir, entry, "num_closids"))
    ]
    return min(counts) if counts else 0


def last_cmd_status(root: str) -> str:
    """The kernel's reason for the last refused command ("" when it says "ok" or cannot be read)."""
    try:
        status = read_text(os.path.join(root, "info", "last_cmd_status"))
    except FirmError:
        return ""
    return "" if status == "ok" else " / ".join(line for line in status.splitlines() if line)


_ERRNO_FIXES = {
    errno.ENOSPC: "free a class of service or monitoring id: remove a group that is no longer needed "
    "(state=absent), or let several services share one group",
    errno.EBUSY: "monitoring ids freed recently are still in limbo; wait a few seconds and retry, or raise "
    "info/L3_MON/max_threshold_occupancy",
    errno.ESRCH: "the task exited before it could be moved; run again with the current pids",
    errno.EPERM: "run as root (the kernel lets only root or the task's owner move a task)",
    errno.EACCES: "run as root",
    errno.ENOENT: "the group was removed while being changed; run again",
}


def _kernel_error(root: str, action: str, exc: OSError) -> ResctrlWriteError:
    code = exc.errno or 0
    reason = last_cmd_status(root)
    message = f"the kernel refused {action}: {exc.strerror or os.strerror(code)} ({errno.errorcode.get(code, code)})"
    if reason:
        message += f"; info/last_cmd_status says: {reason}"
    fix = _ERRNO_FIXES.get(
        code, "check the value against the limits under info/ and the rules in docs/resctrl.md"
    )
    return ResctrlWriteError(message, fix=fix, errno=code, last_cmd_status=reason)


def check_can_create(root: str, name: str, info: ResctrlInfo | None = None) -> None:
    """Refuse, before any mkdir, a group the kernel could not give a class of service to."""
    limit = info.num_closids if info is not None else num_closids(root)
    if limit == 0:
        raise ResctrlNotFoundError(
            f"resctrl at {root} has no allocation resource (no info/L3 or info/MB): only monitoring",
            fix="this CPU cannot partition cache or bandwidth; firm cannot create groups here",
        )
    groups = list_groups(root)
    if len(groups) + 1 >= limit:
        raise ResctrlInputError(
            f"cannot create group {name!r}: all {limit} classes of service (CLOSIDs) are used by the "
            f"default group and {', '.join(groups)}",
            fix="remove a group that is no longer needed (state=absent), or let several services share a group",
            num_closids=limit,
            groups=groups,
        )


def create_group(root: str, name: str, *, kernel: Kernel = KERNEL) -> bool:
    """Create a group; False if it already exists. Checks the CLOSID limit first."""
    path = group_path(root, name)
    if os.path.isdir(path):
        return False
    check_can_create(root, name)
    try:
        kernel.mkdir(path)
    except OSError as exc:
        raise _kernel_error(root, f"mkdir {path}", exc) from exc
    return True


def remove_group(root: str, name: str, *, kernel: Kernel = KERNEL) -> bool:
    """Remove a group (the kernel moves its tasks to the default group); False if absent."""
    if name == DEFAULT_GROUP:
        raise ResctrlInputError(
            "the default group cannot be removed", fix="remove only groups that firm created"
        )
    path = group_path(root, name)
    if not os.path.isdir(path):
        return False
    try:
        kernel.rmdir(path)
    except OSError as exc:
        raise _kernel_error(root, f"rmdir {path}", exc) from exc
    return True


def read_schemata(root: str, name: str) -> Schemata:
    path = os.path.join(group_path(root, name), "schemata")
    return parse_schemata(read_text(path), path)


def initial_schemata(info: ResctrlInfo) -> Schemata:
    """What a new group starts with while every group is shareable: all ways, unthrottled."""
    values: dict[str, dict[int, int]] = {
        cache.resource: dict.fromkeys(cache.domains, cache.cbm_mask) for cache in info.caches.values()
    }
    if info.mba is not None:
        values["MB"] = dict.fromkeys(info.mba.domains, info.mba.max_bandwidth)
    return Schemata(values)


# --------------------------------------------------------------------------------------------
# Validation and planning
# --------------------------------------------------------------------------------------------


def check_mask(cache: CacheInfo, mask: int) -> str | None:
    """The kernel's ``cbm_validate``, as a sentence saying what is wrong and what would do."""
    res = cache.resource
    if mask < 0:
        return f"mask {mask} is negative"
    if mask & ~cache.cbm_mask:
        return (
            f"mask {mask:#x} sets bits outside info/{res}/cbm_mask {cache.cbm_mask:#x} "
            f"({cache.cbm_len} ways); use bits within {cache.cbm_mask:#x}"
        )
    if mask == 0:
        if cache.min_cbm_bits > 0:
            return f"mask 0 leaves no cache; info/{res}/min_cbm_bits asks for at least {cache.min_cbm_bits} bit(s)"
        return None
    low = (mask & -mask).bit_length() - 1
    run = 0
    while mask >> (low + run) & 1:
        run += 1
    if not cache.sparse_masks and mask >> (low + run):
        covering = ((1 << (mask.bit_length() - low)) - 1) << low
        return (
            f"mask {mask:#x} ({mask:b}) has non-contiguous 1-bits; this CPU needs one run of 1s "
            f"(info/{res}/sparse_masks is not 1), e.g. {covering:#x}"
        )
    if run < cache.min_cbm_bits:
        need = (1 << cache.min_cbm_bits) - 1
        example = need << low if (need << low) & ~cache.cbm_mask == 0 else need
        return (
            f"mask {mask:#x} has {run} consecutive bit(s); info/{res}/min_cbm_bits asks for at least "
            f"{cache.min_cbm_bits}, e.g. {example:#x}"
        )
    return None


def check_bandwidth(mba: MbaInfo, value: int) -> str | None:
    """The kernel's ``bw_validate``, stricter on granularity so that values read back unchanged."""
    if mba.unit == UNIT_MBPS:
        if not 0 <= value <= MBPS_MAX:
            return (
                f"bandwidth {value} is not a MiB/s value in 0..{MBPS_MAX} (resctrl is mounted with mba_MBps)"
            )
        return None
    if value < mba.min_bandwidth or value > mba.max_bandwidth:
        if mba.unit == UNIT_AMD:
            return (
                f"bandwidth {value} is outside {mba.min_bandwidth}..{mba.max_bandwidth}; AMD counts in "
                f"1/8 GB/s (16 = 2 GB/s, {mba.max_bandwidth} = unthrottled)"
            )
        return f"bandwidth {value} is outside info/MB/min_bandwidth {mba.min_bandwidth} .. {mba.max_bandwidth} percent"
    gran = mba.bandwidth_gran
    if value % gran:
        lower = value - value % gran
        upper = lower + gran
        choices = f"{lower} or {upper}" if lower >= mba.min_bandwidth else f"{upper}"
        return (
            f"bandwidth {value} is not a multiple of info/MB/bandwidth_gran {gran}: the kernel would "
            f"round it up to {upper}, which then reads back different on every run; ask for {choices}"
        )
    return None


def _check_resource(info: ResctrlInfo, resource: str, values: Mapping[int, int]) -> list[str]:
    problems: list[str] = []
    if resource in info.caches:
        cache = info.caches[resource]
        for domain in sorted(values):
            if domain not in cache.domains:
                problems.append(
                    f"{resource}: there is no cache id {domain}; the cache ids here are "
                    f"{', '.join(map(str, cache.domains)) or 'none'}"
                )
                continue
            problem = check_mask(cache, values[domain])
            if problem:
                problems.append(f"{resource} cache id {domain}: {problem}")
    elif resource == "MB" and info.mba is not None:
        for domain in sorted(values):
            if domain not in info.mba.domains:
                problems.append(
                    f"MB: there is no domain {domain}; the MB domains here are "
                    f"{', '.join(map(str, info.mba.domains)) or 'none'}"
                )
                continue
            problem = check_bandwidth(info.mba, values[domain])
            if problem:
                problems.append(f"MB domain {domain}: {problem}")
    else:
        problems.append(_missing_resource(info, resource))
    return problems


def _missing_resource(info: ResctrlInfo, resource: str) -> str:
    if resource in ("L3CODE", "L3DATA") and "L3" in info.caches:
        return (
            f"{resource} needs code/data prioritisation: remount with -o cdp (umount {info.root} && "
            f"mount -t resctrl -o cdp resctrl {info.root}); the CPU must list cdp_l3 in /proc/cpuinfo"
        )
    if resource == "L3" and info.cdp:
        return "resctrl is mounted with cdp, so L3 is split: set l3_code and l3_data (or l3 for both)"
    if resource == "MB":
        return "this system has no memory bandwidth allocation (no info/MB): the CPU lacks MBA"
    known = ", ".join([*info.caches, *(["MB"] if info.mba else [])]) or "none"
    return f"this system has no {resource} allocation (no info/{resource}); resources here: {known}"


def plan_schemata(
    info: ResctrlInfo, current: Schemata, wanted: Mapping[str, Mapping[int, int]]
) -> dict[str, str]:
    """Validate ``wanted`` and return the schemata lines to write, only the domains that differ.

    Raises ResctrlInputError listing every problem; the result is ordered caches first, MB last.
    """
    problems: list[str] = []
    for resource, values in wanted.items():
        problems.extend(_check_resource(info, resource, values))
    if problems:
        raise ResctrlInputError(
            "invalid resctrl request: " + "; ".join(problems),
            fix=f"correct the values above; the limits of this CPU are under {info.root}/info",
            problems=problems,
        )
    order = [*info.caches, "MB"]
    lines: dict[str, str] = {}
    for resource in sorted(wanted, key=order.index):
        differ = {d: v for d, v in wanted[resource].items() if current.get(resource, d) != v}
        if differ:
            lines[resource] = format_line(resource, differ)
    return lines


def parse_mask(value: object) -> int:
    """A cache mask: an integer, or hex text as the kernel writes it (``7f0`` or ``0x7f0``)."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*(0[xX])?[0-9a-fA-F]+\s*", value):
        return int(value.strip(), 16)
    raise ValueError(value)


def parse_decimal(value: object) -> int:
    """A bandwidth or a domain id: an integer, or decimal text."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(
        r"\s*[0-9]+\s*", value
    ):  # ASCII: other scripts' digits are not numbers here
        return int(value.strip())
    raise ValueError(value)


def _expand(
    option: str,
    value: object,
    domains: Sequence[int],
    *,
    parse: Callable[[object], int],
    kind: str,
    problems: list[str],
) -> dict[int, int]:
    """One value for every domain, or a mapping domain id -> value."""
    if isinstance(value, Mapping):
        out: dict[int, int] = {}
        for key, item in value.items():
            try:
                domain = parse_decimal(key)
            except ValueError:
                problems.append(f"{option}: domain id {key!r} is not a number")
                continue
            try:
                out[domain] = parse(item)
            except ValueError:
                problems.append(f"{option}: {item!r} for domain {domain} is not {kind}")
        return out
    try:
        parsed = parse(value)
    except ValueError:
        problems.append(f"{option}: {value!r} is not {kind} (nor a mapping of domain id to {kind})")
        return {}
    return dict.fromkeys(domains, parsed)


def build_request(
    info: ResctrlInfo, l3: object = None, l3_code: object = None, l3_data: object = None, mb: object = None
) -> dict[str, dict[int, int]]:
    """Turn user options into ``{resource: {domain: value}}`` for ``plan_schemata``.

    ``l3`` sets L3, or both L3CODE and L3DATA when resctrl is mounted with cdp. A single value
    applies to every domain; a mapping sets only the domains it names.
    """
    problems: list[str] = []
    request: dict[str, dict[int, int]] = {}
    mask_kind = "a cache mask (hex text like '7f0', or an integer)"
    if l3 is not None and (l3_code is not None or l3_data is not None):
        problems.append("give either l3 or l3_code/l3_data, not both")
    if l3 is not None:
        targets = ["L3CODE", "L3DATA"] if info.cdp else ["L3"]
        for resource in targets:
            if resource not in info.caches:
                problems.append(_missing_resource(info, resource))
                continue
            request[resource] = _expand(
                "l3", l3, info.caches[resource].domains, parse=parse_mask, kind=mask_kind, problems=problems
            )
    for option, value, resource in (("l3_code", l3_code, "L3CODE"), ("l3_data", l3_data, "L3DATA")):
        if value is None:
            continue
        if resource not in info.caches:
            problems.append(_missing_resource(info, resource))
            continue
        request[resource] = _expand(
            option, value, info.caches[resource].domains, parse=parse_mask, kind=mask_kind, problems=problems
        )
    if mb is not None:
        if info.mba is None:
            problems.append(_missing_resource(info, "MB"))
        else:
            kind = f"a bandwidth in {info.mba.unit}"
            request["MB"] = _expand(
                "mb", mb, info.mba.domains, parse=parse_decimal, kind=kind, problems=problems
            )
    if problems:
        raise ResctrlInputError(
            "invalid resctrl request: " + "; ".join(problems),
            fix="see the option descriptions (ansible-doc firm.core.resctrl) and docs/resctrl.md",
            problems=problems,
        )
    return request


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def write_schemata(root: str, name: str, lines: Mapping[str, str], *, kernel: Kernel = KERNEL) -> None:
    """Write the given lines in one write(2) and undo what the kernel kept if it refused.

    The kernel parses every line of a write before it applies any, so a refused line normally
    leaves the group as it was. With mba_MBps, though, an MB value is stored while it is parsed:
    a later line that fails leaves it changed. This compares the group before and after a refused
    write and restores whatever moved.
    """
    if not lines:
        return
    path = os.path.join(group_path(root, name), "schemata")
    before = read_schemata(root, name)
    data = "".join(line + "\n" for line in lines.values())
    try:
        kernel.write(path, data)
    except OSError as exc:
        error = _kernel_error(root, f"{data.strip()!r} in {path}", exc)
        _restore_schemata(root, name, before, error, kernel)
        raise error from exc


def _restore_schemata(
    root: str, name: str, before: Schemata, error: ResctrlWriteError, kernel: Kernel
) -> None:
    try:
        after = read_schemata(root, name)
    except FirmError as exc:
        error.details["rollback_failures"] = [str(exc)]
        return
    restore: dict[str, str] = {}
    for resource, domains in before.values.items():
        moved = {d: v for d, v in domains.items() if after.get(resource, d) != v}
        if moved:
            restore[resource] = format_line(resource, moved)
    if not restore:
        return
    path = os.path.join(group_path(root, name), "schemata")
    try:
        kernel.write(path, "".join(line + "\n" for line in restore.values()))
        error.details["rolled_back"] = list(restore.values())
    except OSError as exc:
        error.details["rollback_failures"] = [f"restoring {list(restore.values())}: {exc.strerror}"]


def read_tasks(root: str, name: str) -> set[int]:
    text = read_text(os.path.join(group_path(root, name), "tasks"))
    return {int(line) for line in text.split() if line.isdigit()}


def task_owners(root: str) -> dict[int, str]:
    """Which group each task id is in (tasks of no other group are in the default group)."""
    owners = dict.fromkeys(read_tasks(root, DEFAULT_GROUP), DEFAULT_GROUP)
    for group in list_groups(root):
        for task in read_tasks(root, group):
            owners[task] = group
    return owners


def task_ids(pids: Iterable[object], proc_root: str = PROC_ROOT, all_threads: bool = True) -> list[int]:
    """The thread ids to write for ``pids``: resctrl moves one thread per id written.

    With ``all_threads`` every thread of each process (``/proc/<pid>/task``) is included, so that a
    multi-threaded service moves as a whole; threads it starts later inherit the group.
    """
    problems: list[str] = []
    out: list[int] = []
    for pid in pids:
        if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
            problems.append(f"pid {pid!r} is not a positive process id (0 would mean the writer itself)")
            continue
        proc = os.path.join(proc_root, str(pid))
        if not os.path.isdir(proc):
            problems.append(f"there is no process {pid} ({proc} does not exist)")
            continue
        tids = [pid]
        if all_threads:
            try:
                tids = sorted(int(t) for t in os.listdir(os.path.join(proc, "task")) if t.isdigit()) or [pid]
            except OSError:
                tids = [pid]
        out.extend(t for t in tids if t not in out)
    if problems:
        raise ResctrlInputError(
            "invalid pids: " + "; ".join(problems),
            fix="give the ids of running processes (e.g. from the container runtime); they may have exited",
            problems=problems,
        )
    return out


def _write_task(root: str, name: str, task: int, kernel: Kernel) -> None:
    path = os.path.join(group_path(root, name), "tasks")
    try:
        kernel.write(path, f"{task}\n")
    except OSError as exc:
        raise _kernel_error(root, f"moving task {task} to {path}", exc) from exc


def assign_pids(
    root: str, name: str, pids: Sequence[int], rollback: Rollback | None = None, *, kernel: Kernel = KERNEL
) -> list[int]:
    """Write each id not yet in the group to its ``tasks``, one id per write; returns those written.

    If the kernel refuses one, the ids already moved go back to their previous groups (through
    ``rollback`` when the caller gives one, so that it can undo its own earlier steps too).
    """
    members = read_tasks(root, name)
    todo = [pid for pid in pids if pid not in members]
    if not todo:
        return []
    owners = task_owners(root)
    undo = rollback if rollback is not None else Rollback()
    try:
        for task in todo:
            _write_task(root, name, task, kernel)
            undo.record(_mover(root, owners.get(task, DEFAULT_GROUP), task, kernel))
    except FirmError as exc:
        if rollback is None:
            failures = undo.undo()
            if failures:
                exc.details["rollback_failures"] = failures
        raise
    return todo


def _mover(root: str, group: str, task: int, kernel: Kernel) -> Callable[[], None]:
    def move_back() -> None:
        _write_task(root, group, task, kernel)

    return move_back


def read_monitoring(root: str, name: str) -> dict[int, dict[str, int | str]]:
    """Per L3 domain, each event file of ``mon_data/mon_L3_XX`` (bytes, or the kernel's word)."""
    mon_data = os.path.join(group_path(root, name), "mon_data")
    result: dict[int, dict[str, int | str]] = {}
    if not os.path.isdir(mon_data):
        return result
    for entry in sorted(os.listdir(mon_data)):
        match = re.fullmatch(r"mon_L3_(\d+)", entry)
        if not match:
            continue
        directory = os.path.join(mon_data, entry)
        values: dict[str, int | str] = {}
        for event in sorted(os.listdir(directory)):
            path = os.path.join(directory, event)
            if not os.path.isfile(path):
                continue  # mon_sub_L3_YY directories (Sub-NUMA Clustering) are summed in the file
            try:
                text = read_text(path)
            except FirmError:
                text = "Error"
            values[event] = int(text) if text.isdigit() else text
        result[int(match.group(1))] = values
    return result


# --------------------------------------------------------------------------------------------
# One call for a whole group: what the module and the controller use
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class GroupChange(Change[Schemata]):
    """What :func:`ensure_group` did (or, in check mode, would do): ``before`` the group's schemata
    (None when it did not exist), ``after`` what it holds now (predicted in check mode), ``writes``
    the schemata and tasks writes."""

    name: str
    lines: Mapping[str, str]
    """Schemata lines written (only the domains that differed)."""
    moved: tuple[int, ...]
    """Task ids written to ``tasks``."""


def ensure_group(
    info: ResctrlInfo,
    name: str,
    request: Mapping[str, Mapping[int, int]],
    tasks: Sequence[int] = (),
    check_mode: bool = False,
    *,
    kernel: Kernel = KERNEL,
    rollback: Rollback | None = None,
) -> GroupChange:
    """Make group ``name`` exist with ``request`` in its schemata and ``tasks`` in it.

    Everything is validated before the first write. If a later step fails, the earlier ones are
    undone: moved tasks go back, schemata values are restored, a group created here is removed
    (with ``rollback`` given, those undo steps are recorded there instead, for the caller). After
    writing, the schemata is read back; when it does not hold ``request`` the change is undone and
    ResctrlWriteError says what the kernel holds.
    """
    root = info.root
    exists = group_exists(root, name)
    before = read_schemata(root, name) if exists else None
    base = before if before is not None else initial_schemata(info)
    lines = plan_schemata(info, base, request)
    members = read_tasks(root, name) if exists else set()
    moves = tuple(task for task in tasks if task not in members)
    if not exists:
        check_can_create(root, name, info)
    if check_mode:
        return _group_change(root, name, before, base.merged(request), lines, moves, not exists, check_mode)
    undo: contextlib.AbstractContextManager[Rollback] = (
        Rollback() if rollback is None else contextlib.nullcontext(rollback)
    )
    with undo as log:
        if not exists:
            create_group(root, name, kernel=kernel)
            log.record(_remover(root, name, kernel))
            lines = plan_schemata(info, read_schemata(root, name), request)
        if lines:
            previous = read_schemata(root, name)
            write_schemata(root, name, lines, kernel=kernel)
            log.record(_restorer(root, name, previous, request, kernel))
        assign_pids(root, name, moves, rollback=log, kernel=kernel)
        after = read_schemata(root, name)
        _verify(root, name, after, request)
    return _group_change(root, name, before, after, lines, moves, not exists, check_mode)


def _group_change(
    root: str,
    name: str,
    before: Schemata | None,
    after: Schemata,
    lines: Mapping[str, str],
    moves: tuple[int, ...],
    created: bool,
    check_mode: bool,
) -> GroupChange:
    directory = group_path(root, name)
    writes = [FileWrite(os.path.join(directory, "schemata"), line) for line in lines.values()]
    writes += [FileWrite(os.path.join(directory, "tasks"), str(task)) for task in moves]
    return GroupChange(
        target=name,
        name=name,
        before=before,
        after=after,
        changed=created or bool(lines) or bool(moves),
        writes=tuple(writes),
        created=created,
        lines=lines,
        moved=moves,
        check_mode=check_mode,
    )


def _verify(root: str, name: str, after: Schemata, request: Mapping[str, Mapping[int, int]]) -> None:
    """The kernel accepted the writes; check that the schemata holds every requested value."""
    wrong = [
        f"{resource}:{domain}={format_value(resource, value)} (holds "
        f"{'nothing' if after.get(resource, domain) is None else format_value(resource, after.get(resource, domain) or 0)})"
        for resource, domains in request.items()
        for domain, value in domains.items()
        if after.get(resource, domain) != value
    ]
    if wrong:
        raise ResctrlWriteError(
            f"the kernel accepted the change of {group_path(root, name)} but does not hold "
            f"{', '.join(wrong)}",
            fix="check whether another tool (e.g. pqos, a kubelet plugin) manages this group",
        )


def _remover(root: str, name: str, kernel: Kernel) -> Callable[[], None]:
    def remove() -> None:
        remove_group(root, name, kernel=kernel)

    return remove


def _restorer(
    root: str, name: str, previous: Schemata, request: Mapping[str, Mapping[int, int]], kernel: Kernel
) -> Callable[[], None]:
    def restore() -> None:
        values = {
            resource: {d: v for d, v in previous.values.get(resource, {}).items() if d in domains}
            for resource, domains in request.items()
        }
        lines = {resource: format_line(resource, vals) for resource, vals in values.items() if vals}
        path = os.path.join(group_path(root, name), "schemata")
        try:
            kernel.write(path, "".join(line + "\n" for line in lines.values()))
        except OSError as exc:
            raise _kernel_error(root, f"restoring {path}", exc) from exc

    return restore


def ensure_absent(root: str, name: str, check_mode: bool = False, *, kernel: Kernel = KERNEL) -> bool:
    """Remove group ``name`` if it exists; True if it existed."""
    if name == DEFAULT_GROUP:
        raise ResctrlInputError(
            "the default group cannot be removed",
            fix="use state=present on the default group to change its schemata, or name another group",
        )
    if not group_exists(root, name):
        return False
    if not check_mode:
        remove_group(root, name, kernel=kernel)
    return True
