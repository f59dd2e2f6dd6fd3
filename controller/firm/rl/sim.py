"""A queueing model of one service instance under contention, for pretraining and tests.

It is a model, not the testbed: it exists so that the agent can be trained and tested far faster
than real time, with the same state, action and reward as the live environment
(:mod:`firm.rl.live`). ``n`` independent environments step together as numpy arrays.

Per step (one control interval of ``dt`` seconds) and environment:

- Requests arrive open-loop at rate ``lambda`` (requests/s) with a request mix ``m`` (K shares);
  both follow a seeded exogenous trace: a per-episode level, a slow sine, steps, and noise.
- Each request type k needs ``D[k, r]`` of resource r (cpu: core-seconds, memory_bandwidth:
  percent-seconds, disk_io: bytes, network: bits; llc: a working set in ways). Contention of kind r
  with intensity c multiplies what each request needs of r by ``1 + c`` (a contended resource gets
  less done per unit of limit); an LLC working set that does not fit its ways multiplies the CPU and
  memory bandwidth needs by ``1 + llc_penalty * shortfall``.
- cpu, memory_bandwidth, disk_io and network are M/M/1 stages with service rate
  ``mu_r = limit_r / D_r``: backlogs carry over between steps, the p99 sojourn of a stable stage is
  ``ln(100) / (mu_r - lambda)``, a saturated stage adds its backlog's drain time. The instance's
  p99 is ``base_ms`` plus the stages' p99s (a conservative sum), with log-normal measurement noise.
- usage_r is what the stage served (resource units); RU_r = usage_r / limit_r. LLC usage is the part
  of the working set that fits.
- Anomalies of every kind arrive as a Poisson process, overlap, and leave after a random duration.
- Masked resources (no RDT on the node, for instance) stay at their maximum, report RU = 0 and count
  for nothing in the reward.

Scale-out requests are counted, not modelled: the bounds give every profile enough room at its peak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from firm.rl.config import AgentConfig
from firm.rl.space import N_RESOURCES, RESOURCES, apply_actions, reward

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
B = npt.NDArray[np.bool_]

CPU, MEM, LLC, DISK, NET = range(N_RESOURCES)
QUEUES: Final = (CPU, MEM, DISK, NET)
LN100: Final = math.log(100.0)


@dataclass(frozen=True)
class SimService:
    """One simulated service: what its requests need, its SLO, its load and its bounds."""

    name: str
    """Service name (the one-for-each agents are keyed by it)."""
    demand: tuple[tuple[float, ...], ...]
    """Per request type (K rows), per resource (RESOURCES order): cpu core-seconds, memory bandwidth
    percent-seconds, LLC working set in ways, disk bytes, network bits, per request."""
    slo_ms: float
    """p99 latency SLO, milliseconds."""
    base_ms: float
    """Latency not caused by any of the five resources, milliseconds."""
    rate_rps: float
    """Nominal arrival rate, requests/s (episodes draw their level around it)."""
    mix: tuple[float, ...]
    """Nominal request mix, weights per request type."""
    lo: tuple[float, ...] = (0.05, 10.0, 1.0, 1e6, 1e6)
    """Smallest limit per resource, resource units (RESOURCES order)."""
    hi: tuple[float, ...] = (2.0, 100.0, 11.0, 2e8, 1e9)
    """Largest limit per resource (the node's), resource units (RESOURCES order)."""


# Five services of the testbed's application, each leaning on other resources. Their needs put the
# limit that meets the SLO at the nominal rate well inside the bounds, for every resource.
SERVICES: Final = (
    SimService(
        "frontend",
        ((3e-3, 0.10, 2.0, 2e3, 4e5), (2e-3, 0.08, 2.0, 1e3, 3e5), (2e-3, 0.08, 2.0, 1e3, 3e5)),
        slo_ms=300.0,
        base_ms=5.0,
        rate_rps=60.0,
        mix=(10, 60, 30),
    ),
    SimService(
        "compose-post",
        ((8e-3, 0.15, 3.0, 4e3, 8e4), (4e-3, 0.1, 2.0, 2e3, 4e4), (4e-3, 0.1, 2.0, 2e3, 4e4)),
        slo_ms=350.0,
        base_ms=10.0,
        rate_rps=40.0,
        mix=(60, 20, 20),
    ),
    SimService(
        "post-storage",
        ((2e-3, 0.1, 2.0, 6e5, 6e4), (1e-3, 0.05, 2.0, 2e5, 6e4), (1e-3, 0.05, 2.0, 2e5, 6e4)),
        slo_ms=400.0,
        base_ms=10.0,
        rate_rps=50.0,
        mix=(30, 40, 30),
    ),
    SimService(
        "home-timeline",
        ((2e-3, 0.6, 7.0, 4e3, 1e5), (3e-3, 0.9, 8.0, 2e3, 1e5), (2e-3, 0.5, 6.0, 2e3, 1e5)),
        slo_ms=300.0,
        base_ms=5.0,
        rate_rps=60.0,
        mix=(10, 60, 30),
    ),
    SimService(
        "media",
        ((1e-3, 0.2, 3.0, 3e5, 2e6), (1e-3, 0.1, 2.0, 1e5, 1e6), (1e-3, 0.1, 2.0, 1e5, 1e6)),
        slo_ms=400.0,
        base_ms=10.0,
        rate_rps=30.0,
        mix=(40, 40, 20),
    ),
)
"""The default services, as the one-for-all agent sees them all and one-for-each trains one each."""


@dataclass(frozen=True)
class SimConfig:
    """How the simulator draws its episodes."""

    dt_s: float = 1.0
    """Length of one step (control interval), seconds."""
    rate_spread: float = 2.0
    """An episode's load level is the nominal rate times a log-uniform factor in [1/spread, spread]."""
    anomaly_rate: float = 1 / 40
    """Anomalies starting per step, per environment (Poisson)."""
    anomaly_intensity: tuple[float, float] = (0.3, 2.0)
    """Range of an anomaly's intensity c (what a request needs of the resource grows by 1 + c)."""
    anomaly_steps: tuple[int, int] = (10, 60)
    """Range of an anomaly's duration, steps."""
    llc_penalty: float = 1.0
    """CPU and memory-bandwidth needs grow by 1 + penalty * (share of the working set not in cache)."""
    p99_noise: float = 0.05
    """Standard deviation of the log-normal noise on the measured p99 (0.05: about 5 %)."""
    mask_prob: float = 0.3
    """Share of episodes where memory bandwidth and LLC are masked (a node without RDT)."""
    p99_cap: float = 50.0
    """Measured p99 is capped at this many SLOs (a timeout)."""
    services: tuple[SimService, ...] = field(default=SERVICES)
    """Services episodes are drawn from (uniformly)."""


@dataclass
class Scenario:
    """Everything exogenous about ``n`` episodes of ``steps`` steps: the same for every policy."""

    service: npt.NDArray[np.int64]
    """(n,) index into SimConfig.services"""
    rate: F64
    """(n, steps + 1) arrival rate, requests/s"""
    mix: F64
    """(n, steps + 1, K) request shares"""
    contention: F64
    """(n, steps + 1, 5) contention intensity per resource"""
    noise: F64
    """(n, steps + 1) multiplicative p99 noise"""
    mask: B
    """(n, 5) controllable resources"""
    init: F64
    """(n, 5) initial limits, resource units"""


def make_scenario(
    cfg: SimConfig, n: int, steps: int, rng: np.random.Generator, services: npt.ArrayLike | None = None
) -> Scenario:
    """Draw ``n`` episodes (for the services given by index, or uniformly) from ``rng``."""
    svcs = cfg.services
    k = len(svcs[0].mix)
    t = steps + 1
    svc = (
        rng.integers(0, len(svcs), size=n)
        if services is None
        else np.broadcast_to(np.asarray(services, dtype=np.int64), (n,)).copy()
    )
    nominal = np.array([svcs[i].rate_rps for i in svc])
    level = nominal * np.exp(rng.uniform(-1, 1, n) * math.log(cfg.rate_spread))
    phase = rng.uniform(0, 2 * math.pi, n)
    period = rng.uniform(60, 300, n)
    ts = np.arange(t)
    wave = 1 + 0.3 * np.sin(2 * math.pi * ts[None, :] / period[:, None] + phase[:, None])
    # Load steps: a few times per episode the level jumps by a factor in [0.6, 1.6].
    jumps = np.where(rng.random((n, t)) < 1 / 100, rng.uniform(math.log(0.6), math.log(1.6), (n, t)), 0.0)
    walk = np.exp(np.cumsum(jumps, axis=1))
    rate = level[:, None] * wave * walk * np.exp(0.05 * rng.standard_normal((n, t)))
    rate = np.clip(rate, 1.0, 4 * nominal[:, None])
    base_mix = np.array([np.asarray(svcs[i].mix, float) / sum(svcs[i].mix) for i in svc])
    drift = np.cumsum(0.03 * rng.standard_normal((n, t, k)), axis=1)
    mix = base_mix[:, None, :] * np.exp(drift)
    mix /= mix.sum(axis=2, keepdims=True)

    contention = np.zeros((n, t, N_RESOURCES))
    starts = rng.random((n, t)) < cfg.anomaly_rate
    for i, s in zip(*np.nonzero(starts), strict=True):
        kind = rng.integers(0, N_RESOURCES)
        dur = rng.integers(cfg.anomaly_steps[0], cfg.anomaly_steps[1] + 1)
        contention[i, s : s + dur, kind] += rng.uniform(*cfg.anomaly_intensity)
    noise = np.exp(cfg.p99_noise * rng.standard_normal((n, t)))
    mask = np.ones((n, N_RESOURCES), bool)
    no_rdt = rng.random(n) < cfg.mask_prob
    mask[no_rdt, MEM] = False
    mask[no_rdt, LLC] = False
    lo = np.array([svcs[i].lo for i in svc])
    hi = np.array([svcs[i].hi for i in svc])
    init = np.exp(rng.uniform(np.log(lo), np.log(hi)))
    init = np.where(mask, init, hi)
    return Scenario(svc, rate, mix, contention, noise, mask, init)


@dataclass
class StepResult:
    """One step of ``n`` environments."""

    states: F32
    """(n, state_dim) the states after the step"""
    rewards: F64
    """(n,)"""
    p99_ms: F64
    """(n,) measured p99 latency during the step, ms"""
    slo_ms: F64
    """(n,) SLO, ms"""
    limits: F64
    """(n, 5) limits in force during the step, resource units"""
    usage: F64
    """(n, 5) usage during the step, resource units"""
    scale_out: B
    """(n,) the agent asked for scale-out"""
    done: bool
    """True after the episode's last step"""


class SimEnv:
    """``n`` simulated instances stepping together through one :class:`Scenario`.

    ``reset()`` gives the first states; ``step(raw)`` takes actions ``(n, 5)`` in [-1, 1], applies
    them with :func:`firm.rl.space.apply_actions` and advances one interval.
    """

    def __init__(self, scenario: Scenario, agent_cfg: AgentConfig, sim_cfg: SimConfig | None = None) -> None:
        self.cfg = sim_cfg or SimConfig()
        self.agent_cfg = agent_cfg
        self.sc = scenario
        svcs = self.cfg.services
        self.n = len(scenario.service)
        self.steps = scenario.rate.shape[1] - 1
        k = scenario.mix.shape[2]
        if k != agent_cfg.n_request_types:
            raise ValueError(f"the scenario has {k} request types, the agent {agent_cfg.n_request_types}")
        self.demand = np.array([svcs[i].demand for i in scenario.service], float)  # (n, K, 5)
        self.slo = np.array([svcs[i].slo_ms for i in scenario.service])
        self.base = np.array([svcs[i].base_ms for i in scenario.service])
        self.lo = np.array([svcs[i].lo for i in scenario.service])
        self.hi = np.array([svcs[i].hi for i in scenario.service])
        self.mask = scenario.mask
        self.reset()

    def reset(self) -> F32:
        """Back to the scenario's start; returns the first states ``(n, state_dim)``."""
        self.t = 0
        self.limits = self.sc.init.copy()
        self.backlog = np.zeros((self.n, N_RESOURCES))
        self.scale_outs = np.zeros(self.n, np.int64)
        p99, usage = self._serve(self.limits, 0)
        self.last = (p99, usage)
        return self._state(p99, usage, 0)

    def _serve(self, limits: F64, t: int) -> tuple[F64, F64]:
        """Serve step t's load under ``limits``; updates backlogs, returns (p99 ms, usage)."""
        lam = self.sc.rate[:, t]
        need = np.einsum("nk,nkr->nr", self.sc.mix[:, t], self.demand) * (1 + self.sc.contention[:, t])
        ws = need[:, LLC]
        shortfall = np.clip((ws - limits[:, LLC]) / ws, 0.0, 1.0)
        need[:, CPU] *= 1 + self.cfg.llc_penalty * shortfall
        need[:, MEM] *= 1 + self.cfg.llc_penalty * shortfall
        dt = self.cfg.dt_s
        usage = np.zeros((self.n, N_RESOURCES))
        p99 = self.base.copy()
        for r in QUEUES:
            mu = limits[:, r] / need[:, r]
            waiting = self.backlog[:, r] + lam * dt
            served = np.minimum(waiting, mu * dt)
            self.backlog[:, r] = waiting - served
            usage[:, r] = served * need[:, r] / dt
            rho = np.minimum(lam / mu, 0.98)
            p99 += 1000.0 * (LN100 / (mu * (1 - rho)) + self.backlog[:, r] / mu)
        usage[:, LLC] = np.minimum(ws, limits[:, LLC])
        p99 = np.minimum(p99 * self.sc.noise[:, t], self.cfg.p99_cap * self.slo)
        return p99, usage

    def _state(self, p99: F64, usage: F64, t: int) -> F32:
        cfg = self.agent_cfg
        sr = np.minimum(self.slo / p99, cfg.sr_clip)
        prev = self.sc.rate[:, max(t - 1, 0)]
        wc = np.minimum(self.sc.rate[:, t] / prev, cfg.wc_clip)
        ru = np.where(self.mask, np.minimum(usage / self.limits, 1.0), 0.0)
        return np.concatenate([sr[:, None], wc[:, None], self.sc.mix[:, t], ru], axis=1).astype(np.float32)

    def step(self, raw: F64) -> StepResult:
        """Apply actions ``(n, 5)`` in [-1, 1] and advance one interval."""
        cfg = self.agent_cfg
        self.limits, scale_out = apply_actions(
            raw,
            self.limits,
            self.lo,
            self.hi,
            self.mask,
            max_step=cfg.max_step,
            scale_out_threshold=cfg.scale_out_threshold,
        )
        self.scale_outs += scale_out
        self.t += 1
        p99, usage = self._serve(self.limits, self.t)
        states = self._state(p99, usage, self.t)
        sr = self.slo / p99
        ru = np.where(self.mask, np.minimum(usage / self.limits, 1.0), 0.0)
        r = reward(sr, ru, self.mask, alpha=cfg.alpha)
        self.last = (p99, usage)
        return StepResult(
            states, r, p99, self.slo.copy(), self.limits.copy(), usage, scale_out, done=self.t >= self.steps
        )

    @property
    def resource_names(self) -> tuple[str, ...]:
        return RESOURCES
