"""Deciders that turn states into raw actions in [-1, 1]: the agent, a random policy and AIMD.

All three go through the same :func:`firm.rl.space.apply_actions` inside the environment, so a
comparison differs only in the decision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from firm.rl.agent import Agent
from firm.rl.space import N_RESOURCES

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]


class Limits(Protocol):
    """What a policy may read of an environment besides the state: limits and bounds ``(n, 5)``."""

    limits: F64
    lo: F64
    hi: F64


class Policy(Protocol):
    """``policy(states (n, state_dim), env) -> raw actions (n, 5)`` in [-1, 1]."""

    def __call__(self, states: F32, env: Limits) -> F64: ...


class AgentPolicy:
    """A trained agent, deterministic; with one agent per environment when ``agents`` is a sequence."""

    def __init__(self, agents: Agent | Sequence[Agent], which: npt.NDArray[np.int64] | None = None) -> None:
        self.agents = [agents] if isinstance(agents, Agent) else list(agents)
        self.which = which

    def __call__(self, states: F32, env: Limits) -> F64:
        if len(self.agents) == 1 or self.which is None:
            return self.agents[0].act(states)
        out = np.zeros((len(states), N_RESOURCES))
        for k, agent in enumerate(self.agents):
            rows = self.which == k
            if rows.any():
                out[rows] = agent.act(states[rows])
        return out


class RandomPolicy:
    """Uniform actions in [-1, 1], from an injected generator."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def __call__(self, states: F32, env: Limits) -> F64:
        return self.rng.uniform(-1.0, 1.0, (len(states), N_RESOURCES))


@dataclass(frozen=True)
class AimdPolicy:
    """AIMD: multiplicative increase on an SLO violation, additive decrease otherwise.

    On violation (SR < 1) every limit is multiplied by ``increase``; otherwise every limit drops by
    ``decrease`` times its range (max - min). The move is expressed as the action that makes it, so
    it is bounded like every other policy's (at most ``max_step`` per step). FIRM's paper compares
    against such a controller; the parameters are picked per run on training scenarios (train.py).
    """

    increase: float
    """Factor applied to every limit on a violation (> 1)."""
    decrease: float
    """Share of each resource's range removed per step without a violation (> 0)."""
    max_step: float
    """The agent config's max_step, to express moves as actions."""

    def __call__(self, states: F32, env: Limits) -> F64:
        log_step = math.log(self.max_step)
        violated = states[:, 0:1] < 1.0
        up = np.full((len(states), N_RESOURCES), math.log(self.increase) / log_step)
        cur = np.maximum(env.limits, 1e-12)
        lower = np.maximum(cur - self.decrease * (env.hi - env.lo), env.lo)
        down = np.log(lower / cur) / log_step
        return np.clip(np.where(violated, up, down), -1.0, 1.0)
