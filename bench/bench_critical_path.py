"""Throughput of critical-path extraction, and how its cost grows with the size of a trace.

    .venv/bin/python bench/bench_critical_path.py [--quick] [--out bench/results/critical_path.json]

Shapes (synthetic traces, generated before timing):

- ``wide``: one root with n - 1 children at random times (mostly parallel, some sequential);
- ``deep``: a chain, each span the only child of the previous one (depth n);
- ``dsb-compose`` / ``dsb-read``: the recorded DeathStarBench compose-post (32 spans) and
  read-home-timeline (7 spans) traces replicated one after another under a common root, as a
  session of requests (needs ``../shared/data``; skipped otherwise).

For each shape and size (10 to 100,000 spans; ``--quick`` stops at 10,000) it times:

- ``extract``: :func:`firm.tracing.critical_path` (from the trace model to the path and the
  sections, held as arrays);
- ``+objects``: the same, then building every path step and section as Python objects;
- ``window``: :func:`firm.tracing.critical_paths` over a window of many traces of that size
  (about 100,000 spans in all), as the feature extraction uses it;
- ``walk``: :func:`firm.tracing.critical_path_walk`, the span-by-span reference walk;
- ``naive``: the original prototype's algorithm as naive copies write it (recursive, children
  found by scanning every span, every child ending before the LRC added), on the sizes where it
  finishes in a few seconds and does not exceed Python's recursion limit.

Each figure is the best of several runs. The growth exponent is the slope of log(time) against
log(n) over the sizes of at least 1,000 spans (1 = linear). Results go to
``bench/results/critical_path.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from firm.tracing import Span, Trace, critical_path, critical_path_walk, critical_paths, load_traces

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "jaeger-traces" / "deathstarbench"
SIZES = [10, 100, 1_000, 10_000, 100_000]
NAIVE_BUDGET_S = 3.0  # stop growing the naive baseline's sizes past this much time per run


# -- Shapes ------------------------------------------------------------------------------------


def _tag(rnd: random.Random) -> str:
    """A prefix that makes span IDs unique across traces, as real (random) span IDs are."""
    return f"{rnd.getrandbits(48):012x}"


def wide(n: int, rnd: random.Random) -> Trace:
    tag = _tag(rnd)
    spans = [Span(f"{tag}r", "frontend", "fe-1", "GET /", 0, 10_000_000)]
    for i in range(1, n):
        start = rnd.randrange(0, 9_000_000)
        spans.append(Span(f"{tag}c{i}", f"svc{i % 37}", f"svc{i % 37}-{i % 3}", "call", start,
                          rnd.randrange(1, 1_000_000), f"{tag}r"))
    return Trace(tag, tuple(spans))


def deep(n: int, rnd: random.Random) -> Trace:
    tag = _tag(rnd)
    spans = []
    for i in range(n):
        spans.append(Span(f"{tag}d{i}", f"svc{i % 37}", f"svc{i % 37}-1", "call", 10 * i + rnd.randrange(3),
                          20 * (n - i), f"{tag}d{i - 1}" if i else None))
    return Trace(tag, tuple(spans))


def replicated(template: Trace, name: str) -> Callable[[int, random.Random], Trace]:
    root = next(s for s in template.spans if s.parent_id is None)
    t0, length = root.start, root.duration

    def make(n: int, rnd: random.Random) -> Trace:
        tag = _tag(rnd)
        copies = max(1, (n - 1) // len(template.spans))
        gap = length // 10
        spans = [Span(f"{tag}s", "client", "client-1", "session", 0, copies * (length + gap))]
        for k in range(copies):
            at = k * (length + gap) + rnd.randrange(gap // 2 + 1)
            for s in template.spans:
                parent = f"{tag}{k}:{s.parent_id}" if s.parent_id else f"{tag}s"
                spans.append(replace(s, span_id=f"{tag}{k}:{s.span_id}", parent_id=parent,
                                     start=s.start - t0 + at))
        return Trace(tag, tuple(spans))

    return make


def shapes() -> dict[str, Callable[[int, random.Random], Trace]]:
    out: dict[str, Callable[[int, random.Random], Trace]] = {"wide": wide, "deep": deep}
    for name, prefix in (("dsb-compose", "compose-post_R500__trace_02"), ("dsb-read", "read-home-timeline_R600__trace_02")):
        files = sorted(DATA.glob(f"{prefix}*.json"))
        if files:
            out[name] = replicated(load_traces(files[0])[0], name)
        else:
            print(f"note: {name} skipped, no DeathStarBench trace under {DATA.resolve()}", file=sys.stderr)
    return out


# -- The original's algorithm, as naive copies write it ----------------------------------------


def naive_original(trace: Trace) -> list[Span]:
    """Recursive; children found by scanning all spans; LRC recursed into before the loop; every
    child ending before the LRC starts added (parallel ones too). Quadratic, and wrong."""
    spans = trace.spans

    def children(span_id: str) -> list[Span]:
        return [s for s in spans if s.parent_id == span_id]

    def cp(span: Span) -> list[Span]:
        path = [span]
        kids = children(span.span_id)
        if not kids:
            return path
        lrc = max(kids, key=lambda s: s.end)
        path.extend(cp(lrc))
        for c in sorted(kids, key=lambda s: s.end, reverse=True):
            if c.end < lrc.start:
                path.extend(cp(c))
        return path

    root = next(s for s in spans if s.parent_id is None)
    return cp(root)


# -- Timing ------------------------------------------------------------------------------------


def best_time(fn: Callable[[], object], budget_s: float, min_runs: int = 3, max_runs: int = 50) -> float:
    times: list[float] = []
    spent = 0.0
    while len(times) < min_runs or (spent < budget_s and len(times) < max_runs):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        times.append(dt)
        spent += dt
    return min(times)


def with_objects(t: Trace) -> None:
    cp = critical_path(t)
    for r in cp.roots:
        _ = r.steps, r.sections


def slope(ns: list[int], ts: list[float]) -> float | None:
    pts = [(n, t) for n, t in zip(ns, ts, strict=True) if t > 0]
    if len(pts) < 2:
        return None
    x = np.log([p[0] for p in pts])
    y = np.log([p[1] for p in pts])
    return float(np.polyfit(x, y, 1)[0])


def run(quick: bool) -> dict[str, Any]:
    sizes = [s for s in SIZES if not quick or s <= 10_000]
    budget = 0.3 if quick else 1.0
    window_spans = 20_000 if quick else 100_000
    results: list[dict[str, Any]] = []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 2_000))
    for shape, make in shapes().items():
        naive_ok = True
        for size in sizes:
            t = make(size, random.Random(size))
            n = len(t.spans)
            cp = critical_path(t)
            window = [make(size, random.Random(size * 1_000_003 + i)) for i in range(max(1, window_spans // n))]
            row: dict[str, Any] = {
                "shape": shape, "size": size, "spans": n, "path_spans": int(cp.main.step_span.size),
                "extract_s": best_time(partial(critical_path, t), budget),
                "objects_s": best_time(partial(with_objects, t), budget),
                "window_traces": len(window),
                "window_spans": sum(len(w.spans) for w in window),
                "batch_s": best_time(partial(critical_paths, window), budget),
                "walk_s": best_time(partial(critical_path_walk, t), budget / 3, min_runs=2),
                "naive_s": None,
            }
            if naive_ok and not (shape == "deep" and n > 1_500):
                row["naive_s"] = best_time(partial(naive_original, t), budget / 3, min_runs=2, max_runs=10)
                naive_ok = row["naive_s"] < NAIVE_BUDGET_S / 10  # the next size is ~10x larger, squared
            for k in ("extract", "objects", "walk", "naive"):
                v = row[f"{k}_s"]
                row[f"{k}_spans_per_s"] = None if v is None else n / v
            row["batch_spans_per_s"] = row["window_spans"] / row["batch_s"]
            results.append(row)
            print_row(row)
    growth: dict[str, dict[str, float | None]] = {}
    for shape in dict.fromkeys(r["shape"] for r in results):
        rows = [r for r in results if r["shape"] == shape]
        growth[shape] = {
            k: slope([r["spans"] for r in rows if r[f"{k}_s"] and r["size"] >= 1_000],
                     [r[f"{k}_s"] for r in rows if r[f"{k}_s"] and r["size"] >= 1_000])
            for k in ("extract", "objects", "walk", "naive")
        }
    return {"results": results, "growth_exponent": growth}


HEADER = (f"{'shape':<12} {'spans':>7} {'on path':>7} {'extract ms':>10} {'spans/s':>10} {'+objects':>10} "
          f"{'window':>10} {'walk':>10} {'naive':>10} {'x naive':>8}")


def fmt_rate(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v / 1e3:.0f}k"


def print_row(r: dict[str, Any]) -> None:
    speedup = "-" if r["naive_s"] is None else f"{r['naive_s'] / r['extract_s']:.1f}x"
    print(f"{r['shape']:<12} {r['spans']:>7} {r['path_spans']:>7} {r['extract_s'] * 1e3:>10.2f} "
          f"{fmt_rate(r['extract_spans_per_s']):>10} {fmt_rate(r['objects_spans_per_s']):>10} "
          f"{fmt_rate(r['batch_spans_per_s']):>10} "
          f"{fmt_rate(r['walk_spans_per_s']):>10} {fmt_rate(r['naive_spans_per_s']):>10} {speedup:>8}", flush=True)


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "platform": platform.platform()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="sizes up to 10,000 spans and shorter timing runs")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "critical_path.json")
    args = ap.parse_args(argv)
    print("spans/s = spans / best time. extract: one trace (path and sections as arrays); +objects: also")
    print("built as Python objects; window: critical_paths() over a window of such traces (~100k spans);")
    print("walk: the span-by-span reference walk; naive: the original's algorithm; x naive: extract's speed-up\n")
    print(HEADER)
    out = run(args.quick)
    print("\ngrowth exponent (slope of log time vs log spans, sizes >= 1,000; 1 = linear, 2 = quadratic):")
    for shape, g in out["growth_exponent"].items():
        parts = [f"{k} {v:.2f}" for k, v in g.items() if v is not None]
        print(f"  {shape:<12} " + ", ".join(parts))
    rates = [r["extract_spans_per_s"] for r in out["results"] if r["size"] >= 1_000]
    if rates:
        print(f"\nslowest single-trace extraction, traces of >= 1,000 spans: {min(rates) / 1e6:.2f}M spans/s")
    wrates = [r["batch_spans_per_s"] for r in out["results"]]
    print(f"slowest window extraction, traces of any size: {min(wrates) / 1e6:.2f}M spans/s")
    doc = {"benchmark": "critical_path", "quick": args.quick, "machine": machine(),
           "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **out}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    print(f"written: {args.out}")
    return 0 if all(math.isfinite(r["extract_s"]) for r in out["results"]) else 1


if __name__ == "__main__":
    sys.exit(main())
