"""DDPG (Lillicrap et al., ICLR 2016) as FIRM uses it, readable top to bottom.

The parts: :func:`seed_everything`; :class:`Actor` and :class:`Critic` (MLPs, the actor ends in tanh
so its actions are in [-1, 1]); :class:`ReplayBuffer` returning a :class:`Batch`;
:class:`OrnsteinUhlenbeckNoise` and :class:`GaussianNoise` drawing from an injected
``numpy.random.Generator``; :class:`DDPG`, whose :meth:`DDPG.update` is one gradient step of critic
and actor followed by the soft target update. Written for this project after reading CleanRL's
``ddpg_continuous_action.py`` and stable-baselines3's ``common/noise.py`` and ``common/buffers.py``.
"""

from __future__ import annotations

import copy
import itertools
import math
import os
import random
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from firm.rl.config import AgentConfig
from firm.rl.errors import TrainingError
from firm.rl.space import N_RESOURCES

F32 = npt.NDArray[np.float32]


def seed_everything(seed: int) -> None:
    """Seed python, numpy's legacy generator and torch; one torch thread; deterministic algorithms.

    Every generator this package draws from is otherwise explicit (``numpy.random.Generator`` objects
    passed in), so a seed gives the same run.
    """
    random.seed(seed)
    np.random.seed(seed % (2**32))  # for third-party code on the legacy generator
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)


def _mlp(sizes: list[int], batch_norm: bool) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers.append(nn.Linear(a, b))
        if batch_norm:
            layers.append(nn.BatchNorm1d(b))
        layers.append(nn.ReLU())
    return layers


class Actor(nn.Module):
    """State ``(B, state_dim)`` -> action ``(B, 5)`` in [-1, 1]."""

    def __init__(self, state_dim: int, cfg: AgentConfig) -> None:
        super().__init__()
        self.body = nn.Sequential(*_mlp([state_dim, *cfg.hidden], cfg.batch_norm))
        self.head = nn.Linear(cfg.hidden[-1], N_RESOURCES)
        # Small final weights: actions start near 0 (keep the current limits), as in DDPG's paper.
        nn.init.uniform_(self.head.weight, -3e-3, 3e-3)
        nn.init.uniform_(self.head.bias, -3e-3, 3e-3)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.head(self.body(state)))


class Critic(nn.Module):
    """(State ``(B, state_dim)``, action ``(B, 5)``) -> Q value ``(B, 1)``."""

    def __init__(self, state_dim: int, cfg: AgentConfig) -> None:
        super().__init__()
        self.body = nn.Sequential(*_mlp([state_dim + N_RESOURCES, *cfg.hidden], cfg.batch_norm))
        self.head = nn.Linear(cfg.hidden[-1], 1)
        nn.init.uniform_(self.head.weight, -3e-3, 3e-3)
        nn.init.uniform_(self.head.bias, -3e-3, 3e-3)

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(torch.cat([state, action], dim=-1)))  # type: ignore[no-any-return]


class Batch(NamedTuple):
    """A minibatch of transitions, tensors of ``B`` rows."""

    states: torch.Tensor
    """(B, state_dim)"""
    actions: torch.Tensor
    """(B, 5), in [-1, 1]"""
    rewards: torch.Tensor
    """(B, 1)"""
    next_states: torch.Tensor
    """(B, state_dim)"""
    dones: torch.Tensor
    """(B, 1), 1.0 where the episode ended by a terminal state (never by a time limit)"""


class ReplayBuffer:
    """Ring buffer of transitions; :meth:`sample` draws uniformly with an injected generator."""

    def __init__(self, capacity: int, state_dim: int, rng: np.random.Generator) -> None:
        self.capacity = capacity
        self.rng = rng
        self.states = np.zeros((capacity, state_dim), np.float32)
        self.actions = np.zeros((capacity, N_RESOURCES), np.float32)
        self.rewards = np.zeros((capacity, 1), np.float32)
        self.next_states = np.zeros((capacity, state_dim), np.float32)
        self.dones = np.zeros((capacity, 1), np.float32)
        self.pos = 0
        self.full = False

    def __len__(self) -> int:
        return self.capacity if self.full else self.pos

    def add(self, states: F32, actions: F32, rewards: F32, next_states: F32, dones: F32) -> None:
        """Add ``n`` transitions (leading axis ``n``); non-finite values raise :class:`TrainingError`."""
        for name, arr in (
            ("states", states),
            ("actions", actions),
            ("rewards", rewards),
            ("next_states", next_states),
        ):
            if not np.all(np.isfinite(arr)):
                raise TrainingError(
                    f"a transition's {name} holds NaN or infinity",
                    "check the environment's telemetry; nothing was added",
                )
        n = len(states)
        idx = (self.pos + np.arange(n)) % self.capacity
        self.states[idx] = states
        self.actions[idx] = actions
        self.rewards[idx, 0] = rewards
        self.next_states[idx] = next_states
        self.dones[idx, 0] = dones
        self.full = self.full or self.pos + n >= self.capacity
        self.pos = int((self.pos + n) % self.capacity)

    def sample(self, batch_size: int) -> Batch:
        """``batch_size`` transitions drawn uniformly with replacement."""
        idx = self.rng.integers(0, len(self), size=batch_size)
        return Batch(
            torch.from_numpy(self.states[idx]),
            torch.from_numpy(self.actions[idx]),
            torch.from_numpy(self.rewards[idx]),
            torch.from_numpy(self.next_states[idx]),
            torch.from_numpy(self.dones[idx]),
        )


class OrnsteinUhlenbeckNoise:
    """Temporally correlated noise ``x += theta * (mu - x) * dt + sigma * sqrt(dt) * N(0, 1)``, shape ``(n, 5)``."""

    def __init__(
        self, shape: tuple[int, ...], sigma: float, theta: float, rng: np.random.Generator, dt: float = 1.0
    ) -> None:
        self.shape, self.sigma, self.theta, self.dt, self.rng = shape, sigma, theta, dt, rng
        self.x = np.zeros(shape)

    def reset(self) -> None:
        """Back to the mean (start of an episode)."""
        self.x = np.zeros(self.shape)

    def __call__(self) -> npt.NDArray[np.float64]:
        self.x = (
            self.x
            - self.theta * self.x * self.dt
            + self.sigma * math.sqrt(self.dt) * self.rng.standard_normal(self.shape)
        )
        return self.x.copy()


class GaussianNoise:
    """Independent ``N(0, sigma^2)`` noise, shape ``(n, 5)``."""

    def __init__(self, shape: tuple[int, ...], sigma: float, rng: np.random.Generator) -> None:
        self.shape, self.sigma, self.rng = shape, sigma, rng

    def reset(self) -> None:
        """Nothing to reset (kept for the common interface)."""

    def __call__(self) -> npt.NDArray[np.float64]:
        return self.sigma * self.rng.standard_normal(self.shape)


def make_noise(cfg: AgentConfig, n: int, rng: np.random.Generator) -> OrnsteinUhlenbeckNoise | GaussianNoise:
    """The exploration noise the config names, for ``n`` parallel environments."""
    if cfg.noise == "ou":
        return OrnsteinUhlenbeckNoise((n, N_RESOURCES), cfg.noise_sigma, cfg.ou_theta, rng)
    return GaussianNoise((n, N_RESOURCES), cfg.noise_sigma, rng)


@dataclass(frozen=True)
class UpdateStats:
    """What one gradient step did."""

    critic_loss: float
    actor_loss: float
    skipped: bool
    """True when a loss was not finite and no weights were changed (NaN guard)."""


class DDPG:
    """Actor, critic, their targets and optimisers; :meth:`update` is one training step."""

    def __init__(self, cfg: AgentConfig, actor: Actor | None = None, critic: Critic | None = None) -> None:
        self.cfg = cfg
        self.actor = actor or Actor(cfg.state_dim, cfg)
        self.critic = critic or Critic(cfg.state_dim, cfg)
        self.actor_target = copy.deepcopy(self.actor)
        self.critic_target = copy.deepcopy(self.critic)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr, foreach=True)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr, foreach=True)
        self._actor_params: list[torch.Tensor] = list(self.actor.parameters())
        self._critic_params: list[torch.Tensor] = list(self.critic.parameters())
        self._actor_target_params: list[torch.Tensor] = list(self.actor_target.parameters())
        self._critic_target_params: list[torch.Tensor] = list(self.critic_target.parameters())
        self.updates = 0
        self.skipped = 0

    def _clip(self, module: nn.Module) -> None:
        if self.cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(module.parameters(), self.cfg.grad_clip)

    def update(self, batch: Batch) -> UpdateStats:
        """One DDPG step: critic to the TD target, actor along the critic's gradient, soft targets."""
        self.actor.train()
        self.critic.train()
        with torch.no_grad():
            next_q = self.critic_target(batch.next_states, self.actor_target(batch.next_states))
            target = batch.rewards + self.cfg.gamma * (1.0 - batch.dones) * next_q
        critic_loss = nn.functional.mse_loss(self.critic(batch.states, batch.actions), target)
        if not torch.isfinite(critic_loss):
            self.skipped += 1  # NaN guard: a non-finite loss never reaches the weights
            return UpdateStats(critic_loss.item(), math.nan, skipped=True)
        self.critic_opt.zero_grad()
        critic_loss.backward()  # type: ignore[no-untyped-call]
        self._clip(self.critic)
        self.critic_opt.step()

        actor_loss = -self.critic(batch.states, self.actor(batch.states)).mean()
        if not torch.isfinite(actor_loss):
            self.skipped += 1
            return UpdateStats(critic_loss.item(), actor_loss.item(), skipped=True)
        self.actor_opt.zero_grad()
        actor_loss.backward()
        self._clip(self.actor)
        self.actor_opt.step()

        with torch.no_grad():  # soft target updates: target <- tau * online + (1 - tau) * target
            torch._foreach_lerp_(self._actor_target_params, self._actor_params, self.cfg.tau)
            torch._foreach_lerp_(self._critic_target_params, self._critic_params, self.cfg.tau)
        self.updates += 1
        return UpdateStats(critic_loss.item(), actor_loss.item(), skipped=False)

    def act(self, states: F32) -> npt.NDArray[np.float64]:
        """Deterministic actions ``(n, 5)`` in [-1, 1] for states ``(n, state_dim)``."""
        self.actor.eval()
        with torch.no_grad():
            out = self.actor(torch.from_numpy(np.ascontiguousarray(states, dtype=np.float32)))
        result: npt.NDArray[np.float64] = out.numpy().astype(np.float64)
        return result

    def state_dict(self) -> dict[str, object]:
        """Weights of all four networks and both optimisers (for checkpoints)."""
        return {
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "actor_target": self.actor_target.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "updates": self.updates,
            "skipped": self.skipped,
        }

    def load_state_dict(self, d: dict[str, object]) -> None:
        """Inverse of :meth:`state_dict`."""
        self.actor.load_state_dict(d["actor"])  # type: ignore[arg-type]
        self.critic.load_state_dict(d["critic"])  # type: ignore[arg-type]
        self.actor_target.load_state_dict(d["actor_target"])  # type: ignore[arg-type]
        self.critic_target.load_state_dict(d["critic_target"])  # type: ignore[arg-type]
        self.actor_opt.load_state_dict(d["actor_opt"])  # type: ignore[arg-type]
        self.critic_opt.load_state_dict(d["critic_opt"])  # type: ignore[arg-type]
        self.updates = int(d["updates"])  # type: ignore[call-overload]
        self.skipped = int(d["skipped"])  # type: ignore[call-overload]
