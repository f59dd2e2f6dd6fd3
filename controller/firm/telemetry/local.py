"""Samples of instances on this machine: cgroup counters (through the actuation library) and network bytes.

A :class:`LocalCollector` turns two readings of an instance's cumulative counters into a
:class:`Sample` of rates over the interval between them. The first reading of an instance only
primes it; a counter that went backwards (the group was recreated) primes it again.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

from ansible_collections.firm.core.plugins.module_utils import cgroup
from ansible_collections.firm.core.plugins.module_utils.errors import FirmError, NotFoundError
from firm.telemetry.model import Instance, Sample, TelemetryError
from firm.telemetry.net import NamespaceReader, NetUnavailableError, read_host_interface

log = logging.getLogger(__name__)


class InstanceGoneError(TelemetryError):
    """The instance's cgroup does not exist (any more)."""


@dataclass(frozen=True)
class Counters:
    """Cumulative counters of an instance at one moment."""

    mono: float
    """time.monotonic() of the reading."""
    wall: float
    """time.time() of the reading."""
    stats: cgroup.CgroupStats
    net_rx_bytes: int | None
    net_tx_bytes: int | None
    run_delays: Mapping[int, int] | None = None
    """Per task of the group, nanoseconds spent waiting for a CPU (``cgroup.read_run_delays``)."""


class LocalCollector:
    """Reads instances' counters on this machine; remembers the last reading of each instance.

    Every system root is a parameter, so tests can point it at a prepared tree.
    """

    def __init__(
        self,
        layout: cgroup.Layout | None = None,
        *,
        cgroup_root: str = "/sys/fs/cgroup",
        sysfs_root: str = "/sys",
        proc_root: str = "/proc",
        netns_dir: str = "/run/netns",
        ip_command: str = "ip",
    ) -> None:
        self._layout = layout
        self.cgroup_root = cgroup_root
        self.sysfs_root = sysfs_root
        self.proc_root = proc_root
        self.netns_dir = netns_dir
        self.ip_command = ip_command
        # Keyed by the whole description: an instance renamed or moved starts afresh.
        self._groups: dict[Instance, cgroup.Group] = {}
        self._netns: dict[Instance, NamespaceReader] = {}
        self._previous: dict[Instance, Counters] = {}
        self._net_warned: set[str] = set()
        self._disk_accounting = False

    @property
    def layout(self) -> cgroup.Layout:
        if self._layout is None:
            self._layout = cgroup.detect_layout(self.cgroup_root)
        return self._layout

    def forget(self, name: str) -> None:
        """Drop what is remembered of an instance (its next reading primes it again)."""
        for cache in (self._groups, self._netns, self._previous):
            for instance in [i for i in cache if i.name == name]:
                del cache[instance]
        self._net_warned.discard(name)

    def sample(self, instance: Instance) -> Sample | None:
        """The rates since the previous reading of ``instance``; None when this reading only primes it.

        Raises :class:`InstanceGoneError` when its cgroup does not exist.
        """
        now = self.read(instance)
        before = self._previous.get(instance)
        self._previous[instance] = now
        if before is None:
            return None
        return rates(instance, before, now)

    def read(self, instance: Instance) -> Counters:
        """The cumulative counters of ``instance`` now."""
        if not self._disk_accounting:
            self._disk_accounting = True
            self._enable_disk_accounting()
        group = self._group(instance)
        try:
            stats = cgroup.read_stats(group)
        except FirmError:
            # A controller's directory vanished since the group was resolved: resolve it again.
            self._groups.pop(instance, None)
            group = self._group(instance)
            try:
                stats = cgroup.read_stats(group)
            except FirmError as exc:
                raise InstanceGoneError(
                    f"cgroup {instance.cgroup_path} of {instance.name} cannot be read: {exc}",
                    fix="check that the instance still runs",
                ) from exc
        mono, wall = time.monotonic(), time.time()
        try:
            delays = cgroup.read_run_delays(group, self.proc_root)
        except FirmError:
            delays = None
        net = self._read_net(instance, group)
        rx, tx = net if net is not None else (None, None)
        return Counters(mono, wall, stats, rx, tx, delays)

    def _enable_disk_accounting(self) -> None:
        """Without it, cgroup v1 reads 0 disk bytes on a fresh boot (``cgroup.enable_disk_accounting``)."""
        try:
            enabled = cgroup.enable_disk_accounting(self.layout, self.sysfs_root)
        except FirmError as exc:
            log.warning("disk bytes may read 0: %s", exc)
            return
        if enabled:
            log.info("cgroup v1 disk accounting enabled on %s", ", ".join(enabled))

    def _group(self, instance: Instance) -> cgroup.Group:
        """The instance's group, limited to the hierarchies in which its directory exists."""
        group = self._groups.get(instance)
        if group is not None:
            return group
        layout = self.layout
        try:
            full = cgroup.group_at(layout, instance.cgroup_path)
        except FirmError as exc:
            raise InstanceGoneError(
                f"cgroup path {instance.cgroup_path} of {instance.name}: {exc}",
                fix="give a path below the cgroup root",
            ) from exc
        present = {name: h for name, h in layout.hierarchies.items() if os.path.isdir(full.dir(name))}
        if not present:
            raise InstanceGoneError(
                f"cgroup {instance.cgroup_path} of {instance.name} does not exist",
                fix="check that the instance runs and its cgroup path is right",
            )
        group = cgroup.group_at(cgroup.Layout(layout.root, present), instance.cgroup_path)
        self._groups[instance] = group
        return group

    def _read_net(self, instance: Instance, group: cgroup.Group) -> tuple[int, int] | None:
        if instance.namespace is None and instance.interface is None:
            return None
        try:
            if instance.namespace is None:
                assert instance.interface is not None
                counters = read_host_interface(instance.interface, self.sysfs_root)
            else:
                reader = self._netns.get(instance)
                if reader is None:
                    reader = self._netns[instance] = NamespaceReader(
                        instance.namespace,
                        instance.interface,
                        netns_dir=self.netns_dir,
                        proc_root=self.proc_root,
                        ip_command=self.ip_command,
                    )
                counters = reader.read(lambda: _group_pids(group))
        except NetUnavailableError as exc:
            if instance.name not in self._net_warned:
                log.warning("no network figures for %s: %s", instance.name, exc)
                self._net_warned.add(instance.name)
            return None
        if instance.name in self._net_warned:
            log.info("network figures for %s are back", instance.name)
            self._net_warned.discard(instance.name)
        return counters

    def subprocess_reads(self) -> int:
        """How many namespace readings needed ``ip`` (no process of the instance was in the namespace)."""
        return sum(r.subprocess_reads for r in self._netns.values())


def _group_pids(group: cgroup.Group) -> list[int]:
    try:
        directory = group.distinct_dirs()[0]
        with open(os.path.join(directory, "cgroup.procs")) as handle:
            return [int(p) for p in handle.read().split()]
    except (OSError, IndexError, NotFoundError, ValueError):
        return []


def _delta(before: int | None, after: int | None) -> int | None:
    if before is None or after is None:
        return None
    return after - before


def rates(instance: Instance, before: Counters, after: Counters) -> Sample | None:
    """The sample between two readings; None when a counter went backwards or no time passed."""
    interval = after.mono - before.mono
    if interval <= 0:
        return None
    b, a = before.stats, after.stats
    deltas = {
        "cpu": _delta(b.cpu_usage_ns, a.cpu_usage_ns),
        "periods": _delta(b.cpu_periods, a.cpu_periods),
        "throttled": _delta(b.cpu_throttled_periods, a.cpu_throttled_periods),
        "throttled_ns": _delta(b.cpu_throttled_ns, a.cpu_throttled_ns),
        "read": _delta(b.disk_read_bytes, a.disk_read_bytes),
        "write": _delta(b.disk_write_bytes, a.disk_write_bytes),
        "rx": _delta(before.net_rx_bytes, after.net_rx_bytes),
        "tx": _delta(before.net_tx_bytes, after.net_tx_bytes),
    }
    if any(d is not None and d < 0 for d in deltas.values()):
        return None
    waited = (
        cgroup.run_delay_growth(before.run_delays, after.run_delays)
        if before.run_delays is not None and after.run_delays is not None
        else None
    )

    def per_s(value: int | None, scale: float = 1.0) -> float | None:
        return None if value is None else value * scale / interval

    periods, throttled = deltas["periods"], deltas["throttled"]
    if periods is None or throttled is None:
        throttled_ratio = None
    else:
        throttled_ratio = throttled / periods if periods > 0 else 0.0
    return Sample(
        instance=instance.name,
        service=instance.service,
        timestamp=after.wall,
        interval_s=interval,
        cpu_cores=per_s(deltas["cpu"], 1e-9),
        cpu_throttled_ratio=throttled_ratio,
        cpu_throttled_s_per_s=per_s(deltas["throttled_ns"], 1e-9),
        memory_bytes=a.memory_bytes,
        disk_read_bps=per_s(deltas["read"]),
        disk_write_bps=per_s(deltas["write"]),
        net_rx_bps=per_s(deltas["rx"]),
        net_tx_bps=per_s(deltas["tx"]),
        pids=a.pids,
        cpu_wait_s_per_s=per_s(waited, 1e-9),
    )
