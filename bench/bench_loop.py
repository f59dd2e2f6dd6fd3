"""Latency of the control loop's decision (traces in, actions out) and of the local executor's steps.

    .venv/bin/python bench/bench_loop.py [--quick] [--no-real] [--out bench/results/loop.json]

**Decision**: a window of N completed requests (N = 100, 1,000, 10,000) and a reference window of
as many, shaped like the embedded testbed's traffic (compose-post 10 %, read-home-timeline 60 %,
read-user-timeline 30 %; 15, 4 and 3 spans; seeded), with a CPU contention on compose-post-0 in the
window that violates compose-post's SLO. One decision is what a step does between reading and
applying: the SLO check and the instances' view (:mod:`firm.loop.observe`), the decider, the
guardrails. Deciders timed on the same windows:

- ``firm``: localization (``Localizer.load()``: the shipped SVM, or the rules when none ships) and
  the agent (``Agent.load()``, or the step rule when no agent model is installed: named in the
  output) for each culprit, as in the loop: each request's parts (critical path, own times, gaps)
  were computed once when it completed (the loop's ``ingest`` stage, timed separately as
  ``ingest``: per-trace work for N requests seen for the first time) and are read from the
  decider's cache; the reference is handed over as a new list every time, so its aggregates are
  computed again too;
- ``firm-cold``: the same with an empty cache every time (every request's parts computed in the
  decision: what one decision costs without the loop's cache, and the figure to compare with
  the per-object computation of earlier versions);
- ``aimd`` (the baseline: no localization) and ``observe`` (the SLO check alone), to show what
  localization costs.

Median and p99 over the repetitions (fewer at 10,000; p99 is then close to the maximum); the goal
is a p99 of at most 20 ms per 1,000 traces.

**Executor**: one step of the local executor on this machine's kernel (root; ``--no-real`` or no
root: the in-memory executor): a CPU quota change of one group, a step of three actions (quota,
weight, a TBF rate on a veth), the same step in a dry run, a step whose values are
already in place (no write), and reading one instance's limits (``snapshot``, every step does it). The group ``firm-bench-loop`` and the veth pair ``firmbl0`` /
``firmbl0p`` are removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ansible_collections.firm.core.plugins.module_utils import cgroup
from ansible_collections.firm.core.plugins.module_utils.errors import FirmError
from firm.actuate.executor import Action, Executor, MemoryExecutor
from firm.actuate.local import LocalExecutor, LocalTarget
from firm.loop.config import LoopConfig
from firm.loop.deciders import AimdDecider, Decider, FirmDecider, make_decider
from firm.loop.guard import Guardrails
from firm.loop.observe import InstanceView, Observation, TraceSummaries, slo_status, summarize
from firm.tracing.culprit_features import TracePartsCache
from firm.tracing.model import Span, Trace

ROOT = Path(__file__).resolve().parents[1]
SIZES = [100, 1_000, 10_000]
SUMMARIES = TraceSummaries()
"""Each request's type, latency and instances, read once as in the loop (``ControlLoop.summaries``)."""
SLO = {"compose-post": 250.0, "read-home-timeline": 120.0, "read-user-timeline": 120.0}
SERVICES = (
    "frontend",
    "compose-post",
    "unique-id",
    "text",
    "url-shorten",
    "user-mention",
    "media",
    "user",
    "post-storage",
    "user-timeline",
    "home-timeline",
    "social-graph",
)


# -- traces ---------------------------------------------------------------------------------------


class Builder:
    """Testbed-shaped requests; ``slow`` stretches one instance's own time (the culprit)."""

    def __init__(self, rng: random.Random, slow: dict[str, float], prefix: str = "") -> None:
        self.rng, self.slow, self.n, self.prefix = rng, slow, 0, prefix

    def span(
        self,
        spans: list[Span],
        tag: str,
        service: str,
        op: str,
        start: int,
        own_us: float,
        parent: str | None,
        children: Callable[[int], int] | None = None,
    ) -> int:
        """A server span of ``service`` starting at ``start``; returns its end."""
        sid = f"{tag}-{len(spans)}"
        index = len(spans)
        spans.append(Span(sid, service, f"{service}-0", op, start, 0, parent, kind="server"))
        own = own_us * self.rng.lognormvariate(0, 0.3) * self.slow.get(service, 1.0)
        end = start + int(own / 2)
        if children is not None:
            end = children(end)
        end += int(own / 2)
        spans[index] = Span(sid, service, f"{service}-0", op, start, end - start, parent, kind="server")
        return end

    def trace(self, kind: str, end_us: int) -> Trace:
        self.n += 1
        tag = f"{self.prefix}{kind[0]}{self.n}"
        spans: list[Span] = []
        start = end_us - 200_000  # moved below so that the root ends at end_us

        def compose(at: int) -> int:
            root = spans[0].span_id

            def inside(t: int) -> int:
                cp = spans[1].span_id
                ends = [
                    self.span(spans, tag, s, "call", t + 100, w, cp)
                    for s, w in (("unique-id", 200), ("media", 400), ("user", 900))
                ]
                ends.append(
                    self.span(
                        spans,
                        tag,
                        "text",
                        "compose_text",
                        t + 100,
                        2500,
                        cp,
                        lambda u: max(
                            self.span(spans, tag, "url-shorten", "call", u, 400, spans[-1].span_id),
                            self.span(spans, tag, "user-mention", "call", u, 400, spans[-1].span_id),
                        ),
                    )
                )
                t = max(ends)
                for service, work in (
                    ("post-storage", 3000),
                    ("user-timeline", 1800),
                    ("home-timeline", 3000),
                ):
                    t = self.span(spans, tag, service, "call", t + 100, work, cp)
                return t

            return self.span(spans, tag, "compose-post", "compose_post", at + 100, 5000, root, inside)

        def home(at: int) -> int:
            return self.span(
                spans,
                tag,
                "home-timeline",
                "read_home_timeline",
                at + 100,
                3000,
                spans[0].span_id,
                lambda t: self.span(spans, tag, "social-graph", "call", t + 100, 1200, spans[1].span_id),
            )

        def user(at: int) -> int:
            return self.span(
                spans, tag, "user-timeline", "read_user_timeline", at + 100, 2000, spans[0].span_id
            )

        inner = {"compose-post": compose, "read-home-timeline": home, "read-user-timeline": user}[kind]
        self.span(spans, tag, "frontend", kind.replace("-", "_"), start, 1200, None, inner)
        shift = end_us - spans[0].end
        return Trace(
            tag,
            tuple(
                Span(
                    s.span_id,
                    s.service,
                    s.instance,
                    s.operation,
                    s.start + shift,
                    s.duration,
                    s.parent_id,
                    kind=s.kind,
                )
                for s in spans
            ),
        )


def windows(n: int, seed: int) -> tuple[list[Trace], list[Trace]]:
    """(window, reference) of ``n`` requests each; compose-post-0 is 60 x slower in the window."""
    rng = random.Random(seed)
    kinds = rng.choices(list(SLO), weights=[10, 60, 30], k=2 * n)
    calm, hot = (
        Builder(rng, {}, "r"),
        Builder(rng, {"compose-post": 60.0}, "w"),
    )  # trace IDs unique, as Jaeger's
    reference = [calm.trace(k, 1_000_000_000 + i * 100) for i, k in enumerate(kinds[:n])]
    window = [hot.trace(k, 1_010_000_000 + i * 100) for i, k in enumerate(kinds[n:])]
    return window, reference


# -- decisions ------------------------------------------------------------------------------------------


def views_for(served: Mapping[str, frozenset[str]]) -> dict[str, InstanceView]:
    out = {}
    for service in SERVICES:
        name = f"{service}-0"
        limits: dict[str, float | str] = {"cpu": 0.5, "disk_io": math.inf, "network": math.inf}
        out[name] = InstanceView(
            name,
            service,
            limits,
            dict(limits),
            frozenset({"cpu", "disk_io", "network"}),
            {"cpu": 0.3, "disk_io": 1e5, "network": 1e6},
            99.5,
            98.5,
            2.0,
            served.get(name, frozenset()),
        )
    return out


def decide_once(
    config: LoopConfig,
    decider: Decider | None,
    window: Sequence[Trace],
    reference: Sequence[Trace],
    *,
    cold: bool = False,
) -> tuple[float, int]:
    """Seconds from traces to bounded actions, and the number of actions; ``cold``: the firm
    decider's per-trace cache emptied first."""
    reference = list(reference)  # a new reference object: nothing of it is reused but its requests' parts
    started = time.perf_counter()
    summary = summarize(window, None if cold else SUMMARIES)
    slo = slo_status(summary, SLO, min_requests=5, at_risk=config.at_risk, slack=config.slack)
    observation = Observation(
        100.0,
        (94.0, 99.0),
        window,
        reference,
        slo,
        views_for(summary.served),
        len(window) / 5,
        len(window) / 5,
        summary.mix,
    )
    actions = 0
    if isinstance(decider, FirmDecider) and cold:
        decider.forget()
    if decider is not None:
        proposals = decider.decide(observation)
        accepted, _ = Guardrails(config).bound(proposals, observation, now=100.0)
        actions = len(accepted)
    return time.perf_counter() - started, actions


def stream(
    n: int, seed: int, steps: int, window_s: float, interval_s: float
) -> tuple[list[Trace], list[Trace]]:
    """Requests completing at an even rate of ``n`` per window (compose-post-0 60 x slower), enough
    for a window and ``steps`` intervals after it, and a calm reference window of ``n``."""
    rng = random.Random(seed)
    rate = n / window_s
    total = int(rate * (window_s + interval_s * steps)) + 1
    kinds = rng.choices(list(SLO), weights=[10, 60, 30], k=n + total)
    calm, hot = Builder(rng, {}, "r"), Builder(rng, {"compose-post": 60.0}, "s")
    reference = [calm.trace(k, 1_000_000_000 + i * 100) for i, k in enumerate(kinds[:n])]
    gap_us = 1e6 / rate
    traces = [hot.trace(k, int(2_000_000_000 + i * gap_us)) for i, k in enumerate(kinds[n:])]
    return traces, reference


def in_window(traces: Sequence[Trace], ends: Sequence[int], end_us: int, window_s: float) -> list[Trace]:
    """The requests whose root ended in ``(end_us - window_s, end_us]``."""
    return [t for t, e in zip(traces, ends, strict=True) if end_us - window_s * 1e6 < e <= end_us]


def step_once(
    config: LoopConfig,
    decider: FirmDecider,
    window: Sequence[Trace],
    reference: Sequence[Trace] | None,
    summaries: TraceSummaries,
) -> tuple[float, int]:
    """Seconds of one loop step from traces to bounded actions, as ``ControlLoop.step`` orders it:
    ``ingest`` (the per-trace parts of the requests new to the decider), the SLO check, the
    decision, the guardrails. ``reference`` is kept as one object, as the loop keeps it."""
    started = time.perf_counter()
    decider.ingest(window)
    summary = summarize(window, summaries)
    slo = slo_status(summary, SLO, min_requests=5, at_risk=config.at_risk, slack=config.slack)
    observation = Observation(
        100.0,
        (94.0, 99.0),
        window,
        reference,
        slo,
        views_for(summary.served),
        len(window) / 5,
        len(window) / 5,
        summary.mix,
    )
    proposals = decider.decide(observation)
    accepted, _ = Guardrails(config).bound(proposals, observation, now=100.0)
    return time.perf_counter() - started, len(accepted)


def bench_steps(
    quick: bool, decider: Decider, window_s: float = 5.0, interval_s: float = 2.0
) -> list[dict[str, Any]]:
    """Loop steps over a stream of requests: every ``interval_s`` a window of the last ``window_s``
    seconds (``interval_s / window_s`` of it new), each step timed whole (ingest + decision).

    - ``step``: the steps after the first (the decider's cache holds what earlier windows saw);
    - ``step-prefetched``: the same steps when ``ControlLoop.run`` did the per-trace work of the
      requests completed up to a quarter interval before each step (the testbed's loop: its
      reads are incremental), so the step computes only the last quarter interval's;
    - ``first-step-cold``: the first step of a run with an empty cache (every request of the window
      new: what the first step cost before ``ControlLoop.start`` warmed the cache);
    - ``first-step``: the first step after ``ControlLoop.start`` ingested the window that ended
      when it started, 50 ms before the step (start-up work, not timed: nothing waits on it).

    A first step has no reference window yet (the loop keeps one from its first healthy window);
    the later ones keep one reference object, as the loop does while an SLO is at risk.
    """
    if not isinstance(decider, FirmDecider):
        return []
    config = LoopConfig()
    rows = []
    for n in SIZES[:2] if quick else SIZES:
        steps = {100: 40, 1_000: 30, 10_000: 8}[n]
        traces, reference = stream(n, seed=n + 1, steps=steps, window_s=window_s, interval_s=interval_s)
        ends = [t.spans[0].end for t in traces]
        first_end = ends[0] + int(window_s * 1e6)
        windows_ = [
            in_window(traces, ends, first_end + int(k * interval_s * 1e6), window_s) for k in range(steps + 1)
        ]
        before_start = in_window(traces, ends, first_end - 50_000, window_s)
        times: dict[str, list[float]] = {
            "step": [],
            "step-prefetched": [],
            "first-step-cold": [],
            "first-step": [],
        }
        acted = 0
        step_once(config, decider, windows_[0], reference, TraceSummaries())  # warm-up (imports)
        gc.collect()
        for _ in range(steps):  # the first step, repeated: cold, and warmed at start
            decider.forget()
            seconds, _ = step_once(config, decider, windows_[0], None, TraceSummaries())
            times["first-step-cold"].append(seconds)
            decider.forget()
            summaries = TraceSummaries()
            decider.ingest(before_start)  # start(): the window that ended 50 ms before the first step
            summarize(before_start, summaries)
            seconds, _ = step_once(config, decider, windows_[0], None, summaries)
            times["first-step"].append(seconds)
        decider.forget()
        summaries = TraceSummaries()
        step_once(config, decider, windows_[0], reference, summaries)
        gc.collect()
        for window in windows_[1:]:
            seconds, acted = step_once(config, decider, window, reference, summaries)
            times["step"].append(seconds)
        decider.forget()
        summaries = TraceSummaries()
        step_once(config, decider, windows_[0], reference, summaries)
        lead_us = int(interval_s / 4 * 1e6)
        gc.collect()
        for k in range(1, steps + 1):
            ahead = in_window(traces, ends, first_end + int(k * interval_s * 1e6) - lead_us, window_s)
            decider.ingest(ahead)  # ControlLoop.run, a quarter interval before the step (not timed)
            summarize(ahead, summaries)
            seconds, acted = step_once(config, decider, windows_[k], reference, summaries)
            times["step-prefetched"].append(seconds)
        for name, values in times.items():
            p99_ms = percentile(values, 99) * 1000
            rows.append(
                {
                    "decider": f"firm-{name}",
                    "traces": n,
                    "repeats": len(values),
                    "median_ms": statistics.median(values) * 1000,
                    "p99_ms": p99_ms,
                    "p99_ms_per_1000_traces": p99_ms * 1000 / n,
                    "actions": acted,
                }
            )
            print(
                f"  {'firm-' + name:20s} {n:6d} traces: median {rows[-1]['median_ms']:8.2f} ms, "
                f"p99 {p99_ms:8.2f} ms ({p99_ms * 1000 / n:.2f} ms per 1,000 traces)"
            )
    return rows


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def bench_decisions(quick: bool) -> tuple[list[dict[str, Any]], str]:
    config = LoopConfig()
    firm = make_decider(config.model_copy(update={"decider": "firm"}), request_types=list(SLO))
    agent_kind = "?"
    if isinstance(firm, FirmDecider):
        agent_kind = (
            "step rule (no agent model installed)"
            if type(firm.agent).__name__ == "StepAgent"
            else "DDPG agent model"
        )
    deciders: dict[str, Decider | None] = {
        "firm": firm,
        "firm-cold": firm,
        "aimd": AimdDecider(config),
        "observe": None,
    }
    rows = []
    for n in SIZES[:2] if quick else SIZES:
        window, reference = windows(n, seed=n)
        repeats = {100: 50, 1_000: 30, 10_000: 8}[n]
        gc.collect()
        ingest = []
        for _ in range(repeats):
            cache = TracePartsCache()
            started = time.perf_counter()
            cache.ingest(window)
            ingest.append(time.perf_counter() - started)
        p99_ms = percentile(ingest, 99) * 1000
        rows.append(
            {
                "decider": "ingest",
                "traces": n,
                "repeats": repeats,
                "median_ms": statistics.median(ingest) * 1000,
                "p99_ms": p99_ms,
                "p99_ms_per_1000_traces": p99_ms * 1000 / n,
                "actions": 0,
            }
        )
        print(
            f"  {'ingest':9s} {n:6d} traces: median {rows[-1]['median_ms']:8.2f} ms, p99 {p99_ms:8.2f} ms "
            f"({p99_ms * 1000 / n:.2f} ms per 1,000 traces): per-trace parts of requests seen for the first time"
        )
        for name, decider in deciders.items():
            cold = name == "firm-cold"
            decide_once(config, decider, window, reference)  # warm-up (imports, caches)
            times, acted = [], 0
            gc.collect()
            for _ in range(repeats):
                seconds, acted = decide_once(config, decider, window, reference, cold=cold)
                times.append(seconds)
            p99_ms = percentile(times, 99) * 1000
            row = {
                "decider": name,
                "traces": n,
                "repeats": repeats,
                "median_ms": statistics.median(times) * 1000,
                "p99_ms": p99_ms,
                "p99_ms_per_1000_traces": p99_ms * 1000 / n,
                "actions": acted,
            }
            rows.append(row)
            print(
                f"  {name:9s} {n:6d} traces: median {row['median_ms']:8.2f} ms, p99 {row['p99_ms']:8.2f} ms "
                f"({row['p99_ms_per_1000_traces']:.2f} ms per 1,000 traces), {acted} actions"
            )
    print(f"loop steps ({5:g} s windows every {2:g} s: ingest of the new requests + decision):")
    rows.extend(bench_steps(quick, firm))
    return rows, agent_kind


# -- the executor ----------------------------------------------------------------------------------------


def _time_step(
    executor: Executor, step: Callable[[int], list[Action]], repeats: int, dry_run: bool = False
) -> dict[str, float]:
    times = []
    for i in range(repeats):
        started = time.perf_counter()
        result = executor.apply(step(i), dry_run=dry_run)
        times.append(time.perf_counter() - started)
        if not result.ok:
            raise RuntimeError(result.error)
    return {"median_ms": statistics.median(times) * 1000, "p99_ms": percentile(times, 99) * 1000}


def bench_executor(real: bool, repeats: int) -> dict[str, Any]:
    name, group_path, link = "bench-0", "firm-bench-loop", "firmbl0"
    cleanup: list[Callable[[], object]] = []
    executor: Executor
    try:
        if real:
            layout = cgroup.detect_layout()
            group = cgroup.group_at(layout, group_path)
            cleanup.append(lambda: cgroup.remove_group_when_empty(group))
            cgroup.create_group(group)
            cleanup.append(
                lambda: subprocess.run(["ip", "link", "del", link], check=False, capture_output=True)
            )
            subprocess.run(
                ["ip", "link", "add", link, "type", "veth", "peer", "name", f"{link}p"], check=True
            )
            subprocess.run(["ip", "link", "set", link, "up"], check=True)
            executor = LocalExecutor([LocalTarget(name, "bench", group_path, link)])
            kind = "local (this machine's kernel; tc on a veth)"
        else:
            executor = MemoryExecutor({name: {"cpu": 0.5, "cpu_weight": 100.0, "network": math.inf}})
            kind = "in memory (--no-real or no root)"
        baseline = executor.snapshot([name])
        out = {
            "executor": kind,
            "repeats": repeats,
            "one_cpu_change": _time_step(
                executor, lambda i: [Action(name, "cpu", 0.5 + 0.1 * (i % 2))], repeats
            ),
            "three_actions": _time_step(
                executor,
                lambda i: [
                    Action(name, "cpu", 0.5 + 0.1 * (i % 2)),
                    Action(name, "cpu_weight", 100 + 50 * (i % 2)),
                    Action(name, "network", 100e6 + 10e6 * (i % 2)),
                ],
                repeats,
            ),
            "three_actions_dry_run": _time_step(
                executor,
                lambda i: [
                    Action(name, "cpu", 0.9),
                    Action(name, "cpu_weight", 300),
                    Action(name, "network", 50e6),
                ],
                repeats,
                dry_run=True,
            ),
            "already_in_place": _time_step(
                executor,
                lambda i: [
                    Action(name, "cpu", 0.6),
                    Action(name, "cpu_weight", 150),
                    Action(name, "network", 110e6),
                ],
                repeats,
            ),
        }
        reads = []
        for _ in range(repeats):
            started = time.perf_counter()
            executor.snapshot([name])
            reads.append(time.perf_counter() - started)
        out["snapshot_one_instance"] = {
            "median_ms": statistics.median(reads) * 1000,
            "p99_ms": percentile(reads, 99) * 1000,
        }
        restored = executor.restore(baseline)
        if not restored.ok:
            raise RuntimeError(restored.error)
        return out
    finally:
        for undo in reversed(cleanup):
            with contextlib.suppress(FirmError, OSError):
                undo()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--quick", action="store_true", help="Sizes up to 1,000 traces and fewer executor steps.")
    ap.add_argument("--executor-only", action="store_true", help="Time the executor only.")
    ap.add_argument("--steps-only", action="store_true", help="Time the loop steps only (firm decider).")
    ap.add_argument(
        "--no-real", action="store_true", help="Time the in-memory executor instead of the kernel."
    )
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "loop.json")
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    agent_kind = "-"
    if args.steps_only:
        config = LoopConfig(decider="firm")
        print("loop steps (5 s windows every 2 s: ingest of the new requests + decision):")
        rows = bench_steps(args.quick, make_decider(config, request_types=list(SLO)))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"decisions": rows}, indent=2, allow_nan=False) + "\n")
        print(f"written: {args.out}")
        return 0
    if not args.executor_only:
        print("decision latency (traces in, bounded actions out):")
        rows, agent_kind = bench_decisions(args.quick)
        print(f"  (firm decider's estimator: {agent_kind})")
    real = not args.no_real and os.geteuid() == 0
    print("local executor, one step:")
    executor = bench_executor(real, 20 if args.quick else 100)
    for key, value in executor.items():
        if isinstance(value, dict):
            print(f"  {key:22s} median {value['median_ms']:7.3f} ms, p99 {value['p99_ms']:7.3f} ms")
    goal = [r for r in rows if r["decider"] == "firm" and r["traces"] == 1_000]
    meets = bool(goal) and goal[0]["p99_ms"] <= 20.0
    print(
        f"goal (firm, 1,000 traces, parts cached as in the loop, p99 <= 20 ms): {'met' if meets else 'NOT met'}"
        + (f" ({goal[0]['p99_ms']:.1f} ms)" if goal else "")
    )
    doc = {
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "firm_estimator": agent_kind,
        "decisions": rows,
        "executor": executor,
        "goal_p99_ms_per_1000_traces": 20.0,
        "goal_met": meets,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
