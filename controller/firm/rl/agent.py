"""The agent the control loop calls: load a model, turn a culprit's state into new limits.

agent = Agent.load()                       # the shipped default model
state = build_state(slo_ms=..., p99_ms=..., rate_rps=..., prev_rate_rps=..., mix=..., usage=..., limits=...)
decision = agent.decide(state, current=limits, bounds=bounds, mask=mask)
decision.limits      # {"cpu": 1.2, "disk_io": 3.1e7, ...}  controllable resources only
decision.scale_out   # True: the CPU sits at its bound and the agent wants more
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import torch

from firm import __version__
from firm.rl.config import AgentConfig
from firm.rl.ddpg import DDPG
from firm.rl.errors import ModelError, StateError
from firm.rl.space import RESOURCES, ResourceBounds, apply_actions, state_names

log = logging.getLogger(__name__)

MODEL_FORMAT: Final = 1
"""Version of the model file's layout; a file of another format is refused."""

DEFAULT_MODEL: Final = Path(__file__).resolve().parent / "models" / "default.pt"
"""The model shipped with the package (trained on the simulator by ``firm train-rl --env sim --seed 7``)."""


@dataclass(frozen=True)
class Decision:
    """What the agent chose for one instance."""

    limits: dict[str, float]
    """New limit of every controllable resource, in the units of :data:`firm.rl.space.UNITS`."""
    scale_out: bool
    """True when the CPU limit sits at its maximum and the agent asks for more: add an instance."""
    masked: tuple[str, ...]
    """Resources the node cannot control; their actions were ignored and no limit is given."""
    raw: npt.NDArray[np.float64]
    """The actor's output, shape (5,), in [-1, 1], RESOURCES order (masked entries included)."""


class Agent:
    """A trained (or fresh) DDPG agent with its config; :meth:`decide` is deterministic."""

    def __init__(
        self,
        cfg: AgentConfig | None = None,
        *,
        ddpg: DDPG | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.cfg = cfg or AgentConfig()
        self.ddpg = ddpg or DDPG(self.cfg)
        self.metadata: dict[str, Any] = dict(metadata or {})

    # -- deciding --------------------------------------------------------------------------

    def check_state(self, state: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """The state as float32 of this agent's size, SR and WC clipped to the config's bounds.

        Raises :class:`StateError` for a wrong shape or non-finite entries.
        """
        s = np.asarray(state, dtype=np.float32)
        if s.ndim != 1 or s.shape[0] != self.cfg.state_dim:
            raise StateError(
                f"the state has shape {s.shape}, the agent expects ({self.cfg.state_dim},) laid out as "
                f"{list(state_names(self.cfg.n_request_types))}",
                f"build it with firm.rl.build_state and a mix of {self.cfg.n_request_types} request types",
            )
        if not np.all(np.isfinite(s)):
            raise StateError("the state holds NaN or infinity", "pass finite telemetry to build_state")
        s = s.copy()
        s[0] = min(max(s[0], 0.0), self.cfg.sr_clip)
        s[1] = min(max(s[1], 0.0), self.cfg.wc_clip)
        return s

    def decide(
        self,
        state: npt.ArrayLike,
        *,
        current: Mapping[str, float],
        bounds: Mapping[str, ResourceBounds],
        mask: Mapping[str, bool],
    ) -> Decision:
        """New limits for one instance.

        ``state``: from :func:`firm.rl.build_state`, shape ``(state_dim,)``. ``current``: the limits in
        force, resource units. ``bounds``: the allowed range per resource. ``mask``: True for each
        resource the node can control (a missing name counts as False). ``current`` and ``bounds`` are
        needed for the controllable resources only. Validates everything first; raises
        :class:`StateError` naming the field.
        """
        s = self.check_state(state)
        unknown = sorted((set(mask) | set(current) | set(bounds)) - set(RESOURCES))
        if unknown:
            raise StateError(
                f"unknown resources {unknown} in current/bounds/mask", f"use only {list(RESOURCES)}"
            )
        on = np.array([bool(mask.get(r, False)) for r in RESOURCES])
        cur = np.ones(len(RESOURCES))
        lo = np.ones(len(RESOURCES))
        hi = np.ones(len(RESOURCES))
        for i, r in enumerate(RESOURCES):
            if not on[i]:
                continue
            if r not in bounds or r not in current:
                raise StateError(
                    f"{r!r} is controllable but has no {'bounds' if r not in bounds else 'current'} entry",
                    f"give current[{r!r}] and bounds[{r!r}], or set mask[{r!r}] = False",
                )
            c = float(current[r])
            if not math.isfinite(c) or c <= 0:
                raise StateError(
                    f"current[{r!r}] is {current[r]!r}", "give the limit in force, a positive number"
                )
            cur[i], lo[i], hi[i] = c, bounds[r].min, bounds[r].max
        raw = self.ddpg.act(s[None, :])[0]
        new, scale_out = apply_actions(
            raw, cur, lo, hi, on, max_step=self.cfg.max_step, scale_out_threshold=self.cfg.scale_out_threshold
        )
        limits = {r: float(new[i]) for i, r in enumerate(RESOURCES) if on[i]}
        masked = tuple(r for i, r in enumerate(RESOURCES) if not on[i])
        return Decision(limits=limits, scale_out=bool(scale_out), masked=masked, raw=raw)

    def act(self, states: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """Deterministic raw actions ``(n, 5)`` in [-1, 1] for states ``(n, state_dim)`` (no checks)."""
        return self.ddpg.act(states)

    # -- files -----------------------------------------------------------------------------

    def layout(self) -> dict[str, Any]:
        """The state and action layout a model file records and loading compares."""
        return {"state": list(state_names(self.cfg.n_request_types)), "actions": list(RESOURCES)}

    def save(self, path: Path, *, checkpoint: bool = False) -> None:
        """Write the model (config, layout, version, actor and critic weights; with ``checkpoint``
        also targets and optimisers) to ``path`` atomically."""
        payload: dict[str, Any] = {
            "format": MODEL_FORMAT,
            "firm_version": __version__,
            "config": self.cfg.as_dict(),
            "layout": self.layout(),
            "metadata": self.metadata,
        }
        if checkpoint:
            payload["ddpg"] = self.ddpg.state_dict()
        else:
            payload["actor"] = self.ddpg.actor.state_dict()
            payload["critic"] = self.ddpg.critic.state_dict()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(payload, tmp)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path | None = None) -> Agent:
        """The agent stored at ``path`` (None: the shipped default model).

        Raises :class:`ModelError` when the file is missing or unreadable, or was written with another
        file format or another state/action layout than this firm's.
        """
        p = DEFAULT_MODEL if path is None else Path(path)
        if not p.is_file():
            raise ModelError(
                f"no model file at {p}", "train one with 'firm train-rl --out DIR' and pass DIR/model.pt"
            )
        try:
            payload = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ModelError(
                f"{p} is not a readable firm model ({err.__class__.__name__}: {err})",
                "pass a model.pt written by firm train-rl",
            ) from err
        if not isinstance(payload, dict) or "format" not in payload:
            raise ModelError(
                f"{p} is not a firm model (no 'format' field)", "pass a model.pt written by firm train-rl"
            )
        if payload["format"] != MODEL_FORMAT:
            raise ModelError(
                f"{p} has model format {payload['format']}, this firm reads format {MODEL_FORMAT}",
                "retrain with this version's firm train-rl",
            )
        cfg = AgentConfig.from_dict(payload.get("config"))
        agent = cls(cfg, metadata=payload.get("metadata"))
        expected = agent.layout()
        if payload.get("layout") != expected:
            raise ModelError(
                f"{p} was trained for layout {payload.get('layout')}, this firm uses {expected}",
                "retrain with firm train-rl (the state or action layout changed)",
            )
        try:
            if "ddpg" in payload:
                agent.ddpg.load_state_dict(payload["ddpg"])
            else:
                agent.ddpg.actor.load_state_dict(payload["actor"])
                agent.ddpg.critic.load_state_dict(payload["critic"])
                agent.ddpg.actor_target.load_state_dict(payload["actor"])
                agent.ddpg.critic_target.load_state_dict(payload["critic"])
        except (RuntimeError, KeyError, ValueError) as err:
            raise ModelError(
                f"{p}: the weights do not fit the config ({err})", "retrain with firm train-rl"
            ) from err
        return agent

    def clone(self) -> Agent:
        """An independent copy (weights, targets and optimiser state), for one-for-each transfer."""
        other = Agent(self.cfg, metadata=dict(self.metadata))
        other.ddpg.load_state_dict(self.ddpg.state_dict())
        return other
