"""The live environment: one instance of the embedded testbed, real load, real contention, real limits.

An episode is one load run of the testbed (:func:`firm.testbed.experiment.run`, open-loop load with
one anomaly beside the instance, injected through the anomaly library in a process of its own). A
step is one latency window of the testbed (``slo_window_s``, 5 s by default):

- the state comes from that window: SR from the worst request type's p99 against its SLO (the
  end-to-end latency the SLO is about), WC and RC from the completed requests of each type, and RU
  from the instance's telemetry in firm's Redis (CPU cores, disk bytes/s, bytes/s received on its
  veth) over the same window, against the limits in force;
- the action goes through :func:`firm.rl.space.apply_actions` (the same scaling as the simulator)
  and is written with the actuation library: CPU quota (``cgroup``), disk read and write throttles
  on the data directory's disk (``cgroup``), TBF egress shaping on the instance's host-side veth
  (``tc``; what the instance receives). Memory bandwidth and LLC are masked: this project controls
  them through resctrl, which this environment does not drive; disk is masked when the data
  directory is not on a block device;
- the reward is :func:`firm.rl.space.reward`, as in the simulator.

The instance's limits are read before the first write and written back when the episode ends,
fails or is interrupted (:meth:`LiveEnv.close`; the environment is a context manager).
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt

from ansible_collections.firm.core.plugins.module_utils import cgroup, tc
from ansible_collections.firm.core.plugins.module_utils.errors import FirmError
from ansible_collections.firm.core.plugins.module_utils.sysfs import Rollback
from firm.load.stats import WindowStats
from firm.rl.agent import Agent
from firm.rl.config import AgentConfig
from firm.rl.ddpg import ReplayBuffer, seed_everything
from firm.rl.errors import LiveEnvError
from firm.rl.policies import AgentPolicy, AimdPolicy, Policy, RandomPolicy
from firm.rl.space import N_RESOURCES, RESOURCES, ResourceBounds, apply_actions, build_state, reward
from firm.telemetry import RedisTelemetrySource
from firm.testbed import experiment, lifecycle
from firm.testbed.config import Instance, TestbedConfig

log = logging.getLogger(__name__)
F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
CPU, MEM, LLC, DISK, NET = range(N_RESOURCES)


@dataclass(frozen=True)
class LiveConfig:
    """One live episode: which instance, how long, what contention."""

    instance: str = "compose-post-0"
    """Testbed instance (or service: its first instance) whose limits the agent sets."""
    steps: int = 10
    """Steps per episode; each is one latency window of the testbed (slo_window_s seconds)."""
    anomaly: str = "cpu"
    """Anomaly kind injected beside the instance (a kind firm.core.anomaly knows), or "" for none."""
    intensity: int = 50
    """Anomaly intensity, percent."""
    anomaly_start_step: int = 2
    """Step at which the anomaly starts."""
    anomaly_steps: int = 5
    """Steps the anomaly lasts."""
    rate_rps: float | None = None
    """Load, requests/s (None: the testbed's default)."""
    seed: int = 1
    """Seed of the load (arrival times, request mix)."""
    bounds: tuple[tuple[float, float], ...] = ((0.2, 2.0), (10.0, 100.0), (1.0, 11.0), (1e6, 2e8), (1e6, 1e9))
    """Bounds per resource (RESOURCES order), resource units: cores, percent, ways, bytes/s, bits/s. The
    CPU floor (0.2 cores) is above the simulator's: CFS throttling stalls a quota-starved instance for
    most of each 100 ms period, which the simulator does not model (docs/rl.md)."""
    window_timeout_s: float = 30.0
    """Longest wait for a latency window before the episode fails, seconds."""

    def resource_bounds(self) -> dict[str, ResourceBounds]:
        return {r: ResourceBounds(lo, hi) for r, (lo, hi) in zip(RESOURCES, self.bounds, strict=True)}


@dataclass
class Baseline:
    """The instance's limits before the episode, restored after it."""

    cpu_quota_us: int
    cpu_period_us: int
    disk: cgroup.DiskLimit | None
    shaping: tc.Shaping | None


@dataclass
class _Window:
    end: float
    stats: list[WindowStats]


class LiveEnv:
    """One testbed instance as an environment of ``n = 1`` with the simulator's interface.

    ``reset()`` starts the episode's load and anomaly and returns the first state ``(1, state_dim)``;
    ``step(raw)`` applies actions ``(1, 5)`` and returns a :class:`firm.rl.sim.StepResult`-like
    :class:`LiveStep`; ``close()`` waits for the load to end and restores the limits.
    Raises :class:`LiveEnvError` when the testbed, root or telemetry is missing (before writing).
    """

    n = 1

    def __init__(self, testbed: TestbedConfig, live: LiveConfig, agent_cfg: AgentConfig) -> None:
        if os.geteuid() != 0:
            raise LiveEnvError("the live environment writes cgroups and qdiscs", "run it as root")
        if lifecycle.read_state(testbed) is None or not lifecycle.is_up(testbed):
            raise LiveEnvError("the testbed is not up", "start it with 'firm testbed up'")
        if not testbed.telemetry_redis:
            raise LiveEnvError(
                "the testbed has no telemetry sampler (telemetry_redis is empty)",
                "set telemetry_redis in the testbed config and restart it",
            )
        self.testbed, self.live, self.agent_cfg = testbed, live, agent_cfg
        self.instance = self._find(live.instance)
        self.layout = cgroup.detect_layout()
        self.group = cgroup.group_at(self.layout, self.instance.cgroup)
        self.telemetry = RedisTelemetrySource(testbed.telemetry_redis)
        self.device = self._disk_device()
        b = live.resource_bounds()
        self.lo = np.array([[b[r].min for r in RESOURCES]])
        self.hi = np.array([[b[r].max for r in RESOURCES]])
        self.mask = np.array([[True, False, False, self.device is not None, True]])
        self.baseline = self._read_baseline()
        self.limits = self._limits_from(self.baseline)
        self.slo = min(testbed.slo_ms.values())
        self.types = list(testbed.slo_ms)
        self._windows: queue.Queue[_Window | BaseException] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._prev_rate = 0.0
        self.t = 0
        self.steps = live.steps

    # -- setup -----------------------------------------------------------------------------

    def _find(self, name: str) -> Instance:
        for inst in self.testbed.instances():
            if name in (inst.name, inst.service):
                return inst
        raise LiveEnvError(
            f"no testbed instance {name!r}",
            f"use one of {', '.join(i.name for i in self.testbed.instances())}",
        )

    def _disk_device(self) -> str | None:
        try:
            st = os.stat(self.testbed.data_dir)
            return cgroup.resolve_device(f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}")
        except (OSError, FirmError) as err:
            log.info("disk I/O masked: %s is not on a block device (%s)", self.testbed.data_dir, err)
            return None

    def _read_baseline(self) -> Baseline:
        quota, period = cgroup.read_cpu_max(self.group)
        disk = None
        if self.device is not None:
            disk = cgroup.read_disk_limits(self.group).get(self.device, cgroup.DiskLimit(self.device))
        shaping = tc.read_shaping(self.instance.host_interface)
        return Baseline(quota, period, disk, shaping)

    def _limits_from(self, b: Baseline) -> F64:
        """Limits in force in resource units; unlimited ones count as the bound's maximum."""
        cur = self.hi.copy()
        if b.cpu_quota_us > 0:
            cur[0, CPU] = b.cpu_quota_us / b.cpu_period_us
        if b.disk is not None and b.disk.write_bps:
            cur[0, DISK] = b.disk.write_bps
        if b.shaping is not None and b.shaping.rate_bps:
            cur[0, NET] = b.shaping.rate_bps
        clipped: F64 = np.clip(cur, self.lo, self.hi)
        return clipped

    # -- actuation -------------------------------------------------------------------------

    def _write(self, limits: F64) -> None:
        """Write CPU quota, disk throttles and veth shaping (only what differs; validated first)."""
        period = 100_000
        quota = max(cgroup.CPU_QUOTA_MIN_US, round(limits[0, CPU] * period))
        disk: tuple[cgroup.DiskLimit, ...] = ()
        if self.device is not None:
            bps = round(limits[0, DISK])
            disk = (cgroup.DiskLimit(self.device, read_bps=bps, write_bps=bps),)
        settings = cgroup.CgroupSettings(cpu_quota_us=quota, cpu_period_us=period, disk=disk)
        shaping = tc.parse_request("tbf", int(limits[0, NET]))
        with Rollback() as undo:  # one unit: a refused shaping undoes the cgroup writes too
            cgroup.ensure_cgroup(self.group, settings, create=False, rollback=undo)
            tc.ensure_shaping(self.instance.host_interface, shaping, rollback=undo)

    def restore(self) -> None:
        """Write the baseline limits back (best effort for each knob; errors are logged and re-raised)."""
        b = self.baseline
        errors: list[BaseException] = []
        try:
            settings = cgroup.CgroupSettings(
                cpu_quota_us=b.cpu_quota_us,
                cpu_period_us=b.cpu_period_us,
                disk=(b.disk,) if b.disk is not None else (),
            )
            cgroup.ensure_cgroup(self.group, settings, create=False)
        except (FirmError, OSError) as err:
            errors.append(err)
        try:
            tc.ensure_shaping(self.instance.host_interface, b.shaping)
        except (FirmError, OSError) as err:
            errors.append(err)
        if errors:
            log.error("restoring %s: %s", self.instance.name, errors)
            raise LiveEnvError(
                f"could not restore the limits of {self.instance.name}: {errors[0]}",
                "check the instance's cgroup and veth, or run 'firm testbed down'",
            )

    # -- episode ---------------------------------------------------------------------------

    def _plan(self) -> experiment.RunPlan:
        w = self.testbed.slo_window_s
        anomaly = None
        if self.live.anomaly:
            anomaly = experiment.AnomalyPlan(
                self.live.anomaly,
                self.instance.name,
                self.live.intensity,
                start_s=self.live.anomaly_start_step * w,
                duration_s=max(1, round(self.live.anomaly_steps * w)),
            )
        return experiment.RunPlan(
            duration_s=(self.steps + 1) * w + 0.5,
            rate_rps=self.live.rate_rps,
            seed=self.live.seed,
            anomaly=anomaly,
        )

    def _run(self, plan: experiment.RunPlan) -> None:
        def on_window(batch: Sequence[WindowStats]) -> None:
            self._windows.put(_Window(max(s.window_end for s in batch), list(batch)))

        try:
            experiment.run(self.testbed, plan, on_window=on_window)
        except BaseException as err:  # handed to the stepping thread
            self._windows.put(err)

    def _next_window(self) -> _Window:
        try:
            item = self._windows.get(timeout=self.live.window_timeout_s)
        except queue.Empty:
            raise LiveEnvError(
                f"no latency window in {self.live.window_timeout_s:g} s",
                "check that the testbed answers ('firm testbed status')",
            ) from None
        if isinstance(item, BaseException):
            raise LiveEnvError(
                f"the episode's load run failed: {item}", "see 'firm testbed status'"
            ) from item
        return item

    def _observe(self, w: _Window) -> tuple[F32, float, F64]:
        """(state (1, state_dim), SR, RU (1, 5)) of one window."""
        by_type = {s.request_type.value: s for s in w.stats}
        counts = [by_type[t].count if t in by_type else 0 for t in self.types]
        ratios = []
        for s in w.stats:
            if s.slo_ms is None or s.count == 0:
                continue
            ratios.append(0.0 if s.p99_ms is None else s.slo_ms / max(s.p99_ms, 1e-3))
        sr = min(ratios) if ratios else self.agent_cfg.sr_clip
        rate = sum(counts) / self.testbed.slo_window_s
        samples = self.telemetry.window(self.instance.name, w.end - self.testbed.slo_window_s, w.end)
        usage: dict[str, float] = {}
        if samples:
            usage["cpu"] = float(np.mean([s.cpu_cores or 0.0 for s in samples]))
            usage["disk_io"] = float(
                np.mean([max(s.disk_read_bps or 0.0, s.disk_write_bps or 0.0) for s in samples])
            )
            usage["network"] = 8.0 * float(np.mean([s.net_rx_bps or 0.0 for s in samples]))
        limits = {r: float(self.limits[0, i]) for i, r in enumerate(RESOURCES) if self.mask[0, i]}
        usage = {r: v for r, v in usage.items() if r in limits}
        # SR enters the state as SLO / p99 with SLO = 1 and p99 = 1 / ratio.
        state = build_state(
            slo_ms=1.0,
            p99_ms=1.0 / sr if sr > 0 else 1e9,
            rate_rps=rate,
            prev_rate_rps=self._prev_rate,
            mix=counts,
            usage=usage,
            limits=limits,
            sr_clip=self.agent_cfg.sr_clip,
            wc_clip=self.agent_cfg.wc_clip,
        )
        self._prev_rate = rate
        ru = state[None, -N_RESOURCES:].astype(np.float64)
        return state[None, :], sr, ru

    def reset(self) -> F32:
        """Start the episode (load and anomaly) and return the first window's state."""
        if self._thread is not None:
            raise LiveEnvError("reset() while an episode runs", "close() the environment first")
        self.t = 0
        self._prev_rate = 0.0
        self._thread = threading.Thread(
            target=self._run, args=(self._plan(),), name="firm-rl-live", daemon=True
        )
        self._thread.start()
        state, _, _ = self._observe(self._next_window())
        return state

    def step(self, raw: F64) -> LiveStep:
        """Apply ``raw`` (1, 5) in [-1, 1], wait for the next window, observe and score it."""
        cfg = self.agent_cfg
        new, scale_out = apply_actions(
            np.asarray(raw, float).reshape(1, N_RESOURCES),
            self.limits,
            self.lo,
            self.hi,
            self.mask,
            max_step=cfg.max_step,
            scale_out_threshold=cfg.scale_out_threshold,
        )
        self._write(new)
        self.limits = new
        self.t += 1
        w = self._next_window()
        state, sr, ru = self._observe(w)
        r = reward(np.array([sr]), ru, self.mask, alpha=cfg.alpha)
        p99 = self.slo / sr if sr > 0 else math.inf
        return LiveStep(
            state, r, np.array([p99]), np.array([self.slo]), new.copy(), scale_out, self.t >= self.steps
        )

    def close(self) -> None:
        """Wait for the episode's load to end (it ends by itself), then restore the limits."""
        try:
            if self._thread is not None:
                self._thread.join(timeout=(self.steps + 3) * self.testbed.slo_window_s + 60)
        finally:
            self._thread = None
            self.restore()

    def __enter__(self) -> LiveEnv:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@dataclass
class LiveStep:
    """One step of the live environment (the fields of firm.rl.sim.StepResult that apply)."""

    states: F32
    rewards: F64
    p99_ms: F64
    """Relative to the tightest SLO: slo / SR (the worst type's p99 scaled to that SLO), ms."""
    slo_ms: F64
    limits: F64
    scale_out: npt.NDArray[np.bool_]
    done: bool
    extra: dict[str, Any] = field(default_factory=dict)


def run_live_episode(
    env: LiveEnv, policy: Policy, on_step: Callable[[F32, F64, LiveStep], None] | None = None
) -> tuple[float, float]:
    """One episode of ``policy``; returns (mean reward per step, share of steps violating the SLO).
    The limits are restored whatever happens."""
    total, viol = 0.0, 0
    with env:
        states = env.reset()
        done = False
        while not done:
            actions = policy(states, env)
            res = env.step(actions)
            if on_step is not None:
                on_step(states, actions, res)
            total += float(res.rewards[0])
            viol += int(res.p99_ms[0] > res.slo_ms[0])
            states, done = res.states, res.done
    return total / env.steps, viol / env.steps


def train_live(
    out: Path,
    *,
    seed: int,
    episodes: int,
    steps: int,
    interval_s: float | None = None,
    progress: Callable[[int, int, dict[str, Any]], None] | None = None,
    testbed: TestbedConfig | None = None,
    live: LiveConfig | None = None,
    updates_per_step: int = 20,
) -> dict[str, Any]:
    """Fine-tune the shipped agent on the testbed, then evaluate it, random and AIMD on one episode each.

    ``interval_s``, when given, must equal the testbed's latency window (a step is one window). Writes model.pt,
    episodes.csv and summary.json to ``out``. Each episode takes about ``(steps + 1) * window`` seconds.
    """
    testbed = testbed or lifecycle_config()
    if interval_s is not None and abs(interval_s - testbed.slo_window_s) > 1e-9:
        raise LiveEnvError(
            f"a step is one latency window of the testbed ({testbed.slo_window_s:g} s), not {interval_s:g} s",
            f"pass --interval {testbed.slo_window_s:g} or change the testbed's slo_window_s",
        )
    live = live or LiveConfig(steps=steps, seed=seed)
    seed_everything(seed)
    rng = np.random.default_rng(seed)
    agent = Agent.load()
    cfg = agent.cfg
    buf = ReplayBuffer(cfg.buffer_size, cfg.state_dim, rng)
    rows: list[dict[str, Any]] = []
    out.mkdir(parents=True, exist_ok=True)
    for ep in range(episodes):
        explore = _Explorer(agent, rng.normal(0.0, cfg.noise_sigma, (steps, N_RESOURCES)))

        def learn(states: F32, actions: F64, res: LiveStep) -> None:
            buf.add(
                states,
                actions.astype(np.float32),
                res.rewards.astype(np.float32),
                res.states,
                np.zeros(1, np.float32),
            )
            if len(buf) >= min(cfg.batch_size, 8):
                for _ in range(updates_per_step):
                    agent.ddpg.update(buf.sample(cfg.batch_size))

        env = LiveEnv(testbed, LiveConfig(**{**live.__dict__, "seed": seed + ep}), cfg)
        r, v = run_live_episode(env, explore, learn)
        rows.append(
            {
                "episode": ep + 1,
                "reward": round(r, 6),
                "violations": round(v, 6),
                "updates": agent.ddpg.updates,
            }
        )
        if progress:
            progress(ep + 1, episodes, rows[-1])
    agent.metadata = {**agent.metadata, "fine_tuned_on": "testbed", "seed": seed}
    agent.save(out / "model.pt")
    evals: dict[str, float] = {}
    violations: dict[str, float] = {}
    policies: dict[str, Policy] = {
        "agent": AgentPolicy(agent),
        "random": RandomPolicy(np.random.default_rng(seed)),
        "aimd": AimdPolicy(2.0, 0.005, cfg.max_step),
    }
    for name, pol in policies.items():
        env = LiveEnv(testbed, LiveConfig(**{**live.__dict__, "seed": 10_000 + seed}), cfg)
        evals[name], violations[name] = (round(x, 6) for x in run_live_episode(env, pol))
    with (out / "episodes.csv").open("w") as f:
        f.write("episode,reward,violations,updates\n")
        for row in rows:
            f.write(f"{row['episode']},{row['reward']},{row['violations']},{row['updates']}\n")
    summary = {
        "eval": evals,
        "eval_violations": violations,
        "env": "testbed",
        "instance": live.instance,
        "episodes": episodes,
        "steps": steps,
        "seed": seed,
        "anomaly": live.anomaly,
        "note": "one evaluation episode per policy, same load seed and anomaly; real runs are noisy",
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


class _Explorer:
    """The agent's action plus the episode's pre-drawn Gaussian noise, one row per step."""

    def __init__(self, agent: Agent, noise: F64) -> None:
        self.agent, self.noise, self.k = agent, noise, 0

    def __call__(self, states: F32, env: Any) -> F64:
        a: F64 = np.clip(self.agent.act(states) + self.noise[min(self.k, len(self.noise) - 1)], -1.0, 1.0)
        self.k += 1
        return a


def lifecycle_config() -> TestbedConfig:
    """The testbed's default configuration (what 'firm testbed up' builds without --config)."""
    from firm.testbed.config import load  # noqa: PLC0415 (kept next to its only use)

    return load(None)
