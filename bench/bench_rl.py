"""Speed of the resource estimator: simulator steps, DDPG updates, and one decision's latency.

    .venv/bin/python bench/bench_rl.py [--quick] [--out bench/results/rl.json]

Measured on this machine, one torch thread (as training and the control loop run):

- ``sim``: environment-steps per second of :class:`firm.rl.sim.SimEnv` with 1, 16 and 256
  instances stepping together (zero actions), against real time (one step is a 1 s control interval,
  so steps/s is also the speed-up over real time);
- ``updates``: DDPG gradient updates per second (critic, actor, soft targets) at minibatch 64 (the
  prototype's) and 256 (``firm train-rl``'s);
- ``decide``: latency of :meth:`firm.rl.Agent.decide` on one state (validation, actor, scaling),
  median and p99, and of the bare actor call as a baseline.

Each rate is the best of several runs; latencies are over many single calls. Results go to
``bench/results/rl.json``. Run it under the lock (``flock /tmp/firm-real.lock``) for a quiet CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from firm.rl import RESOURCES, Agent, AgentConfig, ResourceBounds, build_state
from firm.rl.ddpg import ReplayBuffer, seed_everything
from firm.rl.sim import SimConfig, SimEnv, make_scenario

ROOT = Path(__file__).resolve().parents[1]


def best_rate(fn: Callable[[], int], runs: int) -> float:
    """Best of ``runs`` calls of ``fn`` (which returns how many items it did), items per second."""
    best = 0.0
    for _ in range(runs):
        t = time.perf_counter()
        n = fn()
        best = max(best, n / (time.perf_counter() - t))
    return best


def bench_sim(quick: bool) -> list[dict[str, Any]]:
    cfg = AgentConfig()
    rows = []
    for n in (1, 16, 256):
        steps = 100 if quick else 300
        sc = make_scenario(SimConfig(), n, steps, np.random.default_rng(0))
        env = SimEnv(sc, cfg)
        zero = np.zeros((n, len(RESOURCES)))

        def episode(env: SimEnv = env, zero: np.ndarray = zero, n: int = n, steps: int = steps) -> int:
            env.reset()
            for _ in range(steps):
                env.step(zero)
            return n * steps

        rate = best_rate(episode, 3)
        rows.append({"instances": n, "env_steps_per_s": rate, "x_real_time": rate})
        print(f"sim      {n:>4} instances: {rate:>12,.0f} env-steps/s  ({rate:,.0f}x real time at 1 s steps)")
    return rows


def bench_updates(quick: bool) -> list[dict[str, Any]]:
    rows = []
    for batch in (64, 256):
        seed_everything(0)
        cfg = AgentConfig(batch_size=batch)
        agent = Agent(cfg)
        rng = np.random.default_rng(0)
        buf = ReplayBuffer(10_000, cfg.state_dim, rng)
        n = 5_000
        buf.add(
            rng.random((n, cfg.state_dim), np.float32),
            rng.uniform(-1, 1, (n, 5)).astype(np.float32),
            rng.random(n, np.float32),
            rng.random((n, cfg.state_dim), np.float32),
            np.zeros(n, np.float32),
        )
        count = 100 if quick else 500

        def updates(
            agent: Agent = agent, buf: ReplayBuffer = buf, count: int = count, batch: int = batch
        ) -> int:
            for _ in range(count):
                agent.ddpg.update(buf.sample(batch))
            return count

        rate = best_rate(updates, 3)
        rows.append({"batch": batch, "updates_per_s": rate})
        print(f"updates  batch {batch:>4}: {rate:>10,.0f} updates/s")
    return rows


def bench_decide(quick: bool) -> dict[str, Any]:
    seed_everything(0)
    agent = Agent.load() if _default_exists() else Agent(AgentConfig())
    bounds = {
        "cpu": ResourceBounds(0.05, 2.0),
        "memory_bandwidth": ResourceBounds(10, 100),
        "llc": ResourceBounds(1, 11),
        "disk_io": ResourceBounds(1e6, 2e8),
        "network": ResourceBounds(1e6, 1e9),
    }
    mask = {"cpu": True, "memory_bandwidth": False, "llc": False, "disk_io": True, "network": True}
    current = {"cpu": 0.5, "disk_io": 5e7, "network": 1e8}
    rng = np.random.default_rng(1)
    n = 2_000 if quick else 20_000
    states = [
        build_state(
            slo_ms=250,
            p99_ms=float(rng.uniform(50, 500)),
            rate_rps=40,
            prev_rate_rps=38,
            mix=[1, 6, 3],
            usage={"cpu": float(rng.uniform(0, 0.5))},
            limits={"cpu": 0.5},
        )
        for _ in range(256)
    ]
    lat = np.empty(n)
    for i in range(n):
        t = time.perf_counter()
        agent.decide(states[i % 256], current=current, bounds=bounds, mask=mask)
        lat[i] = time.perf_counter() - t
    bare = np.empty(n)
    x = torch.from_numpy(np.stack(states))
    agent.ddpg.actor.eval()
    with torch.no_grad():
        for i in range(n):
            t = time.perf_counter()
            agent.ddpg.actor(x[i % 256 : i % 256 + 1])
            bare[i] = time.perf_counter() - t
    out = {
        "decide_median_us": float(np.median(lat) * 1e6),
        "decide_p99_us": float(np.percentile(lat, 99) * 1e6),
        "actor_median_us": float(np.median(bare) * 1e6),
        "actor_p99_us": float(np.percentile(bare, 99) * 1e6),
        "calls": n,
    }
    print(
        f"decide   one state: median {out['decide_median_us']:.0f} us, p99 {out['decide_p99_us']:.0f} us "
        f"(bare actor: median {out['actor_median_us']:.0f} us, p99 {out['actor_p99_us']:.0f} us)"
    )
    return out


def _default_exists() -> bool:
    from firm.rl import DEFAULT_MODEL  # noqa: PLC0415 (read when the decide benchmark starts)

    return DEFAULT_MODEL.is_file()


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
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer and shorter timing runs")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "rl.json")
    args = ap.parse_args(argv)
    result = {
        "sim": bench_sim(args.quick),
        "updates": bench_updates(args.quick),
        "decide": bench_decide(args.quick),
        "machine": machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
