"""The control loop: it orders the library's stages, and nothing else.

Every ``interval_s`` one :meth:`ControlLoop.step`:

0. **prefetch** (between steps, :meth:`ControlLoop.run`): a quarter interval before a step, the
   requests completed since the last one are read and their per-trace work done (their critical
   paths, :meth:`ControlLoop.warm`), so the step computes only the last quarter interval's;
1. **read**: the requests completed in the window ``[now - lag - window_s, now - lag]`` (traces),
   every instance's latest telemetry sample, and the limits in force (the executor's snapshot);
2. **slo**: p50 and p99 per request type against its SLO;
3. **stale check**: a window without requests, telemetry older than ``stale_intervals`` intervals,
   a store that does not answer: the step is audited as ``stale`` and decides nothing;
4. **decide**: the decider's proposals (the firm decider localizes and asks the agent);
5. **guard**: bounds, step limits, cool-downs, confirmation (:mod:`firm.loop.guard`);
6. **apply**: one executor step, all or nothing (nothing is written in a dry run);
7. **audit**: the record to Redis and JSON lines, the metrics, the live view.

:meth:`ControlLoop.run` repeats steps until its duration ends or its stop event is set (a signal
handler sets it: the step under way finishes first); :meth:`ControlLoop.finish` then keeps the last
good limits (every step is all or nothing, so the limits in force are the last good ones) or
restores the baselines snapshotted by :meth:`ControlLoop.start`, which also reads the window that
ends then and hands its requests to the decider (:meth:`ControlLoop.warm`), so that no step, the
first included, computes the per-trace work of more than the requests new to it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import redis

from ansible_collections.firm.core.plugins.module_utils.errors import FirmError
from firm.actuate.executor import Executor, ExecutorError, Snapshot, StepResult
from firm.loop.audit import AuditLog, Record
from firm.loop.config import LoopConfig
from firm.loop.deciders import Decider
from firm.loop.guard import Guardrails
from firm.loop.metrics import Metrics
from firm.loop.observe import InstanceView, Observation, TraceSummaries, slo_status, summarize, usage_of
from firm.loop.scaling import ScaleInPolicy
from firm.telemetry.cpus import CpuLoad
from firm.telemetry.model import Sample
from firm.tracing.model import Trace

log = logging.getLogger(__name__)


class Target(Protocol):
    """What the loop controls: its instances, their traces and telemetry, and an executor."""

    @property
    def executor(self) -> Executor: ...

    def refresh(self) -> tuple[list[str], list[str]]:
        """Re-discover the instances; returns (added, removed)."""
        ...

    def names(self) -> list[str]: ...

    def service_of(self, name: str) -> str: ...

    def cpu_capacity(self, name: str) -> float: ...

    def read_traces(self, start_us: int, end_us: int) -> list[Trace]:
        """Requests completed in the window; raises ``redis.RedisError`` or FirmError when the store fails."""
        ...

    def latest_telemetry(self, names: Sequence[str]) -> dict[str, Sample | None]:
        """The latest sample of each instance; raises ``redis.RedisError`` when telemetry is unreachable."""
        ...

    def cpu_load(self) -> Mapping[int, CpuLoad] | None:
        """Per CPU the instances may run on, its load since the previous call
        (:class:`firm.telemetry.cpus.CpuLoad`); None where the target cannot tell."""
        ...


class Scaler(Protocol):
    """Scale-out and scale-in of services, in the background (the loop never waits for them)."""

    def request(self, service: str, direction: str) -> bool:
        """Start scaling ``service`` ``out`` or ``in``; False when refused (one at a time, cool-down)."""
        ...

    def events(self) -> list[dict[str, Any]]:
        """What finished since the last call (service, direction, outcome, instance or error)."""
        ...


class ControlLoop:
    """One controller over one target (see the module's docstring)."""

    def __init__(
        self,
        config: LoopConfig,
        target: Target,
        decider: Decider,
        *,
        slo_ms: Mapping[str, float],
        window_s: float,
        dry_run: bool = False,
        audit: AuditLog | None = None,
        metrics: Metrics | None = None,
        on_step: Callable[[Record], None] | None = None,
        scaler: Scaler | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config, self.target, self.decider = config, target, decider
        self.slo_ms = dict(slo_ms)
        self.window_s = window_s
        self.dry_run = dry_run
        self.audit, self.metrics, self.on_step, self.scaler = audit, metrics, on_step, scaler
        self.clock = clock
        self.guard = Guardrails(config)
        self.scale_in = ScaleInPolicy(config.scale_in, exclude=config.exclude)
        self.summaries = TraceSummaries(config.firm.trace_cache)
        self.run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime(clock()))
        """Names this run in the audit: a decision's id is ``run_id/step``."""
        self.baseline: dict[str, Mapping[str, float | str | None]] = {}
        self.baseline_snapshot: Snapshot | None = None
        self.steps = 0
        self.prev_rate = 0.0
        self.reference: list[Trace] | None = None
        self.last_record: Record | None = None

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> Snapshot:
        """Snapshot the baselines of every instance; raises ExecutorError when they cannot be read."""
        self.target.refresh()
        names = self.target.names()
        snapshot = self.target.executor.snapshot(names)
        self.scale_in.start(
            {
                s: sum(1 for n in names if self.target.service_of(n) == s)
                for s in {self.target.service_of(n) for n in names}
            }
        )
        self.baseline_snapshot = snapshot
        self.baseline = dict(snapshot.limits)
        self.warm()
        return snapshot

    def warm(self) -> int:
        """Read the window that ends now and hand its requests to the decider and the SLO check, so
        the first step finds each request's per-trace work done, as every later step does (without
        this, the first step computed it for a whole window instead of the last interval's
        requests). Returns the requests read; a store that does not answer is logged and left to
        the first step."""
        end = self.clock() - self.config.trace_lag_s
        try:
            traces = self.target.read_traces(int((end - self.window_s) * 1e6), int(end * 1e6))
        except (redis.RedisError, FirmError, OSError) as exc:
            log.info("nothing read before the first step: %s", exc)
            return 0
        self._ingest(traces)
        summarize(traces, self.summaries)
        return len(traces)

    def run(self, *, duration_s: float | None = None, stop: threading.Event | None = None) -> int:
        """Steps every ``interval_s`` until ``duration_s`` passed or ``stop`` is set; returns the steps run."""
        stop = stop or threading.Event()
        began = time.monotonic()
        due = began
        ran = 0
        while not stop.is_set():
            if duration_s is not None and time.monotonic() - began >= duration_s:
                break
            self.step()
            ran += 1
            due += self.config.interval_s
            late = time.monotonic() - due
            if late > 0:  # a step overran: skip the missed ticks instead of running them back to back
                due += math.ceil(late / self.config.interval_s) * self.config.interval_s
            wait = due - time.monotonic()
            if duration_s is not None:
                wait = min(wait, began + duration_s - time.monotonic())
            lead = self.config.interval_s / 4
            if self._prefetches() and wait > lead and (duration_s is None or due < began + duration_s):
                if not stop.wait(wait - lead):  # a quarter interval before the next step
                    self.warm()
                wait = due - time.monotonic()
            if wait > 0:
                stop.wait(wait)
        return ran

    def _prefetches(self) -> bool:
        """Whether :meth:`run` reads the requests completed since the last step a quarter interval
        before the next one and does their per-trace work then, off the step (the decider has
        per-trace work, and the target's reads are incremental: ``prefetch`` true, as the testbed's
        are; a target that queries a whole window every read is not read twice per interval)."""
        return getattr(self.decider, "ingest", None) is not None and bool(
            getattr(self.target, "prefetch", False)
        )

    def finish(self, on_exit: str | None = None) -> StepResult | None:
        """Keep the limits in force, or restore the baselines (``on_exit``, default the config's)."""
        mode = on_exit or self.config.on_exit
        result: StepResult | None = None
        if mode == "restore" and not self.dry_run and self.baseline_snapshot is not None:
            present = set(self.target.names())
            snapshot = Snapshot(
                self.baseline_snapshot.taken_at,
                {i: v for i, v in self.baseline_snapshot.limits.items() if i in present},
                {i: v for i, v in self.baseline_snapshot.raw.items() if i in present},
            )
            result = self.target.executor.restore(snapshot)
        record: Record = {
            "time": self.clock(),
            "run": self.run_id,
            "step": self.steps,
            "status": "exit",
            "dry_run": self.dry_run,
            "decider": self.decider.name,
            "reason": f"stopped; on exit: {mode}",
            "result": result.as_dict() if result is not None else None,
        }
        self._publish(record)
        return result

    # -- one step -----------------------------------------------------------------------------------------

    def step(self) -> Record:
        """Run one control step and return its audit record (also written and published)."""
        now = self.clock()
        self.steps += 1
        stages: dict[str, float] = {}
        errors: list[dict[str, str]] = []
        record: Record = {
            "time": now,
            "run": self.run_id,
            "step": self.steps,
            "dry_run": self.dry_run,
            "decider": self.decider.name,
        }
        mark = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal mark
            moment = time.perf_counter()
            stages[name] = (moment - mark) * 1000
            mark = moment

        added, removed = self._refresh(errors)
        names = self.target.names()
        end = now - self.config.trace_lag_s
        start = end - self.window_s
        traces, samples, limits, stale = self._read(names, start, end, errors)
        cpu_load = self._cpu_load(errors)
        lap("read")
        if self._ingest(traces):
            lap("ingest")
        summary = summarize(traces, self.summaries)
        slo = slo_status(
            summary,
            self.slo_ms,
            min_requests=self.config.min_requests,
            at_risk=self.config.at_risk,
            slack=self.config.slack,
        )
        lap("slo")
        threshold = self.config.stale_intervals * self.config.interval_s
        newest = max((s.timestamp for s in samples.values() if s is not None), default=None)
        age = None if newest is None else now - newest
        if stale is None and not traces:
            stale = "no requests completed in the window"
        if stale is None and (age is None or age > threshold):
            stale = (
                "no telemetry" if age is None else f"telemetry is {age:.1f} s old (more than {threshold:g} s)"
            )
        stale_instances = {
            n: "stale telemetry"
            for n in names
            if samples.get(n) is None or now - samples[n].timestamp > threshold  # type: ignore[union-attr]
        }
        rate = len(traces) / self.window_s
        record.update(
            {
                "window": {"start": start, "end": end, "traces": len(traces)},
                "inputs": {
                    "rate_rps": round(rate, 3),
                    "prev_rate_rps": round(self.prev_rate, 3),
                    "mix": {k: round(v, 4) for k, v in summary.mix.items()},
                    "telemetry_age_s": None if age is None else round(age, 3),
                    "stale_instances": sorted(stale_instances),
                    "added_instances": added,
                    "removed_instances": removed,
                    "cpus": None if cpu_load is None else [cpu_load[c].as_dict() for c in sorted(cpu_load)],
                },
                "slo": [s.as_dict() for s in slo.values()],
            }
        )
        if stale is not None:
            record.update(
                {
                    "status": "stale",
                    "reason": stale,
                    "decision": None,
                    "proposed": [],
                    "rejected": [],
                    "result": None,
                }
            )
            log.warning("step %d decides nothing: %s", self.steps, stale)
        else:
            observation = Observation(
                now,
                (start, end),
                traces,
                self.reference,
                slo,
                self._views(names, limits, samples, summary.served),
                rate,
                self.prev_rate,
                summary.mix,
                cpu_load,
            )
            self._decide(observation, record, stale_instances, lap, errors)
            self._scale_in(observation, record)
            if not observation.at_risk:
                keep = self.config.firm.reference_traces
                self.reference = list(traces[-keep:]) if keep else None
        self.prev_rate = rate if traces else self.prev_rate
        self._scale_events(record)
        record["errors"] = errors
        record["stages_ms"] = {k: round(v, 3) for k, v in stages.items()}
        record["step_ms"] = round(sum(stages.values()), 3)
        self._publish(record, limits)
        return record

    def _read(
        self, names: Sequence[str], start: float, end: float, errors: list[dict[str, str]]
    ) -> tuple[
        list[Trace], dict[str, Sample | None], Mapping[str, Mapping[str, float | str | None]], str | None
    ]:
        """Traces, telemetry and limits; what could not be read makes the step stale (the reason)."""
        stale: str | None = None
        traces: list[Trace] = []
        samples: dict[str, Sample | None] = {}
        limits: Mapping[str, Mapping[str, float | str | None]] = {}
        try:
            traces = self.target.read_traces(int(start * 1e6), int(end * 1e6))
        except (redis.RedisError, FirmError, OSError) as exc:
            stale = f"trace store unreachable: {exc}"
            errors.append({"kind": "trace_store", "error": str(exc)})
        try:
            samples = self.target.latest_telemetry(names)
        except (redis.RedisError, FirmError, OSError) as exc:
            stale = stale or f"telemetry unreachable: {exc}"
            errors.append({"kind": "telemetry", "error": str(exc)})
        try:
            limits = self.target.executor.snapshot(names).limits
        except ExecutorError as exc:
            stale = stale or f"limits unreadable: {exc}"
            errors.append({"kind": "executor", "error": str(exc)})
        return traces, samples, limits, stale

    def _cpu_load(self, errors: list[dict[str, str]]) -> Mapping[int, CpuLoad] | None:
        """The target's per-CPU load; None (placement left out of this step) when it cannot be read."""
        try:
            return self.target.cpu_load()
        except (FirmError, OSError) as exc:
            errors.append({"kind": "cpu_load", "error": str(exc)})
            return None

    def _ingest(self, traces: Sequence[Trace]) -> bool:
        """Hand the window's requests to a decider that prepares per-trace work (the firm decider
        computes each request's critical path and parts once, as it completes); True if it did."""
        ingest = getattr(self.decider, "ingest", None)
        if ingest is None or not traces:
            return False
        try:
            ingest(traces)
        except Exception as exc:  # the decision computes what is missing itself
            log.warning("per-trace features: %s", exc)
        return True

    def _refresh(self, errors: list[dict[str, str]]) -> tuple[list[str], list[str]]:
        try:
            added, removed = self.target.refresh()
            if removed:  # scaled in: no guardrail state, baseline or metric of it stays behind
                self.guard.forget(removed)
                for name in removed:
                    self.baseline.pop(name, None)
                if self.metrics is not None:
                    self.metrics.forget(removed)
            if added:
                self.baseline.update(self.target.executor.snapshot(added).limits)
            return added, removed
        except (FirmError, OSError) as exc:
            errors.append({"kind": "discovery", "error": str(exc)})
            return [], []

    def _views(
        self,
        names: Sequence[str],
        limits: Mapping[str, Mapping[str, float | str | None]],
        samples: Mapping[str, Sample | None],
        served: Mapping[str, frozenset[str]],
    ) -> dict[str, InstanceView]:
        views = {}
        for name in names:
            sample = samples.get(name)
            current = {r: v for r, v in (limits.get(name) or {}).items() if v is not None}
            base = {r: v for r, v in (self.baseline.get(name) or current).items() if v is not None}
            views[name] = InstanceView(
                name,
                self.target.service_of(name),
                current,
                base,
                self.target.executor.resources(name),
                usage_of(sample),
                None if sample is None else sample.timestamp,
                None if sample is None else sample.timestamp - sample.interval_s,
                self.target.cpu_capacity(name),
                served.get(name, frozenset()),
            )
        return views

    def _decide(
        self,
        observation: Observation,
        record: Record,
        stale_instances: Mapping[str, str],
        lap: Callable[[str], None],
        errors: list[dict[str, str]],
    ) -> None:
        self.guard.confirm(observation)
        try:
            proposals = self.decider.decide(observation)
        except Exception as exc:  # a decider's fault must not stop the loop: audited, nothing applied
            log.exception("the %s decider failed", self.decider.name)
            lap("decide")
            errors.append({"kind": "decider", "error": f"{type(exc).__name__}: {exc}"})
            record.update(
                {
                    "status": "failed",
                    "reason": f"decider failed: {exc}",
                    "decision": None,
                    "proposed": [],
                    "rejected": [],
                    "result": None,
                }
            )
            return
        lap("decide")
        explanation = self.decider.explanation
        accepted, rejected = self.guard.bound(proposals, observation, observation.time, stale_instances)
        lap("guard")
        result = (
            self.target.executor.apply(accepted, dry_run=self.dry_run)
            if accepted
            else StepResult((), self.dry_run)
        )
        lap("apply")
        self.guard.record(result, observation.time)
        if result.error is not None:
            errors.append({"kind": "executor", "error": result.error})
        would_change = any(a.changed for a in result.applied)
        status = "failed" if not result.ok else "acted" if would_change else "no_action"
        scale = []
        if self.scaler is not None and self.config.firm.scale_out and not self.dry_run:
            for service in explanation.scale_out:
                started = self.scaler.request(service, "out")
                scale.append(
                    {
                        "service": service,
                        "direction": "out",
                        "started": started,
                        "reason": _scale_out_reason(explanation.culprits, service),
                        **({} if started else {"why": "the scaler is busy or in its own cool-down"}),
                    }
                )
                if started:
                    self.scale_in.note(service, observation.time)
        elif explanation.scale_out:
            scale = [
                {
                    "service": s,
                    "direction": "out",
                    "started": False,
                    "reason": _scale_out_reason(explanation.culprits, s),
                    "why": "dry run" if self.dry_run else "scale-out disabled or no scaler for this target",
                }
                for s in explanation.scale_out
            ]
        record.update(
            {
                "status": status,
                "reason": (result.error and f"executor: {result.error}") or "",
                "decision": {
                    **explanation.as_dict(),
                    "stages_ms": {k: round(v, 3) for k, v in explanation.stages_ms.items()},
                },
                "proposed": [a.as_dict() for a in proposals],
                "rejected": [r.as_dict() for r in rejected],
                "result": result.as_dict(),
                "scale_requests": scale,
            }
        )

    def _scale_in(self, observation: Observation, record: Record) -> None:
        """Remove an instance a service was scaled out to, when every SLO has held with slack long
        enough (:mod:`firm.loop.scaling`); audited as a scale request with its reason."""
        choice, why = self.scale_in.decide(observation, raised=bool(observation.at_risk))
        if choice is None:
            if why and not why.startswith(("no service", "not every", "scale-in disabled")):
                record["scale_in"] = why
            return
        entry: dict[str, Any] = {**choice.as_dict(), "started": False}
        if self.dry_run or self.scaler is None:
            entry["why"] = "dry run" if self.dry_run else "no scaler for this target"
            self.scale_in.requested(choice, observation.time)
        elif self.scaler.request(choice.service, "in"):
            entry["started"] = True
            self.scale_in.requested(choice, observation.time)
        else:
            entry["why"] = "the scaler is busy or in its own cool-down; asked again next step"
        record.setdefault("scale_requests", []).append(entry)
        log.info(
            "scale-in of %s: %s%s",
            choice.service,
            choice.reason,
            "" if entry["started"] else f" (not started: {entry['why']})",
        )

    def _scale_events(self, record: Record) -> None:
        if self.scaler is not None:
            events = self.scaler.events()
            if events:
                record["scale_events"] = events
                for event in events:
                    self.scale_in.note(str(event.get("service")), self.clock())

    def _publish(
        self, record: Record, limits: Mapping[str, Mapping[str, float | str | None]] | None = None
    ) -> None:
        started = time.perf_counter()
        if self.audit is not None:
            try:
                ok = self.audit.write(record)
            except OSError as exc:
                log.error("audit file: %s", exc)
                ok = False
            if not ok and self.audit.client is not None:
                record.setdefault("errors", []).append(
                    {"kind": "audit", "error": "Redis did not take the record"}
                )
        if self.metrics is not None:
            self.metrics.observe_step(record)
            self.metrics.stage.labels("audit").observe(time.perf_counter() - started)
            if limits:
                self.metrics.set_limits({i: (self.target.service_of(i), v) for i, v in limits.items()})
        self.last_record = record
        if self.on_step is not None:
            self.on_step(record)


def _scale_out_reason(culprits: Sequence[Mapping[str, Any]], service: str) -> str:
    """Why the decider asked for another instance of ``service`` (for the audit)."""
    names = [str(c.get("instance")) for c in culprits if c.get("service") == service]
    return f"the agent asked for another instance of {service}" + (
        f" (culprit {', '.join(names)})" if names else ""
    )
