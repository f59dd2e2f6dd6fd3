"""A fake resctrl file system for unit tests, laid out and behaving as the kernel documents.

Layout (Documentation/filesystems/resctrl.rst): ``info/`` with one directory per resource
(``L3`` or, mounted with cdp, ``L3CODE`` and ``L3DATA``; ``MB``; ``L3_MON``) and
``info/last_cmd_status``; the default group's ``schemata``, ``tasks``, ``cpus``, ``cpus_list``,
``mode``, ``mon_groups/`` and ``mon_data/mon_L3_XX/{llc_occupancy,mbm_total_bytes,mbm_local_bytes}``
at the root; one directory per group with the same files. Beside the tree the builder writes the
two other system files the library reads: a mount table (``/proc/mounts``, with the ``cdp`` and
``mba_MBps`` options) and ``/proc/cpuinfo`` (its ``vendor_id`` picks the MB unit), plus a
``/proc/<pid>/task/<tid>`` tree for the processes a test starts.

Why a model and not only files: on a real mount the kernel reacts to three calls, and a plain
directory under tmp_path cannot. ``mkdir`` allocates a CLOSID and creates the group's files,
a write to ``schemata`` is parsed, validated and merged into the group's configuration (a write
names only the domains it changes, the file always reads back complete), a thread id written to
``tasks`` moves the thread out of its old group, ``rmdir`` hands the tasks back to the default
group and frees the CLOSID. The library makes exactly those three calls through
the ``kernel`` it is given (a ``kernel.Kernel``); ``FakeResctrl`` is a ``Kernel`` that performs them
on the tree the way the kernel's rdtgroup.c and ctrlmondata.c do, and tests pass it as
``kernel=fake``. Everything the library reads is a plain file the model keeps current, rendered in
the kernel's own format (resource names right-aligned, values padded to a common width, e.g.
``    MB:0=2048;1=  16``), so parsing is tested against what the kernel prints.

What the model follows from the kernel source: ``cbm_validate`` (hex, range, non-consecutive
1-bits unless sparse, ``min_cbm_bits``), ``bw_validate`` (range, rounding up to
``bandwidth_gran``, no checks under mba_MBps), all lines of one write parsed before any is applied,
except that under mba_MBps an MB value is stored while it is parsed; ``last_cmd_status`` cleared by
each command and set to the kernel's messages; ENOSPC "Out of CLOSIDs" / "Out of RMIDs"; ESRCH
"No task N"; unknown domain ids refused with EINVAL and no message. Groups are always
"shareable": exclusive and pseudo-locked modes and MON groups are not modelled, and the fake
raises NotImplementedError rather than guess if a test reaches them.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

from ansible_collections.firm.core.plugins.module_utils import resctrl
from ansible_collections.firm.core.plugins.module_utils.kernel import Kernel

U32_MAX = 2**32 - 1


@dataclass(frozen=True)
class Platform:
    """What the hardware offers; the builder turns it into info/ and the default schemata."""

    name: str
    vendor_id: str
    cbm_mask: int
    min_cbm_bits: int
    num_closids: int
    """Hardware classes of service; halved for L3CODE/L3DATA when mounted with cdp."""
    domains: tuple[int, ...]
    mb_min: int
    mb_gran: int
    mb_max: int
    mb_width: int
    """The kernel's ``data_width`` for MB: 3 on Intel, 4 on AMD."""
    delay_linear: bool
    sparse_masks: bool = False
    shareable_bits: int = 0
    num_rmids: int = 128
    mon_features: tuple[str, ...] = ("llc_occupancy", "mbm_total_bytes", "mbm_local_bytes")
    cdp: bool = False
    mba_mbps: bool = False
    has_mba: bool = True

    @property
    def cbm_len(self) -> int:
        return self.cbm_mask.bit_length()


# An Intel Xeon Scalable part: 11-way L3 per socket, 16 CLOSIDs, MBA 10..100 % in steps of 10.
INTEL = Platform(
    name="intel",
    vendor_id="GenuineIntel",
    cbm_mask=0x7FF,
    min_cbm_bits=1,
    num_closids=16,
    domains=(0, 1),
    mb_min=10,
    mb_gran=10,
    mb_max=100,
    mb_width=3,
    delay_linear=True,
    shareable_bits=0x600,
    num_rmids=176,
)
# The same part mounted with -o cdp: L3CODE and L3DATA, each with half the CLOSIDs.
INTEL_CDP = replace(INTEL, name="intel-cdp", cdp=True)
# The same part mounted with -o mba_MBps: MB values are MiB/s, unlimited reads U32_MAX.
INTEL_MBPS = replace(INTEL, name="intel-mba-mbps", mba_mbps=True)
# An AMD EPYC: one L3 per CCX (ids 0-3), 16-way, sparse masks allowed and no minimum,
# MB in 1/8 GB/s from 0 to 2048 in steps of 1.
AMD = Platform(
    name="amd",
    vendor_id="AuthenticAMD",
    cbm_mask=0xFFFF,
    min_cbm_bits=0,
    num_closids=16,
    domains=(0, 1, 2, 3),
    mb_min=0,
    mb_gran=1,
    mb_max=2048,
    mb_width=4,
    delay_linear=False,
    sparse_masks=True,
    num_rmids=256,
)
PLATFORMS = (INTEL, INTEL_CDP, INTEL_MBPS, AMD)


@dataclass
class _Group:
    closid: int
    rmid: int
    ctrl: dict[str, dict[int, int]]
    tasks: set[int] = field(default_factory=set)


class FakeResctrl(Kernel):
    """A resctrl mount under ``base``, plus its mount table, cpuinfo and /proc."""

    def __init__(self, base: Path, platform: Platform = INTEL, mounted: bool = True) -> None:
        self.platform = platform
        self.base = base
        self.root_path = base / "resctrl"
        self.proc_path = base / "proc"
        self.mounts_path = base / "mounts"
        self.cpuinfo_path = base / "cpuinfo"
        self.calls: list[tuple[str, str, str]] = []
        """Every kernel call the library made: (operation, path relative to the root, data)."""
        self.status = ""
        self.monitoring: dict[str, dict[int, dict[str, str]]] = {}
        p = platform
        if p.cdp:
            self.caches = {"L3CODE": p.num_closids // 2, "L3DATA": p.num_closids // 2}
        else:
            self.caches = {"L3": p.num_closids}
        self.closids = min([*self.caches.values(), p.num_closids])
        self.groups: dict[str, _Group] = {"/": _Group(closid=0, rmid=0, ctrl=self._initial_ctrl())}
        self._build(mounted)

    # ---------------------------------------------------------------- what tests use directly

    @property
    def root(self) -> str:
        return str(self.root_path)

    def args(self) -> dict[str, str]:
        """The module options that point firm.core.resctrl at this fake."""
        return {
            "resctrl_root": self.root,
            "mounts_file": str(self.mounts_path),
            "cpuinfo_file": str(self.cpuinfo_path),
            "proc_root": str(self.proc_path),
        }

    def read_info(self) -> resctrl.ResctrlInfo:
        return resctrl.read_info(self.root, str(self.mounts_path), str(self.cpuinfo_path))

    def mkdir_group(self, name: str) -> None:
        """Create a group as ``mkdir`` on a real mount would (for tests that need one already)."""
        self.mkdir(str(self.root_path / name))
        self.calls.clear()

    def add_process(self, pid: int, threads: tuple[int, ...] = (), group: str = "/") -> None:
        """A running process with its threads, in ``group``, visible under /proc."""
        for tid in (pid, *threads):
            (self.proc_path / str(pid) / "task" / str(tid)).mkdir(parents=True, exist_ok=True)
            for other in self.groups.values():
                other.tasks.discard(tid)
            self.groups[group].tasks.add(tid)
        self._render()

    def exit_process(self, pid: int) -> None:
        """The process and its threads exit; /proc keeps nothing of them."""
        task_dir = self.proc_path / str(pid) / "task"
        tids = {int(t) for t in os.listdir(task_dir)} if task_dir.is_dir() else {pid}
        for group in self.groups.values():
            group.tasks -= tids
        shutil.rmtree(self.proc_path / str(pid), ignore_errors=True)
        self._render()

    def set_monitoring(self, group: str, domain: int, event: str, value: str) -> None:
        self.monitoring.setdefault(group, {}).setdefault(domain, {})[event] = value
        self._render()

    def ctrl(self, group: str) -> dict[str, dict[int, int]]:
        """The kernel's configuration of ``group`` (not the rendered file)."""
        return {res: dict(vals) for res, vals in self.groups[group].ctrl.items()}

    def tasks(self, group: str) -> set[int]:
        return set(self.groups[group].tasks)

    def snapshot(self) -> dict[str, str]:
        """Every file under the root with its content, to show that nothing changed."""
        out = {}
        for path in sorted(self.root_path.rglob("*")):
            if path.is_file():
                out[str(path.relative_to(self.root_path))] = path.read_text()
        return out

    # ---------------------------------------------------------------- the three kernel calls

    def mkdir(self, path: str) -> None:
        parent, name = os.path.split(path)
        self.calls.append(("mkdir", os.path.relpath(path, self.root), ""))
        if "\n" in name:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), path)
        if os.path.exists(path):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), path)
        if os.path.basename(parent) == "mon_groups":
            raise NotImplementedError("MON groups are not modelled")
        if os.path.realpath(parent) != os.path.realpath(self.root):
            raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), path)
        self.status = ""
        used = {g.closid for g in self.groups.values()}
        free = [c for c in range(self.closids) if c not in used]
        if not free:
            self.status = "Out of CLOSIDs\n"
            self._render()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        rmids = {g.rmid for g in self.groups.values()}
        free_rmids = [r for r in range(self.platform.num_rmids) if r not in rmids]
        if not free_rmids:
            self.status = "Out of RMIDs\n"
            self._render()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        os.mkdir(path)
        self.groups[name] = _Group(closid=free[0], rmid=free_rmids[0], ctrl=self._initial_ctrl())
        self._render()

    def rmdir(self, path: str) -> None:
        self.calls.append(("rmdir", os.path.relpath(path, self.root), ""))
        if os.path.realpath(path) == os.path.realpath(self.root):
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), path)
        if not os.path.isdir(path):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        name = os.path.basename(path)
        if name not in self.groups or os.path.realpath(os.path.dirname(path)) != os.path.realpath(self.root):
            raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), path)
        self.status = ""
        group = self.groups.pop(name)
        self.groups["/"].tasks |= group.tasks
        self.monitoring.pop(name, None)
        shutil.rmtree(path)
        self._render()

    def write(self, path: str, data: str) -> None:
        rel = os.path.relpath(path, self.root)
        self.calls.append(("write", rel, data))
        if not os.path.isfile(path):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        directory, filename = os.path.split(rel)
        group = "/" if directory in ("", ".") else directory
        if group not in self.groups or filename not in ("schemata", "tasks"):
            raise NotImplementedError(f"the fake does not model writes to {rel}")
        try:
            if filename == "schemata":
                self._write_schemata(self.groups[group], data)
            else:
                self._write_tasks(self.groups[group], data)
        finally:
            self._render()

    # ---------------------------------------------------------------- kernel behaviour

    def _initial_ctrl(self) -> dict[str, dict[int, int]]:
        """rdtgroup_init_alloc for shareable groups: every way (shareable bits, bits of shareable
        groups and unused bits together) and the default bandwidth."""
        p = self.platform
        ctrl = {name: dict.fromkeys(p.domains, p.cbm_mask) for name in self.caches}
        if p.has_mba:
            ctrl["MB"] = dict.fromkeys(p.domains, U32_MAX if p.mba_mbps else p.mb_max)
        return ctrl

    def _fail(self, message: str) -> OSError:
        self.status += message + "\n"
        return OSError(errno.EINVAL, os.strerror(errno.EINVAL))

    def _write_schemata(self, group: _Group, data: str) -> None:
        """rdtgroup_schemata_write: parse every line into staged values, then apply them."""
        if not data.endswith("\n"):
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))  # before last_cmd_status is reset
        self.status = ""
        staged: dict[str, dict[int, int]] = {}
        for line in data[:-1].split("\n"):
            resname, sep, tok = line.partition(":")
            resname = resname.strip()
            if not sep:
                raise self._fail("Missing ':'")
            if tok == "":
                raise self._fail(f"Missing '{resname}' value")
            if resname not in group.ctrl:
                raise self._fail(f"Unknown or unsupported resource name '{resname}'")
            self._parse_line(group, resname, tok, staged.setdefault(resname, {}))
        for resname, values in staged.items():
            group.ctrl[resname].update(values)

    def _parse_line(self, group: _Group, resname: str, line: str, staged: dict[int, int]) -> None:
        """parse_line: ``id=value`` items separated by ';' (a trailing ';' is fine)."""
        rest = line
        while rest:
            item, _, rest = rest.partition(";")
            dom_id, eq, value = item.partition("=")
            if not eq or not re.fullmatch(r"\+?[0-9]+", dom_id):
                raise self._fail("Missing '=' or non-numeric domain")
            domain = int(dom_id)
            if domain not in group.ctrl[resname]:
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))  # the kernel says nothing
            if domain in staged:
                raise self._fail(f"Duplicate domain {domain}")
            value = value.strip()
            if resname == "MB":
                bandwidth = self._bw_validate(value)
                if self.platform.mba_mbps:
                    group.ctrl["MB"][domain] = bandwidth  # mbps_val is set while parsing
                else:
                    staged[domain] = bandwidth
            else:
                staged[domain] = self._cbm_validate(value)

    def _cbm_validate(self, text: str) -> int:
        p = self.platform
        if not re.fullmatch(r"(0[xX])?[0-9a-fA-F]+", text):
            raise self._fail(f"Non-hex character in the mask {text}")
        val = int(text, 16)
        if (p.min_cbm_bits > 0 and val == 0) or val > p.cbm_mask:
            raise self._fail("Mask out of range")
        bits = f"{val:0{p.cbm_len}b}"[::-1]  # bit i at index i
        first = bits.find("1") if val else p.cbm_len
        zero = bits.find("0", first) if "0" in bits[first:] else p.cbm_len
        if not p.sparse_masks and "1" in bits[zero:]:
            raise self._fail(f"The mask {val:x} has non-consecutive 1-bits")
        if zero - first < p.min_cbm_bits:
            raise self._fail(f"Need at least {p.min_cbm_bits} bits in the mask")
        return val

    def _bw_validate(self, text: str) -> int:
        p = self.platform
        if not re.fullmatch(r"\+?[0-9]+", text) or int(text) > U32_MAX:
            raise self._fail(f"Invalid MB value {text}")
        bw = int(text)
        if p.mba_mbps:
            return bw
        if bw < p.mb_min or bw > p.mb_max:
            raise self._fail(f"MB value {bw} out of range [{p.mb_min},{p.mb_max}]")
        return -(-bw // p.mb_gran) * p.mb_gran  # roundup(bw, bw_gran)

    def _write_tasks(self, group: _Group, data: str) -> None:
        """rdtgroup_tasks_write: comma-separated ids, moved one by one, stop at the first failure."""
        self.status = ""
        for item in data.strip().split(","):
            text = item.strip()
            if not re.fullmatch(r"-?[0-9]+", text):
                raise self._fail(f"Task list parsing error pid {text}")
            pid = int(text)
            if pid < 0:
                raise self._fail(f"Invalid pid {pid}")
            if pid == 0:
                raise NotImplementedError("pid 0 (the writer itself) is not modelled")
            if not any(pid in g.tasks for g in self.groups.values()):
                self.status = f"No task {pid}\nError while processing task {pid}\n"
                raise OSError(errno.ESRCH, os.strerror(errno.ESRCH))
            for other in self.groups.values():
                other.tasks.discard(pid)
            group.tasks.add(pid)

    # ---------------------------------------------------------------- rendering

    def _render_schemata(self, group: _Group) -> str:
        """show_doms: names right-aligned to the longest, values padded to the widest data_width."""
        p = self.platform
        name_width = max(len(name) for name in group.ctrl)
        cache_width = (p.cbm_len + 3) // 4
        data_width = max(cache_width, p.mb_width if p.has_mba else 0)
        lines = []
        for name, values in group.ctrl.items():
            if name == "MB":
                items = [f"{d}={v:>{data_width}}" for d, v in sorted(values.items())]
            else:
                items = [f"{d}={v:0{data_width}x}" for d, v in sorted(values.items())]
            lines.append(f"{name:>{name_width}}:" + ";".join(items))
        return "".join(line + "\n" for line in lines)

    def _render(self) -> None:
        (self.root_path / "info" / "last_cmd_status").write_text(self.status or "ok\n")
        for name, group in self.groups.items():
            directory = self.root_path if name == "/" else self.root_path / name
            (directory / "schemata").write_text(self._render_schemata(group))
            (directory / "tasks").write_text("".join(f"{t}\n" for t in sorted(group.tasks)))
            for fname, content in (("cpus", "0\n"), ("cpus_list", "\n"), ("mode", "shareable\n")):
                if not (directory / fname).exists():
                    (directory / fname).write_text(content)
            (directory / "mon_groups").mkdir(exist_ok=True)
            for domain in self.platform.domains:
                mon = directory / "mon_data" / f"mon_L3_{domain:02d}"
                mon.mkdir(parents=True, exist_ok=True)
                for event in self.platform.mon_features:
                    value = self.monitoring.get(name, {}).get(domain, {}).get(event, "0")
                    (mon / event).write_text(value + "\n")

    def _build(self, mounted: bool) -> None:
        p = self.platform
        info = self.root_path / "info"
        for name, closids in self.caches.items():
            d = info / name
            d.mkdir(parents=True)
            (d / "cbm_mask").write_text(f"{p.cbm_mask:x}\n")
            (d / "min_cbm_bits").write_text(f"{p.min_cbm_bits}\n")
            (d / "num_closids").write_text(f"{closids}\n")
            (d / "shareable_bits").write_text(f"{p.shareable_bits:x}\n")
            (d / "sparse_masks").write_text("1\n" if p.sparse_masks else "0\n")
            (d / "bit_usage").write_text(";".join(f"{i}=" + "X" * p.cbm_len for i in p.domains) + "\n")
        if p.has_mba:
            d = info / "MB"
            d.mkdir(parents=True)
            (d / "bandwidth_gran").write_text(f"{p.mb_gran}\n")
            (d / "min_bandwidth").write_text(f"{p.mb_min}\n")
            (d / "num_closids").write_text(f"{p.num_closids}\n")
            (d / "delay_linear").write_text("1\n" if p.delay_linear else "0\n")
            if p.vendor_id == "GenuineIntel":
                (d / "thread_throttle_mode").write_text("max\n")
        mon = info / "L3_MON"
        mon.mkdir(parents=True)
        (mon / "mon_features").write_text("".join(f"{f}\n" for f in p.mon_features))
        (mon / "num_rmids").write_text(f"{p.num_rmids}\n")
        (mon / "max_threshold_occupancy").write_text("1048576\n")
        self.proc_path.mkdir(parents=True, exist_ok=True)
        options = ["rw", "relatime"] + (["cdp"] if p.cdp else []) + (["mba_MBps"] if p.mba_mbps else [])
        lines = [
            "sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0",
            "proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0",
        ]
        if mounted:
            mountpoint = str(self.root_path).replace(" ", "\\040")
            lines.append(f"resctrl {mountpoint} resctrl {','.join(options)} 0 0")
        self.mounts_path.write_text("".join(line + "\n" for line in lines))
        self.cpuinfo_path.write_text(
            "".join(
                f"processor\t: {cpu}\nvendor_id\t: {p.vendor_id}\ncpu family\t: 6\n\n" for cpu in range(2)
            )
        )
        self._render()
