"""Per CPU of this machine: how busy it is, and how much of that is work outside the managed instances.

The control loop places instances away from CPUs that other work keeps busy (a noisy neighbour, a
batch job, an anomaly): on such a CPU an instance waits for its turn however large its quota.
Each instance's own telemetry shows *that* it waits (``Sample.cpu_wait_s_per_s``); which CPU the
wait comes from is a figure of the node, read here:

- ``busy``: CPU time spent in user, nice, system, irq and softirq mode (guest time is counted in
  user), from the ``cpuN`` lines of ``/proc/stat`` (proc(5)), in cores over the interval;
- ``managed``: the part of it the managed instances used, from ``cpuacct.usage_percpu`` of their
  common parent group (cgroup v1, :func:`cgroup.read_usage_percpu`);
- ``foreign`` = busy - managed (never below 0): the work the loop does not control;
- ``steal``: time the hypervisor ran something else while this CPU wanted to run.

Only the CPUs of the parent's cpuset are reported (the ones instances may be placed on). cgroup v2
keeps no per-CPU usage of a group: there, and on any machine without the files, :meth:`read`
returns None and placement is left to the other actions.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ansible_collections.firm.core.plugins.module_utils import cgroup
from ansible_collections.firm.core.plugins.module_utils.errors import FirmError

__all__ = ["CpuLoad", "CpuLoadReader", "read_cpu_times"]

_BUSY_FIELDS = (0, 1, 2, 5, 6)
"""user, nice, system, irq, softirq among a ``cpuN`` line's fields (proc(5))."""
_STEAL_FIELD = 7


@dataclass(frozen=True)
class CpuLoad:
    """One CPU over one interval, in cores (1.0: busy the whole interval)."""

    cpu: int
    busy: float
    managed: float
    steal: float

    @property
    def foreign(self) -> float:
        """Busy with work outside the managed instances, cores (busy - managed, at least 0)."""
        return max(0.0, self.busy - self.managed)

    def as_dict(self) -> dict[str, float | int]:
        return {
            "cpu": self.cpu,
            "busy": round(self.busy, 4),
            "managed": round(self.managed, 4),
            "foreign": round(self.foreign, 4),
            "steal": round(self.steal, 4),
        }


def read_cpu_times(proc_root: str = "/proc") -> dict[int, tuple[int, int]]:
    """Per CPU, (busy, steal) in clock ticks since boot, from ``/proc/stat``'s ``cpuN`` lines
    (``SC_CLK_TCK`` ticks a second). Raises ``OSError`` when the file cannot be read."""
    out: dict[int, tuple[int, int]] = {}
    with open(os.path.join(proc_root, "stat"), encoding="ascii") as handle:
        for line in handle:
            if not line.startswith("cpu") or line.startswith("cpu "):
                continue
            name, *fields = line.split()
            if not name[3:].isdigit() or len(fields) <= _STEAL_FIELD:
                continue
            values = [int(v) for v in fields]
            out[int(name[3:])] = (sum(values[i] for i in _BUSY_FIELDS), values[_STEAL_FIELD])
    return out


@dataclass(frozen=True)
class _Reading:
    mono: float
    ticks: Mapping[int, tuple[int, int]]
    managed_ns: list[int]


class CpuLoadReader:
    """Per-CPU load over the interval between two calls of :meth:`read`.

    ``parent`` is the cgroup path (below each hierarchy's root) that holds every managed instance,
    e.g. ``firm-testbed``. Every system root is a parameter, so tests can point it at a prepared
    tree.
    """

    def __init__(
        self,
        parent: str,
        *,
        layout: cgroup.Layout | None = None,
        cgroup_root: str = "/sys/fs/cgroup",
        proc_root: str = "/proc",
        ticks_per_s: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.parent = parent.strip("/")
        self._layout = layout
        self.cgroup_root = cgroup_root
        self.proc_root = proc_root
        self.ticks_per_s = ticks_per_s or os.sysconf("SC_CLK_TCK")
        self.clock = clock
        self._previous: _Reading | None = None

    def read(self) -> dict[int, CpuLoad] | None:
        """Each CPU of the parent's cpuset over the interval since the previous call, by CPU
        number; None on the first call (it primes), where the figures cannot be read (cgroup v2,
        no cpuacct, the parent gone) or when the interval was too short to measure (under 0.2 s,
        the previous reading kept)."""
        try:
            layout = self._layout or cgroup.detect_layout(self.cgroup_root)
            group = cgroup.group_at(layout, self.parent)
            managed = cgroup.read_usage_percpu(group)
            cpus = _cpuset(group)
            ticks = read_cpu_times(self.proc_root)
        except (FirmError, OSError, ValueError):
            self._previous = None
            return None
        if managed is None:
            return None
        now = _Reading(self.clock(), ticks, managed)
        before = self._previous
        if before is not None and now.mono - before.mono < 0.2:
            return None
        self._previous = now
        if before is None:
            return None
        seconds = now.mono - before.mono
        out: dict[int, CpuLoad] = {}
        for cpu in cpus if cpus is not None else sorted(ticks):
            if (
                cpu not in ticks
                or cpu not in before.ticks
                or cpu >= min(len(managed), len(before.managed_ns))
            ):
                continue
            busy = (ticks[cpu][0] - before.ticks[cpu][0]) / self.ticks_per_s / seconds
            steal = (ticks[cpu][1] - before.ticks[cpu][1]) / self.ticks_per_s / seconds
            used = (managed[cpu] - before.managed_ns[cpu]) / 1e9 / seconds
            out[cpu] = CpuLoad(cpu, max(0.0, busy), max(0.0, used), max(0.0, steal))
        return out or None


def _cpuset(group: cgroup.Group) -> list[int] | None:
    """The CPUs of ``group``'s cpuset (None without a cpuset hierarchy)."""
    if "cpuset" not in group.layout.hierarchies:
        return None
    text = str(cgroup.read_settings(group, cgroup.CgroupSettings(cpuset_cpus="0"))["cpuset_cpus"])
    return cgroup.parse_list(text, "cpuset") if text.strip() else None
