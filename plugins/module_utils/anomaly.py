# Copyright: firm developers
# Apache License 2.0 (see galaxy.yml)
"""Anomaly injection: real contention of a chosen kind, intensity, place and duration.

Each anomaly is a set of worker processes (stress-ng, sysbench, iperf3) in a cgroup of its own,
``firm-anomaly/<name>``, and/or a kernel change (a tc qdisc, an nftables table). Intensity acts
through knobs firm already owns: the anomaly cgroup's CPU quota is the workers' duty cycle and its
cpuset pins them beside a service; a ``cpu`` anomaly's CPU weight makes it take the same share of
the CPUs when the services beside it want them too (see ``contending_weight``).

Every anomaly expires by itself:

- each worker carries its own time limit (``--timeout``, ``--time``, ``-t``), which fires even if
  everything else is killed, and the duty cycle is a CFS quota, so no worker is ever left stopped;
- a supervisor process, detached from whatever started the anomaly (its own session), removes the
  kernel changes and the cgroup at expiry, or when asked to stop (SIGTERM);
- every call of this library sweeps records whose supervisor has gone and cleans up after them.

The record of each active anomaly is a JSON file in the state directory (``/run/firm/anomalies``);
ended anomalies are appended to ``history.jsonl`` there, with the time they really ended.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.firm.core.plugins.module_utils import cgroup, tc
from ansible_collections.firm.core.plugins.module_utils.errors import (
    FirmError,
    InvalidInputError,
    NotFoundError,
)
from ansible_collections.firm.core.plugins.module_utils.process import ProcessRef, kill_group

DEFAULT_STATE_DIR = "/run/firm/anomalies"
DEFAULT_TOOLS_FACTS = "/etc/firm/anomaly_tools.json"
DEFAULT_SYSBENCH_DIR = "/var/lib/firm/sysbench"
CGROUP_PARENT = "firm-anomaly"
CPU_PERIOD_US = 100000
MIN_DURATION_S = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")  # \Z: "$" would let a final newline in


class AnomalyInputError(InvalidInputError):
    """An anomaly request was rejected before anything started."""


class AnomalyNotFoundError(NotFoundError):
    """A target, tool or prepared file the anomaly needs does not exist."""


class AnomalyStateError(FirmError):
    """A file in the state directory is not what this module keeps there."""


class AnomalyStartError(FirmError):
    """The anomaly's workers or kernel changes could not be started; what had started was undone."""


# --------------------------------------------------------------------------------------------------
# What is asked for


@dataclass(frozen=True)
class Target:
    """Where the contention lands: the whole node, or beside one service.

    ``cgroup``: pin the workers to that group's CPUs; ``cpus``: to these CPUs instead (kernel list
    format), so that the contention stays where it was planned even after a controller widened the
    service's cpuset; ``namespace``: run inside that network namespace; ``interface``: shape or drop
    on that interface (inside ``namespace`` if given).
    """

    cgroup: str | None = None
    namespace: str | None = None
    interface: str | None = None
    cpus: str | None = None

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in dataclasses.asdict(self).items() if v]
        return ", ".join(parts) or "node"


@dataclass(frozen=True)
class AnomalySpec:
    name: str
    kind: str
    intensity: int  # 0..100
    duration_s: int
    target: Target = field(default_factory=Target)
    link_rate_bps: int | None = None  # network_bandwidth: the capacity intensity is a share of
    peer: str | None = None  # network_bandwidth: an iperf3 server to flood instead of shaping
    labels: dict[str, str] = field(
        default_factory=dict
    )  # e.g. the campaign and service, kept with the record

    def same_request(self, other: AnomalySpec) -> bool:
        return dataclasses.replace(self, duration_s=0) == dataclasses.replace(other, duration_s=0)


@dataclass(frozen=True)
class Environment:
    """The node-side settings: where state lives and where the tools and roots are."""

    state_dir: str = DEFAULT_STATE_DIR
    cgroup_root: str = "/sys/fs/cgroup"
    sysfs_root: str = "/sys"
    netns_dir: str = "/run/netns"
    sysbench_dir: str | None = None  # default: from the anomaly_tools facts file, else DEFAULT_SYSBENCH_DIR
    tools_facts: str = DEFAULT_TOOLS_FACTS
    max_duration_s: int = 3600
    disk_iops_at_full: int = 40000

    def sysbench_files(self) -> str:
        if self.sysbench_dir:
            return self.sysbench_dir
        try:
            with open(self.tools_facts, encoding="utf-8") as handle:
                return str(json.load(handle).get("sysbench_dir", DEFAULT_SYSBENCH_DIR))
        except (OSError, ValueError):
            return DEFAULT_SYSBENCH_DIR


# --------------------------------------------------------------------------------------------------
# Records


@dataclass
class Record:
    """An injected anomaly: what was asked, where, when, and what to undo."""

    spec: AnomalySpec
    host: str
    started_at: float
    expires_at: float
    workers: list[ProcessRef] = field(default_factory=list)
    supervisor: ProcessRef | None = None
    cgroup_path: str | None = None
    restore: dict[str, Any] = field(default_factory=dict)
    ended_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["spec"]["target"] = dataclasses.asdict(self.spec.target)
        return data

    def summary(self) -> dict[str, Any]:
        """What a campaign records as ground truth."""
        spec = self.spec
        return {
            "name": spec.name,
            "host": self.host,
            "kind": spec.kind,
            "intensity": spec.intensity,
            "duration_s": spec.duration_s,
            "target": dataclasses.asdict(spec.target),
            "labels": spec.labels,
            "started_at": self.started_at,
            "expires_at": self.expires_at,
            "ended_at": self.ended_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        spec_data = dict(data["spec"])
        spec_data["target"] = Target(**spec_data["target"])
        supervisor = data.get("supervisor")
        return cls(
            spec=AnomalySpec(**spec_data),
            host=data["host"],
            started_at=data["started_at"],
            expires_at=data["expires_at"],
            workers=[ProcessRef(**w) for w in data.get("workers", [])],
            supervisor=ProcessRef(**supervisor) if supervisor else None,
            cgroup_path=data.get("cgroup_path"),
            restore=data.get("restore", {}),
            ended_at=data.get("ended_at"),
        )


class Store:
    """Active anomalies as one JSON file each, and the history of ended ones."""

    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir
        self.history_unread = 0
        """Lines of the history the last :meth:`history` could not read (a write a crash cut short)."""

    def path(self, name: str) -> str:
        return os.path.join(self.state_dir, f"{name}.json")

    def save(self, record: Record) -> None:
        os.makedirs(self.state_dir, mode=0o755, exist_ok=True)
        temporary = self.path(record.spec.name) + ".tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(record.as_dict(), handle)
        os.replace(temporary, self.path(record.spec.name))

    def load(self, name: str) -> Record | None:
        """The active record ``name`` (None: none). Raises :class:`AnomalyStateError` naming the file
        when it is not a record this module wrote (a file of something else in ``state_dir``)."""
        path = self.path(name)
        try:
            with open(path, encoding="utf-8") as handle:
                return Record.from_dict(json.load(handle))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, AttributeError):  # JSON or fields of something else
            raise AnomalyStateError(
                f"{path} is not a record of an active anomaly (not JSON, or not the fields this module writes)",
                fix=f"give state_dir a directory of firm's own, or move {path} out of {self.state_dir}",
            ) from None

    def all(self) -> list[Record]:
        if not os.path.isdir(self.state_dir):
            return []
        names = sorted(f[:-5] for f in os.listdir(self.state_dir) if f.endswith(".json"))
        return [r for r in (self.load(n) for n in names) if r is not None]

    def history(self, since: float = 0.0) -> list[dict[str, Any]]:
        """Summaries of the anomalies that ended at or after ``since`` (seconds since the epoch).

        A line that is not a summary (the last append of a process that was killed) is skipped and
        counted in :attr:`history_unread`, so that one torn write does not hide the rest."""
        path = os.path.join(self.state_dir, "history.jsonl")
        if not os.path.exists(path):
            return []
        ended, self.history_unread = [], 0
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                except ValueError:
                    entry = None
                ended_at = entry.get("ended_at") if isinstance(entry, dict) else None
                if isinstance(ended_at, bool) or not isinstance(ended_at, (int, float, type(None))):
                    entry = None
                if entry is None:  # an append a crash cut short, or a line of something else
                    self.history_unread += 1
                    continue
                ended.append(entry)
        return [entry for entry in ended if (entry.get("ended_at") or 0) >= since]

    def finish(
        self, record: Record, note: str = "", problems: Sequence[str] = (), ended_at: float | None = None
    ) -> dict[str, Any]:
        """Move a record from the active set to the history, stamped with its real end.

        ``note`` says why it ended early (workers that died); ``problems`` what could not be undone.
        ``ended_at`` (seconds since the epoch) is when its contention stopped, now when not given.
        Only the record this very launch saved is removed: a replacement under the same name stays.
        """
        record.ended_at = time.time() if ended_at is None else ended_at
        entry = dict(record.summary(), note=note, problems=list(problems))
        os.makedirs(self.state_dir, mode=0o755, exist_ok=True)
        with open(os.path.join(self.state_dir, "history.jsonl"), "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
        saved = self.load(record.spec.name)
        if saved is not None and saved.started_at == record.started_at:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path(record.spec.name))
        return entry


# --------------------------------------------------------------------------------------------------
# Validation


def validate(spec: AnomalySpec, env: Environment) -> None:
    """Refuse a request that cannot run here, with what to do instead, before anything starts."""
    check_environment(env)
    check_request(spec, env.max_duration_s)
    if REGISTRY[spec.kind].kernel_feature == "sch_netem" and not netem_available():
        working = [k for k in KINDS if REGISTRY[k].kernel_feature != "sch_netem"]
        raise AnomalyNotFoundError(
            "network_delay needs the tc netem qdisc, which this kernel does not have (sch_netem)",
            fix=f"use a kernel with sch_netem, or one of {', '.join(working)}",
        )
    for tool in TOOLS[spec.kind] + (("iperf3",) if spec.peer else ()):
        if shutil.which(tool) is None:
            raise AnomalyNotFoundError(
                f"{tool} is not installed, and the {spec.kind} anomaly needs it",
                fix="install the anomaly tools (the firm.core anomaly_tools role, or apt-get "
                "install stress-ng sysbench iperf3 nftables iproute2)",
            )
    _validate_target(spec, env)


MAX_DURATION_S = 7 * 24 * 3600
"""The longest bound of a duration (a week): an anomaly is an experiment, not a state of the node."""
MAX_DISK_IOPS = 2**31 - 1
"""The largest ``disk_iops_at_full`` (sysbench takes its rate as a C int)."""


def check_environment(env: Environment) -> None:
    """The node-side bounds, checked before anything is read or started."""
    if not MIN_DURATION_S <= env.max_duration_s <= MAX_DURATION_S:
        raise AnomalyInputError(
            f"max_duration {env.max_duration_s} s is outside {MIN_DURATION_S}..{MAX_DURATION_S} s (a week)",
            fix="give max_duration in seconds, at least 1, or leave it at its default of 3600",
        )
    if not 1 <= env.disk_iops_at_full <= MAX_DISK_IOPS:
        raise AnomalyInputError(
            f"disk_iops_at_full {env.disk_iops_at_full} is outside 1..{MAX_DISK_IOPS}",
            fix="give the random IOPS the node's disk can do (40000 by default), so intensity is a share of it",
        )


def check_request(spec: AnomalySpec, max_duration_s: int = 3600) -> None:
    """What can be checked anywhere (a campaign checks it on the controller before any round runs)."""
    if not _NAME.match(spec.name):
        raise AnomalyInputError(
            f"anomaly name {spec.name!r} is not a plain name",
            fix="use letters, digits, '.', '_' or '-' (at most 63), starting with a letter or digit",
        )
    if spec.kind not in KINDS:
        raise AnomalyInputError(
            f"anomaly kind {spec.kind!r} is not known", fix=f"use one of {', '.join(KINDS)}"
        )
    if not 0 <= spec.intensity <= 100:
        raise AnomalyInputError(
            f"intensity {spec.intensity} is outside 0..100", fix="give a percentage from 0 to 100"
        )
    if not MIN_DURATION_S <= spec.duration_s <= max_duration_s:
        raise AnomalyInputError(
            f"duration {spec.duration_s} s is outside {MIN_DURATION_S}..{max_duration_s} s",
            fix="give a duration in seconds within the bound (max_duration raises it)",
        )


def _validate_target(spec: AnomalySpec, env: Environment) -> None:
    target = spec.target
    if target.cpus is not None:
        online = set(os.sched_getaffinity(0))
        wanted = cgroup.parse_list(target.cpus, "target_cpus")
        if not wanted or not set(wanted) <= online:
            raise AnomalyInputError(
                f"target_cpus {target.cpus!r} names no CPU or one this node cannot run on",
                fix=f"give CPUs among {cgroup.format_list(sorted(online))} in the kernel's list format",
            )
    if target.cgroup is not None:
        group = cgroup.group_at(cgroup.detect_layout(env.cgroup_root), target.cgroup)
        if not os.path.isdir(group.dir("cpuset")):
            raise AnomalyNotFoundError(
                f"target cgroup {target.cgroup} does not exist in the cpuset hierarchy",
                fix="give the cgroup path of a running service",
            )
    if target.namespace is not None:
        tc.check_namespace(target.namespace, env.netns_dir)
    network = spec.kind.startswith("network_")
    if network and spec.peer is None and target.interface is None:
        raise AnomalyInputError(
            f"{spec.kind} needs target interface (and namespace, if it lives in one)",
            fix="give the interface to shape, e.g. the service's veth",
        )
    if spec.peer is not None and spec.kind != "network_bandwidth":
        raise AnomalyInputError(f"peer applies to network_bandwidth only, not {spec.kind}", fix="drop peer")
    if spec.kind == "network_bandwidth" and spec.peer is not None and target.interface is not None:
        raise AnomalyInputError(
            "network_bandwidth takes either peer (flood) or interface (shape), not both",
            fix="drop one of them",
        )
    if target.interface is not None:
        tc.read_link(target.interface, target.namespace)  # raises when the interface is missing
    if not network and target.interface is not None:
        raise AnomalyInputError(
            f"{spec.kind} does not use an interface", fix="target a cgroup or the whole node"
        )
    if spec.kind == "disk_io":
        files = env.sysbench_files()
        if not os.path.exists(os.path.join(files, "test_file.0")):
            raise AnomalyNotFoundError(
                f"no sysbench files in {files}",
                fix="run the anomaly_tools role, or: sysbench fileio --file-total-size=1G "
                f"prepare in {files}",
            )


@functools.lru_cache(maxsize=1)
def netem_available() -> bool:
    """Whether the kernel has netem: try it on the loopback of a throwaway network namespace."""
    if shutil.which("unshare") is None or shutil.which("tc") is None:
        return False
    proc = subprocess.run(
        ["unshare", "--net", "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
        capture_output=True,
        check=False,
        env=dict(os.environ, LC_ALL="C"),
    )
    return proc.returncode == 0


# --------------------------------------------------------------------------------------------------
# How intensity becomes contention


@dataclass(frozen=True)
class Plan:
    """Workers to start and the anomaly cgroup's settings (their duty cycle and CPUs)."""

    commands: list[list[str]]
    settings: cgroup.CgroupSettings
    cpus: list[int]
    shaping_rate_bps: int | None = None
    loss_percent: int | None = None
    delay_ms: int | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "commands": self.commands,
            "cpu_quota_us": self.settings.cpu_quota_us,
            "cpu_weight": self.settings.cpu_weight,
            "cpuset_cpus": self.settings.cpuset_cpus,
            "loss_percent": self.loss_percent,
            "shaping_rate_bps": self.shaping_rate_bps,
            "delay_ms": self.delay_ms,
        }


def llc_bytes(sysfs_root: str = "/sys") -> int:
    """The size of the largest (last-level) cache of CPU 0, from sysfs; 8 MiB when unknown."""
    base = os.path.join(sysfs_root, "devices/system/cpu/cpu0/cache")
    best = (0, 8 << 20)
    for index in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        try:
            with open(os.path.join(base, index, "level"), encoding="ascii") as level_file:
                level = int(level_file.read())
            with open(os.path.join(base, index, "size"), encoding="ascii") as size_file:
                size = cgroup.parse_size(size_file.read().strip().rstrip("B"))
        except (OSError, ValueError, FirmError):
            continue
        best = max(best, (level, size))
    return best[1]


def target_cpus(spec: AnomalySpec, env: Environment) -> list[int]:
    """The CPUs the workers run on: the target's ``cpus``, the target cgroup's, or every online CPU."""
    if spec.target.cpus is not None:
        return cgroup.parse_list(spec.target.cpus, "target_cpus")
    if spec.target.cgroup is not None:
        group = cgroup.group_at(cgroup.detect_layout(env.cgroup_root), spec.target.cgroup)
        with open(group.file("cpuset", "cpuset.cpus"), encoding="ascii") as handle:
            cpus = cgroup.parse_list(handle.read().strip())
        if cpus:
            return cpus
    return sorted(os.sched_getaffinity(0))


def plan(spec: AnomalySpec, env: Environment) -> Plan:
    """Translate kind and intensity into workers, duty cycle and kernel changes.

    cpu: 1 + intensity // 25 stress-ng CPU workers per target CPU (1 to 5), together held to a duty cycle
    of intensity % of the target CPUs by a CFS quota, with the CPU weight of ``contending_weight``.
    memory_bandwidth: one STREAM worker per target CPU, duty cycle = intensity.
    llc: one worker per target CPU, together writing over a working set of intensity % of the LLC
    (writes, so the pages are real: reading untouched memory would only ever touch the kernel's zero
    page). stress-ng divides ``--vm-bytes`` among its vm workers (stress-vm.c), so it is given the total.
    disk_io: 1..4 sysbench random read/write threads (O_DIRECT) at intensity % of disk_iops_at_full.
    network_bandwidth: shape the interface to (100 - intensity) % of the link, or flood a peer with
    intensity % of it. network_loss: drop intensity % of the interface's packets.
    network_delay: netem delay of intensity ms.
    """
    cpus = target_cpus(spec, env)
    workers = len(cpus)
    duty_quota = max(cgroup.CPU_QUOTA_MIN_US, CPU_PERIOD_US * workers * spec.intensity // 100)
    context = _Context(
        spec,
        env,
        cpus,
        str(spec.duration_s),
        cgroup.CgroupSettings(
            cpu_quota_us=duty_quota, cpu_period_us=CPU_PERIOD_US, cpuset_cpus=cgroup.format_list(cpus)
        ),
        cgroup.CgroupSettings(cpuset_cpus=cgroup.format_list(cpus)),
    )
    kind = REGISTRY.get(spec.kind)
    if kind is None:
        raise AnomalyInputError(
            f"anomaly kind {spec.kind!r} is not known", fix=f"use one of {', '.join(KINDS)}"
        )
    return kind.plan(context)


@dataclass(frozen=True)
class _Context:
    """What every kind's planner starts from: the request, the CPUs, and the two cgroup settings."""

    spec: AnomalySpec
    env: Environment
    cpus: list[int]
    seconds: str
    duty: cgroup.CgroupSettings
    """A CFS quota of intensity % of the target CPUs, and the cpuset."""
    pinned: cgroup.CgroupSettings
    """The cpuset only."""


def contending_weight(intensity: int) -> int:
    """CPU weight (cgroup v2 units, 100 the default) of a ``cpu`` anomaly at ``intensity`` %.

    The quota alone bounds what the workers take from idle CPUs; a sleeping service that wakes beside
    them wins its CPU back at once, because CFS favours sleepers and shares between groups by weight.
    Measured on the embedded testbed (2 vCPUs, 40 requests/s), a 100 % duty cycle at the default
    weight left every SLO met. A weight of intensity / (100 - intensity) times the default makes the
    workers take intensity % of the CPUs from services that want them too (a neighbour with that much
    more CPU requested, as a Kubernetes pod's shares follow its request): the default at 50, four
    times it at 80, the kernel's maximum at 100. Range: CPU_WEIGHT_MIN to CPU_WEIGHT_MAX."""
    if intensity >= 100:
        return cgroup.CPU_WEIGHT_MAX
    weight = round(cgroup.CPU_WEIGHT_DEFAULT * intensity / (100 - intensity))
    return max(cgroup.CPU_WEIGHT_MIN, min(cgroup.CPU_WEIGHT_MAX, weight))


def _plan_cpu(c: _Context) -> Plan:
    # More runnable workers per CPU as intensity rises: a waking service then waits behind more of
    # them, as behind a noisy neighbour's threads, while the quota bounds the CPU they take in all.
    threads = len(c.cpus) * (1 + c.spec.intensity // 25)
    return Plan(
        [["stress-ng", "--cpu", str(threads), "--cpu-load", "100", "--timeout", c.seconds, "--quiet"]],
        dataclasses.replace(c.duty, cpu_weight=contending_weight(c.spec.intensity)),
        c.cpus,
    )


def _plan_memory_bandwidth(c: _Context) -> Plan:
    return Plan(
        [
            [
                "stress-ng",
                "--stream",
                str(len(c.cpus)),
                "--stream-l3-size",
                str(llc_bytes(c.env.sysfs_root)),
                "--timeout",
                c.seconds,
                "--quiet",
            ]
        ],
        c.duty,
        c.cpus,
    )


def _plan_llc(c: _Context) -> Plan:
    workers = len(c.cpus)
    working_set = max(workers * (64 << 10), llc_bytes(c.env.sysfs_root) * c.spec.intensity // 100)
    return Plan(
        [
            [
                "stress-ng",
                "--vm",
                str(workers),
                "--vm-bytes",
                str(working_set),
                "--vm-method",
                "write64",
                "--vm-keep",
                "--timeout",
                c.seconds,
                "--quiet",
            ]
        ],
        c.pinned,
        c.cpus,
    )


def _plan_disk_io(c: _Context) -> Plan:
    threads = max(1, math.ceil(4 * c.spec.intensity / 100))
    rate = max(1, c.env.disk_iops_at_full * c.spec.intensity // 100)
    count, total = _sysbench_files(c.env.sysbench_files())
    options = [
        "fileio",
        "--file-test-mode=rndrw",
        "--file-extra-flags=direct",
        "--file-fsync-freq=0",
        f"--threads={threads}",
        f"--rate={rate}",
        f"--file-num={count}",
        f"--file-total-size={total}",
    ]
    # sysbench 1.0 aborts ("FATAL: The event queue is full", exit 1) once its threads fall behind
    # --rate, often 5-9 s in: rerun it for the time left until the anomaly's deadline, which still
    # bounds it. The script takes the duration (--time=N) first, then sysbench's test and options.
    script = (
        "end=$(($(date +%s) + ${1#--time=})); shift; "
        'while now=$(date +%s); [ "$now" -lt "$end" ]; do '
        'sysbench "$@" --time=$((end - now)) run >/dev/null 2>&1 || sleep 0.2; done'
    )
    command = ["sh", "-c", script, "sysbench-until-deadline", f"--time={c.seconds}", *options]
    return Plan([command], c.pinned, c.cpus)


def _plan_network_bandwidth(c: _Context) -> Plan:
    spec = c.spec
    link = spec.link_rate_bps or _link_rate(spec, c.env)
    if spec.peer is not None:
        host, _, port = spec.peer.partition(":")
        flood = [
            "iperf3",
            "-c",
            host,
            "-p",
            port or "5201",
            "-b",
            str(max(1, link * spec.intensity // 100)),
            "-t",
            c.seconds,
            "--connect-timeout",
            "3000",
        ]
        return Plan([_in_namespace(spec.target.namespace, flood)], c.pinned, c.cpus)
    rate = max(8000, link * (100 - spec.intensity) // 100)
    return Plan([], c.pinned, c.cpus, shaping_rate_bps=rate)


def _plan_network_loss(c: _Context) -> Plan:
    return Plan([], c.pinned, c.cpus, loss_percent=c.spec.intensity)


def _plan_network_delay(c: _Context) -> Plan:
    return Plan([], c.pinned, c.cpus, delay_ms=max(1, c.spec.intensity))


@dataclass(frozen=True)
class Kind:
    """One kind of anomaly: what it needs and how its intensity becomes contention."""

    name: str
    tools: tuple[str, ...]
    """Commands it runs (checked with ``which`` before anything starts)."""
    placement: str
    """``cpus``: workers beside a service, on its cgroup's CPUs; ``interface``: a change of (or traffic on)
    a network interface."""
    plan: Callable[[_Context], Plan]
    kernel_feature: str | None = None
    """A kernel feature beyond the tools that some kernels lack (``sch_netem``), else None."""


REGISTRY: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind("cpu", ("stress-ng",), "cpus", _plan_cpu),
        Kind("memory_bandwidth", ("stress-ng",), "cpus", _plan_memory_bandwidth),
        Kind("llc", ("stress-ng",), "cpus", _plan_llc),
        Kind("disk_io", ("sysbench",), "cpus", _plan_disk_io),
        Kind("network_bandwidth", ("tc",), "interface", _plan_network_bandwidth),
        Kind("network_loss", ("nft",), "interface", _plan_network_loss),
        Kind("network_delay", ("tc",), "interface", _plan_network_delay, kernel_feature="sch_netem"),
    )
}
"""Every anomaly kind, the one list the module, the campaigns, the testbed and the CLI read."""

KINDS = tuple(REGISTRY)
TOOLS = {name: kind.tools for name, kind in REGISTRY.items()}


def kind_names(*, placement: str | None = None, portable: bool = False) -> list[str]:
    """The kinds in registry order; only those of one ``placement`` (``cpus`` or ``interface``), and
    with ``portable`` only those that need no optional kernel feature."""
    return [
        name
        for name, kind in REGISTRY.items()
        if (placement is None or kind.placement == placement) and not (portable and kind.kernel_feature)
    ]


def _in_namespace(namespace: str | None, command: list[str]) -> list[str]:
    return ["ip", "netns", "exec", namespace, *command] if namespace else command


def _sysbench_files(directory: str) -> tuple[int, int]:
    """How many files sysbench prepared and their total size: it must be told both."""
    sizes = [
        os.path.getsize(os.path.join(directory, name))
        for name in os.listdir(directory)
        if re.fullmatch(r"test_file\.\d+", name)
    ]
    return len(sizes), sum(sizes)


def _link_rate(spec: AnomalySpec, env: Environment) -> int:
    """The interface's speed from sysfs (Mbit/s), when the request gives no link_rate."""
    interface = spec.target.interface or ""
    command = _in_namespace(spec.target.namespace, ["cat", f"/sys/class/net/{interface}/speed"])
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    speed = int(proc.stdout.strip()) if proc.returncode == 0 and proc.stdout.strip().isdigit() else 0
    if speed <= 0:
        raise AnomalyInputError(
            f"the speed of {interface} is unknown (virtual interfaces may report none)",
            fix="give link_rate, the capacity the intensity is a share of, e.g. 1gbit",
        )
    return speed * 1_000_000


# --------------------------------------------------------------------------------------------------
# Starting, stopping, listing


def active(env: Environment) -> list[Record]:
    """The anomalies running now, after cleaning up after any whose supervisor has gone."""
    sweep(env)
    return Store(env.state_dir).all()


def sweep(env: Environment) -> list[str]:
    """Clean up records whose supervisor is gone (killed, or the node rebooted); returns their names."""
    store = Store(env.state_dir)
    swept = []
    for record in store.all():
        if record.supervisor is None or not record.supervisor.alive():
            cleanup(record, env, note="its supervisor had gone")
            swept.append(record.spec.name)
    _remove_orphan_groups(env, store.all())
    return swept


ORPHAN_GROUP_AGE_S = 10.0
"""Seconds an empty anomaly cgroup that no record names must exist before a sweep removes it (far longer
than a start takes from creating a group to putting its workers in it)."""


def _remove_orphan_groups(env: Environment, records: Sequence[Record]) -> None:
    """Remove empty groups under CGROUP_PARENT that no record names: their records were lost (/run at a
    reboot-like loss of state) after their workers had ended by their own time limit. A group with
    processes is never removed (rmdir refuses it)."""
    named = {record.cgroup_path for record in records}
    try:
        layout = cgroup.detect_layout(env.cgroup_root)
    except (FirmError, OSError):
        return
    now = time.time()
    for parent in cgroup.group_at(layout, CGROUP_PARENT).distinct_dirs():
        with contextlib.suppress(OSError):
            for child in os.listdir(parent):
                path = os.path.join(parent, child)
                if f"{CGROUP_PARENT}/{child}" in named or not os.path.isdir(path):
                    continue
                with contextlib.suppress(OSError):
                    if now - os.stat(path).st_ctime >= ORPHAN_GROUP_AGE_S:
                        os.rmdir(path)
            os.rmdir(parent)  # the shared parent goes with its last child


@contextlib.contextmanager
def _start_lock(state_dir: str) -> Iterator[None]:
    """Starts on one node take turns (two campaigns naming the same anomaly at once). A POSIX lock on
    ``<state_dir>/.lock``: the supervisor forked meanwhile does not inherit it."""
    os.makedirs(state_dir, mode=0o755, exist_ok=True)
    with open(os.path.join(state_dir, ".lock"), "a", encoding="utf-8") as handle:
        fcntl.lockf(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(handle, fcntl.LOCK_UN)


def start(spec: AnomalySpec, env: Environment, check_mode: bool = False) -> tuple[bool, Record, Plan]:
    """Start an anomaly unless the same one runs under that name; returns (changed, record, plan).

    A different request under a running name replaces it; concurrent starts take turns.
    """
    validate(spec, env)
    with contextlib.nullcontext() if check_mode else _start_lock(env.state_dir):
        return _start(spec, env, check_mode)


def _start(spec: AnomalySpec, env: Environment, check_mode: bool) -> tuple[bool, Record, Plan]:
    if not check_mode:
        sweep(env)
    store = Store(env.state_dir)
    running = store.load(spec.name)
    work = plan(spec, env)
    if running is not None and running.spec.same_request(spec):
        return False, running, work
    if not check_mode and running is not None:
        stop(spec.name, env)  # before the clock starts: stopping can take seconds
    now = time.time()
    record = Record(spec, socket.gethostname(), now, now + spec.duration_s)
    if check_mode:
        return True, record, work
    _launch(record, work, env)
    return True, record, work


def stop(name: str, env: Environment, timeout_s: float = 10.0) -> dict[str, Any] | None:
    """Stop an anomaly by name: ask its supervisor, and clean up directly if it does not answer.

    Returns its history entry (with the time it really ended), or None when none ran under that name.
    """
    store = Store(env.state_dir)
    record = store.load(name)
    if record is None:
        return None
    if record.supervisor is not None and record.supervisor.alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.supervisor.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _still_saved(store, record) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not _still_saved(store, record):
            return next(
                (
                    h
                    for h in reversed(store.history(record.started_at))
                    if h["name"] == name and h["started_at"] == record.started_at
                ),
                None,
            )
    _kill_supervisor(record)  # it did not answer in time: it must not clean up a second time
    return cleanup(record, env, note="stopped")


def _kill_supervisor(record: Record) -> None:
    if record.supervisor is not None and record.supervisor.alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.supervisor.pid, signal.SIGKILL)


def _still_saved(store: Store, record: Record) -> bool:
    saved = store.load(record.spec.name)
    return saved is not None and saved.started_at == record.started_at


def cleanup(record: Record, env: Environment, ran: bool = True, note: str = "") -> dict[str, Any] | None:
    """Undo everything an anomaly did: workers, kernel changes, its cgroup; then file it as ended.

    Every step is tried even when an earlier one fails (an interface or namespace that is gone has
    nothing left to undo), and the record is always filed, with what could not be undone, so that
    one broken anomaly never blocks the node's others. ``ran`` is false for an anomaly that failed
    to start: it is undone but not filed in the history. Returns the history entry.
    """
    problems: list[str] = []
    for worker in record.workers:
        kill_group(worker)
    try:
        _undo_kernel_change(record.restore)
    except (FirmError, OSError) as exc:
        problems.append(str(exc))
    try:  # kills what is left in its cgroup and waits until the group is empty
        _remove_cgroup(record.cgroup_path, env)
    except (FirmError, OSError) as exc:
        problems.append(str(exc))
    ended_at = time.time()  # only now has every process that contended ended: the label's end
    store = Store(env.state_dir)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(env.state_dir, f"{record.spec.name}.log"))
    if ran:
        return store.finish(record, note=note, problems=problems, ended_at=ended_at)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(store.path(record.spec.name))
    return None


# --------------------------------------------------------------------------------------------------
# Launch: kernel changes, workers in their cgroup, then the detached supervisor


def _launch(record: Record, work: Plan, env: Environment) -> None:
    spec = record.spec
    store = Store(env.state_dir)
    try:
        record.restore = _apply_kernel_change(spec, work)
        if work.commands:
            record.cgroup_path = f"{CGROUP_PARENT}/{spec.name}"
            group = cgroup.group_at(cgroup.detect_layout(env.cgroup_root), record.cgroup_path)
            cgroup.ensure_cgroup(group, work.settings, sysfs_root=env.sysfs_root)
            _weigh_parent(env)
            if spec.kind == "disk_io":  # so that telemetry sees the workers' I/O
                cgroup.enable_disk_accounting(group.layout, env.sysfs_root)
            logs = os.path.join(env.state_dir, f"{spec.name}.log")
            os.makedirs(env.state_dir, mode=0o755, exist_ok=True)
            cwd = env.sysbench_files() if spec.kind == "disk_io" else "/"
            record.workers = [_spawn(command, group, logs, cwd) for command in work.commands]
            _check_started(record, logs)
        record.supervisor, release = _daemonize(lambda: _supervise(record, env))
        store.save(record)
        release()
    except BaseException:
        _kill_supervisor(record)  # not released yet: it must not supervise an anomaly that did not start
        cleanup(record, env, ran=False)
        raise


def _spawn(command: list[str], group: cgroup.Group, log: str, cwd: str) -> ProcessRef:
    with open(log, "ab") as output:
        # preexec_fn puts the worker in its group before it runs at all. The module's process has no
        # threads; a threaded caller must start anomalies from a process of their own.
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            cwd=cwd,
            start_new_session=True,
            env=dict(os.environ, LC_ALL="C"),
            preexec_fn=functools.partial(cgroup.join, group),  # noqa: PLW1509
        )
    return ProcessRef.of(proc.pid)


def _check_started(record: Record, log: str, settle_s: float = 0.3) -> None:
    """Workers that die at once were given something they cannot run: say what they said."""
    time.sleep(settle_s)
    dead = [w for w in record.workers if not w.alive()]
    if dead:
        with open(log, encoding="utf-8", errors="replace") as handle:
            said = handle.read()[-800:]
        raise AnomalyStartError(
            f"the {record.spec.kind} workers exited at once: {said.strip()}",
            fix="check that the anomaly tools work on this node",
        )


def _apply_kernel_change(spec: AnomalySpec, work: Plan) -> dict[str, Any]:
    """Apply the anomaly's tc or nftables change; returns how to undo it."""
    interface, namespace = spec.target.interface, spec.target.namespace
    if work.shaping_rate_bps is not None and interface is not None:
        previous = tc.read_shaping(interface, namespace)
        tc.ensure_shaping(interface, tc.parse_request("tbf", work.shaping_rate_bps), namespace)
        return {
            "type": "tc",
            "interface": interface,
            "namespace": namespace,
            "previous": previous.as_dict() if previous else None,
        }
    if work.loss_percent is not None and interface is not None:
        table = _loss_table(spec.name)
        ruleset = (
            f"table inet {table} {{\n chain output {{\n  type filter hook output priority 0; policy accept;\n"
            f'  oifname "{interface}" numgen random mod 100 < {work.loss_percent} counter drop\n }}\n}}\n'
        )
        _nft(namespace, ["-f", "-"], ruleset)
        return {"type": "nft", "namespace": namespace, "table": table}
    if work.delay_ms is not None and interface is not None:
        previous = tc.read_shaping(interface, namespace)
        tc.apply_netem_delay(interface, work.delay_ms * 1000, max(1, work.delay_ms // 10) * 1000, namespace)
        return {
            "type": "netem",
            "interface": interface,
            "namespace": namespace,
            "previous": previous.as_dict() if previous else None,
        }
    return {}


def _loss_table(name: str) -> str:
    """The nftables table of a loss anomaly: a hash of its name, so that a-b and a_b differ."""
    return "firm_anomaly_" + hashlib.sha1(name.encode()).hexdigest()[:16]


def _nft(namespace: str | None, args: list[str], stdin: str | None = None) -> None:
    command = _in_namespace(namespace, ["nft", *args])
    proc = subprocess.run(
        command, input=stdin, capture_output=True, text=True, check=False, env=dict(os.environ, LC_ALL="C")
    )
    if proc.returncode != 0:
        raise AnomalyStartError(
            f"nft {' '.join(args)} failed: {proc.stderr.strip()}",
            fix="check that nftables works on this node",
            rc=proc.returncode,
            stdout=proc.stdout,
            stderr=proc.stderr,
        )


def _undo_kernel_change(restore: dict[str, Any]) -> None:
    kind = restore.get("type")
    if kind in ("tc", "netem"):
        interface, namespace, previous = (
            restore["interface"],
            restore.get("namespace"),
            restore.get("previous"),
        )
        if kind == "netem":
            tc.remove_netem(interface, namespace)
        if previous or kind == "tc":
            tc.ensure_shaping(interface, tc.Shaping(**previous) if previous else None, namespace)
    elif kind == "nft":
        with contextlib.suppress(AnomalyStartError):  # already gone
            _nft(restore.get("namespace"), ["delete", "table", "inet", restore["table"]])


def _remove_cgroup(path: str | None, env: Environment) -> None:
    """The anomaly's cgroup, with anything still in it (a worker's child whose leader died first)."""
    if path is None:
        return
    layout = cgroup.detect_layout(env.cgroup_root)
    group = cgroup.group_at(layout, path)
    cgroup.signal_members(group)
    cgroup.remove_group_when_empty(group)
    # The shared parent goes with its last child; rmdir (not a recursive removal) leaves it while
    # another anomaly has a group in it.
    for directory in cgroup.group_at(layout, CGROUP_PARENT).distinct_dirs():
        with contextlib.suppress(OSError):
            os.rmdir(directory)
    _weigh_parent(env)


def _weigh_parent(env: Environment) -> None:
    """Give the shared parent the sum of its children's CPU weights.

    Groups share a CPU by weight among siblings only: the parent competes with the services' groups,
    and a child's weight counts only against the other anomalies. With the sum, each anomaly weighs
    against the services about as its own weight says. No parent (the last anomaly ended): nothing."""
    layout = cgroup.detect_layout(env.cgroup_root)
    parent = cgroup.group_at(layout, CGROUP_PARENT)
    directory = parent.dir("cpu")
    if not os.path.isdir(directory):
        return
    weights = []
    for name in sorted(os.listdir(directory)):
        if os.path.isdir(os.path.join(directory, name)):
            with contextlib.suppress(OSError, FirmError):  # a child being removed as we read
                weights.append(cgroup.read_cpu_weight(cgroup.group_at(layout, f"{CGROUP_PARENT}/{name}")))
    if not weights:
        return
    total = max(cgroup.CPU_WEIGHT_MIN, min(cgroup.CPU_WEIGHT_MAX, sum(weights)))
    cgroup.apply_writes(cgroup.plan_writes(parent, cgroup.CgroupSettings(cpu_weight=total)))


# --------------------------------------------------------------------------------------------------
# The supervisor: a detached process that ends the anomaly at its expiry


def _daemonize(body: Callable[[], None]) -> tuple[ProcessRef, Callable[[], None]]:
    """Run ``body`` in a grandchild in its own session, with no tie to the caller.

    Returns the grandchild and a ``release`` function: ``body`` starts once the caller releases it
    (after saving the record that names the grandchild) or dies. A fork (not an exec) carries the
    already-imported code, which matters inside an Ansible module whose files are deleted when it
    returns. The grandchild's standard streams go to /dev/null so that whoever reads the caller's
    output (Ansible) is not kept waiting.
    """
    pid_read, pid_write = os.pipe()
    go_read, go_write = os.pipe()
    child = os.fork()
    if child == 0:  # first child: start a session, fork the supervisor, report its PID, leave
        os.close(pid_read)
        os.close(go_write)
        os.setsid()
        grandchild = os.fork()
        if grandchild == 0:
            os.close(pid_write)
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            try:
                os.read(go_read, 1)  # returns on release or when the caller is gone
                os.close(go_read)
                body()
            finally:
                os._exit(0)
        os.write(pid_write, str(grandchild).encode())
        os._exit(0)
    os.close(pid_write)
    os.close(go_read)
    os.waitpid(child, 0)
    with os.fdopen(pid_read, "rb") as pipe:
        pid = int(pipe.read().decode())

    def release() -> None:
        os.write(go_write, b"1")
        os.close(go_write)

    return ProcessRef.of(pid), release


def _supervise(record: Record, env: Environment) -> None:
    store = Store(env.state_dir)
    stopping = False

    def on_term(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    deadline = record.expires_at
    note = ""
    while not stopping and time.time() < deadline:
        time.sleep(min(0.1, max(0.0, deadline - time.time())))
        if record.workers and not any(w.alive() for w in record.workers):
            note = "its workers exited before it expired"  # no contention is left: the label must end here
            break
    saved = store.load(record.spec.name)
    cleanup(
        saved if saved is not None and saved.started_at == record.started_at else record,
        env,
        note="stopped" if stopping else note,
    )
