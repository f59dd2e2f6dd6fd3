"""Actuation latency per control step: the local executor against the ansible executor (connection
local), for 1 and for 10 actions per step, in the same run.

    sudo .venv/bin/python bench/bench_actuation.py [--steps 10] [--out bench/results/actuation.json]

Needs root (it creates ten cgroups ``firm-bench-actuation-<pid>/i<k>`` under the cpu hierarchy and
removes them after). Each step alternates the CPU limits of the groups between two values, so every
action writes. The figure per executor and step size is the wall time of ``Executor.apply``
(median and p99 over ``--steps`` steps, nearest rank). The ansible executor's step is one
ansible-runner run of the step's tasks (process start, the modules shipped and run), which is what
a node of a cluster costs per step; SSH adds its own connection time on top.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ansible_collections.firm.core.plugins.module_utils import cgroup
from firm.actuate.executor import Action, Executor
from firm.actuate.local import LocalExecutor, LocalTarget
from firm.cluster.ansible import AnsibleExecutor, targets_from_local

REPO = Path(__file__).resolve().parents[1]


def measure(executor: Executor, names: Sequence[str], steps: int) -> list[float]:
    times = []
    for step in range(steps):
        value = 0.5 if step % 2 == 0 else 0.25
        actions = [Action(n, "cpu", value) for n in names]
        started = time.perf_counter()
        result = executor.apply(actions, dry_run=False)
        times.append(time.perf_counter() - started)
        if not result.ok:
            raise SystemExit(f"step failed: {result.error}")
    return times


def summary(times: Sequence[float]) -> dict[str, float]:
    ms = np.asarray(times) * 1000
    return {
        "median_ms": round(float(np.percentile(ms, 50, method="inverted_cdf")), 3),
        "p99_ms": round(float(np.percentile(ms, 99, method="inverted_cdf")), 3),
        "steps": len(ms),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "actuation.json")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root to create cgroups")
    layout = cgroup.detect_layout()
    parent = f"firm-bench-actuation-{os.getpid()}"
    names = [f"i{k}" for k in range(10)]
    groups = [cgroup.group_at(layout, f"{parent}/{n}") for n in names]
    targets = [LocalTarget(n, "bench", f"{parent}/{n}") for n in names]
    results: dict[str, dict[str, dict[str, float]]] = {}
    try:
        for group in groups:
            cgroup.create_group(group)
        executors: dict[str, Executor] = {
            "local": LocalExecutor(targets),
            "ansible (connection local)": AnsibleExecutor(
                targets_from_local(targets), str(REPO / "inventory" / "local")
            ),
        }
        for label, executor in executors.items():
            results[label] = {}
            for size in (1, 10):
                results[label][f"{size} action{'s' if size > 1 else ''}"] = summary(
                    measure(executor, names[:size], args.steps)
                )
    finally:
        for group in groups:
            cgroup.remove_group_when_empty(group)
        cgroup.remove_group_when_empty(cgroup.group_at(layout, parent))
    print(f"{'executor':28} {'step':10} {'median ms':>10} {'p99 ms':>10}")
    for label, sizes in results.items():
        for step_size, figures in sizes.items():
            print(f"{label:28} {step_size:10} {figures['median_ms']:10.1f} {figures['p99_ms']:10.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "actuation",
                "python": sys.version.split()[0],
                "machine": platform.machine(),
                "cpus": os.cpu_count(),
                "steps": args.steps,
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
