"""Discovery of the embedded testbed: its instances, trace store, telemetry and local executor.

Everything comes from the testbed's state file (``<state_dir>/testbed.json``, written by ``firm
testbed up`` and rewritten by scale-out and scale-in): each instance's service, cgroup and
host-side veth, the address of the application's Redis (the trace store) and firm's Redis (the
telemetry). :meth:`TestbedTarget.refresh` re-reads it when it changed, so scaled-out instances are
managed as soon as they appear, and scaled-in ones leave the executor as soon as they are gone.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from ansible_collections.firm.core.plugins.module_utils import cgroup
from ansible_collections.firm.core.plugins.module_utils.errors import FirmError
from firm.actuate.local import LocalExecutor, LocalTarget
from firm.loop.observe import completed_in
from firm.telemetry.cpus import CpuLoad, CpuLoadReader
from firm.telemetry.model import Sample
from firm.telemetry.redis_store import RedisTelemetrySource
from firm.testbed import lifecycle
from firm.testbed.config import TestbedConfig
from firm.testbed.spans import SPANS_STREAM
from firm.testbed.state import StateFileError, TestbedState
from firm.testbed.store import app_redis, assemble
from firm.tracing.model import Trace

log = logging.getLogger(__name__)


class DiscoveryError(FirmError):
    """The testbed cannot be found or read."""


class TraceWindow:
    """The trace store read incrementally: each call fetches only the spans appended since the last.

    Keeps the span records of the last ``horizon_s`` seconds (by their stream id, the time Redis
    appended them), grouped by trace; a trace is rebuilt only when new spans of it arrived. Returns
    the traces whose root span ended in the asked window. Raises ``redis.RedisError`` when the store
    does not answer.
    """

    def __init__(self, client: redis.Redis, horizon_s: float) -> None:
        self.client = client
        self.horizon_ms = int(horizon_s * 1000)
        self.last_id: bytes | str | None = None
        self._spans: dict[str, dict[str, dict[str, Any]]] = {}
        """trace id -> span id -> record."""
        self._seen: dict[str, int] = {}
        """trace id -> stream time (ms) of its newest span (dicts keep insertion order: oldest first)."""
        self._built: dict[str, Trace] = {}

    def read(self, start_us: int, end_us: int) -> list[Trace]:
        low_ms = start_us // 1000 - self.horizon_ms
        first = f"({_text(self.last_id)}" if self.last_id is not None else str(max(0, low_ms))
        entries: list[tuple[bytes, dict[bytes, bytes]]] = self.client.xrange(  # type: ignore[assignment]
            SPANS_STREAM, min=first, max="+"
        )
        for entry_id, fields in entries:
            record = json.loads(fields[b"s"])
            trace_id = record["trace_id"]
            self._spans.setdefault(trace_id, {}).setdefault(record["span_id"], record)
            self._seen.pop(trace_id, None)
            self._seen[trace_id] = int(_text(entry_id).split("-", 1)[0])
            self._built.pop(trace_id, None)
        if entries:
            self.last_id = entries[-1][0]
        for trace_id, seen_ms in list(self._seen.items()):
            if seen_ms >= low_ms:
                break
            del self._seen[trace_id], self._spans[trace_id]
            self._built.pop(trace_id, None)
        for trace_id in self._spans.keys() - self._built.keys():
            self._built[trace_id] = assemble(self._spans[trace_id].values())[0]
        return sorted(completed_in(self._built.values(), start_us, end_us), key=lambda t: t.start)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass
class TestbedTarget:
    """The running testbed as the loop sees it."""

    config: TestbedConfig
    state: TestbedState
    traces: TraceWindow
    telemetry: RedisTelemetrySource | None
    executor: LocalExecutor
    mtime: float = 0.0
    instances: dict[str, dict[str, Any]] = field(default_factory=dict)
    """instance name -> its state-file entry (service, cgroup, host_interface, spec, ...)."""
    _capacity: float | None = None
    _cpu_reader: CpuLoadReader | None = None
    prefetch: bool = True
    """Reads of the trace store are incremental (only the spans appended since the last read), so
    the loop may read between steps (:meth:`firm.loop.runner.ControlLoop.run`)."""

    @classmethod
    def discover(
        cls,
        config: TestbedConfig,
        *,
        redis_url: str | None = None,
        horizon_s: float = 15.0,
        executor: LocalExecutor | None = None,
    ) -> TestbedTarget:
        """Read the state file; raises :class:`DiscoveryError` when the testbed is not up."""
        state = lifecycle.read_state(config)
        if state is None:
            raise DiscoveryError(
                f"the testbed is not up (no state in {config.state_dir})",
                fix="start it with `firm testbed up`",
            )
        url = redis_url or state.telemetry_redis or config.telemetry_redis
        telemetry = RedisTelemetrySource(url) if url else None
        store = app_redis(state, socket_timeout=5, socket_connect_timeout=2)
        disk = data_disk(state.data_dir or config.data_dir)
        targets = [target_of(entry, disk) for entry in state.instances]
        try:
            local = executor or LocalExecutor(targets)
        except FirmError as exc:
            raise DiscoveryError(
                f"cannot manage the testbed's instances: {exc}",
                fix="check the testbed with `firm testbed status`",
            ) from exc
        found = cls(config, state, TraceWindow(store, horizon_s), telemetry, local, _mtime(config))
        found.instances = {e["name"]: e for e in state.instances}
        return found

    def refresh(self) -> tuple[list[str], list[str]]:
        """Re-read the state file if it changed; returns the instances added and removed."""
        mtime = _mtime(self.config)
        if mtime == self.mtime:
            return [], []
        try:
            state = lifecycle.read_state(self.config)
        except StateFileError:  # replaced by another firm meanwhile: keep the instances known so far
            return [], []
        if state is None:
            return [], []
        self.state, self.mtime = state, mtime
        entries = {e["name"]: e for e in state.instances}
        added = sorted(set(entries) - set(self.instances))
        removed = sorted(set(self.instances) - set(entries))
        disk = data_disk(state.data_dir or self.config.data_dir)
        for name in added:
            self.executor.add_target(target_of(entries[name], disk))
        for name in removed:  # scaled in: nothing of it stays in the executor
            self.executor.remove_target(name)
        self.instances = entries
        return added, removed

    def names(self) -> list[str]:
        return sorted(self.instances)

    def service_of(self, name: str) -> str:
        return str(self.instances[name]["service"])

    def read_traces(self, start_us: int, end_us: int) -> list[Trace]:
        return self.traces.read(start_us, end_us)

    def latest_telemetry(self, names: Sequence[str]) -> dict[str, Sample | None]:
        """Each instance's newest sample (one round trip); raises ``redis.RedisError`` when Redis is down."""
        if self.telemetry is None:
            return dict.fromkeys(names)
        pipe = self.telemetry.client.pipeline(transaction=False)
        for name in names:
            pipe.xrevrange(f"{self.telemetry.prefix}:{name}", count=1)
        found: dict[str, Sample | None] = {}
        for name, entries in zip(names, pipe.execute(), strict=True):
            found[name] = (
                Sample.from_fields({_text(k): _text(v) for k, v in entries[0][1].items()})
                if entries
                else None
            )
        return found

    def cpu_load(self) -> dict[int, CpuLoad] | None:
        """Per CPU of the testbed's parent group, its load since the previous call
        (:class:`CpuLoadReader`; None on the first call and where cgroup v2 keeps no per-CPU usage)."""
        if self._cpu_reader is None:
            self._cpu_reader = CpuLoadReader(self.config.cgroup_parent, layout=self.executor.layout)
        return self._cpu_reader.read()

    def cpu_capacity(self, name: str) -> float:
        """Cores the instance could be given on this node: the CPUs of the testbed's parent group
        (the local executor widens an instance's cpuset when its quota needs more CPUs)."""
        if self._capacity is None:
            try:
                layout = self.executor.layout
                parent = cgroup.group_at(layout, self.config.cgroup_parent)
                cpus = cgroup.read_settings(parent, cgroup.CgroupSettings(cpuset_cpus="0"))["cpuset_cpus"]
                self._capacity = float(len(cgroup.parse_list(str(cpus)))) or float(os.cpu_count() or 1)
            except FirmError:
                self._capacity = float(os.cpu_count() or 1)
        return self._capacity


def target_of(entry: dict[str, Any], disk: str | None) -> LocalTarget:
    return LocalTarget(
        name=entry["name"],
        service=entry["service"],
        cgroup=entry["cgroup"],
        interface=entry.get("host_interface"),
        namespace=None,
        disk_device=disk,
    )


def data_disk(path: str) -> str | None:
    """``MAJ:MIN`` of the whole disk ``path`` lives on, or None (tmpfs, overlay: nothing to throttle)."""
    try:
        device = os.stat(path).st_dev
    except OSError:
        return None
    if os.major(device) == 0:
        return None
    try:
        return cgroup.resolve_device(f"{os.major(device)}:{os.minor(device)}")
    except FirmError:
        return None


def _mtime(config: TestbedConfig) -> float:
    try:
        return os.stat(lifecycle.state_file(config)).st_mtime
    except OSError:
        return 0.0


def services_of(state: TestbedState) -> Sequence[str]:
    return sorted({e["service"] for e in state.instances})


class TestbedScaler:
    """Scale-out and scale-in through :mod:`firm.testbed.scale`, one at a time, in a thread.

    A service is scaled again no sooner than ``cooldown_s`` after its last request finished.
    """

    def __init__(self, config: TestbedConfig, cooldown_s: float = 30.0) -> None:
        self.config = config
        self.cooldown_s = cooldown_s
        self._lock = threading.Lock()
        self._busy: threading.Thread | None = None
        self._done: list[dict[str, Any]] = []
        self._last: dict[str, float] = {}

    def request(self, service: str, direction: str) -> bool:
        with self._lock:
            if self._busy is not None and self._busy.is_alive():
                return False
            if time.monotonic() - self._last.get(service, -math.inf) < self.cooldown_s:
                return False
            self._busy = threading.Thread(
                target=self._run, args=(service, direction), daemon=True, name=f"scale-{direction}-{service}"
            )
            self._busy.start()
            return True

    def _run(self, service: str, direction: str) -> None:
        scale = importlib.import_module("firm.testbed.scale")
        event: dict[str, Any] = {"service": service, "direction": direction}
        try:
            if direction == "out":
                event["instance"] = scale.scale_out(self.config, service, progress=log.info).name
            else:
                event["instance"] = scale.scale_in(self.config, service, progress=log.info)
            event["outcome"] = "done"
        except FirmError as exc:
            event.update(outcome="failed", error=str(exc))
        with self._lock:
            self._done.append(event)
            self._last[service] = time.monotonic()

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            done, self._done = self._done, []
        return done

    def wait(self, timeout_s: float = 120.0) -> None:
        """Let a scale request under way finish (at exit)."""
        busy = self._busy
        if busy is not None:
            busy.join(timeout_s)
