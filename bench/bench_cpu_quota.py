"""Latency of one CPU-quota change on a real cgroup, through each way firm can make it.

1. the library (plugins/module_utils/cgroup.py), as the controller's local executor calls it;
2. ``ansible localhost -m firm.core.cgroup``, as an operator would;
3. ansible-runner (firm.actuate.runner), as the controller's ansible executor calls it.

Each change alternates the quota between two values, so every call really writes. Prints the
median and p99 of each side by side and writes them to bench/results/cpu_quota.json. Needs root and
a writable cgroup cpu controller.

    .venv/bin/python bench/bench_cpu_quota.py [--library N] [--ansible N] [--runner N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ansible_collections.firm.core.plugins.module_utils import cgroup
from firm.actuate.runner import run_module

REPO = Path(__file__).resolve().parents[1]
QUOTAS = (20000, 30000)


def timed(change: Callable[[int], None], repeats: int) -> list[float]:
    seconds = []
    for i in range(repeats):
        start = time.perf_counter()
        change(QUOTAS[i % 2])
        seconds.append(time.perf_counter() - start)
    return seconds


def through_library(group: cgroup.Group) -> Callable[[int], None]:
    def change(quota: int) -> None:
        cgroup.apply_writes(cgroup.plan_writes(group, cgroup.CgroupSettings(cpu_quota_us=quota)))

    return change


def through_ansible(path: str) -> Callable[[int], None]:
    ansible = str(Path(sys.executable).with_name("ansible"))
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))

    def change(quota: int) -> None:
        args = json.dumps({"path": path, "cpu_quota_us": quota})
        subprocess.run(
            [ansible, "localhost", "-m", "firm.core.cgroup", "-a", args],
            cwd=REPO,
            env=env,
            check=True,
            capture_output=True,
        )

    return change


def through_runner(path: str) -> Callable[[int], None]:
    def change(quota: int) -> None:
        result = run_module("firm.core.cgroup", {"path": path, "cpu_quota_us": quota})["localhost"]
        if result.failed or not result.changed:
            raise RuntimeError(f"ansible-runner did not change the quota: {result.result}")

    return change


def summary(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "runs": len(seconds),
        "median_ms": statistics.median(seconds) * 1e3,
        "p99_ms": p99 * 1e3,
        "min_ms": ordered[0] * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--library", type=int, default=1000, help="changes through the library")
    parser.add_argument("--ansible", type=int, default=10, help="changes through the ansible command")
    parser.add_argument("--runner", type=int, default=10, help="changes through ansible-runner")
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "cpu_quota.json")
    options = parser.parse_args()

    layout = cgroup.detect_layout()
    path = f"firm-bench-{os.getpid()}"
    group = cgroup.group_at(layout, path)
    cgroup.create_group(group)
    try:
        results = {
            "library": summary(timed(through_library(group), options.library)),
            "ansible": summary(timed(through_ansible(path), options.ansible)),
            "ansible-runner": summary(timed(through_runner(path), options.runner)),
        }
    finally:
        cgroup.remove_group(group)

    base = results["library"]["median_ms"]
    print(
        f"One CPU-quota change on a real cgroup (cgroup v{layout.hierarchy('cpu').version}), {os.cpu_count()} CPUs"
    )
    print(f"{'path':<16}{'runs':>6}{'median ms':>12}{'p99 ms':>12}{'x library':>12}")
    for name, row in results.items():
        print(
            f"{name:<16}{row['runs']:>6}{row['median_ms']:>12.3f}{row['p99_ms']:>12.3f}"
            f"{row['median_ms'] / base:>12.0f}"
        )
    print("p99 of a few runs is close to their maximum; raise the counts for a steadier tail.")
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(json.dumps({"benchmark": "cpu_quota_change", "results": results}, indent=2))
    print(f"wrote {options.output}")


if __name__ == "__main__":
    main()
