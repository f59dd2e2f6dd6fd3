"""Fake cgroup trees, laid out and behaving as the kernel documents.

A real cgroupfs creates a group's interface files on mkdir and removes them on rmdir (which fails
with EBUSY while processes are inside), and keeps one throttle rule per device in the blkio files
(a v1 rule written as 0, a v2 rule of nothing but ``max``, is deleted). ``FakeCgroupRoot`` is a
``kernel.Kernel`` that does that below its root; tests pass it to the library as ``kernel=fake``.
Everything else is plain files with the kernel's default contents
(Documentation/admin-guide/cgroup-v1/*.rst, cgroup-v2.rst).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from ansible_collections.firm.core.plugins.module_utils.kernel import Kernel

V1_UNLIMITED_MEMORY = "9223372036854771712"

V1_FILES: dict[str, dict[str, str]] = {
    "cpu": {
        "cpu.cfs_quota_us": "-1",
        "cpu.cfs_period_us": "100000",
        "cpu.shares": "1024",
        "cpu.stat": "nr_periods 0\nnr_throttled 0\nthrottled_time 0",
    },
    "cpuacct": {"cpuacct.usage": "0", "cpuacct.usage_percpu": "0 0 0 0 "},
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": ""},
    "blkio": {
        "blkio.throttle.read_bps_device": "",
        "blkio.throttle.write_bps_device": "",
        "blkio.throttle.read_iops_device": "",
        "blkio.throttle.write_iops_device": "",
        "blkio.throttle.io_service_bytes": "Total 0",
    },
    "memory": {"memory.limit_in_bytes": V1_UNLIMITED_MEMORY, "memory.usage_in_bytes": "0"},
    "pids": {"pids.current": "0", "pids.max": "max"},
}

V2_GROUP_FILES = {
    "cpu.max": "max 100000",
    "cpu.weight": "100",
    "cpu.stat": "usage_usec 0\nuser_usec 0\nsystem_usec 0\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0",
    "cpuset.cpus": "",
    "cpuset.mems": "",
    "cpuset.cpus.effective": "0-3",
    "cpuset.mems.effective": "0",
    "io.max": "",
    "io.stat": "",
    "memory.max": "max",
    "memory.current": "0",
    "pids.current": "0",
    "cgroup.subtree_control": "",
    "cgroup.controllers": "",
}


def _write(path: Path, content: str) -> None:
    path.write_text(content + ("\n" if content else ""))


class FakeCgroupRoot(Kernel):
    """A cgroup root under ``tmp_path``: ``v1`` (hybrid, as on this project's test machines) or ``v2``."""

    def __init__(self, root: Path, version: int, cpus: str = "0-3", comount_cpu: bool = False) -> None:
        self.root = root
        self.version = version
        self.cpus = cpus
        self.comount_cpu = comount_cpu
        if version == 1:
            self._build_v1()
        else:
            self._build_v2()

    # layout ---------------------------------------------------------------------------------------
    def _build_v1(self) -> None:
        for controller in V1_FILES:
            if self.comount_cpu and controller in ("cpu", "cpuacct"):
                continue
            self._populate_v1(self.root / controller, root_group=True)
        if self.comount_cpu:
            both = self.root / "cpu,cpuacct"
            self._populate_v1(both, root_group=True)
            (self.root / "cpu").symlink_to("cpu,cpuacct")
            (self.root / "cpuacct").symlink_to("cpu,cpuacct")
        unified = self.root / "unified"
        unified.mkdir()
        _write(unified / "cgroup.controllers", "hugetlb")
        _write(unified / "cgroup.procs", "")

    def _controllers_of(self, directory: Path) -> list[str]:
        name = directory.resolve().relative_to(self.root.resolve()).parts[0]
        return name.split(",")

    def _populate_v1(self, directory: Path, root_group: bool = False) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        _write(directory / "cgroup.procs", "")
        _write(directory / "tasks", "")
        for controller in self._controllers_of(directory):
            for name, content in V1_FILES[controller].items():
                _write(directory / name, content)
        if root_group and "cpuset" in self._controllers_of(directory):
            _write(directory / "cpuset.cpus", self.cpus)
            _write(directory / "cpuset.mems", "0")

    def _build_v2(self) -> None:
        self.root.mkdir(exist_ok=True)
        _write(self.root / "cgroup.controllers", "cpuset cpu io memory pids")
        _write(self.root / "cgroup.subtree_control", "")
        _write(self.root / "cgroup.procs", "")
        _write(self.root / "cpuset.cpus.effective", self.cpus)
        _write(self.root / "cpuset.mems.effective", "0")
        _write(self.root / "cpu.stat", V2_GROUP_FILES["cpu.stat"])

    def _populate_v2(self, directory: Path) -> None:
        # The library writes "+cpu +io ..."; a kernel folds that into its set, which a file cannot.
        tokens = (directory.parent / "cgroup.subtree_control").read_text().split()
        parent_enabled = [t.lstrip("+") for t in tokens if not t.startswith("-")]
        for name, content in V2_GROUP_FILES.items():
            controller = name.split(".")[0]
            delegated = (
                controller not in ("cpu", "cpuset", "io", "memory", "pids") or controller in parent_enabled
            )
            if not delegated and name != "cpu.stat":  # cpu.stat exists in every v2 group
                continue
            _write(directory / name, content)
        _write(directory / "cgroup.controllers", " ".join(parent_enabled))
        _write(directory / "cgroup.procs", "")

    # kernel behaviour -----------------------------------------------------------------------------
    def owns(self, path: str) -> bool:
        real = os.path.realpath(path)
        return real.startswith(os.path.realpath(self.root) + os.sep)

    def mkdir(self, path: str) -> None:
        """What the kernel does on mkdir in a cgroup hierarchy."""
        if not self.owns(path):
            os.mkdir(path)
            return
        directory = Path(path)
        os.mkdir(path)
        if self.version == 1:
            self._populate_v1(directory)
        else:
            self._populate_v2(directory)

    def rmdir(self, path: str) -> None:
        """rmdir on cgroupfs: EBUSY with sub-groups or processes, else the files vanish with it."""
        if not self.owns(path):
            os.rmdir(path)
            return
        directory = Path(path)
        if any(p.is_dir() for p in directory.iterdir()) or (directory / "cgroup.procs").read_text().strip():
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), path)
        for child in directory.iterdir():
            child.unlink()
        os.rmdir(path)

    def write(self, path: str, data: str) -> None:
        """A write to a control file; the blkio throttle files keep one rule per device."""
        name = os.path.basename(path)
        if self.owns(path) and (name.startswith("blkio.throttle.") or name == "io.max") and data.strip():
            data = _merge_rule(Path(path).read_text(), data, v2=name == "io.max")
        super().write(path, data)

    def group(self, relative: str, controller: str = "cpu") -> Path:
        """The directory of a group in one controller's hierarchy."""
        base = self.root if self.version == 2 else self.root / controller
        return base / relative

    def make_group(self, relative: str) -> None:
        """Create a group (and its parents) in every hierarchy, as a kernel would."""
        bases = [self.root] if self.version == 2 else sorted({(self.root / c).resolve() for c in V1_FILES})
        for base in bases:
            path = Path(base)
            for part in relative.split("/"):
                if self.version == 2:  # as systemd or the kubelet delegates to the groups they make
                    _write(path / "cgroup.subtree_control", "cpu cpuset io memory pids")
                path = path / part
                if not path.exists():
                    self.mkdir(str(path))


_V2_IO_KEYS = ("rbps", "wbps", "riops", "wiops")


def _merge_rule(current: str, written: str, v2: bool) -> str:
    """The content of a blkio throttle file after one rule is written, as the kernel keeps it."""
    device, *values = written.split()
    rules = {line.split()[0]: line.split()[1:] for line in current.splitlines() if line.strip()}
    if v2:
        old = dict(pair.split("=", 1) for pair in rules.get(device, []))
        keys = {key: old.get(key, "max") for key in _V2_IO_KEYS}
        keys.update(dict(pair.split("=", 1) for pair in values))
        rules[device] = [f"{key}={keys[key]}" for key in _V2_IO_KEYS]
        if all(value == "max" for value in keys.values()):
            del rules[device]
    elif values == ["0"]:
        rules.pop(device, None)
    else:
        rules[device] = values
    return "".join(f"{dev} {' '.join(rest)}\n" for dev, rest in sorted(rules.items()))


def fake_block_devices(sysfs: Path) -> Path:
    """``/sys/dev/block`` with a disk 8:0 and its partition 8:1 (a partition's parent is its disk)."""
    disk = sysfs / "devices" / "virtual" / "block" / "sda"
    part = disk / "sda1"
    part.mkdir(parents=True)
    _write(disk / "dev", "8:0")
    _write(part / "dev", "8:1")
    _write(part / "partition", "1")
    links = sysfs / "dev" / "block"
    links.mkdir(parents=True)
    (links / "8:0").symlink_to(disk)
    (links / "8:1").symlink_to(part)
    return sysfs
