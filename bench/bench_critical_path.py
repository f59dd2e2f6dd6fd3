"""Critical paths: one trace at a time, windows of traces, and whole export files through the CLI.

    .venv/bin/python bench/bench_critical_path.py [--quick] [--scaling] [--out bench/results/critical_path.json]
        [--baseline RESULT.json]

Run it under the lock, niced: ``flock /tmp/firm-real.lock nice -n 15 .venv/bin/python bench/...``.
Every figure is set against :func:`firm.tracing.critical_path_walk`, the span-by-span reference
walk, in the same run (needs the DeathStarBench traces of ``../shared/data``):

- ``one trace at a time``: :func:`firm.tracing.critical_path_of` on each of 1,024 distinct copies
  of the 12 recorded DeathStarBench traces (7 to 33 spans), one call per trace, as the control
  loop calls it when a trace completes; beside it the array evaluation of one trace (the previous
  default) and the walk.
- ``window``: :func:`firm.tracing.critical_paths` over windows of 1,000 and 100,000 such traces
  (results as arrays and lists), then also building what the CLI prints (``as_dict``) and what
  the features use (``instance_times``); the walk over the same traces (over the first 10,000 of
  the large window, as a rate).
- ``end to end``: a Jaeger query-API export of at least 50 MB is generated (copies of the
  DeathStarBench traces with fresh IDs), then ``firm critical-path --compact`` and ``firm features``
  run on it as processes (wall time, peak resident memory ``VmHWM``), also with a batch of an
  eighth of the file (``--batch-mb``: memory follows the batch) and with the whole file as one
  batch; the same pipeline in process without the interpreter start and the CLI's imports, and
  the previous one (the whole file parsed at once, tags kept); and the reference: the same file
  through the standard library's ``json.loads``, the parser, the walk and ``json.dumps``. Beside
  them, in the same run, both commands' pipelines with the column reader (Jaeger JSON decoded
  straight into the fields firm reads, :class:`firm.tracing.columns.ColumnTrace`) and without it
  (``StreamOptions(columns=False)``: every trace parsed into span objects, the reader before it),
  as processes and in process, by CPU time. This part runs first, while the benchmark's own
  process is small. The import of ``firm.cli`` alone is
  timed too, since it is part of every command.

``--scaling`` adds the growth table of earlier versions: synthetic ``wide``, ``deep`` and
replicated DeathStarBench traces of 10 to 100,000 spans (``--quick`` stops at 10,000), against
the walk and a naive copy of the original prototype's algorithm. Results go to
``bench/results/critical_path.json``. ``--baseline`` sets each figure against a result file of an
earlier version (run the earlier version's benchmark just before, with ``--out`` elsewhere) and
prints the speed-ups.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from firm.tracing import (
    CriticalPath,
    Span,
    Trace,
    critical_path,
    critical_path_of,
    critical_path_walk,
    critical_paths,
    load_trace_files,
    load_traces,
    parse_traces,
    window_features,
)
from firm.tracing.export import jaeger_document, json_bytes
from firm.tracing.stream import StreamOptions, stream_features, write_critical_paths

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
        spans.append(
            Span(
                f"{tag}c{i}",
                f"svc{i % 37}",
                f"svc{i % 37}-{i % 3}",
                "call",
                start,
                rnd.randrange(1, 1_000_000),
                f"{tag}r",
            )
        )
    return Trace(tag, tuple(spans))


def deep(n: int, rnd: random.Random) -> Trace:
    tag = _tag(rnd)
    spans = []
    for i in range(n):
        spans.append(
            Span(
                f"{tag}d{i}",
                f"svc{i % 37}",
                f"svc{i % 37}-1",
                "call",
                10 * i + rnd.randrange(3),
                20 * (n - i),
                f"{tag}d{i - 1}" if i else None,
            )
        )
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
                spans.append(
                    replace(s, span_id=f"{tag}{k}:{s.span_id}", parent_id=parent, start=s.start - t0 + at)
                )
        return Trace(tag, tuple(spans))

    return make


def shapes() -> dict[str, Callable[[int, random.Random], Trace]]:
    out: dict[str, Callable[[int, random.Random], Trace]] = {"wide": wide, "deep": deep}
    for name, prefix in (
        ("dsb-compose", "compose-post_R500__trace_02"),
        ("dsb-read", "read-home-timeline_R600__trace_02"),
    ):
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


def best_cpu(fn: Callable[[], object], runs: int) -> float:
    """The least CPU time (seconds, this process) of ``runs`` calls: steadier than wall time on a
    shared machine, where a process paused or waiting for a CPU spends none."""
    times: list[float] = []
    for _ in range(runs):
        gc.collect()
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
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


def scaling(quick: bool) -> dict[str, Any]:
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
            window = [
                make(size, random.Random(size * 1_000_003 + i)) for i in range(max(1, window_spans // n))
            ]
            row: dict[str, Any] = {
                "shape": shape,
                "size": size,
                "spans": n,
                "path_spans": int(cp.main.step_span.size),
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
            k: slope(
                [r["spans"] for r in rows if r[f"{k}_s"] and r["size"] >= 1_000],
                [r[f"{k}_s"] for r in rows if r[f"{k}_s"] and r["size"] >= 1_000],
            )
            for k in ("extract", "objects", "walk", "naive")
        }
    return {"results": results, "growth_exponent": growth}


# -- One trace at a time, windows, end to end --------------------------------------------------


def dsb_copies(count: int, seed: int) -> list[Trace]:
    """``count`` distinct copies of the 12 DeathStarBench traces: fresh span and trace IDs (random
    hex, as real ones are) and start times shifted by up to a second."""
    templates = [load_traces(f)[0] for f in sorted(DATA.glob("*.json"))]
    if not templates:
        raise SystemExit(
            f"no DeathStarBench trace under {DATA.resolve()}: the benchmark needs ../shared/data"
        )
    rnd = random.Random(seed)
    out = []
    for k in range(count):
        t = templates[k % len(templates)]
        new = {s.span_id: f"{rnd.getrandbits(64):016x}" for s in t.spans}
        shift = rnd.randrange(1_000_000)
        out.append(
            Trace(
                f"{rnd.getrandbits(64):016x}",
                tuple(
                    replace(
                        s,
                        span_id=new[s.span_id],
                        parent_id=new.get(s.parent_id, s.parent_id) if s.parent_id else None,
                        start=s.start + shift,
                    )
                    for s in t.spans
                ),
            )
        )
    return out


def rate(spans: int, seconds: float) -> float:
    return spans / seconds if seconds > 0 else math.inf


def one_at_a_time(budget: float) -> dict[str, Any]:
    traces = dsb_copies(1_024, 1)
    n = sum(len(t.spans) for t in traces)
    row: dict[str, Any] = {
        "traces": len(traces),
        "spans": n,
        "span_range": [min(len(t.spans) for t in traces), max(len(t.spans) for t in traces)],
    }
    arrays = sys.modules["firm.tracing.critical_path"]._batch_paths  # the array evaluation, one trace
    row["critical_path_of_s"] = best_time(lambda: [critical_path_of(t) for t in traces], budget)
    row["with_instance_times_s"] = best_time(
        lambda: [critical_path_of(t).main.instance_times() for t in traces], budget
    )
    row["arrays_s"] = best_time(lambda: [arrays([t], 0) for t in traces], budget, min_runs=2)
    row["walk_s"] = best_time(lambda: [critical_path_walk(t) for t in traces], budget, min_runs=2)
    for k in ("critical_path_of", "with_instance_times", "arrays", "walk"):
        row[f"{k}_spans_per_s"] = rate(n, row[f"{k}_s"])
    row["speedup_vs_walk"] = row["walk_s"] / row["critical_path_of_s"]
    row["speedup_vs_arrays"] = row["arrays_s"] / row["critical_path_of_s"]
    return row


def _with_dicts(traces: list[Trace]) -> list[dict[str, object]]:
    return [cp.as_dict() for cp in critical_paths(traces)]


def _features(traces: list[Trace]) -> object:
    return window_features(critical_paths(traces))


def _walk_each(traces: list[Trace]) -> list[CriticalPath]:
    return [critical_path_walk(t) for t in traces]


def windows(sizes: list[int], budget: float) -> list[dict[str, Any]]:
    rows = []
    for size in sizes:
        traces = dsb_copies(size, size)
        n = sum(len(t.spans) for t in traces)
        sample = traces[: min(size, 10_000)]
        ns = sum(len(t.spans) for t in sample)
        runs = 3 if size <= 10_000 else 1
        row: dict[str, Any] = {"traces": size, "spans": n}
        row["window_s"] = best_time(partial(critical_paths, traces), budget, min_runs=runs)
        row["with_dicts_s"] = best_time(partial(_with_dicts, traces), budget, min_runs=runs)
        row["features_s"] = best_time(partial(_features, traces), budget, min_runs=runs)
        walk_s = best_time(partial(_walk_each, sample), budget / 2, min_runs=1)
        row["walk_spans_per_s"] = rate(ns, walk_s)
        row["walk_sampled_traces"] = len(sample)
        for k in ("window", "with_dicts", "features"):
            row[f"{k}_spans_per_s"] = rate(n, row[f"{k}_s"])
        row["speedup_vs_walk"] = row["window_spans_per_s"] / row["walk_spans_per_s"]
        rows.append(row)
    return rows


def write_export(path: Path, min_bytes: int) -> dict[str, Any]:
    """A Jaeger query-API export of at least ``min_bytes``, of DeathStarBench copies."""
    probe = len(json_bytes(jaeger_document(dsb_copies(120, 7)))) / 120
    count = int(min_bytes / probe * 1.02) + 12
    traces = dsb_copies(count, 7)
    path.write_bytes(json_bytes(jaeger_document(traces)))
    return {"bytes": path.stat().st_size, "traces": count, "spans": sum(len(t.spans) for t in traces)}


_PEAK = (
    "import atexit, runpy, sys\n"
    "def peak():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM:'):\n"
    "            sys.stderr.write('peak-kib ' + line.split()[1] + '\\n')\n"
    "atexit.register(peak)\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


def run_process(args: list[str]) -> tuple[float, int, float]:
    """Wall seconds, peak resident memory (bytes, the process's own ``VmHWM``) and CPU seconds
    (user and system) of a Python script with arguments, its output discarded. The CPU time is
    the steadier figure on a shared machine: a process paused or waiting for a CPU spends none."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False
    )
    dt = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    err = proc.stderr.decode()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}): {err[-2000:]}")
    peaks = [int(line.split()[1]) for line in err.splitlines() if line.startswith("peak-kib ")]
    return dt, (peaks[-1] * 1024 if peaks else 0), cpu


_PIPELINE = (
    "import json, sys\n"
    "from firm.tracing.stream import StreamOptions, stream_features, write_critical_paths\n"
    "command, reader, path = sys.argv[1:4]\n"
    "options = StreamOptions(columns=reader == 'columns')\n"
    "if command == 'critical-path':\n"
    "    write_critical_paths([path], sys.stdout.buffer.write, indent=False, options=options)\n"
    "else:\n"
    "    print(json.dumps(stream_features([path], options=options).as_dict(), indent=2))\n"
)
"""What ``firm critical-path --compact FILE`` and ``firm features FILE`` run, without the CLI, with
the column reader on (``columns``) or off (``rows``: every trace through the reference parser, the
reader before it): the before and after of the column reader in one run, in fresh processes."""


def readers(tmp: Path, path: Path, spans: int, runs: int) -> dict[str, Any]:
    """Both commands with the column reader off and on, alternately (CPU time, peak memory)."""
    script = tmp / "pipeline.py"
    script.write_text(_PIPELINE)
    out: dict[str, Any] = {}
    for command in ("critical-path", "features"):
        measured: dict[str, list[tuple[float, int, float]]] = {"rows": [], "columns": []}
        for _ in range(runs):
            for reader in ("rows", "columns"):
                measured[reader].append(run_process([str(script), command, reader, str(path)]))
        key = command.replace("-", "_")
        for reader, results in measured.items():
            cpu = min(r[2] for r in results)
            out[f"{key}_{reader}_cpu_s"] = cpu
            out[f"{key}_{reader}_cpu_spans_per_s"] = rate(spans, cpu)
            out[f"{key}_{reader}_peak_rss_bytes"] = min(r[1] for r in results)
        out[f"{key}_speedup"] = out[f"{key}_rows_cpu_s"] / out[f"{key}_columns_cpu_s"]
    return out


def reference_pipeline(path: Path) -> int:
    """The file through the standard library's ``json.loads``, the walk and ``json.dumps``."""
    traces = parse_traces(json.loads(path.read_bytes()), str(path))
    out = [
        {"source": str(path), **critical_path_walk(t).as_dict(), "warnings": list(t.warnings)} for t in traces
    ]
    return len(json.dumps({"traces": out}))


def reference_features(path: Path) -> object:
    traces = parse_traces(json.loads(path.read_bytes()), str(path))
    return window_features([critical_path_walk(t) for t in traces])


def fast_pipeline(path: Path, options: StreamOptions | None = None) -> int:
    """What ``firm critical-path --compact`` does, in process: the file in batches, critical paths,
    JSON out (to a sink)."""
    size = 0

    def sink(chunk: bytes) -> None:
        nonlocal size
        size += len(chunk)

    write_critical_paths([path], sink, indent=False, options=options)
    return size


def whole_pipeline(path: Path) -> int:
    """The previous pipeline: the whole file read at once (tags kept), every trace's path, one
    JSON document."""
    reader = load_trace_files([path])
    traces = reader.traces()
    out = [
        {"source": ", ".join(reader.sources(t.trace_id)), **cp.as_dict(), "warnings": list(t.warnings)}
        for t, cp in zip(traces, critical_paths(traces), strict=True)
    ]
    return len(json_bytes({"traces": out}))


def end_to_end(min_mb: int, runs: int) -> dict[str, Any]:
    firm = str(Path(sys.executable).with_name("firm"))
    with tempfile.TemporaryDirectory(prefix="bench-cp-") as tmp:
        path = Path(tmp) / "export.json"
        row: dict[str, Any] = {"file": write_export(path, min_mb * 1_000_000)}
        n = row["file"]["spans"]
        gc.collect()
        importer = Path(tmp) / "import_cli.py"
        importer.write_text("import firm.cli\n")
        small = max(1, row["file"]["bytes"] // 2**20 // 8)  # a batch of an eighth of the file
        row["small_batch_mib"] = small
        for name, args in (
            ("critical_path_cli", [firm, "critical-path", "--compact", str(path)]),
            ("features_cli", [firm, "features", str(path)]),
            (
                "critical_path_small_batch_cli",
                [firm, "critical-path", "--compact", "--batch-mb", str(small), str(path)],
            ),
            (
                "critical_path_whole_file_cli",
                [firm, "critical-path", "--compact", "--batch-mb", "100000", str(path)],
            ),
            ("import_cli", [str(importer)]),
        ):
            measured = [run_process(args) for _ in range(runs)]
            row[f"{name}_s"], row[f"{name}_peak_rss_bytes"], _ = min(measured, key=lambda r: r[0])
            row[f"{name}_cpu_s"] = min(r[2] for r in measured)
        row["readers"] = readers(Path(tmp), path, n, max(runs, 3))
        rows_only = StreamOptions(columns=False)
        row["critical_path_in_process_cpu_s"] = best_cpu(lambda: fast_pipeline(path), max(runs, 3))
        row["critical_path_rows_in_process_cpu_s"] = best_cpu(
            lambda: fast_pipeline(path, rows_only), max(runs, 3)
        )
        row["features_in_process_cpu_s"] = best_cpu(lambda: stream_features([path]), max(runs, 3))
        row["features_rows_in_process_cpu_s"] = best_cpu(
            lambda: stream_features([path], options=rows_only), max(runs, 3)
        )
        row["critical_path_in_process_s"] = best_time(lambda: fast_pipeline(path), 0, min_runs=runs)
        row["whole_file_in_process_s"] = best_time(lambda: whole_pipeline(path), 0, min_runs=1)
        row["features_in_process_s"] = best_time(lambda: stream_features([path]), 0, min_runs=runs)
        row["reference_in_process_s"] = best_time(lambda: reference_pipeline(path), 0, min_runs=1)
        row["reference_features_in_process_s"] = best_time(lambda: reference_features(path), 0, min_runs=1)
    for k in (
        "critical_path_in_process_cpu",
        "critical_path_rows_in_process_cpu",
        "features_in_process_cpu",
        "features_rows_in_process_cpu",
        "critical_path_cli",
        "features_cli",
        "critical_path_small_batch_cli",
        "critical_path_whole_file_cli",
        "whole_file_in_process",
        "critical_path_in_process",
        "features_in_process",
        "reference_in_process",
        "reference_features_in_process",
    ):
        row[f"{k}_spans_per_s"] = rate(n, row[f"{k}_s"])
    row["critical_path_cli_without_import_spans_per_s"] = rate(
        n, row["critical_path_cli_s"] - row["import_cli_s"]
    )
    row["features_cli_without_import_spans_per_s"] = rate(n, row["features_cli_s"] - row["import_cli_s"])
    row["speedup_vs_reference"] = row["reference_in_process_s"] / row["critical_path_in_process_s"]
    row["features_speedup_vs_reference"] = (
        row["reference_features_in_process_s"] / row["features_in_process_s"]
    )
    return row


def fmt_mb(v: float) -> str:
    return f"{v / 2**20:.0f} MiB"


HEADER = (
    f"{'shape':<12} {'spans':>7} {'on path':>7} {'extract ms':>10} {'spans/s':>10} {'+objects':>10} "
    f"{'window':>10} {'walk':>10} {'naive':>10} {'x naive':>8}"
)


def fmt_rate(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v / 1e3:.0f}k"


def print_row(r: dict[str, Any]) -> None:
    speedup = "-" if r["naive_s"] is None else f"{r['naive_s'] / r['extract_s']:.1f}x"
    print(
        f"{r['shape']:<12} {r['spans']:>7} {r['path_spans']:>7} {r['extract_s'] * 1e3:>10.2f} "
        f"{fmt_rate(r['extract_spans_per_s']):>10} {fmt_rate(r['objects_spans_per_s']):>10} "
        f"{fmt_rate(r['batch_spans_per_s']):>10} "
        f"{fmt_rate(r['walk_spans_per_s']):>10} {fmt_rate(r['naive_spans_per_s']):>10} {speedup:>8}",
        flush=True,
    )


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
    }


BASELINE_FIGURES = {
    "firm critical-path --compact, cpu": ("end_to_end", "critical_path_cli_cpu_s"),
    "firm features, cpu": ("end_to_end", "features_cli_cpu_s"),
    "firm critical-path --compact": ("end_to_end", "critical_path_cli_s"),
    "firm features": ("end_to_end", "features_cli_s"),
    "critical-path, small batch": ("end_to_end", "critical_path_small_batch_cli_s"),
    "critical-path, whole file": ("end_to_end", "critical_path_whole_file_cli_s"),
    "import firm.cli": ("end_to_end", "import_cli_s"),
    "in process: critical-path": ("end_to_end", "critical_path_in_process_s"),
    "in process: features": ("end_to_end", "features_in_process_s"),
    "in process: critical-path, cpu": ("end_to_end", "critical_path_in_process_cpu_s"),
    "in process: features, cpu": ("end_to_end", "features_in_process_cpu_s"),
    "one trace at a time": ("one_trace_at_a_time", "critical_path_of_s"),
}


def against_baseline(doc: dict[str, Any], path: Path) -> dict[str, Any]:
    """Each figure's time in ``doc`` against the same figure of an earlier result file (the
    speed-up: baseline time / this time), printed and returned."""
    base = json.loads(path.read_text())
    if base.get("quick") != doc["quick"]:
        print(
            f"\nnote: {path} was run {'with' if base.get('quick') else 'without'} --quick; figures differ in size"
        )
    out: dict[str, Any] = {"file": str(path), "date": base.get("date"), "speedup": {}}
    print(f"\nagainst the baseline {path} ({base.get('date')}): time before -> now, speed-up")
    rows = [(name, section, key) for name, (section, key) in BASELINE_FIGURES.items()]
    for before, now in zip(base.get("windows", []), doc["windows"], strict=False):
        if before.get("traces") == now["traces"]:
            rows.append((f"window of {now['traces']}, with as_dict", "windows", now["traces"]))
    for name, section, key in rows:
        if section == "windows":
            b = next(w["with_dicts_s"] for w in base["windows"] if w["traces"] == key)
            a = next(w["with_dicts_s"] for w in doc["windows"] if w["traces"] == key)
        else:
            b, a = base.get(section, {}).get(key), doc[section][key]
        if not b or not a:
            continue
        out["speedup"][name] = b / a
        print(f"  {name:<34} {b:8.3f} s -> {a:8.3f} s  {b / a:5.2f}x")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller windows and file, shorter timing runs")
    ap.add_argument("--scaling", action="store_true", help="also the growth table over trace sizes")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "critical_path.json")
    ap.add_argument(
        "--baseline",
        type=Path,
        help="a result file of an earlier version (run just before, on the same machine): print "
        "each figure's speed-up against it and record them",
    )
    args = ap.parse_args(argv)
    budget = 0.3 if args.quick else 1.0
    doc: dict[str, Any] = {
        "benchmark": "critical_path",
        "quick": args.quick,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    print("spans/s = spans / best wall time; 'walk' is the span-by-span reference walk in the same run.\n")

    e2e = doc["end_to_end"] = end_to_end(10 if args.quick else 52, 1 if args.quick else 2)
    f = e2e["file"]
    print(f"end to end: {f['bytes'] / 1e6:.1f} MB export, {f['traces']} traces, {f['spans']} spans")
    print(
        f"  firm critical-path --compact  {e2e['critical_path_cli_s']:6.2f} s  "
        f"{fmt_rate(e2e['critical_path_cli_spans_per_s']):>6} spans/s  peak {fmt_mb(e2e['critical_path_cli_peak_rss_bytes'])}"
        f"  (cpu {e2e['critical_path_cli_cpu_s']:.2f} s, {fmt_rate(rate(f['spans'], e2e['critical_path_cli_cpu_s']))} spans/s)"
    )
    print(
        f"  firm features                 {e2e['features_cli_s']:6.2f} s  "
        f"{fmt_rate(e2e['features_cli_spans_per_s']):>6} spans/s  peak {fmt_mb(e2e['features_cli_peak_rss_bytes'])}"
        f"  (cpu {e2e['features_cli_cpu_s']:.2f} s, {fmt_rate(rate(f['spans'], e2e['features_cli_cpu_s']))} spans/s)"
    )
    print(
        f"  critical-path --batch-mb {e2e['small_batch_mib']:<4} {e2e['critical_path_small_batch_cli_s']:6.2f} s  "
        f"{fmt_rate(e2e['critical_path_small_batch_cli_spans_per_s']):>6} spans/s  "
        f"peak {fmt_mb(e2e['critical_path_small_batch_cli_peak_rss_bytes'])}  (file {fmt_mb(f['bytes'])})"
    )
    print(
        f"  critical-path, whole file     {e2e['critical_path_whole_file_cli_s']:6.2f} s  "
        f"{fmt_rate(e2e['critical_path_whole_file_cli_spans_per_s']):>6} spans/s  "
        f"peak {fmt_mb(e2e['critical_path_whole_file_cli_peak_rss_bytes'])}"
    )
    print(
        f"  of which: import firm.cli     {e2e['import_cli_s']:6.2f} s  (without it: critical-path "
        f"{fmt_rate(e2e['critical_path_cli_without_import_spans_per_s'])}, features "
        f"{fmt_rate(e2e['features_cli_without_import_spans_per_s'])} spans/s)"
    )
    print(
        f"  in process: critical-path     {e2e['critical_path_in_process_s']:6.2f} s  "
        f"{fmt_rate(e2e['critical_path_in_process_spans_per_s']):>6} spans/s  "
        f"(reference: stdlib json, walk, json.dumps {e2e['reference_in_process_s']:.2f} s, "
        f"{e2e['speedup_vs_reference']:.1f}x; whole file at once {e2e['whole_file_in_process_s']:.2f} s)"
    )
    print(
        f"  in process: features          {e2e['features_in_process_s']:6.2f} s  "
        f"{fmt_rate(e2e['features_in_process_spans_per_s']):>6} spans/s  "
        f"(reference: stdlib json, walk {e2e['reference_features_in_process_s']:.2f} s, "
        f"{e2e['features_speedup_vs_reference']:.1f}x)\n"
    )

    rd = e2e["readers"]
    print(
        "  the column reader against the reader before it (every trace parsed into span objects), same run, CPU time:"
    )
    for key, name in (("critical_path", "critical-path --compact"), ("features", "features")):
        print(
            f"    {name:<24} rows {rd[f'{key}_rows_cpu_s']:5.2f} s {fmt_rate(rd[f'{key}_rows_cpu_spans_per_s']):>6} spans/s"
            f" peak {fmt_mb(rd[f'{key}_rows_peak_rss_bytes'])}  ->  columns {rd[f'{key}_columns_cpu_s']:5.2f} s "
            f"{fmt_rate(rd[f'{key}_columns_cpu_spans_per_s']):>6} spans/s peak {fmt_mb(rd[f'{key}_columns_peak_rss_bytes'])}"
            f"  {rd[f'{key}_speedup']:.2f}x"
        )
    for key, name in (("critical_path", "critical-path"), ("features", "features")):
        before, after = e2e[f"{key}_rows_in_process_cpu_s"], e2e[f"{key}_in_process_cpu_s"]
        print(
            f"    in process: {name:<14} rows {before:5.2f} s {fmt_rate(rate(f['spans'], before)):>6} spans/s  ->  "
            f"columns {after:5.2f} s {fmt_rate(rate(f['spans'], after)):>6} spans/s  {before / after:.2f}x"
        )
    print()

    one = doc["one_trace_at_a_time"] = one_at_a_time(budget)
    print(
        f"one trace at a time: {one['traces']} DeathStarBench traces of {one['span_range'][0]}-"
        f"{one['span_range'][1]} spans, {one['spans']} spans"
    )
    print(
        f"  critical_path_of        {fmt_rate(one['critical_path_of_spans_per_s']):>8} spans/s "
        f"({one['critical_path_of_s'] / one['traces'] * 1e6:.1f} us a trace)"
    )
    print(f"  + instance_times        {fmt_rate(one['with_instance_times_spans_per_s']):>8} spans/s")
    print(f"  arrays (previous)       {fmt_rate(one['arrays_spans_per_s']):>8} spans/s")
    print(f"  walk (reference)        {fmt_rate(one['walk_spans_per_s']):>8} spans/s")
    print(f"  speed-up: {one['speedup_vs_walk']:.1f}x the walk, {one['speedup_vs_arrays']:.1f}x the arrays\n")

    wins = doc["windows"] = windows([1_000, 10_000] if args.quick else [1_000, 100_000], budget)
    print(
        f"{'window':>8} {'spans':>9} {'paths':>9} {'+as_dict':>9} {'features':>9} {'walk':>9} {'x walk':>7}"
    )
    for w in wins:
        print(
            f"{w['traces']:>8} {w['spans']:>9} {fmt_rate(w['window_spans_per_s']):>9} "
            f"{fmt_rate(w['with_dicts_spans_per_s']):>9} {fmt_rate(w['features_spans_per_s']):>9} "
            f"{fmt_rate(w['walk_spans_per_s']):>9} {w['speedup_vs_walk']:>6.1f}x"
        )

    if args.scaling:
        print("\n" + HEADER)
        doc["scaling"] = scaling(args.quick)
    if args.baseline:
        doc["baseline"] = against_baseline(doc, args.baseline)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
