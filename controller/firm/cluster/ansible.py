"""The ansible executor: a control step's actions for one node in one ansible-runner run.

Every action becomes a task of the ``firm.core`` modules on the instance's host (the inventory's
hostname), so the same knobs as the local executor are set through the same code, shipped to the
node by ansible:

| resource | module and arguments | unit |
| --- | --- | --- |
| ``cpu`` | ``firm.core.cgroup`` ``cpu_quota_us`` = cores x ``cpu_period_us`` (-1: ``inf``) | cores |
| ``cpu_weight`` | ``firm.core.cgroup`` ``cpu_weight`` | v2 weight |
| ``cpuset`` | ``firm.core.cgroup`` ``cpuset_cpus`` | CPU list |
| ``disk_io`` | ``firm.core.cgroup`` ``devices: [{device, read_bps, write_bps}]`` (``inf``: no limit) | bytes/s |
| ``network`` | ``firm.core.tc`` ``kind: tbf``, ``rate`` on the host-side veth (``inf``: ``state: absent``) | bit/s |
| ``llc`` | ``firm.core.resctrl`` ``l3`` = a mask of that many low ways, the instance's tasks moved in | ways |
| ``memory_bandwidth`` | ``firm.core.resctrl`` ``mb`` (AMD: converted from percent of 2048) | percent |
| ``memory`` | ``firm.core.cgroup`` ``memory_max`` (``inf``: ``-1``), targets with ``memory`` set | bytes |

The instance's cgroup is a path (the testbed, any systemd slice) or a Kubernetes pod's UID (and
container IDs), which the cgroup module resolves on the node for either cgroup driver.

**One unit per step.** The step's actions are grouped by host; each host gets one playbook run,
hosts in parallel. Ansible stops a host's tasks at its first failure, and every changed task
returns what it replaced (``diff.before``). When any host failed or was unreachable, every task
that changed something, on every host, is undone by a second run of inverse tasks in reverse
order; what could not be undone (a host unreachable after it changed something) is in
``rollback_failures``. A dry run is the same playbook in check mode (nothing is written; the
modules report what they would change). Every run is audited (:attr:`AnsibleExecutor.audit`):
host, tasks, per-task status, rollback.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ansible_runner

from firm.actuate.executor import Action, Applied, ExecutorError, Snapshot, StepResult, Value
from firm.actuate.runner import collections_path

log = logging.getLogger(__name__)

CGROUP = "firm.core.cgroup"
TC = "firm.core.tc"
RESCTRL = "firm.core.resctrl"
AMD_MAX_BANDWIDTH = 2048


@dataclass(frozen=True)
class AnsibleTarget:
    """Where one instance's knobs are, on which host of the inventory.

    Give ``cgroup`` (a path below each hierarchy's root) or ``pod_uid`` (a Kubernetes pod; with
    ``container_ids``, CPU limits are written to the pod's and each container's group).
    """

    name: str
    """Instance name."""
    service: str
    host: str
    """The inventory hostname of its node."""
    cgroup: str | None = None
    pod_uid: str | None = None
    container_ids: tuple[str, ...] = ()
    """``containerd://...`` IDs of the pod's containers (their groups get the same CPU limit)."""
    cgroup_driver: str = "auto"
    """The node kubelet's driver (``cgroupfs``, ``systemd``) or ``auto`` (the module tries both)."""
    interface: str | None = None
    """Host-side veth (shaped on egress); None: no ``network``."""
    namespace: str | None = None
    """Network namespace of ``interface`` (None: the host's)."""
    disk_device: str | None = None
    """``MAJ:MIN`` or device path of its disk; None: no ``disk_io``."""
    resctrl: Mapping[str, Any] | None = None
    """The node's resctrl ``info`` as ``firm.core.resctrl`` returns it (None: no ``llc`` /
    ``memory_bandwidth``)."""
    memory: bool = False
    """Whether its memory limit is managed (``memory``): its group has the memory controller, as a
    Kubernetes pod's has."""

    def __post_init__(self) -> None:
        if (self.cgroup is None) == (self.pod_uid is None):
            raise ExecutorError(
                f"instance {self.name}: give exactly one of cgroup and pod_uid",
                fix="a cgroup path for processes, a pod UID for Kubernetes pods",
            )

    def group_args(self, container_id: str | None = None) -> dict[str, Any]:
        """The cgroup module's target arguments."""
        if self.cgroup is not None:
            return {"path": self.cgroup}
        args: dict[str, Any] = {"pod_uid": self.pod_uid, "cgroup_driver": self.cgroup_driver}
        if container_id is not None:
            args["container_id"] = container_id
        return args


@dataclass(frozen=True)
class Task:
    """One module call of a step: which action it serves, and how to undo it once it changed."""

    action: int
    """Index of the action in the step (-1: a helper task)."""
    module: str
    args: Mapping[str, Any]
    name: str
    register: str | None = None
    main: bool = True
    """The task whose result is the action's (its last cgroup write, its tc or resctrl call)."""

    def play_task(self) -> dict[str, Any]:
        task: dict[str, Any] = {"name": self.name, self.module: dict(self.args)}
        if self.register:
            task["register"] = self.register
        if self.module == "ansible.builtin.command":
            task.update(changed_when=False, check_mode=False)
        return task


@dataclass
class TaskOutcome:
    task: Task
    status: str
    """ok, changed, failed, unreachable, skipped, or not_run."""
    result: dict[str, Any] = field(default_factory=dict)


LOCAL_INVENTORY: Mapping[str, Any] = {
    "all": {
        "hosts": {"localhost": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}}
    }
}
"""This machine with the local connection and firm's interpreter (no inventory given)."""


def runner_env() -> dict[str, str]:
    """The environment of firm's ansible-runner runs: the collection on its path, host keys checked."""
    return {
        "ANSIBLE_COLLECTIONS_PATH": collections_path(),
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_PYTHON_INTERPRETER": "auto_silent",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)]),
    }


def absolute_inventory(inventory: str | None) -> str | None:
    """An inventory path made absolute (ansible-runner takes a relative one for a host list)."""
    if inventory is None or not os.path.exists(inventory):
        return inventory
    return os.path.abspath(inventory)


PlaybookRunner = Callable[[str, list[dict[str, Any]], bool], list[dict[str, Any]]]
"""(host, tasks, check) -> the run's ``runner_on_*`` events."""


class AnsibleExecutor:
    """The :class:`firm.actuate.executor.Executor` over an inventory (see the module's docstring).

    ``inventory`` is a path (``inventory/local``, the one ``site.yml`` used) or None for this
    machine with the local connection. ``period_us`` is the CFS period written with every CPU
    quota (the kernel's and the kubelet's default, 100 ms). ``audit_path`` appends every run's
    record as a JSON line. ``snapshot_ttl_s``: :meth:`snapshot` reads a node again only when its
    last read is older than this (seconds); in between it answers from that read and the steps
    applied since (the loop asks for the limits every step, and a read costs one ansible run).
    """

    def __init__(
        self,
        targets: Sequence[AnsibleTarget],
        inventory: str | None = None,
        *,
        period_us: int = 100_000,
        timeout_s: int = 120,
        audit_path: str | None = None,
        run: PlaybookRunner | None = None,
        max_hosts: int = 8,
        snapshot_ttl_s: float = 30.0,
    ) -> None:
        self.targets = {t.name: t for t in targets}
        self.inventory = absolute_inventory(inventory)
        self.period_us = period_us
        self.timeout_s = timeout_s
        self.audit_path = audit_path
        self.audit: list[dict[str, Any]] = []
        """Every run's record: time, host, check, tasks with their status, rollback."""
        self.max_hosts = max_hosts
        self._run = run or self._run_playbook
        self._lock = threading.Lock()
        self._last_cpu: dict[str, float] = {}
        self._last_memory: dict[str, float] = {}
        self.snapshot_ttl_s = snapshot_ttl_s
        self._known: dict[str, dict[str, Value | None]] = {}
        """instance -> resource -> value, from the last read of its node, updated by every step since."""
        self._known_raw: dict[str, Any] = {}
        self._read_at: dict[str, float] = {}
        """instance -> time.monotonic() of the last read of its node."""

    # -- what can be set -------------------------------------------------------------------------

    def add_target(self, target: AnsibleTarget) -> None:
        self.targets[target.name] = target

    def remove_target(self, name: str) -> None:
        self.targets.pop(name, None)
        self._read_at.pop(name, None)

    def resources(self, instance: str) -> frozenset[str]:
        target = self.targets.get(instance)
        if target is None:
            return frozenset()
        found = {"cpu", "cpu_weight", "cpuset"}
        if target.disk_device is not None:
            found.add("disk_io")
        if target.interface is not None:
            found.add("network")
        if target.memory:
            found.add("memory")
        info = target.resctrl
        if info is not None:
            if info.get("caches"):
                found.add("llc")
            if info.get("mb") and not info.get("mba_mbps"):
                found.add("memory_bandwidth")
        return frozenset(found)

    def _target(self, instance: str) -> AnsibleTarget:
        try:
            return self.targets[instance]
        except KeyError:
            raise ExecutorError(
                f"no instance {instance!r} is managed here",
                fix=f"use one of {', '.join(sorted(self.targets))}",
            ) from None

    # -- tasks -------------------------------------------------------------------------------------

    def tasks_for(self, index: int, action: Action) -> list[Task]:
        """The module calls that apply ``action`` (raises :class:`ExecutorError` when it cannot be set)."""
        target = self._target(action.instance)
        if action.resource not in self.resources(action.instance):
            raise ExecutorError(
                f"{action.resource} of {action.instance} cannot be set on {target.host}",
                fix=f"mask it; this target sets {', '.join(sorted(self.resources(action.instance)))}",
            )
        label = f"firm[{index}] {action.resource} of {action.instance}"
        value = action.value
        if action.resource == "cpu":
            assert isinstance(value, float)
            quota = -1 if math.isinf(value) else max(1000, round(value * self.period_us))
            settings = {"cpu_quota_us": quota, "cpu_period_us": self.period_us}
            groups = [target.group_args()] + [target.group_args(c) for c in target.container_ids]
            if quota < 0 or not target.container_ids:
                ordered = groups  # raising: the pod's group first, then its containers'
            else:
                ordered = list(reversed(groups)) if self._lowering(target, value) else groups
            return [
                Task(
                    index,
                    CGROUP,
                    {**g, **settings},
                    f"{label} ({i + 1}/{len(ordered)})",
                    main=i == len(ordered) - 1,
                )
                for i, g in enumerate(ordered)
            ]
        if action.resource == "memory":
            assert isinstance(value, float)
            limit = -1 if math.isinf(value) else max(4096, round(value))
            groups = [target.group_args()] + [target.group_args(c) for c in target.container_ids]
            known = self._last_memory.get(target.name)
            lowering = limit >= 0 and (known is None or value < known)
            ordered = list(reversed(groups)) if lowering else groups  # a child never above its pod
            return [
                Task(
                    index,
                    CGROUP,
                    {**g, "memory_max": str(limit)},
                    f"{label} ({i + 1}/{len(ordered)})",
                    main=i == len(ordered) - 1,
                )
                for i, g in enumerate(ordered)
            ]
        if action.resource == "cpu_weight":
            assert isinstance(value, float)
            return [Task(index, CGROUP, {**target.group_args(), "cpu_weight": round(value)}, label)]
        if action.resource == "cpuset":
            return [Task(index, CGROUP, {**target.group_args(), "cpuset_cpus": str(value)}, label)]
        if action.resource == "disk_io":
            assert isinstance(value, float)
            device: dict[str, Any] = {"device": target.disk_device}
            if not math.isinf(value):
                device.update(read_bps=max(1, round(value)), write_bps=max(1, round(value)))
            return [Task(index, CGROUP, {**target.group_args(), "devices": [device]}, label)]
        if action.resource == "network":
            assert isinstance(value, float)
            args: dict[str, Any] = {"interface": target.interface}
            if target.namespace is not None:
                args["namespace"] = target.namespace
            if math.isinf(value):
                args["state"] = "absent"
            else:
                rate = round(value)
                args.update(kind="tbf", rate=rate)  # the module's default burst: 10 ms at the rate
            return [Task(index, TC, args, label)]
        return self._resctrl_tasks(index, action, target, label)

    def _lowering(self, target: AnsibleTarget, cores: float) -> bool:
        """Whether ``cores`` is below the pod's last known CPU limit (unknown: taken as lowering, so the
        containers' groups are written before the pod's, which v1 requires when lowering)."""
        known = self._last_cpu.get(target.name)
        return known is None or cores < known

    def _resctrl_tasks(self, index: int, action: Action, target: AnsibleTarget, label: str) -> list[Task]:
        info = target.resctrl or {}
        value = action.value
        assert isinstance(value, float)
        args: dict[str, Any] = {"name": f"firm-{target.name}"}
        if action.resource == "llc":
            cache = next(iter(dict(info.get("caches") or {}).values()))
            ways = min(int(cache["cbm_len"]), max(int(cache.get("min_cbm_bits", 1)), round(value)))
            args["l3"] = format((1 << ways) - 1, "x")
        else:
            mb = dict(info.get("mb") or {})
            if mb.get("unit") == "1/8 GB/s":
                args["mb"] = max(
                    int(mb.get("min_bandwidth", 1)),
                    min(AMD_MAX_BANDWIDTH, round(value * AMD_MAX_BANDWIDTH / 100)),
                )
            else:
                gran = int(mb.get("bandwidth_gran") or 1)
                wanted = max(int(mb.get("min_bandwidth", 10)), min(100, round(value)))
                args["mb"] = min(100, -(-wanted // gran) * gran)
        probe = f"firm_procs_{index}"
        group = target.cgroup or ""
        argv = [
            "find",
            "/sys/fs/cgroup",
            "-path",
            f"*{group or target.pod_uid}*",
            "-name",
            "cgroup.procs",
            "-exec",
            "cat",
            "{}",
            "+",
        ]
        args["pids"] = "{{ " + probe + ".stdout.split() | map('int') | unique | list }}"
        return [
            Task(
                index,
                "ansible.builtin.command",
                {"argv": argv},
                f"{label} (tasks)",
                register=probe,
                main=False,
            ),
            Task(index, RESCTRL, args, label),
        ]

    # -- running -----------------------------------------------------------------------------------

    def _run_playbook(self, host: str, tasks: list[dict[str, Any]], check: bool) -> list[dict[str, Any]]:
        """One ansible-runner run of ``tasks`` on ``host``; its ``runner_on_*`` events."""
        env = runner_env()
        play = [{"name": f"firm step on {host}", "hosts": host, "gather_facts": False, "tasks": tasks}]
        inventory: Any = self.inventory if self.inventory is not None else LOCAL_INVENTORY
        with tempfile.TemporaryDirectory(prefix="firm-ansible-") as private:
            run = ansible_runner.run(
                private_data_dir=private,
                playbook=play,
                inventory=inventory,
                envvars=env,
                cmdline="--check --diff" if check else "--diff",
                quiet=True,
                timeout=self.timeout_s,
                suppress_env_files=True,
            )
            events = [e for e in run.events if str(e.get("event", "")).startswith("runner_on_")]
            if not events:
                raise ExecutorError(
                    f"ansible-runner ran nothing on {host} (status {run.status}, rc {run.rc})",
                    fix=f"check that {host} is in the inventory {self.inventory or '(local)'}",
                )
            return events

    def _run_host(self, host: str, tasks: Sequence[Task], check: bool) -> list[TaskOutcome]:
        """Run ``tasks`` on ``host``; one outcome per task, in order (``not_run`` after a failure)."""
        outcomes = {t.name: TaskOutcome(t, "not_run") for t in tasks}
        try:
            events = self._run(host, [t.play_task() for t in tasks], check)
        except ExecutorError as exc:
            for pending in outcomes.values():
                pending.status, pending.result = "unreachable", {"msg": str(exc)}
            return list(outcomes.values())
        for event in events:
            data = event.get("event_data", {})
            name = data.get("task", "")
            outcome = outcomes.get(name)
            kind = event["event"]
            if outcome is None:
                if kind == "runner_on_unreachable":  # the host went away before any task started
                    for pending in outcomes.values():
                        if pending.status == "not_run":
                            pending.status, pending.result = "unreachable", dict(data.get("res", {}))
                continue
            res = dict(data.get("res", {}))
            outcome.result = res
            outcome.status = {
                "runner_on_ok": "changed" if res.get("changed") else "ok",
                "runner_on_failed": "failed",
                "runner_on_unreachable": "unreachable",
                "runner_on_skipped": "skipped",
            }.get(kind, "failed")
        if any(o.status == "unreachable" for o in outcomes.values()):
            for outcome in outcomes.values():
                if outcome.status == "not_run":
                    outcome.status = "unreachable"
        return list(outcomes.values())

    def _record(
        self, kind: str, host: str, check: bool, outcomes: Sequence[TaskOutcome], started: float
    ) -> None:
        record: dict[str, Any] = {
            "time": time.time(),
            "kind": kind,
            "host": host,
            "check": check,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            "tasks": [
                {
                    "name": o.task.name,
                    "module": o.task.module,
                    "status": o.status,
                    **(
                        {"error": str(o.result.get("msg", ""))[:500]}
                        if o.status in ("failed", "unreachable")
                        else {}
                    ),
                }
                for o in outcomes
            ],
        }
        with self._lock:
            self.audit.append(record)
            if self.audit_path is not None:
                try:
                    with open(self.audit_path, "a") as handle:
                        handle.write(json.dumps(record, sort_keys=True) + "\n")
                except OSError as exc:
                    log.error("ansible audit %s: %s", self.audit_path, exc)
        bad = [o.task.name for o in outcomes if o.status in ("failed", "unreachable")]
        (log.warning if bad else log.info)("%s on %s: %s", kind, host, bad or "ok")

    def _run_hosts(
        self, kind: str, by_host: Mapping[str, Sequence[Task]], check: bool
    ) -> dict[str, list[TaskOutcome]]:
        def one(host: str) -> list[TaskOutcome]:
            started = time.perf_counter()
            outcomes = self._run_host(host, by_host[host], check)
            self._record(kind, host, check, outcomes, started)
            return outcomes

        hosts = list(by_host)
        if len(hosts) == 1:
            return {hosts[0]: one(hosts[0])}
        with ThreadPoolExecutor(max_workers=min(self.max_hosts, len(hosts))) as pool:
            return dict(zip(hosts, pool.map(one, hosts), strict=True))

    # -- the contract --------------------------------------------------------------------------------

    def apply(self, actions: Sequence[Action], *, dry_run: bool) -> StepResult:
        started = time.perf_counter()
        seen: set[tuple[str, str]] = set()
        by_host: dict[str, list[Task]] = {}
        try:
            for index, action in enumerate(actions):
                key = (action.instance, action.resource)
                if key in seen:
                    raise ExecutorError(
                        f"{action.resource} of {action.instance} is set twice in one step",
                        fix="give one action per instance and resource",
                    )
                seen.add(key)
                by_host.setdefault(self._target(action.instance).host, []).extend(
                    self.tasks_for(index, action)
                )
        except ExecutorError as exc:
            return StepResult((), dry_run, error=str(exc), duration_s=time.perf_counter() - started)
        if not by_host:
            return StepResult((), dry_run, duration_s=time.perf_counter() - started)
        results = self._run_hosts("check" if dry_run else "apply", by_host, dry_run)
        outcomes = [o for host in by_host for o in results[host]]
        failed = [o for o in outcomes if o.status in ("failed", "unreachable")]
        applied = tuple(self._applied(i, a, outcomes) for i, a in enumerate(actions))
        if not failed:
            if not dry_run:
                self._remember(actions)
                self._note(applied)
            return StepResult(applied, dry_run, duration_s=time.perf_counter() - started)
        first = failed[0]
        host = self._target(actions[first.task.action].instance).host if first.task.action >= 0 else "?"
        error = f"{first.task.name} on {host}: {first.status}: {_message(first.result)}"
        if dry_run:
            return StepResult(applied, True, error=error, duration_s=time.perf_counter() - started)
        failures = self._rollback(by_host, results)
        if failures:  # what the nodes hold is not known any more: read them at the next snapshot
            for action in actions:
                self._read_at.pop(action.instance, None)
        reverted = tuple(Applied(a.action, a.before, a.before, a.changed) for a in applied)
        return StepResult(
            reverted,
            False,
            rolled_back=True,
            error=error,
            rollback_failures=tuple(failures),
            duration_s=time.perf_counter() - started,
        )

    def _remember(self, actions: Sequence[Action]) -> None:
        for action in actions:
            if action.resource == "cpu" and isinstance(action.value, float):
                self._last_cpu[action.instance] = action.value
            if action.resource == "memory" and isinstance(action.value, float):
                self._last_memory[action.instance] = action.value

    def _applied(self, index: int, action: Action, outcomes: Sequence[TaskOutcome]) -> Applied:
        mine = [o for o in outcomes if o.task.action == index and o.task.main]
        outcome = mine[-1] if mine else None
        before = _before_value(action.resource, outcome.result if outcome else {}, self.period_us)
        changed = any(o.status == "changed" for o in outcomes if o.task.action == index)
        ok = outcome is not None and outcome.status in ("ok", "changed")
        return Applied(action, before, action.value if ok else before, changed)

    def _rollback(
        self, by_host: Mapping[str, Sequence[Task]], results: Mapping[str, Sequence[TaskOutcome]]
    ) -> list[str]:
        """Undo every changed task, hosts in parallel, tasks in reverse; what could not be undone."""
        undo: dict[str, list[Task]] = {}
        failures: list[str] = []
        for host, outcomes in results.items():
            for outcome in reversed(outcomes):
                if outcome.status != "changed":
                    if outcome.status == "unreachable" and outcome.task.main and outcome.task.action >= 0:
                        failures.append(
                            f"{outcome.task.name} on {host}: host unreachable; its state is unknown"
                        )
                    continue
                inverse = inverse_task(outcome.task, outcome.result)
                if inverse is None:
                    failures.append(f"{outcome.task.name} on {host}: no way to undo it")
                else:
                    undo.setdefault(host, []).append(inverse)
        if undo:
            done = self._run_hosts("rollback", undo, False)
            for host, outcomes in done.items():
                failures += [
                    f"undo of {o.task.name} on {host}: {o.status}: {_message(o.result)}"
                    for o in outcomes
                    if o.status in ("failed", "unreachable", "not_run")
                ]
        return failures

    def _note(self, applied: Sequence[Applied]) -> None:
        for item in applied:
            known = self._known.get(item.action.instance)
            if known is not None and item.after is not None:
                known[item.action.resource] = item.after

    def snapshot(self, instances: Sequence[str]) -> Snapshot:
        """Current limits: read by the modules in check mode (one run per host) for the instances
        whose last read is older than ``snapshot_ttl_s``, the others from that read and the steps
        applied since. Raises :class:`ExecutorError` when a host cannot be read."""
        now = time.monotonic()
        stale = [i for i in instances if now - self._read_at.get(i, -math.inf) > self.snapshot_ttl_s]
        if stale:
            taken = self._read(stale)
            now = time.monotonic()  # a read may take long: its age counts from when it ended
            for instance in stale:
                self._known[instance] = dict(taken.limits.get(instance, {}))
                self._known_raw[instance] = taken.raw.get(instance, {})
                self._read_at[instance] = now
        return Snapshot(
            time.time(),
            {i: dict(self._known[i]) for i in instances},
            {i: self._known_raw[i] for i in instances if i in self._known_raw},
        )

    def _read(self, instances: Sequence[str]) -> Snapshot:
        """Current limits, read by the modules in check mode (one run per host)."""
        by_host: dict[str, list[Task]] = {}
        for instance in instances:
            target = self._target(instance)
            by_host.setdefault(target.host, []).extend(self._probe_tasks(target))
        limits: dict[str, dict[str, Value | None]] = {}
        raw: dict[str, Any] = {}
        if not by_host:
            return Snapshot(time.time(), limits, raw)
        results = self._run_hosts("snapshot", by_host, True)
        for host, outcomes in results.items():
            bad = [o for o in outcomes if o.status in ("failed", "unreachable")]
            if bad:
                raise ExecutorError(
                    f"cannot read the limits on {host}: {bad[0].task.name}: {bad[0].status}: "
                    f"{_message(bad[0].result)}",
                    fix="check the host and that the instances run",
                )
            for outcome in outcomes:
                instance = outcome.task.name.split(" of ", 1)[1]
                before = outcome.result.get("diff", {}).get("before")
                entry = limits.setdefault(instance, {})
                exact = raw.setdefault(instance, {})
                if outcome.task.module == CGROUP and isinstance(before, dict):
                    exact["cgroup"] = before
                    quota, period = before.get("cpu_quota_us"), before.get("cpu_period_us")
                    if isinstance(quota, int) and isinstance(period, int):
                        entry["cpu"] = math.inf if quota < 0 else quota / period
                    if "cpu_weight" in before:
                        entry["cpu_weight"] = float(before["cpu_weight"])
                    if "cpuset_cpus" in before:
                        entry["cpuset"] = str(before["cpuset_cpus"])
                    memory = before.get("memory_max")
                    if isinstance(memory, int):
                        entry["memory"] = math.inf if memory < 0 else float(memory)
                    disk = before.get("disk")
                    if isinstance(disk, dict) and disk:
                        values = [
                            v
                            for d in disk.values()
                            for k, v in d.items()
                            if k in ("read_bps", "write_bps") and v is not None
                        ]
                        entry["disk_io"] = float(min(values)) if values else math.inf
                elif outcome.task.module == TC and isinstance(before, dict):
                    shaping = before.get("shaping")
                    exact["shaping"] = shaping
                    entry["network"] = math.inf if not shaping else float(shaping["rate_bps"])
        return Snapshot(time.time(), limits, raw)

    def _probe_tasks(self, target: AnsibleTarget) -> list[Task]:
        args: dict[str, Any] = {
            **target.group_args(),
            "cpu_quota_us": -1,
            "cpu_weight": 100,
            "cpuset_cpus": "0",
        }
        if target.disk_device is not None:
            args["devices"] = [{"device": target.disk_device}]
        if target.memory:
            args["memory_max"] = "-1"
        tasks = [Task(-1, CGROUP, args, f"read cgroup of {target.name}")]
        if target.interface is not None:
            tc_args: dict[str, Any] = {"interface": target.interface, "state": "absent"}
            if target.namespace is not None:
                tc_args["namespace"] = target.namespace
            tasks.append(Task(-1, TC, tc_args, f"read tc of {target.name}"))
        return tasks

    def restore(self, snapshot: Snapshot) -> StepResult:
        """Back to ``snapshot`` exactly: quota and period, weight, cpuset, disk throttles, the qdisc."""
        started = time.perf_counter()
        by_host: dict[str, list[Task]] = {}
        actions: list[Action] = []
        try:
            for instance, limits in snapshot.limits.items():
                target = self._target(instance)
                raw = snapshot.raw.get(instance, {})
                tasks = by_host.setdefault(target.host, [])
                before = raw.get("cgroup")
                for resource, value in limits.items():
                    if value is None or value == "" or resource not in self.resources(instance):
                        continue
                    index = len(actions)
                    action = Action(instance, resource, value, reason="restore", service=target.service)
                    actions.append(action)
                    if resource == "cpu" and isinstance(before, dict) and "cpu_quota_us" in before:
                        tasks.append(
                            Task(
                                index,
                                CGROUP,
                                {
                                    **target.group_args(),
                                    "cpu_quota_us": before["cpu_quota_us"],
                                    "cpu_period_us": before["cpu_period_us"],
                                },
                                f"restore[{index}] cpu of {instance}",
                            )
                        )
                    elif resource == "disk_io" and isinstance(before, dict) and before.get("disk"):
                        devices = [
                            {"device": d, **{k: v for k, v in f.items() if v is not None}}
                            for d, f in before["disk"].items()
                        ]
                        tasks.append(
                            Task(
                                index,
                                CGROUP,
                                {**target.group_args(), "devices": devices},
                                f"restore[{index}] disk_io of {instance}",
                            )
                        )
                    elif resource == "network" and "shaping" in raw:
                        tasks.append(
                            _tc_exact(
                                index, target, raw["shaping"], f"restore[{index}] network of {instance}"
                            )
                        )
                    else:
                        tasks.extend(self.tasks_for(index, action))
        except ExecutorError as exc:
            return StepResult(
                (), False, error=f"cannot restore: {exc}", duration_s=time.perf_counter() - started
            )
        by_host = {h: t for h, t in by_host.items() if t}
        if not by_host:
            return StepResult((), False, duration_s=time.perf_counter() - started)
        results = self._run_hosts("restore", by_host, False)
        outcomes = [o for host in by_host for o in results[host]]
        applied = tuple(self._applied(i, a, outcomes) for i, a in enumerate(actions))
        failed = [o for o in outcomes if o.status in ("failed", "unreachable")]
        if failed:
            failures = self._rollback(by_host, results)
            for action in actions:
                self._read_at.pop(action.instance, None)
            return StepResult(
                tuple(Applied(a.action, a.before, a.before, a.changed) for a in applied),
                False,
                rolled_back=True,
                error=f"{failed[0].task.name}: {_message(failed[0].result)}",
                rollback_failures=tuple(failures),
                duration_s=time.perf_counter() - started,
            )
        self._note(applied)
        return StepResult(applied, False, duration_s=time.perf_counter() - started)


def _message(result: Mapping[str, Any]) -> str:
    return str(result.get("msg") or result.get("stderr") or result.get("reason") or "no message")[:500]


def _tc_exact(index: int, target: AnsibleTarget, shaping: Mapping[str, Any] | None, name: str) -> Task:
    args: dict[str, Any] = {"interface": target.interface}
    if target.namespace is not None:
        args["namespace"] = target.namespace
    if not shaping:
        args["state"] = "absent"
    else:
        args.update(kind=shaping["kind"], rate=shaping["rate_bps"])
        if shaping.get("burst_bytes"):
            args["burst"] = shaping["burst_bytes"]
        if shaping["kind"] == "tbf" and shaping.get("latency_us"):
            args["latency"] = shaping["latency_us"]
        if shaping["kind"] == "htb":
            if shaping.get("ceil_bps"):
                args["ceil"] = shaping["ceil_bps"]
            if shaping.get("class_id"):
                args["class_id"] = shaping["class_id"]
    return Task(index, TC, args, name)


def _before_value(resource: str, result: Mapping[str, Any], period_us: int) -> Value | None:
    """The value an action's main task found, in firm's units (None: unknown)."""
    before = result.get("diff", {}).get("before") if isinstance(result.get("diff"), dict) else None
    if resource == "network":
        if not isinstance(before, dict):
            return None
        shaping = before.get("shaping")
        return math.inf if not shaping else float(shaping["rate_bps"])
    if resource in ("llc", "memory_bandwidth") or not isinstance(before, dict):
        return None
    if resource == "cpu":
        quota, period = before.get("cpu_quota_us"), before.get("cpu_period_us") or period_us
        return None if not isinstance(quota, int) else (math.inf if quota < 0 else quota / int(period))
    if resource == "cpu_weight":
        return float(before["cpu_weight"]) if "cpu_weight" in before else None
    if resource == "cpuset":
        return str(before["cpuset_cpus"]) if "cpuset_cpus" in before else None
    if resource == "memory":
        memory = before.get("memory_max")
        return None if not isinstance(memory, int) else (math.inf if memory < 0 else float(memory))
    disk = before.get("disk")
    if isinstance(disk, dict) and disk:
        values = [
            v for d in disk.values() for k, v in d.items() if k in ("read_bps", "write_bps") and v is not None
        ]
        return float(min(values)) if values else math.inf
    return None


def inverse_task(task: Task, result: Mapping[str, Any]) -> Task | None:
    """The task that puts back what ``task`` replaced (from its ``diff.before``); None when unknown."""
    diff = result.get("diff") if isinstance(result.get("diff"), dict) else None
    before = diff.get("before") if diff else None
    name = f"undo {task.name}"
    if task.module == CGROUP:
        if not isinstance(before, dict):
            return None
        target = {
            k: v
            for k, v in task.args.items()
            if k in ("path", "pod_uid", "container_id", "cgroup_driver", "container_runtime")
        }
        args: dict[str, Any] = dict(target)
        for key in ("cpu_quota_us", "cpu_period_us", "cpu_weight", "cpuset_cpus"):
            if key in before and key in task.args:
                args[key] = before[key]
        if "cpu_quota_us" in task.args and "cpu_period_us" in before:
            args["cpu_period_us"] = before["cpu_period_us"]
        if "memory_max" in task.args and isinstance(before.get("memory_max"), int):
            args["memory_max"] = str(before["memory_max"])
        if "devices" in task.args and isinstance(before.get("disk"), dict):
            args["devices"] = [
                {"device": d, **{k: v for k, v in f.items() if v is not None}}
                for d, f in before["disk"].items()
            ]
        return Task(task.action, CGROUP, args, name) if len(args) > len(target) else None
    if task.module == TC:
        if not isinstance(before, dict):
            return None
        shaping = before.get("shaping")
        args = {"interface": task.args["interface"]}
        if "namespace" in task.args:
            args["namespace"] = task.args["namespace"]
        if not shaping:
            args["state"] = "absent"
        else:
            args.update(kind=shaping["kind"], rate=shaping["rate_bps"])
            if shaping.get("burst_bytes"):
                args["burst"] = shaping["burst_bytes"]
            if shaping["kind"] == "tbf" and shaping.get("latency_us"):
                args["latency"] = shaping["latency_us"]
            if shaping["kind"] == "htb" and shaping.get("ceil_bps"):
                args["ceil"] = shaping["ceil_bps"]
        return Task(task.action, TC, args, name)
    if task.module == RESCTRL:
        if result.get("created"):
            return Task(task.action, RESCTRL, {"name": task.args["name"], "state": "absent"}, name)
        lines = {
            line.split(":", 1)[0].strip(): line.split(":", 1)[1]
            for line in str(before or "").splitlines()
            if ":" in line and not line.startswith("tasks")
        }
        args = {"name": task.args["name"]}
        for key, resource in (("l3", "L3"), ("mb", "MB")):
            if key in task.args and resource in lines:
                domains = dict(
                    pair.split("=", 1) for pair in lines[resource].strip().split(";") if "=" in pair
                )
                args[key] = {d: (int(v) if key == "mb" else v) for d, v in domains.items()}
        return Task(task.action, RESCTRL, args, name) if len(args) > 1 else None
    return None


def targets_from_local(targets: Sequence[Any], host: str = "localhost") -> list[AnsibleTarget]:
    """Ansible targets for the local executor's (:class:`firm.actuate.local.LocalTarget`) instances,
    all on ``host``: the embedded testbed driven through ansible."""
    return [
        AnsibleTarget(
            name=t.name,
            service=t.service,
            host=host,
            cgroup=t.cgroup,
            interface=t.interface,
            namespace=t.namespace,
            disk_device=t.disk_device,
        )
        for t in targets
    ]
