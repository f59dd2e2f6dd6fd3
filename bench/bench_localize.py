"""Latency of culprit localization, and the SVM's training time.

    .venv/bin/python bench/bench_localize.py [--quick] [--out bench/results/localize.json]

Run it under the lock on a quiet machine: ``flock /tmp/firm-real.lock nice -n 10 ...``.

- **Window size**: a fault window (network delay on one instance) and its reference, of 100, 1,000
  and 10,000 requests each (the recorded DeathStarBench compose-post / read-home-timeline shapes,
  laid out again with noise by :mod:`firm.localize.synthetic`; the built-in shop graph when the
  shared data is absent). Timed: ``Localizer.rules().rank(window, reference)`` (features of both
  windows, FIRM's RI/CI/cp_share included, and the ranking), and, as the baseline in the same run,
  FIRM's own features alone (:func:`firm.tracing.trace_features` on both windows) and the
  cp_share-growth ranking; the same ranking with every request's parts already computed (a
  :class:`~firm.tracing.culprit_features.TracePartsCache`, as the control loop holds one: what is
  left is aggregating both windows); and the per-object computation of earlier versions (kept as
  the oracle of the equivalence tests, ``tests/unit/localize/reference_features.py``; left out
  when the tests are not there).
- **Many instances**: 1,000 requests over 1,000 instances (a frontend calling 10 of 1,000 backends
  per request, each backend calling a database).
- **Training**: ``train_svm`` (20 epochs of partial_fit, mini-batches of 1,000) on 10,000, 20,000
  and 40,000 rows; reported as seconds per 10,000 rows.

Each figure is the median and the 99th percentile of several runs (with few runs the p99 is the
slowest). The growth exponent is the slope of log(time) against log(size) (1 = linear).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from firm.localize import MODEL_INPUTS, Localizer
from firm.localize.synthetic import boutique_templates, dsb_templates, make_case
from firm.localize.train import TrainConfig, train_svm
from firm.tracing import Span, Trace, trace_features
from firm.tracing.culprit_features import TracePartsCache

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "jaeger-traces" / "deathstarbench"


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }


def timed(fn: Callable[[], object], runs: int) -> dict[str, float]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    p99 = times[min(len(times) - 1, math.ceil(0.99 * len(times)) - 1)]
    return {"median_s": statistics.median(times), "p99_s": p99, "runs": runs}


def tile(traces: Sequence[Trace], n: int, tag: str) -> list[Trace]:
    """``n`` traces cycling through ``traces`` with fresh trace IDs."""
    return [replace(traces[i % len(traces)], trace_id=f"{tag}{i}") for i in range(n)]


def many_instances(n_inst: int, n_req: int, seed: int, slow: int | None) -> list[Trace]:
    rng = np.random.default_rng(seed)
    out = []
    for r in range(n_req):
        t0 = 1_700_000_000_000_000 + r * 10_000
        spans = [Span("root", "frontend", "frontend-0", "GET /", t0, 0)]
        cursor = t0 + 50
        for k, b in enumerate(sorted(rng.choice(n_inst, 10, replace=False))):
            own = int(rng.integers(50, 150))
            resp = 30 + (2_000 if slow is not None and b == slow else 0)
            c_dur = 30 + own + 100 + resp
            svc = f"svc-{b:04d}"
            spans += [
                Span(f"c{k}", "frontend", "frontend-0", f"call {svc}", cursor, c_dur, "root", kind="client"),
                Span(f"s{k}", svc, f"{svc}-pod", "Serve", cursor + 30, own + 100, f"c{k}", kind="server"),
                Span(f"d{k}", svc, f"{svc}-pod", "db", cursor + 30 + own // 2, 100, f"s{k}", kind="client"),
            ]
            cursor += c_dur + 10
        spans[0] = replace(spans[0], duration=cursor + 50 - t0)
        out.append(Trace(f"{seed}-{r}", tuple(spans)))
    return out


def _previous(rules: Localizer) -> Callable[[list[Trace], list[Trace]], object] | None:
    """The rules ranking computed with the per-object features of earlier versions (the tests'
    oracle), or None when the tests are not there."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    try:
        old = importlib.import_module("tests.unit.localize.reference_features")
    except ImportError:
        return None

    def rank(w: list[Trace], r: list[Trace]) -> object:
        return rules.rank_features(old.culprit_features(w, r, old.CulpritFeatureConfig()))

    return rank


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    lx, ly = np.log(np.asarray(xs, dtype=float)), np.log(np.asarray(ys, dtype=float))
    return float(np.polyfit(lx, ly, 1)[0])


def run(quick: bool) -> dict[str, Any]:
    tpl = dsb_templates(DATA) if DATA.is_dir() and any(DATA.glob("*.json")) else boutique_templates()
    graph = "dsb" if DATA.is_dir() and any(DATA.glob("*.json")) else "boutique"
    case = make_case(tpl, "network_delay", 1, requests=(1000, 1000), intensity=(0.3, 0.3), messy=False)
    win0, ref0 = case.traces()
    rules, base = Localizer.rules(), Localizer.baseline()
    previous = _previous(rules)
    sizes = [100, 1_000] if quick else [100, 1_000, 10_000]
    rows: list[dict[str, Any]] = []
    for n in sizes:
        win, ref = tile(win0, n, "w"), tile(ref0, n, "r")
        runs = 9 if n <= 1_000 else 3
        top = rules.rank(win, ref).instances[0]

        def firm_only(w: list[Trace] = win, r: list[Trace] = ref) -> object:
            return trace_features(w), trace_features(r)

        cache = TracePartsCache(max_traces=2 * n)
        cache.ingest(win)
        cache.ingest(ref)

        def cached(w: list[Trace] = win, r: list[Trace] = ref, c: TracePartsCache = cache) -> object:
            return rules.rank(c.window(w), c.window(r))

        row: dict[str, Any] = {
            "requests": n,
            "spans": sum(len(t.spans) for t in win) + sum(len(t.spans) for t in ref),
            "rules": timed(partial(rules.rank, win, ref), runs),
            "rules_parts_cached": timed(cached, runs),
            "firm_features": timed(firm_only, runs),
            "cp_share_growth": timed(partial(base.rank, win, ref), runs),
            "top1_correct": (top.service, top.instance) == case.culprit,
        }
        if previous is not None:
            row["rules_per_object_previous"] = timed(partial(previous, win, ref), runs)
        rows.append(row)
        print(
            f"{n:>7} requests  rules median {row['rules']['median_s'] * 1e3:9.1f} ms  p99 "
            f"{row['rules']['p99_s'] * 1e3:9.1f} ms | parts cached {row['rules_parts_cached']['median_s'] * 1e3:8.1f}"
            f" / {row['rules_parts_cached']['p99_s'] * 1e3:8.1f} ms"
            + (
                f" | previous {row['rules_per_object_previous']['median_s'] * 1e3:9.1f} / "
                f"{row['rules_per_object_previous']['p99_s'] * 1e3:9.1f} ms"
                if previous is not None
                else ""
            )
            + f" | FIRM features alone {row['firm_features']['median_s'] * 1e3:9.1f}"
            f" ms | cp_share baseline {row['cp_share_growth']['median_s'] * 1e3:9.1f} ms | top-1 ok: "
            f"{row['top1_correct']}"
        )
    growth = {
        m: slope([r["requests"] for r in rows], [r[m]["median_s"] for r in rows])
        for m in ("rules", "rules_parts_cached", "firm_features", "cp_share_growth")
    }
    print("growth exponent vs requests: " + ", ".join(f"{k} {v:.2f}" for k, v in growth.items()))

    n_inst = 1_000
    wide_w = many_instances(n_inst, 1_000, 2, slow=17)
    wide_r = many_instances(n_inst, 1_000, 3, slow=None)
    wide = timed(lambda: rules.rank(wide_w, wide_r), 3)
    wtop = rules.rank(wide_w, wide_r).instances[0]
    print(
        f"1,000 instances, 1,000 requests: rules median {wide['median_s'] * 1e3:.1f} ms  p99 "
        f"{wide['p99_s'] * 1e3:.1f} ms; top-1 {wtop.service} (slow: svc-0017)"
    )

    rng = np.random.default_rng(0)
    train_rows = [10_000, 20_000] if quick else [10_000, 20_000, 40_000]
    trains = []
    for n in train_rows:
        x = rng.normal(size=(n, len(MODEL_INPUTS)))
        y = (x[:, 0] + rng.normal(size=n) > 1.5).astype(np.int64)
        t: dict[str, float] = timed(partial(train_svm, x, y, TrainConfig(epochs=20, batch=1000)), 3)
        t["per_10k_rows_s"] = t["median_s"] * 10_000 / n
        trains.append({"rows": n, **t})
        print(
            f"train-svm {n:>6} rows x 20 epochs: median {t['median_s']:.2f} s ({t['per_10k_rows_s']:.2f} s per 10,000 rows)"
        )
    tslope = slope([t["rows"] for t in trains], [t["median_s"] for t in trains])
    print(f"training growth exponent vs rows: {tslope:.2f}")
    return {
        "graph": graph,
        "windows": rows,
        "growth_exponent": growth,
        "many_instances": {
            "instances": n_inst,
            "requests": 1_000,
            **wide,
            "top1": f"{wtop.service}",
            "expected": "svc-0017",
        },
        "training": trains,
        "training_growth_exponent": tslope,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="windows up to 1,000 requests, fewer training sizes")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "localize.json")
    args = ap.parse_args(argv)
    out = run(args.quick)
    doc = {
        "benchmark": "localize",
        "quick": args.quick,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **out,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
