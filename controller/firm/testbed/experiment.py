"""A run on the testbed: open-loop load with one scheduled anomaly, measured before, during and after.

This is what the README's run command does until the controller lands: it shows that the testbed
meets its SLOs at the default load, that real contention on one service breaks them, and that they
come back when the contention ends.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.firm.core.plugins.module_utils import anomaly, cgroup, tc
from ansible_collections.firm.core.plugins.module_utils.errors import FirmError
from firm.actuate.runner import run_module
from firm.load.config import ConstantRate, LoadSpec, Mix, RedisOutput, RequestType, Slo
from firm.load.generator import run_load
from firm.load.sink import RecordSink, RedisSink, SinkStats
from firm.load.stats import RequestRecord, Summary, WindowStats, percentile
from firm.testbed import lifecycle
from firm.testbed.config import Instance, TestbedConfig

NODE_KINDS = tuple(anomaly.kind_names(placement="cpus"))
"""Kinds that land on an instance's CPUs (its cgroup's cpuset); the network kinds use its veth."""


class ExperimentError(FirmError):
    """The run could not be set up as asked; ``fix`` says what to change."""


@dataclass(frozen=True)
class AnomalyPlan:
    """One anomaly beside one instance, from ``start_s`` after the load begins, for ``duration_s``."""

    kind: str
    instance: str
    intensity: int
    start_s: float
    duration_s: int
    link_rate: str = "100mbit"
    """For network_bandwidth: the capacity its intensity is a share of."""


@dataclass(frozen=True)
class RunPlan:
    duration_s: float
    rate_rps: float | None = None
    """None: the testbed configuration's default load."""
    seed: int = 1
    anomaly: AnomalyPlan | None = None
    redis_url: str | None = None
    """Where requests and latency windows are recorded (firm's Redis); None to record nowhere."""
    warmup_s: float = 2.0
    """Seconds at the start of the load that no phase counts: the load generator's and the services'
    first requests open connections and take cold paths (on a 2-core machine the first half second
    ran up to 400 ms at the default load, and never again after)."""


@dataclass
class Phase:
    """One request type over one phase of the run (before, during or after the anomaly).

    Percentiles are over every request whose intended send time fell in the phase, not per window:
    a few seconds of a rare request type hold too few requests for a stable p99.
    """

    latencies_ms: list[float] = field(default_factory=list)
    failed: int = 0
    windows: int = 0
    violated: int = 0

    def as_dict(self, slo_ms: float | None = None) -> dict[str, Any]:
        p99 = percentile(self.latencies_ms, 99) if self.latencies_ms else None
        return {
            "requests": len(self.latencies_ms) + self.failed,
            "failed": self.failed,
            "p50_ms": percentile(self.latencies_ms, 50) if self.latencies_ms else None,
            "p99_ms": p99,
            "slo_ms": slo_ms,
            "meets_slo": None if slo_ms is None or p99 is None else p99 <= slo_ms,
            "windows": self.windows,
            "violated_windows": self.violated,
        }


class Collector:
    """Keeps every request record of the run (and passes them on to Redis when asked to)."""

    def __init__(self, inner: RecordSink | None) -> None:
        self.inner = inner
        self.records: list[RequestRecord] = []

    def submit(self, records: Sequence[RequestRecord], windows: Sequence[WindowStats]) -> None:
        self.records.extend(records)
        if self.inner is not None:
            self.inner.submit(records, windows)

    def close(self, timeout_s: float = 10.0) -> SinkStats:
        return (
            self.inner.close(timeout_s) if self.inner is not None else SinkStats(len(self.records), 0, 0, 0)
        )


@dataclass
class RunReport:
    summary: Summary
    windows: list[WindowStats]
    phases: dict[str, dict[str, Phase]]
    testbed_cpu_cores: float
    anomaly: dict[str, Any] | None

    slo_ms: dict[str, float] = field(default_factory=dict)
    records: list[RequestRecord] = field(default_factory=list)
    drain_s: float | None = None
    """Seconds from the anomaly's end until the last request sent before it completed: how long the
    queue it left took to drain (the ``after`` phase starts no sooner). None without an anomaly."""

    def phase(self, name: str, request_type: str) -> dict[str, Any]:
        return self.phases.get(name, {}).get(request_type, Phase()).as_dict(self.slo_ms.get(request_type))

    def as_dict(self) -> dict[str, Any]:
        return {
            "summary": self.summary.as_dict(),
            "testbed_cpu_cores": self.testbed_cpu_cores,
            "anomaly": self.anomaly,
            "drain_s": self.drain_s,
            "phases": {name: {t: self.phase(name, t) for t in types} for name, types in self.phases.items()},
        }


def load_spec(config: TestbedConfig, plan: RunPlan, url: str) -> LoadSpec:
    mix = Mix.from_weights({RequestType.parse(k): v for k, v in config.mix.items()})
    slos = tuple(Slo(RequestType.parse(k), v) for k, v in config.slo_ms.items())
    return LoadSpec(
        url,
        ConstantRate(plan.rate_rps or config.rate_rps),
        duration_s=plan.duration_s,
        mix=mix,
        slos=slos,
        users=config.users,
        seed=plan.seed,
        window_s=config.slo_window_s,
    )


def _instance(config: TestbedConfig, name: str) -> Instance:
    for instance in config.instances():
        if name in (instance.name, instance.service):
            return instance
    names = ", ".join(i.name for i in config.instances())
    raise ExperimentError(f"no testbed instance {name!r}", fix=f"name one of the instances: {names}")


def anomaly_spec(config: TestbedConfig, plan: AnomalyPlan) -> anomaly.AnomalySpec:
    """The anomaly beside the planned instance: on the CPUs its configuration gives it (not those a
    controller may have widened its cpuset to: every policy meets the same contention), or on its
    veth for network kinds."""
    instance = _instance(config, plan.instance)
    labels = {"experiment": "testbed", "service": instance.service, "instance": instance.name}
    if plan.kind in NODE_KINDS:
        target = anomaly.Target(cgroup=instance.cgroup, cpus=instance.spec.cpus)
        return anomaly.AnomalySpec(
            f"testbed-{plan.kind}", plan.kind, plan.intensity, plan.duration_s, target, labels=labels
        )
    target = anomaly.Target(namespace=instance.namespace, interface="eth0")
    return anomaly.AnomalySpec(
        f"testbed-{plan.kind}",
        plan.kind,
        plan.intensity,
        plan.duration_s,
        target,
        tc.parse_rate(plan.link_rate, "link_rate"),
        labels=labels,
    )


def anomaly_environment(config: TestbedConfig) -> anomaly.Environment:
    return anomaly.Environment(
        state_dir=os.path.join(config.state_dir, "anomalies"),
        sysbench_dir=os.path.join(config.data_dir, "sysbench"),
    )


def testbed_cpu_ns(config: TestbedConfig) -> int:
    """CPU time used so far by every testbed instance, nanoseconds: the usage of their parent group, which
    counts every instance (scaled-out ones, and those scaled in since, included)."""
    layout = cgroup.detect_layout()
    return cgroup.read_stats(cgroup.group_at(layout, config.cgroup_parent)).cpu_usage_ns or 0


def run(
    config: TestbedConfig,
    plan: RunPlan,
    on_window: Callable[[Sequence[WindowStats]], object] | None = None,
    progress: Callable[[str], None] = lambda message: None,
) -> RunReport:
    """Load the testbed (which must be up) for ``plan.duration_s`` with the planned anomaly."""
    if not 0 <= plan.warmup_s < plan.duration_s:
        raise ExperimentError(
            f"a warm-up of {plan.warmup_s:g} s leaves nothing of the {plan.duration_s:g} s of "
            "load to measure",
            fix="load longer or shorten the warm-up",
        )
    state = lifecycle.read_state(config)
    if state is None:
        raise ExperimentError("the testbed is not up", fix="start it with `firm testbed up`")
    load = load_spec(config, plan, state.frontend)  # checked before anything starts
    env = anomaly_environment(config)
    spec = anomaly_spec(config, plan.anomaly) if plan.anomaly else None
    if plan.anomaly is not None and not 0 <= plan.anomaly.start_s < plan.duration_s:
        raise ExperimentError(
            f"the anomaly would start {plan.anomaly.start_s:g} s in, outside the "
            f"{plan.duration_s:g} s of load",
            fix="start it earlier or load longer",
        )
    if spec is not None:
        if spec.kind == "disk_io":
            prepare_sysbench(env.sysbench_files(), progress)
        anomaly.validate(spec, env)
    windows: list[WindowStats] = []

    def collect(batch: Sequence[WindowStats]) -> None:
        windows.extend(batch)
        if on_window is not None:
            on_window(batch)

    injector = (
        Injector(spec, env, plan.anomaly, progress) if spec is not None and plan.anomaly is not None else None
    )
    collector = Collector(RedisSink(RedisOutput(plan.redis_url)) if plan.redis_url else None)
    cpu_before, started_at = testbed_cpu_ns(config), time.monotonic()
    if injector is not None:
        injector.timer.start()
    load_began = time.time()
    try:
        summary = run_load(load, sink=collector, on_window=collect)
    finally:
        record = injector.finish() if injector is not None else {}
    cores = (testbed_cpu_ns(config) - cpu_before) / 1e9 / (time.monotonic() - started_at)
    grouped = phases(
        collector.records,
        windows,
        record or None,
        config.slo_window_s,
        measured_from=load_began + plan.warmup_s,
    )
    drained = drained_at(collector.records, record or None)
    return RunReport(
        summary,
        windows,
        grouped,
        cores,
        record or None,
        dict(config.slo_ms),
        collector.records,
        None if drained is None or not record else max(0.0, drained - anomaly_end(record)),
    )


class Injector:
    """Starts the anomaly on time and stops it at the end, through firm.core.anomaly in a process of its own.

    The load generator runs threads, and the anomaly library forks (its supervisor, its workers'
    cgroup entry), which is only safe in a single-threaded process: the module gives it one.
    """

    def __init__(
        self,
        spec: anomaly.AnomalySpec,
        env: anomaly.Environment,
        plan: AnomalyPlan,
        progress: Callable[[str], None],
    ) -> None:
        self.spec, self.env, self.progress, self.where = spec, env, progress, plan.instance
        self.started: dict[str, Any] = {}
        self.requested_at: float | None = None
        """When the injector began to start the anomaly (its module's process takes seconds of CPU)."""
        self.error: Exception | None = None
        self.timer = threading.Timer(plan.start_s, self._start)

    def _args(self, **extra: Any) -> dict[str, Any]:
        return {"name": self.spec.name, "state_dir": self.env.state_dir, **extra}

    def _start(self) -> None:
        self.requested_at = time.time()
        spec, target = self.spec, self.spec.target
        args = self._args(
            kind=spec.kind,
            intensity=spec.intensity,
            duration=spec.duration_s,
            labels=spec.labels,
            target_cgroup=target.cgroup,
            target_cpus=target.cpus,
            target_namespace=target.namespace,
            target_interface=target.interface,
            sysbench_dir=self.env.sysbench_dir,
            link_rate=str(spec.link_rate_bps) if spec.link_rate_bps else None,
        )
        try:
            result = run_module("firm.core.anomaly", {k: v for k, v in args.items() if v is not None})[
                "localhost"
            ]
            if result.failed:
                raise ExperimentError(
                    f"the anomaly did not start: {result.result.get('msg')}",
                    fix="check the anomaly's kind and intensity with `firm anomaly --help`",
                )
            self.started = {**result.result["anomaly"], "requested_at": self.requested_at}
            self.progress(
                f"anomaly {spec.kind} at {spec.intensity} beside {self.where} for {spec.duration_s} s"
            )
        except Exception as exc:
            self.error = exc

    def finish(self) -> dict[str, Any]:
        """Stop the anomaly if it still runs; returns its record with the time it really ended."""
        self.timer.cancel()
        if self.timer.is_alive():
            self.timer.join()
        if self.started:
            stopped = run_module("firm.core.anomaly", self._args(state="absent"))["localhost"].result
            ended = stopped.get("anomaly", {}).get("ended_at")
            if ended is None:  # it had expired by itself: its history has the end
                history = anomaly.Store(self.env.state_dir).history(self.started["started_at"])
                ended = next((h["ended_at"] for h in history if h["name"] == self.spec.name), None)
            self.started["ended_at"] = ended
        if self.error is not None:
            raise ExperimentError(
                str(self.error), fix="see the error above; `firm testbed down` removes what the run left"
            ) from self.error
        return self.started


SETTLE_S = 2.0
"""Requests this close to the anomaly's start or end belong to no phase: queues fill and drain."""


def phase_of(
    moment: float,
    record: dict[str, Any] | None,
    measured_from: float = float("-inf"),
    drained_at: float | None = None,
) -> str | None:
    """The phase of a request sent at ``moment`` (Unix seconds): ``run`` without an anomaly, else
    ``before``, ``during`` or ``after`` it; None for the warm-up (before ``measured_from``), for the
    seconds in which the injector was starting the anomaly (``requested_at`` to ``started_at`` of its
    record: the harness's own work, not the anomaly's), for SETTLE_S after its start, and after its
    end until SETTLE_S have passed and the queue it left has drained (``drained_at``, see
    ``drained_at``): a request sent into that queue waits for the anomaly's backlog, not for the
    state the end restored."""
    if moment < measured_from:
        return None
    if record is None:
        return "run"
    start, end = record["started_at"], anomaly_end(record)
    if moment < min(start, record.get("requested_at") or start):
        return "before"
    if moment < start:
        return None
    if start + SETTLE_S <= moment < end:
        return "during"
    if moment >= max(end + SETTLE_S, drained_at or end):
        return "after"
    return None


def anomaly_end(record: dict[str, Any]) -> float:
    """When the anomaly of an injector record ended (Unix seconds): its end, else its expiry."""
    return float(record.get("ended_at") or record["expires_at"])


def drained_at(records: Sequence[RequestRecord], record: dict[str, Any] | None) -> float | None:
    """When the last request sent before the anomaly's end completed (Unix seconds: intended send
    time plus latency, failures included): the moment the queue it built up had drained. None
    without an anomaly or without such a request."""
    if record is None:
        return None
    end = anomaly_end(record)
    return max(
        (r.intended_at + r.latency_ms / 1000 for r in records if r.intended_at < end),
        default=None,
    )


def phases(
    records: Sequence[RequestRecord],
    windows: Sequence[WindowStats],
    record: dict[str, Any] | None,
    window_s: float,
    measured_from: float = float("-inf"),
) -> dict[str, dict[str, Phase]]:
    """Requests (by intended send time) and windows (by start) grouped into before, during and after
    (see ``phase_of``; the queue drains by ``drained_at``)."""
    result: dict[str, dict[str, Phase]] = {}
    drained = drained_at(records, record)
    for request in records:
        name = phase_of(request.intended_at, record, measured_from, drained)
        if name is not None:
            phase = result.setdefault(name, {}).setdefault(request.request_type.value, Phase())
            if request.error:
                phase.failed += 1
            else:
                phase.latencies_ms.append(request.latency_ms)
    for window in windows:
        name = phase_of(window.window_end - window_s, record, measured_from, drained)
        if name is not None and window.p99_ms is not None:
            phase = result.setdefault(name, {}).setdefault(window.request_type.value, Phase())
            phase.windows += 1
            phase.violated += bool(window.violated)
    return result


def prepare_sysbench(directory: str, progress: Callable[[str], None], size: str = "256M") -> None:
    """sysbench's files for the disk anomaly, in the testbed's data directory (removed by `down`)."""
    if os.path.exists(os.path.join(directory, "test_file.0")):
        return
    os.makedirs(directory, exist_ok=True)
    progress(f"preparing {size} of sysbench files in {directory}")
    subprocess.run(
        ["sysbench", "fileio", f"--file-total-size={size}", "--file-num=8", "prepare"],
        cwd=directory,
        check=True,
        capture_output=True,
        timeout=300,
    )
