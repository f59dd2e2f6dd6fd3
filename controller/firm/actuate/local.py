"""The local executor: applies a step's actions on this machine through the actuation library.

Each resource goes through the one implementation of its knob in ``plugins/module_utils``:

| resource | knob | unit |
| --- | --- | --- |
| ``cpu`` | CFS bandwidth: quota = cores x the group's period (``inf``: no quota); a cpuset too small for the quota, and any cpuset on a raise, is widened with the parent's next CPU(s), unless the same step sets the instance's ``cpuset`` | cores |
| ``cpu_weight`` | ``cpu.weight`` (v2) / ``cpu.shares`` (v1) | v2 weight, 1..10000 |
| ``cpuset`` | ``cpuset.cpus`` | CPU list |
| ``disk_io`` | read and write throttles of the instance's disk (``inf``: none) | bytes/s |
| ``network`` | a TBF root qdisc on the instance's host-side veth (``inf``: none) | bit/s |
| ``llc`` | resctrl group ``<prefix><instance>``: an L3 mask of that many low ways | ways |
| ``memory_bandwidth`` | the same group's MB line (Intel percent; AMD converted from percent of 2048) | percent |

The host-side veth's egress is what the instance *receives*; the testbed's network anomalies
shape the other end (inside the namespace), so the two never fight over one qdisc.

resctrl is used only where it is mounted and offers L3 / MB; elsewhere ``llc`` and
``memory_bandwidth`` are not in :meth:`LocalExecutor.resources` (the caller masks them).

A step is one unit: every action is validated and planned (reads only) before the first write;
then the writes go in order with an undo log (cgroup restorers, the previous qdisc, the previous
schemata or the group's removal), and a failure undoes everything already written. An action
whose value is in place writes nothing.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ansible_collections.firm.core.plugins.module_utils import cgroup, resctrl, tc
from ansible_collections.firm.core.plugins.module_utils.errors import FirmError
from ansible_collections.firm.core.plugins.module_utils.kernel import KERNEL, Kernel
from ansible_collections.firm.core.plugins.module_utils.sysfs import Rollback, read_text
from firm.actuate.executor import Action, Applied, ExecutorError, Snapshot, StepResult, Value

log = logging.getLogger(__name__)

CGROUP_RESOURCES = frozenset({"cpu", "cpu_weight", "cpuset"})
RESCTRL_RESOURCES = frozenset({"llc", "memory_bandwidth"})


@dataclass(frozen=True)
class LocalTarget:
    """Where one instance's knobs are on this machine."""

    name: str
    """Instance name."""
    service: str
    """Its service."""
    cgroup: str
    """Its group's path below each hierarchy's root, e.g. ``firm-testbed/compose-post-0``."""
    interface: str | None = None
    """Host-side end of its veth (shaped on egress), or None: no ``network`` resource."""
    namespace: str | None = None
    """Namespace of ``interface`` (None: the host's)."""
    disk_device: str | None = None
    """``MAJ:MIN`` (or path) of the block device its data lives on, or None: no ``disk_io`` resource."""


@dataclass(frozen=True)
class _Plan:
    """One planned action: the value before, after, and the writes (None when nothing changes)."""

    action: Action
    before: Value | None
    after: Value
    run: Callable[[Rollback], None] | None


class LocalExecutor:
    """The :class:`firm.actuate.executor.Executor` of this machine.

    Roots default to the real system; tests point them at fake trees and give ``kernel`` a model of
    the kernel (a fake cgroup tree, resctrl and ``tc``). Every change goes through the actuators' one
    entry points (``cgroup.ensure_cgroup``, ``tc.ensure_shaping``, ``resctrl.ensure_group``), which
    verify what the kernel holds and record their undo steps in the step's rollback. Raises :class:`ExecutorError` when a target names a group that does not exist.
    """

    def __init__(
        self,
        targets: Sequence[LocalTarget],
        *,
        cgroup_root: str = "/sys/fs/cgroup",
        resctrl_root: str = resctrl.RESCTRL_ROOT,
        mounts_file: str = resctrl.MOUNTS_FILE,
        cpuinfo_file: str = resctrl.CPUINFO_FILE,
        sysfs_root: str = "/sys",
        netns_dir: str = tc.NETNS_DIR,
        psched_path: str = tc.PSCHED_PATH,
        kernel: Kernel = KERNEL,
        resctrl_prefix: str = "firm-",
        network_cache_s: float = 30.0,
    ) -> None:
        self.targets = {t.name: t for t in targets}
        self.layout = cgroup.detect_layout(cgroup_root)
        self.sysfs_root, self.netns_dir, self.psched_path = sysfs_root, netns_dir, psched_path
        self.kernel = kernel
        self.resctrl_prefix = resctrl_prefix
        self.resctrl: resctrl.ResctrlInfo | None
        try:
            self.resctrl = resctrl.read_info(resctrl_root, mounts_file, cpuinfo_file)
        except FirmError:
            self.resctrl = None
        self.network_cache_s = network_cache_s
        self._shapings: dict[str, tuple[float, tc.Shaping | None]] = {}
        self._groups: dict[str, cgroup.Group] = {}
        self._disks: dict[str, str] = {}
        for target in targets:
            if target.disk_device is not None:
                self._disks[target.name] = cgroup.resolve_device(target.disk_device, sysfs_root)

    # -- what can be set ------------------------------------------------------------------------

    def add_target(self, target: LocalTarget) -> None:
        """Manage one more instance (a scaled-out one)."""
        if target.disk_device is not None:
            self._disks[target.name] = cgroup.resolve_device(target.disk_device, self.sysfs_root)
        self.targets[target.name] = target

    def remove_target(self, name: str) -> bool:
        """Stop managing an instance that is gone (a scaled-in one): forget its target, disk, cached
        shaping and group, and remove the resctrl group this executor made for it (its tasks are
        gone with it; ``llc`` and ``memory_bandwidth`` only). Its cgroups, namespace and veth are
        its scaler's to remove. Returns whether it was managed; raises nothing on an unknown name.
        A resctrl group the kernel refuses to remove is logged and left (``firm testbed down`` or
        ``rmdir`` removes it)."""
        target = self.targets.pop(name, None)
        self._disks.pop(name, None)
        self._shapings.pop(name, None)
        if target is None:
            return False
        if not any(t.cgroup == target.cgroup for t in self.targets.values()):
            self._groups.pop(target.cgroup, None)
        if self.resctrl is not None:
            try:
                resctrl.ensure_absent(self.resctrl.root, self._resctrl_name(name), kernel=self.kernel)
            except FirmError as exc:
                log.warning("the resctrl group of %s stays: %s", name, exc)
        return True

    def resources(self, instance: str) -> frozenset[str]:
        target = self.targets.get(instance)
        if target is None:
            return frozenset()
        found = set()
        has = self.layout.hierarchies
        if "cpu" in has:
            found |= {"cpu", "cpu_weight"}
        if "cpuset" in has:
            found.add("cpuset")
        if "blkio" in has and instance in self._disks:
            found.add("disk_io")
        if target.interface is not None:
            found.add("network")
        info = self.resctrl
        if info is not None:
            if "L3" in info.caches or ("L3CODE" in info.caches and "L3DATA" in info.caches):
                found.add("llc")
            if info.mba is not None and not info.mba_mbps:
                found.add("memory_bandwidth")
        return frozenset(found)

    def _target(self, instance: str) -> LocalTarget:
        try:
            return self.targets[instance]
        except KeyError:
            raise ExecutorError(
                f"no instance {instance!r} is managed here",
                fix=f"use one of {', '.join(sorted(self.targets))}",
            ) from None

    def _group(self, target: LocalTarget) -> cgroup.Group:
        group = self._groups.get(target.cgroup)
        if group is None:  # group_at resolves every hierarchy's path: once per instance
            group = self._groups[target.cgroup] = cgroup.group_at(self.layout, target.cgroup)
        if not group.exists():
            raise ExecutorError(
                f"the cgroup {target.cgroup} of {target.name} does not exist",
                fix="check that the instance runs (firm testbed status)",
            )
        return group

    # -- reading ----------------------------------------------------------------------------------

    def read(self, instance: str, resource: str) -> Value:
        """The current value of one resource, in its unit (``inf``: no limit)."""
        target = self._target(instance)
        if resource not in self.resources(instance):
            raise ExecutorError(
                f"{resource} of {instance} cannot be set on this machine",
                fix=f"use one of {', '.join(sorted(self.resources(instance)))}",
            )
        group = self._group(target) if resource in CGROUP_RESOURCES | {"disk_io"} else None
        if resource == "cpu":
            assert group is not None
            quota, period = cgroup.read_cpu_max(group)
            return math.inf if quota < 0 else quota / period
        if resource == "cpu_weight":
            assert group is not None
            return float(cgroup.read_cpu_weight(group))
        if resource == "cpuset":
            assert group is not None
            return str(cgroup.read_settings(group, cgroup.CgroupSettings(cpuset_cpus="0"))["cpuset_cpus"])
        if resource == "disk_io":
            assert group is not None
            limit = cgroup.read_disk_limits(group).get(self._disks[instance])
            values = [v for v in (limit.read_bps, limit.write_bps) if v is not None] if limit else []
            return float(min(values)) if values else math.inf
        if resource == "network":
            return self._network_value(self._shaping(target))
        return self._read_resctrl(instance, resource)

    def _shaping(self, target: LocalTarget, fresh: bool = False) -> tc.Shaping | None:
        """The interface's shaping; read through ``tc`` when ``fresh`` or older than ``network_cache_s``
        (each read runs tc: milliseconds), else what this executor last read or applied."""
        assert target.interface is not None
        cached = self._shapings.get(target.name)
        if not fresh and cached is not None and time.monotonic() - cached[0] < self.network_cache_s:
            return cached[1]
        shaping = tc.read_shaping(
            target.interface, target.namespace, netns_dir=self.netns_dir, kernel=self.kernel
        )
        self._shapings[target.name] = (time.monotonic(), shaping)
        return shaping

    @staticmethod
    def _network_value(shaping: tc.Shaping | None) -> float:
        return math.inf if shaping is None else float(shaping.rate_bps)

    def _resctrl_name(self, instance: str) -> str:
        return f"{self.resctrl_prefix}{instance}"

    def _read_resctrl(self, instance: str, resource: str) -> float:
        info = self.resctrl
        assert info is not None
        name = self._resctrl_name(instance)
        schemata = resctrl.read_schemata(info.root, name) if resctrl.group_exists(info.root, name) else None
        if resource == "llc":
            cache = info.caches.get("L3") or info.caches["L3DATA"]
            resname = "L3" if "L3" in info.caches else "L3DATA"
            mask = schemata.get(resname, cache.domains[0]) if schemata is not None else None
            return float(cache.cbm_len if mask is None else bin(mask).count("1"))
        assert info.mba is not None
        value = schemata.get("MB", info.mba.domains[0]) if schemata is not None else None
        if value is None:
            return 100.0
        return (
            float(value) * 100 / resctrl.AMD_MAX_BANDWIDTH
            if info.mba.unit == resctrl.UNIT_AMD
            else float(value)
        )

    def snapshot(self, instances: Sequence[str]) -> Snapshot:
        limits: dict[str, dict[str, Value | None]] = {}
        raw: dict[str, Any] = {}
        try:
            for instance in instances:
                target = self._target(instance)
                limits[instance] = {r: self.read(instance, r) for r in sorted(self.resources(instance))}
                group = self._group(target)
                exact: dict[str, Any] = {"cpu_max": cgroup.read_cpu_max(group)}
                if instance in self._disks:
                    exact["disk"] = cgroup.read_disk_limits(group).get(self._disks[instance])
                if target.interface is not None:
                    exact["shaping"] = self._shaping(target)
                if self.resctrl is not None:
                    name = self._resctrl_name(instance)
                    exact["resctrl"] = (
                        resctrl.read_schemata(self.resctrl.root, name)
                        if resctrl.group_exists(self.resctrl.root, name)
                        else None
                    )
                raw[instance] = exact
        except ExecutorError:
            raise
        except FirmError as exc:
            raise ExecutorError(
                f"cannot read the limits of {', '.join(instances)}: {exc}", fix="check that the instances run"
            ) from exc
        return Snapshot(time.time(), limits, raw)

    # -- applying ----------------------------------------------------------------------------------

    def apply(self, actions: Sequence[Action], *, dry_run: bool) -> StepResult:
        started = time.perf_counter()
        try:
            plans = self._plan_all(actions)
        except FirmError as exc:
            return StepResult((), dry_run, error=str(exc), duration_s=time.perf_counter() - started)
        return self._execute(plans, dry_run, started)

    def _execute(self, plans: Sequence[_Plan], dry_run: bool, started: float) -> StepResult:
        applied = tuple(Applied(p.action, p.before, p.after, p.run is not None) for p in plans)
        if dry_run:
            return StepResult(applied, True, duration_s=time.perf_counter() - started)
        undo = Rollback()
        done: list[Applied] = []
        for plan in plans:
            if plan.run is None:
                done.append(Applied(plan.action, plan.before, plan.before, False))
                continue
            try:
                plan.run(undo)
            except (FirmError, OSError) as exc:
                failures = tuple(undo.undo())
                log.warning(
                    "step failed at %s of %s (%s); %s",
                    plan.action.resource,
                    plan.action.instance,
                    exc,
                    "rolled back" if not failures else f"rollback incomplete: {failures}",
                )
                reverted = tuple(Applied(a.action, a.before, a.before, a.changed) for a in done)
                return StepResult(
                    reverted,
                    False,
                    rolled_back=True,
                    error=f"{plan.action.resource} of {plan.action.instance}: {exc}",
                    rollback_failures=failures,
                    duration_s=time.perf_counter() - started,
                )
            done.append(Applied(plan.action, plan.before, plan.after, True))
        return StepResult(tuple(done), False, duration_s=time.perf_counter() - started)

    def _plan_all(self, actions: Sequence[Action]) -> list[_Plan]:
        seen: set[tuple[str, str]] = set()
        for action in actions:
            key = (action.instance, action.resource)
            if key in seen:
                raise ExecutorError(
                    f"{action.resource} of {action.instance} is set twice in one step",
                    fix="give one action per instance and resource",
                )
            seen.add(key)
            if action.resource not in self.resources(self._target(action.instance).name):
                raise ExecutorError(
                    f"{action.resource} of {action.instance} cannot be set on this machine",
                    fix=f"mask it; this machine sets {', '.join(sorted(self.resources(action.instance)))}",
                )
        placed = {a.instance for a in actions if a.resource == "cpuset"}
        plans = [
            self._plan(a, placed=a.instance in placed) for a in actions if a.resource not in RESCTRL_RESOURCES
        ]
        by_instance: dict[str, list[Action]] = {}
        for action in actions:
            if action.resource in RESCTRL_RESOURCES:
                by_instance.setdefault(action.instance, []).append(action)
        for instance, group_actions in by_instance.items():
            plans += self._plan_resctrl(instance, group_actions)
        return plans

    def _plan(self, action: Action, *, placed: bool = False) -> _Plan:
        """What ``action`` writes; ``placed``: the step also sets the instance's cpuset, which then
        holds as given (a CPU raise does not widen it)."""
        target = self._target(action.instance)
        if action.resource == "network":
            return self._plan_network(action, target, self._network_value(self._shaping(target, fresh=True)))
        before = self.read(action.instance, action.resource)
        group = self._group(target)
        value = action.value
        if action.resource == "cpu":
            assert isinstance(value, float)
            _, period = cgroup.read_cpu_max(group)
            quota = -1 if math.isinf(value) else max(cgroup.CPU_QUOTA_MIN_US, round(value * period))
            settings = cgroup.CgroupSettings(
                cpu_quota_us=quota,
                cpuset_cpus=None
                if placed
                else self._cpus_for(
                    target, group, value, raised=isinstance(before, float) and value > before
                ),
            )
            after: Value = math.inf if quota < 0 else quota / period
        elif action.resource == "cpu_weight":
            assert isinstance(value, float)
            settings = cgroup.CgroupSettings(cpu_weight=round(value))
            after = float(round(value))
        elif action.resource == "cpuset":
            assert isinstance(value, str)
            settings = cgroup.CgroupSettings(cpuset_cpus=value)
            after = cgroup.format_list(cgroup.parse_list(value, "cpuset"))
        else:  # disk_io
            assert isinstance(value, float)
            rate = None if math.isinf(value) else max(1, round(value))
            settings = cgroup.CgroupSettings(
                disk=(cgroup.DiskLimit(self._disks[action.instance], read_bps=rate, write_bps=rate),)
            )
            after = math.inf if rate is None else float(rate)
        return self._cgroup_plan(action, group, settings, before, after)

    def _cpus_for(
        self, target: LocalTarget, group: cgroup.Group, cores: float, *, raised: bool = False
    ) -> str | None:
        """A wider cpuset when ``cores`` exceed the CPUs the group may run on (a quota of 1.5 cores
        on one CPU could never be used), and one CPU more on every raise (more time on a CPU that
        other work keeps busy is no more time: the raise must also give somewhere else to run): the
        group's CPUs plus the parent's next ones. Never narrowed here. None: no change."""
        if "cpuset" not in self.layout.hierarchies:
            return None
        current = cgroup.parse_list(
            str(cgroup.read_settings(group, cgroup.CgroupSettings(cpuset_cpus="0"))["cpuset_cpus"])
        )
        needed = len(current) if math.isinf(cores) else math.ceil(cores - 1e-9)
        if raised:
            needed = max(needed, len(current) + 1)
        if not current or needed <= len(current):
            return None
        parent = cgroup.group_at(self.layout, os.path.dirname(target.cgroup.strip("/")))
        effective = parent.file("cpuset", "cpuset.cpus.effective")  # v2: an empty cpuset.cpus inherits
        allowed = cgroup.parse_list(
            read_text(effective)
            if group.version("cpuset") == 2 and os.path.exists(effective)
            else read_text(parent.file("cpuset", "cpuset.cpus"))
        )
        extra = [c for c in allowed if c not in current][: needed - len(current)]
        return cgroup.format_list(current + extra) if extra else None

    def _cgroup_plan(
        self,
        action: Action,
        group: cgroup.Group,
        settings: cgroup.CgroupSettings,
        before: Value | None,
        after: Value,
    ) -> _Plan:
        ensure = functools.partial(
            cgroup.ensure_cgroup,
            group,
            settings,
            create=False,
            sysfs_root=self.sysfs_root,
            kernel=self.kernel,
        )
        if not ensure(check_mode=True).changed:
            return _Plan(action, before, after, None)

        def run(undo: Rollback) -> None:
            ensure(rollback=undo)

        return _Plan(action, before, after, run)

    def _plan_network(
        self,
        action: Action,
        target: LocalTarget,
        before: Value | None,
        exact: tc.Shaping | bool | None = False,
    ) -> _Plan:
        """``exact`` (a Shaping or None) restores a snapshot's qdisc as it was; False: from the value."""
        assert target.interface is not None
        interface, namespace = target.interface, target.namespace
        wanted: tc.Shaping | None
        if exact is not False:
            link = tc.read_link(interface, namespace, self.kernel)
            wanted = None if exact is None or exact is True else _with_burst_floor(exact, link)
        elif isinstance(action.value, float) and math.isinf(action.value):
            wanted = None
        else:
            rate = round(float(action.value))
            wanted = tc.shaping_for(
                interface,
                "tbf",
                rate,
                namespace=namespace,
                netns_dir=self.netns_dir,
                psched_path=self.psched_path,
                kernel=self.kernel,
            )
        after: Value = math.inf if wanted is None else float(wanted.rate_bps)
        ensure = functools.partial(
            tc.ensure_shaping,
            interface,
            wanted,
            namespace,
            netns_dir=self.netns_dir,
            psched_path=self.psched_path,
            kernel=self.kernel,
        )
        if not ensure(check_mode=True).changed:
            return _Plan(action, before, after, None)
        shapings = self._shapings
        name = target.name

        def forget() -> None:
            shapings.pop(name, None)  # the next read asks tc again

        def run(undo: Rollback) -> None:
            forget()
            undo.record(forget)  # after the restore ensure records (undone newest first)
            ensure(rollback=undo)

        return _Plan(action, before, after, run)

    def _plan_resctrl(
        self, instance: str, actions: Sequence[Action], exact: resctrl.Schemata | bool | None = False
    ) -> list[_Plan]:
        info = self.resctrl
        assert info is not None
        target = self._target(instance)
        name = self._resctrl_name(instance)
        befores = {a.resource: self.read(instance, a.resource) for a in actions}
        l3: int | None = None
        mb: int | None = None
        afters: dict[str, float] = {}
        for action in actions:
            assert isinstance(action.value, float)
            if action.resource == "llc":
                cache = info.caches.get("L3") or info.caches["L3DATA"]
                ways = min(cache.cbm_len, max(cache.min_cbm_bits, round(action.value)))
                l3, afters["llc"] = (1 << ways) - 1, float(ways)
            else:
                assert info.mba is not None
                amd = info.mba.unit == resctrl.UNIT_AMD
                if amd:
                    mb = max(
                        info.mba.min_bandwidth,
                        min(info.mba.max_bandwidth, round(action.value * resctrl.AMD_MAX_BANDWIDTH / 100)),
                    )
                    afters["memory_bandwidth"] = mb * 100 / resctrl.AMD_MAX_BANDWIDTH
                else:
                    gran = info.mba.bandwidth_gran or 1
                    wanted = max(info.mba.min_bandwidth, min(100, round(action.value)))
                    mb = min(100, -(-wanted // gran) * gran)
                    afters["memory_bandwidth"] = float(mb)
        exists = resctrl.group_exists(info.root, name)
        if exact is not False:  # restoring: back to the snapshot's schemata, or no group at all
            previous_schemata = exact if isinstance(exact, resctrl.Schemata) else None
            if previous_schemata is None:
                if not exists:
                    return [_Plan(a, befores[a.resource], befores[a.resource], None) for a in actions]
                plans = [_Plan(a, befores[a.resource], a.value, None) for a in actions]
                return [
                    dataclasses.replace(plans[0], run=_resctrl_removal(info.root, name, self.kernel)),
                    *plans[1:],
                ]
        request = resctrl.build_request(info, l3=l3, mb=mb)
        tasks = resctrl.task_ids(
            sorted({p for pids in cgroup.group_pids(self._group(target)).values() for p in pids})
        )
        kernel = self.kernel
        change = resctrl.ensure_group(info, name, request, tasks, check_mode=True, kernel=kernel)
        if not change.changed:
            return [_Plan(a, befores[a.resource], afters[a.resource], None) for a in actions]

        def run(undo: Rollback) -> None:
            resctrl.ensure_group(info, name, request, tasks, kernel=kernel, rollback=undo)

        plans = [_Plan(a, befores[a.resource], afters[a.resource], None) for a in actions]
        plans[0] = dataclasses.replace(plans[0], run=run)
        return plans

    # -- restoring -----------------------------------------------------------------------------------

    def restore(self, snapshot: Snapshot) -> StepResult:
        """Back to the snapshot exactly: CPU quota and period, weight, cpuset, both disk throttles,
        the previous qdisc (or none), the previous resctrl group (or none)."""
        started = time.perf_counter()
        plans: list[_Plan] = []
        try:
            for instance, limits in snapshot.limits.items():
                target = self._target(instance)
                group = self._group(target)
                raw = snapshot.raw.get(instance, {})
                for resource, value in limits.items():
                    if value is None or value == "":  # an empty v2 cpuset inherits: nothing to write back
                        continue
                    action = Action(instance, resource, value, reason="restore", service=target.service)
                    before = self.read(instance, resource)
                    if resource == "cpu" and "cpu_max" in raw:
                        quota, period = raw["cpu_max"]
                        settings = cgroup.CgroupSettings(cpu_quota_us=quota, cpu_period_us=period)
                        plans.append(self._cgroup_plan(action, group, settings, before, value))
                    elif resource == "disk_io" and "disk" in raw:
                        exact = raw["disk"] or cgroup.DiskLimit(self._disks[instance])
                        plans.append(
                            self._cgroup_plan(
                                action, group, cgroup.CgroupSettings(disk=(exact,)), before, value
                            )
                        )
                    elif resource == "network" and "shaping" in raw:
                        plans.append(self._plan_network(action, target, before, exact=raw["shaping"]))
                    elif resource in RESCTRL_RESOURCES:
                        continue
                    else:
                        plans.append(self._plan(action))
                rdt = [
                    Action(instance, r, v, reason="restore")
                    for r, v in limits.items()
                    if r in RESCTRL_RESOURCES and isinstance(v, float)
                ]
                if rdt and "resctrl" in raw:
                    plans += self._plan_resctrl(instance, rdt, exact=raw["resctrl"])
                elif rdt:
                    plans += self._plan_resctrl(instance, rdt)
        except FirmError as exc:
            return StepResult(
                (), False, error=f"cannot restore: {exc}", duration_s=time.perf_counter() - started
            )
        return self._execute(plans, False, started)


def _with_burst_floor(shaping: tc.Shaping, link: tc.Link) -> tc.Shaping:
    """tc reports bursts rounded down; never ask for one below a frame."""
    floor = link.mtu + link.overhead
    return dataclasses.replace(
        shaping,
        burst_bytes=max(shaping.burst_bytes, floor),
        cburst_bytes=None if shaping.cburst_bytes is None else max(shaping.cburst_bytes, floor),
    )


def _resctrl_removal(root: str, name: str, kernel: Kernel) -> Callable[[Rollback], None]:
    """Remove a group firm made (its tasks go back to the default group); cannot be undone."""

    def run(undo: Rollback) -> None:
        resctrl.remove_group(root, name, kernel=kernel)

    return run


def targets_from(mapping: Mapping[str, Mapping[str, Any]]) -> list[LocalTarget]:
    """Targets from plain dictionaries (name -> fields of :class:`LocalTarget`)."""
    return [LocalTarget(name=name, **fields) for name, fields in mapping.items()]
