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

:class:`OtherWorkMeter` tells, for a whole run, how much of the machine went to work the run does
not account for (another user's job, a build, a backup): busy time less the CPU time of the run's
cgroups (the testbed, the anomalies) and of the run's own processes. An experiment whose policies
met different amounts of it did not compare them under the same conditions.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from ansible_collections.firm.core.plugins.module_utils import cgroup
from ansible_collections.firm.core.plugins.module_utils.errors import FirmError

__all__ = ["CpuLoad", "CpuLoadReader", "OtherWorkMeter", "read_cpu_times"]

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


@dataclass(frozen=True)
class _Tally:
    mono: float
    busy_s: float
    groups_ns: Mapping[str, int]
    ours_s: float


class OtherWorkMeter:
    """Cores of this machine busy with work a run does not account for, over the interval between
    two calls of :meth:`read`: busy time of every CPU (``/proc/stat``, as :class:`CpuLoadReader`),
    plus the time the hypervisor gave the CPUs to something else (steal: a virtual machine's
    neighbours), less the CPU time of

    - ``groups``, cgroup paths below each hierarchy's root with their descendants (cgroup v1's
      ``cpuacct.usage_percpu``; a group made or removed between two reads counts from its making,
      or loses its last interval),
    - the process ``root_pid`` (this one by default) and its descendants, with what they reaped
      (utime, stime, cutime and cstime of ``/proc/PID/stat``, proc(5)), leaving out those in
      ``groups``,
    - the processes ``daemons()`` names (long-lived helpers started elsewhere, e.g. the testbed's
      telemetry sampler).

    Kernel threads (block I/O completion, network softirqs outside a task) and shared servers
    (Redis) count as other work. Every system root is a parameter, so tests can point it at
    prepared trees.
    """

    def __init__(
        self,
        groups: Sequence[str],
        *,
        daemons: Callable[[], Iterable[int]] = tuple,
        root_pid: int | None = None,
        layout: cgroup.Layout | None = None,
        cgroup_root: str = "/sys/fs/cgroup",
        proc_root: str = "/proc",
        ticks_per_s: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.groups = tuple(g.strip("/") for g in groups)
        self.daemons = daemons
        self.root_pid = os.getpid() if root_pid is None else root_pid
        self._layout = layout
        self.cgroup_root = cgroup_root
        self.proc_root = proc_root
        self.ticks_per_s = ticks_per_s or os.sysconf("SC_CLK_TCK")
        self.clock = clock
        self._previous: _Tally | None = None

    def read(self) -> float | None:
        """Cores of other work since the previous call (at least 0); None on the first call (it
        primes), when ``/proc/stat`` cannot be read, or when the interval was under 0.2 s (the
        previous reading kept)."""
        try:
            times = read_cpu_times(self.proc_root).values()
            busy_s = sum(busy + steal for busy, steal in times) / self.ticks_per_s
        except (OSError, ValueError):
            self._previous = None
            return None
        now = _Tally(self.clock(), busy_s, self._groups_ns(), self._ours_s())
        before = self._previous
        if before is not None and now.mono - before.mono < 0.2:
            return None
        self._previous = now
        if before is None:
            return None
        groups_s = 0.0
        for name, used in now.groups_ns.items():
            earlier = before.groups_ns.get(name, 0)
            groups_s += (used - earlier if used >= earlier else used) / 1e9
        other = now.busy_s - before.busy_s - groups_s - max(0.0, now.ours_s - before.ours_s)
        return max(0.0, other / (now.mono - before.mono))

    def _groups_ns(self) -> dict[str, int]:
        """CPU time of each group, nanoseconds (absent groups left out)."""
        out: dict[str, int] = {}
        try:
            layout = self._layout or cgroup.detect_layout(self.cgroup_root)
        except (FirmError, OSError):
            return out
        for name in self.groups:
            try:
                usage = cgroup.read_usage_percpu(cgroup.group_at(layout, name))
            except (FirmError, OSError, ValueError):
                continue
            if usage is not None:
                out[name] = sum(usage)
        return out

    def _ours_s(self) -> float:
        """CPU seconds of the run's own processes (see the class), outside ``groups``."""
        stats = _process_stats(self.proc_root)
        children: dict[int, list[int]] = {}
        for pid, (ppid, _) in stats.items():
            children.setdefault(ppid, []).append(pid)
        ours: set[int] = set()
        todo = [self.root_pid]
        while todo:
            pid = todo.pop()
            if pid in stats and pid not in ours:
                ours.add(pid)
                todo.extend(children.get(pid, ()))
        ours |= {p for p in self.daemons() if p in stats}
        ticks = sum(stats[p][1] for p in ours if not self._in_groups(p))
        return ticks / self.ticks_per_s

    def _in_groups(self, pid: int) -> bool:
        try:
            with open(os.path.join(self.proc_root, str(pid), "cgroup"), encoding="utf-8") as handle:
                paths = [line.rstrip("\n").split(":", 2)[-1].strip("/") for line in handle]
        except OSError:
            return False
        return any(p == g or p.startswith(g + "/") for p in paths for g in self.groups)


def _process_stats(proc_root: str) -> dict[int, tuple[int, int]]:
    """Every process's parent and CPU ticks with its reaped children's (utime + stime + cutime +
    cstime), from ``/proc/PID/stat`` (proc(5); the name may hold spaces and parentheses, so the
    fields are read after its last ``)``)."""
    out: dict[int, tuple[int, int]] = {}
    try:
        entries = os.listdir(proc_root)
    except OSError:
        return out
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(os.path.join(proc_root, entry, "stat"), encoding="utf-8", errors="replace") as handle:
                line = handle.read()
            fields = line[line.rfind(")") + 2 :].split()
            out[int(entry)] = (int(fields[1]), sum(int(v) for v in fields[11:15]))
        except (OSError, ValueError, IndexError):  # it ended meanwhile, or a line cut short
            continue
    return out
