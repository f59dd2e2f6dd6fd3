"""One run per policy on the embedded testbed: the same seeded load and anomalies, the loop deciding.

For each policy, in order:

1. reset the testbed to its baseline (extra instances scaled in, every configured instance's limits
   restored to the snapshot taken when the experiment began, after its CPU quota and cpuset were
   set to the testbed configuration's);
2. start the seeded load (constant, or a rate trace scaled to ``rate_rps`` at its peak and played
   over the run) and, after ``warmup_s``, the control loop with the policy's decider;
3. start each anomaly of the seeded schedule at its time (each expires by itself; any still running
   at the end is stopped);
4. record every request, the CPU allocated and used at each control step, and the actions taken.

After the last policy (or on any error, or Ctrl-C) the testbed is reset again, every anomaly
stopped, and the testbed taken down when the experiment brought it up.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import multiprocessing
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ansible_collections.firm.core.plugins.module_utils import anomaly, cgroup
from ansible_collections.firm.core.plugins.module_utils.errors import FirmError
from firm.actuate.executor import Action, Executor, Snapshot, StepResult
from firm.experiment import ExperimentError, ExperimentInputError
from firm.experiment.policies import REPLICA_POLICIES, TestbedReplicas, ceiling_actions, make_policy
from firm.experiment.recorded import parse_run
from firm.experiment.report import AnomalyWindow, CpuSample, RecordedRun, Request
from firm.experiment.schedule import PlannedAnomaly, plan_anomalies
from firm.load.config import ConstantRate, LoadSpec, Mix, RequestType, Slo, TraceRate
from firm.load.errors import LoadSpecError
from firm.load.generator import run_load
from firm.load.schedule import rate_profile, read_rate_trace
from firm.load.stats import WindowStats
from firm.loop import config as loop_config
from firm.loop.audit import AuditLog
from firm.loop.runner import ControlLoop
from firm.loop.testbed import TestbedScaler, TestbedTarget
from firm.telemetry.cpus import CpuLoad, OtherWorkMeter
from firm.telemetry.model import Sample
from firm.testbed import experiment as testbed_experiment
from firm.testbed import lifecycle, rpc, scale
from firm.testbed.config import TestbedConfig
from firm.testbed.state import TestbedState
from firm.tracing.model import Trace

log = logging.getLogger(__name__)

DEFAULT_RECLAIM = {"floor": "min", "hold_s": 6.0, "instances_per_step": 3}
"""The experiment's loop reclaims down to the guardrails' minimum, not only to the configured limits
(otherwise a policy could never allocate less than ``static``), after 6 s of slack (three 2 s steps)
rather than 10, from up to three instances per step rather than one: the anomalies of a 100 s run
leave few calm stretches, and the loop's defaults, made for long runs, would reclaim almost nothing
in them. The same settings apply to every policy that reclaims (``--config`` replaces them)."""

Progress = Callable[[dict[str, Any]], None]
"""Receives the state of the run about twice a second (see :meth:`Experiment.status`)."""


@dataclass(frozen=True)
class ExperimentPlan:
    """What ``firm experiment`` runs."""

    policies: tuple[str, ...]
    duration_s: float
    """Measured seconds per policy."""
    warmup_s: float
    """Seconds of load before the loop starts and measuring begins, per policy."""
    seed: int
    """Seed of the load and of the anomaly schedule."""
    kinds: tuple[str, ...]
    """Anomaly kinds, one anomaly each."""
    workload: str = "constant"
    """``constant`` or a rate-trace file (one requests-per-second integer per line)."""
    rate_rps: float | None = None
    """Constant rate, or the trace's peak after scaling, requests/s (None: the testbed's rate_rps)."""
    interval_s: float | None = None
    """Report interval, seconds (None: the testbed's slo_window_s)."""
    loop_config: Path | None = None
    """YAML of loop settings (``firm run --config``), None for the defaults."""

    def __post_init__(self) -> None:
        if not self.policies:
            raise ExperimentInputError("no policy to run", fix="give --policies, e.g. firm,hpa,aimd")
        if not (math.isfinite(self.duration_s) and self.duration_s >= 20):
            raise ExperimentInputError(
                f"--duration {self.duration_s:g} s is too short",
                fix="give at least 20 s (a few SLO windows), e.g. --duration 120",
            )
        if not (math.isfinite(self.warmup_s) and self.warmup_s >= 0):
            raise ExperimentInputError(f"--warmup {self.warmup_s:g} s", fix="give 0 or more seconds")
        if self.seed < 0:
            raise ExperimentInputError(f"--seed {self.seed}", fix="give a non-negative integer")
        if self.rate_rps is not None and not (math.isfinite(self.rate_rps) and self.rate_rps > 0):
            raise ExperimentInputError(f"--rate {self.rate_rps}", fix="give requests per second above 0")
        if self.workload != "constant":
            read_rate_trace(self.workload)  # LoadSpecError (a FirmError) names what is wrong with the file


# -- recording ---------------------------------------------------------------------------------------


class RecordingExecutor:
    """The testbed's executor, recording the managed instances' CPU limits at each full snapshot."""

    def __init__(self, inner: Executor, owner: RecordingTarget) -> None:
        self.inner, self.owner = inner, owner

    def resources(self, instance: str) -> frozenset[str]:
        return self.inner.resources(instance)

    def apply(self, actions: Sequence[Action], *, dry_run: bool) -> StepResult:
        return self.inner.apply(actions, dry_run=dry_run)

    def restore(self, snapshot: Snapshot) -> StepResult:
        return self.inner.restore(snapshot)

    def snapshot(self, instances: Sequence[str]) -> Snapshot:
        taken = self.inner.snapshot(instances)
        if set(instances) == set(self.owner.names()):
            self.owner.record(taken)
        return taken


class RecordingTarget:
    """Adapter: the loop's :class:`~firm.loop.testbed.TestbedTarget`, recording a :class:`CpuSample`
    at every control step (the loop reads every instance's limits once per step)."""

    def __init__(self, inner: TestbedTarget, exclude: Sequence[str]) -> None:
        self.inner = inner
        self.exclude = frozenset(exclude)
        self.samples: list[tuple[float, float, float | None, int]] = []
        """(epoch seconds, CPU allocated, CPU used, managed instances)."""
        self._used: float | None = None
        self._executor = RecordingExecutor(inner.executor, self)

    @property
    def executor(self) -> RecordingExecutor:
        return self._executor

    @property
    def prefetch(self) -> bool:
        """As the wrapped target's: whether its trace reads are incremental, so the loop may read and
        ingest a quarter interval before each step (``ControlLoop._prefetches``)."""
        return bool(getattr(self.inner, "prefetch", False))

    def refresh(self) -> tuple[list[str], list[str]]:
        return self.inner.refresh()

    def names(self) -> list[str]:
        return self.inner.names()

    def service_of(self, name: str) -> str:
        return self.inner.service_of(name)

    def cpu_capacity(self, name: str) -> float:
        return self.inner.cpu_capacity(name)

    def read_traces(self, start_us: int, end_us: int) -> list[Trace]:
        return self.inner.read_traces(start_us, end_us)

    def cpu_load(self) -> Mapping[int, CpuLoad] | None:
        return self.inner.cpu_load()

    def latest_telemetry(self, names: Sequence[str]) -> dict[str, Sample | None]:
        samples = self.inner.latest_telemetry(names)
        used = [
            s.cpu_cores
            for n, s in samples.items()
            if s is not None and s.cpu_cores is not None and self.inner.service_of(n) not in self.exclude
        ]
        self._used = sum(used) if used else None
        return samples

    def managed(self) -> list[str]:
        return [n for n in self.names() if self.service_of(n) not in self.exclude]

    def record(self, snapshot: Snapshot) -> None:
        allocated = 0.0
        managed = self.managed()
        for name in managed:
            limits = snapshot.limits.get(name, {})
            allocated += allotted(limits.get("cpu"), limits.get("cpuset"), self.cpu_capacity(name))
        self.samples.append((snapshot.taken_at, allocated, self._used, len(managed)))


def allotted(cpu: object, cpuset: object, capacity: float) -> float:
    """Cores an instance may use: its CPU limit, at most the CPUs of its cpuset (``capacity`` when
    the cpuset is unknown or inherited)."""
    cores = capacity
    if isinstance(cpuset, str) and cpuset.strip():
        try:
            cores = float(len(cgroup.parse_list(cpuset)))
        except FirmError:
            cores = capacity
    if isinstance(cpu, float | int) and math.isfinite(cpu):
        return min(float(cpu), cores)
    return cores


# -- the experiment --------------------------------------------------------------------------------------


def required_tools(kinds: Sequence[str]) -> list[str]:
    """Problems that stop the anomaly kinds from running here, checked before anything starts."""
    problems = []
    for kind in kinds:
        missing = [t for t in anomaly.TOOLS[kind] if shutil.which(t) is None]
        if missing:
            problems.append(f"{kind} needs {', '.join(missing)}")
        if kind == "network_delay" and not anomaly.netem_available():
            problems.append("network_delay needs the kernel's netem qdisc (sch_netem)")
    return problems


def supported_kinds() -> list[str]:
    """The anomaly kinds whose tools this machine has."""
    return [k for k in anomaly.KINDS if not required_tools([k])]


@dataclass
class PolicyState:
    """What the progress view shows of the policy under way."""

    policy: str = ""
    index: int = 0
    phase: str = "starting"
    started: float = 0.0
    p99_ms: dict[str, float | None] = field(default_factory=dict)
    actions: int = 0
    active_anomalies: list[str] = field(default_factory=list)


class Experiment:
    """Runs an :class:`ExperimentPlan` on the embedded testbed (root; see the module's docstring)."""

    def __init__(
        self,
        plan: ExperimentPlan,
        testbed: TestbedConfig,
        *,
        progress: Progress = lambda s: None,
        say: Callable[[str], None] = log.info,
        audit_dir: Path | None = None,
    ) -> None:
        self.plan, self.testbed = plan, testbed
        self.audit_dir = audit_dir
        """Where each policy's decisions go, ``<policy>.jsonl`` (the loop's audit records); None: nowhere."""
        self.progress, self.say = progress, say
        self.loop_config = (
            loop_config.load(plan.loop_config)
            if plan.loop_config is not None
            else loop_config.load(None, reclaim=DEFAULT_RECLAIM)
        )
        self.slo_ms = {**testbed.slo_ms, **self.loop_config.slo_ms}
        self.interval_s = plan.interval_s or testbed.slo_window_s
        self.env = testbed_experiment.anomaly_environment(testbed)
        self.brought_up = False
        self.baseline: Snapshot | None = None
        self.schedule: list[PlannedAnomaly] = []
        self.state = PolicyState()
        self.began = 0.0
        self._injectors: list[testbed_experiment.Injector] = []
        self.checked = False

    # -- checks before anything changes ---------------------------------------------------------------

    def check(self) -> None:
        """Everything that can be checked before the testbed is touched; raises ExperimentInputError."""
        loop_config.check_slo_types(self.loop_config, self.testbed.mix, "the testbed")
        if os.geteuid() != 0:
            raise ExperimentInputError(
                "firm experiment changes cgroups, network namespaces and qdiscs", fix="run it as root (sudo)"
            )
        problems = required_tools(self.plan.kinds)
        if problems:
            raise ExperimentInputError(
                f"--anomalies: {'; '.join(problems)}",
                fix=f"give kinds this machine supports ({', '.join(supported_kinds())}), "
                "or install the anomaly tools (the firm.core anomaly_tools role)",
            )
        if "firm" in self.plan.policies:
            try:
                make_policy("firm", self.loop_config, request_types=list(self.testbed.mix))
            except ModuleNotFoundError as exc:
                raise ExperimentInputError(
                    f"the firm policy needs {exc.name}, which is not installed",
                    fix="install firm completely, or leave firm out of --policies",
                ) from exc
            except (FirmError, OSError, ValueError) as exc:
                raise ExperimentInputError(
                    f"cannot load the firm policy's models: {exc}",
                    fix="train them (firm train-svm, firm train-rl) or reinstall",
                ) from exc
        try:  # the load as it will run (any frontend address: only the rate and the lengths are checked)
            rate_profile(self.load_spec("http://127.0.0.1"))
        except LoadSpecError as exc:
            raise ExperimentInputError(f"the load: {exc.message}", fix=exc.fix) from exc
        try:
            running = lifecycle.is_up(self.testbed)
        except FirmError:  # an unreadable state file: `up` starts again, after the checks below
            running = False
        if not running:  # what `up` would refuse, refused now
            try:
                lifecycle.check_directories(self.testbed)
                lifecycle.check_cpus(self.testbed)
            except FirmError as exc:
                raise ExperimentInputError(f"the testbed cannot come up: {exc.message}", fix=exc.fix) from exc
        candidates = self.anomaly_services()
        self.schedule = plan_anomalies(self.plan.seed, self.plan.duration_s, self.plan.kinds, candidates)
        self.checked = True

    def anomaly_services(self) -> list[str]:
        """Services anomalies go beside: the ones doing at least 1 ms of work per request, not the
        entry point (whose single instance cannot be scaled out) nor those the loop never acts on."""
        return [
            s.name
            for s in self.testbed.services
            if s.work_ms >= 1.0
            and s.name not in scale.ENTRY_POINTS
            and s.name not in self.loop_config.exclude
        ]

    # -- the whole run --------------------------------------------------------------------------------

    def run(self) -> list[RecordedRun]:
        """Every policy in turn; the testbed is reset and anomalies stopped whatever happens."""
        if not self.checked:
            self.check()
        runs: list[RecordedRun] = []
        self.began = time.monotonic()
        try:
            self._bring_up()
            self._prepare_anomalies()
            self.baseline = self._establish_baseline()
            for index, policy in enumerate(self.plan.policies):
                self.reset()
                self.settle()
                runs.append(self.run_policy(policy, index))
        finally:
            self._cleanup()
        return runs

    def total_s(self) -> float:
        return len(self.plan.policies) * (self.plan.warmup_s + self.plan.duration_s)

    def _bring_up(self) -> None:
        if lifecycle.is_up(self.testbed):
            self.say("the testbed is up")
            return
        self.say("bringing the testbed up (firm testbed up)")
        try:
            lifecycle.up(self.testbed, progress=self.say)
        except (FirmError, OSError) as exc:
            message = exc.message if isinstance(exc, FirmError) else str(exc)
            fix = exc.fix if isinstance(exc, FirmError) and exc.fix else ""
            raise ExperimentError(
                f"the testbed did not come up: {message}",
                fix=fix or "see `firm testbed up` and its logs; `firm testbed down` cleans up",
            ) from exc
        self.brought_up = True

    def _prepare_anomalies(self) -> None:
        if "disk_io" in self.plan.kinds:
            testbed_experiment.prepare_sysbench(self.env.sysbench_files(), self.say)
        for planned in self.schedule:
            try:
                anomaly.validate(self.anomaly_spec(planned, 0), self.env)
            except FirmError as exc:
                raise ExperimentError(
                    f"the {planned.kind} anomaly cannot run beside {planned.service}: {exc}",
                    fix="leave that kind out of --anomalies",
                ) from exc

    def anomaly_spec(self, planned: PlannedAnomaly, number: int) -> anomaly.AnomalySpec:
        spec = testbed_experiment.anomaly_spec(
            self.testbed,
            testbed_experiment.AnomalyPlan(
                planned.kind, f"{planned.service}-0", planned.intensity, 0.0, planned.duration_s
            ),
        )
        return dataclasses.replace(
            spec,
            name=f"experiment-{number}-{planned.kind}",
            labels={**spec.labels, "experiment": "firm-experiment"},
        )

    def _target(self) -> TestbedTarget:
        try:
            return TestbedTarget.discover(
                self.testbed,
                redis_url=self.loop_config.redis_url,
                horizon_s=(self.loop_config.window_s or self.testbed.slo_window_s) + 10,
            )
        except FirmError as exc:
            raise ExperimentError(f"cannot find the testbed's instances: {exc}") from exc

    def _scale_in_extras(self) -> None:
        for spec in self.testbed.services:
            while len(scale.replicas(self.testbed, spec.name)) > spec.instances:
                name = scale.scale_in(self.testbed, spec.name, progress=log.info)
                self.say(f"reset: scaled {spec.name} in ({name} stopped)")

    def _establish_baseline(self) -> Snapshot:
        """The configured limits (CPU quota, cpuset) on every configured instance, snapshotted."""
        self._scale_in_extras()
        target = self._target()
        by_name = {i.name: i for i in self.testbed.instances()}
        names = [n for n in target.names() if n in by_name]
        cpusets = [
            Action(n, "cpuset", by_name[n].spec.cpus, "baseline")
            for n in names
            if "cpuset" in target.executor.resources(n)
        ]
        quotas = [
            Action(
                n,
                "cpu",
                math.inf if by_name[n].spec.cpu_quota_us < 0 else by_name[n].spec.cpu_quota_us / 1e5,
                "baseline",
            )
            for n in names
        ]
        for actions in (cpusets, quotas):
            result = target.executor.apply(actions, dry_run=False)
            if not result.ok:
                raise ExperimentError(
                    f"cannot set the testbed's configured limits: {result.error}",
                    fix="check `firm testbed status`; `firm testbed down` and up again",
                )
        return target.executor.snapshot(names)

    def reset(self) -> None:
        """Back to the baseline: extra instances scaled in, the baseline snapshot restored."""
        if self.baseline is None:
            return
        self._scale_in_extras()
        result = self._target().executor.restore(self.baseline)
        if not result.ok:
            raise ExperimentError(
                f"cannot restore the testbed's baseline limits: {result.error}",
                fix="`firm testbed down` and `firm testbed up` start afresh",
            )

    def settle(self, timeout_s: float = 90.0, poll_s: float = 0.5) -> float:
        """Wait until no instance has a request under way (the previous run's backlog drained), at
        most ``timeout_s``; returns the seconds waited. An instance that does not answer counts as busy."""
        started = time.monotonic()
        busy = -1
        while time.monotonic() - started < timeout_s:
            state = lifecycle.read_state(self.testbed)
            busy = asyncio.run(
                in_flight(
                    self.testbed,
                    [
                        e["address"]
                        for e in (state.instances if state else ())
                        if e.get("service") != self.testbed.redis.name
                    ],
                )
            )
            if busy == 0:
                return time.monotonic() - started
            time.sleep(poll_s)
        self.say(f"the testbed still had {busy} requests under way after {timeout_s:g} s; going on")
        return time.monotonic() - started

    def _cleanup(self) -> None:
        errors = []
        for injector in self._injectors:
            try:
                injector.finish()
            except Exception as exc:
                errors.append(f"anomaly {injector.spec.name}: {exc}")
        self._injectors = []
        try:
            for record in anomaly.active(self.env):
                if record.spec.labels.get("experiment") == "firm-experiment":
                    anomaly.stop(record.spec.name, self.env)
        except FirmError as exc:
            errors.append(str(exc))
        if lifecycle.is_up(self.testbed):
            try:
                self.reset()
            except (FirmError, OSError) as exc:
                errors.append(str(exc))
        if self.brought_up:
            self.say("taking the testbed down (the experiment brought it up)")
            try:
                lifecycle.down(self.testbed, progress=self.say)
            except (FirmError, OSError, RuntimeError) as exc:
                errors.append(f"the testbed did not come down ({exc}); run `firm testbed down`")
        if errors:
            log.error("cleaning up: %s", "; ".join(errors))

    # -- one policy ------------------------------------------------------------------------------------

    def load_spec(self, url: str) -> LoadSpec:
        plan, config = self.plan, self.testbed
        total = plan.warmup_s + plan.duration_s
        rate = plan.rate_rps or config.rate_rps
        profile: ConstantRate | TraceRate
        if plan.workload == "constant":
            profile = ConstantRate(rate)
        else:
            seconds = len(read_rate_trace(plan.workload))
            profile = TraceRate(Path(plan.workload), peak_rps=rate, speedup=seconds / total)
        mix = Mix.from_weights({RequestType.parse(k): v for k, v in config.mix.items()})
        slos = tuple(Slo(RequestType.parse(k), v) for k, v in self.slo_ms.items())
        return LoadSpec(
            url,
            profile,
            duration_s=total,
            mix=mix,
            slos=slos,
            users=config.users,
            seed=plan.seed,
            window_s=config.slo_window_s,
        )

    def run_policy(self, policy: str, index: int) -> RecordedRun:
        """One policy's run (the testbed at its baseline); returns what was recorded."""
        plan = self.plan
        self.state = PolicyState(policy, index, "warm-up", time.monotonic())
        state = lifecycle.read_state(self.testbed)
        if state is None:
            raise ExperimentError("the testbed went down", fix="bring it up again with `firm testbed up`")
        one = PolicyRun(self, policy, state.frontend)
        injectors = self._injectors = self._make_injectors()
        meter = self.other_work_meter(state)
        other: list[tuple[float, float]] = []
        one.start()
        one.load_started.wait()
        started = time.time()
        meter.read()
        for injector in injectors:
            injector.timer.start()
        windows = []
        try:
            while one.load_thread.is_alive():
                one.load_thread.join(0.5)
                cores = meter.read()
                if cores is not None:
                    other.append((time.time(), cores))
                elapsed = time.time() - started
                self.state.active_anomalies = [
                    f"{p.kind}@{p.service}"
                    for p in self.schedule
                    if plan.warmup_s + p.start_s <= elapsed < plan.warmup_s + p.end_s
                ]
                self.progress(self.status())
        finally:
            one.stop_all()
            for injector, planned in zip(injectors, self.schedule, strict=True):
                try:
                    record = injector.finish()
                except FirmError as exc:
                    self.say(f"anomaly {planned.kind} beside {planned.service}: {exc}")
                    record = {}
                windows.append((planned, record))
            self._injectors = []
        if one.errors:
            raise ExperimentError(f"the {policy} run failed: {one.errors[0]}") from one.errors[0]
        zero = one.measure_start if math.isfinite(one.measure_start) else started + plan.warmup_s
        run = self._recorded(policy, zero, one.actions, one.requests, one.target, windows, one.replicas)
        run.other_work = [(t - zero, c) for t, c in other if 0 <= t - zero <= plan.duration_s]
        return run

    def other_work_meter(self, state: TestbedState) -> OtherWorkMeter:
        """The meter of work this run does not account for: all but the testbed's and the anomalies'
        cgroups, this process with its children, and the testbed's telemetry samplers."""
        samplers = [
            int(ref["pid"])
            for ref in (state.telemetry, *state.scaled_telemetry.values())
            if ref and isinstance(ref.get("pid"), int)
        ]
        return OtherWorkMeter(
            [self.testbed.cgroup_parent, anomaly.CGROUP_PARENT],
            daemons=lambda: samplers,
            cgroup_root=self.env.cgroup_root,
        )

    def _make_injectors(self) -> list[testbed_experiment.Injector]:
        """One injector per planned anomaly, each timed from the start of the load."""
        injectors = []
        for number, planned in enumerate(self.schedule):
            spec = self.anomaly_spec(planned, number)
            timing = testbed_experiment.AnomalyPlan(
                planned.kind,
                f"{planned.service}-0",
                planned.intensity,
                self.plan.warmup_s + planned.start_s,
                planned.duration_s,
            )
            injectors.append(testbed_experiment.Injector(spec, self.env, timing, self.say))
        return injectors

    def _recorded(
        self,
        policy: str,
        zero: float,
        actions: int,
        requests: Sequence[tuple[str, float, float, str]],
        target: RecordingTarget,
        windows: Sequence[tuple[PlannedAnomaly, Mapping[str, Any]]],
        replicas: TestbedReplicas | None,
    ) -> RecordedRun:
        """What one policy's run recorded, in seconds from ``zero`` (the start of measuring, epoch s)."""
        plan = self.plan
        run = RecordedRun(policy, plan.duration_s, actions=actions)
        for kind, latency_ms, intended_at, error in requests:
            completed = intended_at + latency_ms / 1000 - zero
            if 0 <= completed < plan.duration_s:
                run.requests.append(Request(kind, completed, latency_ms, bool(error)))
                if error:
                    run.errors[error] = run.errors.get(error, 0) + 1
        run.cpu = [
            CpuSample(t - zero, allocated, used, n)
            for t, allocated, used, n in target.samples
            if 0 <= t - zero <= plan.duration_s
        ]
        for planned, record in windows:
            if record.get("started_at") is None:
                run.notes.append(f"the {planned.kind} anomaly beside {planned.service} did not start")
                continue
            end = (
                record.get("ended_at")
                or record.get("expires_at")
                or record["started_at"] + planned.duration_s
            )
            run.anomalies.append(
                AnomalyWindow(
                    planned.kind,
                    planned.service,
                    record["started_at"] - zero,
                    float(end) - zero,
                    planned.intensity,
                )
            )
        if replicas is not None:
            run.scale_events = sum(1 for e in replicas.events if e.get("direction") in ("out", "in"))
            run.notes += [
                f"{e['service']}: {e['error']}" for e in replicas.events if e.get("direction") == "error"
            ]
        return run

    def status(self) -> dict[str, Any]:
        """The progress view's data: policy, phase, seconds left in it and in all, p99 against SLO."""
        plan, state = self.plan, self.state
        elapsed = time.monotonic() - state.started
        per_policy = plan.warmup_s + plan.duration_s
        left = max(0.0, per_policy - elapsed)
        return {
            "policy": state.policy,
            "index": state.index,
            "policies": len(plan.policies),
            "phase": state.phase,
            "left_s": left,
            "total_left_s": left + per_policy * (len(plan.policies) - state.index - 1),
            "p99_ms": dict(state.p99_ms),
            "slo_ms": dict(self.slo_ms),
            "actions": state.actions,
            "anomalies": list(state.active_anomalies),
        }


class PolicyRun:
    """The moving parts of one policy's run: its loop (in a thread, started after the warm-up) and
    its load (in another thread); errors of either are kept in ``errors``."""

    def __init__(self, experiment: Experiment, policy: str, frontend: str) -> None:
        self.experiment = experiment
        testbed, base = experiment.testbed, experiment.loop_config
        config = base.model_copy(update={"interval_s": 1.0 if policy == "hpa-fast" else base.interval_s})
        self.target = RecordingTarget(experiment._target(), config.exclude)
        self.replicas = TestbedReplicas(testbed) if policy in REPLICA_POLICIES else None
        limits = {
            s.name: s.max_instances
            for s in testbed.services
            if s.name not in scale.ENTRY_POINTS and s.name not in config.exclude
        }
        decider = make_policy(
            policy, config, request_types=list(testbed.mix), replicas=self.replicas, max_replicas=limits
        )
        self.scaler = TestbedScaler(testbed) if policy == "firm" else None
        if policy == "none":
            lift = ceiling_actions(
                {n: self.target.service_of(n) for n in self.target.names()},
                self.target.cpu_capacity,
                config.exclude,
            )
            result = self.target.executor.apply(lift, dry_run=False)
            if not result.ok:
                raise ExperimentError(f"cannot lift the CPU limits: {result.error}")
        self.audit = (
            AuditLog(None, path=experiment.audit_dir / f"{policy}.jsonl")
            if experiment.audit_dir is not None
            else None
        )
        self.loop = ControlLoop(
            config,
            self.target,
            decider,
            slo_ms=experiment.slo_ms,
            window_s=config.window_s or testbed.slo_window_s,
            on_step=self.on_step,
            scaler=self.scaler,
            audit=self.audit,
        )
        self.spec = experiment.load_spec(frontend)
        self.requests: list[tuple[str, float, float, str]] = []
        """(type, latency ms, intended send time epoch s, error) of every request of the run."""
        self.load_started = threading.Event()
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.actions = 0
        self.measure_start = math.nan
        self.load_thread = threading.Thread(target=self.load, name="experiment-load", daemon=True)
        self.control_thread = threading.Thread(target=self.control, name="experiment-loop", daemon=True)

    def start(self) -> None:
        self.load_thread.start()
        self.control_thread.start()

    def on_step(self, record: dict[str, Any]) -> None:
        self.actions += sum(1 for a in (record.get("result") or {}).get("actions", []) if a.get("changed"))
        self.experiment.state.actions = self.actions

    def load(self) -> None:
        """Run the load generator in a process of its own (the loop's work in this process must not
        delay its requests), relaying its windows to the progress view and keeping its requests."""
        context = multiprocessing.get_context("spawn")
        messages: Any = context.Queue()
        try:
            with tempfile.TemporaryDirectory(prefix="firm-experiment-") as directory:
                path = os.path.join(directory, "requests.json")
                process = context.Process(
                    target=load_worker,
                    args=(self.spec, path, messages),
                    name="firm-experiment-load",
                    daemon=True,
                )
                process.start()
                while process.is_alive() or not messages.empty():
                    try:
                        message = messages.get(timeout=0.5)
                    except queue.Empty:
                        continue
                    if message == "started":
                        self.load_started.set()
                    else:
                        for kind, p99 in message:
                            self.experiment.state.p99_ms[kind] = p99
                process.join()
                if process.exitcode != 0:
                    raise ExperimentError(
                        f"the load generator exited with status {process.exitcode}",
                        fix="run `firm load` against the testbed's frontend to see why",
                    )
                with open(path, encoding="utf-8") as handle:
                    self.requests = [
                        (str(t), float(lat), float(at), str(err)) for t, lat, at, err in json.load(handle)
                    ]
        except BaseException as exc:  # reported by the main thread
            self.errors.append(exc)
        finally:
            self.load_started.set()
            messages.close()

    def control(self) -> None:
        plan = self.experiment.plan
        self.load_started.wait()
        if self.stop.wait(plan.warmup_s):
            return
        self.measure_start = time.time()
        self.experiment.state.phase = "measuring"
        try:
            self.loop.start()
            self.loop.run(duration_s=plan.duration_s, stop=self.stop)
        except Exception as exc:  # reported by the main thread
            self.errors.append(exc)
        finally:
            try:
                self.loop.finish("keep")
            except Exception as exc:
                self.errors.append(exc)

    def stop_all(self) -> None:
        """Stop the loop, let scaling under way finish."""
        self.stop.set()
        self.control_thread.join(60)
        if self.replicas is not None:
            self.replicas.close()
        if self.scaler is not None:
            self.scaler.wait()
        if self.audit is not None:
            self.audit.close()


async def in_flight(config: TestbedConfig, addresses: Sequence[str]) -> int:
    """Requests under way in the instances at ``addresses`` (their health checks' ``in_flight``); an
    instance that does not answer within 2 s counts as one."""

    async def one(address: str) -> int:
        pool = rpc.Pool(address, config.port, size=1, timeout_s=2.0)
        try:
            result, _ = await pool.call("health", {})
        except rpc.RpcError:
            return 1
        finally:
            pool.close()
        count = result.get("in_flight") if isinstance(result, dict) else None
        return int(count) if isinstance(count, int) else 1

    return sum(await asyncio.gather(*(one(a) for a in addresses)))


def load_worker(spec: LoadSpec, path: str, messages: Any) -> None:
    """The load generator's process: says ``"started"``, sends each batch of windows as (type, p99)
    pairs, and writes every request to ``path`` (JSON: type, latency ms, intended time, error)."""
    collector = testbed_experiment.Collector(None)

    def on_window(batch: Sequence[WindowStats]) -> None:
        messages.put([(w.request_type.value, w.p99_ms) for w in batch])

    messages.put("started")
    run_load(spec, sink=collector, on_window=on_window)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(
            [[r.request_type.value, r.latency_ms, r.intended_at, r.error] for r in collector.records], handle
        )
    messages.close()
    messages.join_thread()


def recorded_to_json(run: RecordedRun) -> dict[str, Any]:
    """A recorded run as JSON (``runs/<policy>.json``), enough to compute the report again."""
    return {
        "policy": run.policy,
        "duration_s": run.duration_s,
        "actions": run.actions,
        "scale_events": run.scale_events,
        "notes": run.notes,
        "errors": run.errors,
        "requests": [
            [r.request_type, round(r.completed_s, 4), round(r.latency_ms, 3), int(r.failed)]
            for r in run.requests
        ],
        "cpu": [
            [
                round(s.time_s, 3),
                round(s.allocated, 4),
                None if s.used is None else round(s.used, 4),
                s.instances,
            ]
            for s in run.cpu
        ],
        "anomalies": [dataclasses.asdict(a) for a in run.anomalies],
        "other_work": [[round(t, 3), round(c, 4)] for t, c in run.other_work],
    }


def recorded_from_json(data: Mapping[str, Any]) -> RecordedRun:
    """The inverse of :func:`recorded_to_json`, checked (:mod:`firm.experiment.recorded`); raises
    :class:`ExperimentInputError` naming the field when malformed."""
    return parse_run(data)
