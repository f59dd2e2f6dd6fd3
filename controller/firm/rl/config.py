"""The agent's configuration: state and action layout, reward and DDPG hyperparameters, in one object.

Defaults are the original prototype's hyperparameters (FIRM, Qiu et al., OSDI 2020; read in its code):
Adam learning rates 3e-4 (actor) and 3e-3 (critic), gamma 0.9, tau 1e-3, minibatch 64, replay
buffer 1e5, 70 transitions before learning, Ornstein-Uhlenbeck noise sigma 0.2 and theta 0.15, two
hidden layers of 40, episodes of 300 steps, alpha 0.5. Where this project departs (batch norm off,
continuous multiplicative moves, gradient clipping) is said in docs/rl.md.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from firm.rl.errors import ModelError, StateError
from firm.rl.space import state_size


@dataclass(frozen=True)
class AgentConfig:
    """Everything that defines an agent; saved inside every model file.

    Raises :class:`StateError` when a field is out of range (the message names the field).
    """

    n_request_types: int = 3
    """Request types K in the state's request composition (the testbed has 3), count."""
    alpha: float = 0.5
    """Reward weight of SLO retainment against utilisation, in [0, 1] (prototype: 0.5)."""
    sr_clip: float = 2.0
    """Largest SLO retainment the state carries (SLO / p99 above it is clipped), ratio."""
    wc_clip: float = 4.0
    """Largest workload change the state carries (rate / previous rate), ratio."""
    max_step: float = 2.0
    """Largest multiplicative move of a limit in one step: action +1 multiplies by it, -1 divides, factor."""
    scale_out_threshold: float = 0.5
    """CPU action (in [-1, 1]) above which an agent at the CPU bound asks for scale-out."""
    hidden: tuple[int, ...] = (40, 40)
    """Widths of the hidden layers of actor and critic, units (prototype: two of 40)."""
    batch_norm: bool = False
    """Batch normalisation after each hidden layer (the prototype's choice; off by default, docs/rl.md)."""
    actor_lr: float = 3e-4
    """Adam learning rate of the actor, per update."""
    critic_lr: float = 3e-3
    """Adam learning rate of the critic, per update."""
    gamma: float = 0.9
    """Discount factor per step."""
    tau: float = 1e-3
    """Soft target update rate: target <- tau * online + (1 - tau) * target, per update."""
    batch_size: int = 64
    """Minibatch size, transitions."""
    buffer_size: int = 100_000
    """Replay buffer capacity, transitions."""
    learning_starts: int = 70
    """Transitions collected before the first update."""
    noise: Literal["ou", "gaussian"] = "ou"
    """Exploration noise: Ornstein-Uhlenbeck (prototype) or Gaussian."""
    noise_sigma: float = 0.2
    """Standard deviation of the exploration noise, action units ([-1, 1])."""
    ou_theta: float = 0.15
    """Mean reversion of the Ornstein-Uhlenbeck noise, per step."""
    grad_clip: float = 1.0
    """Largest L2 norm of each network's gradient per update (0: no clipping)."""
    episode_steps: int = 300
    """Steps per episode (prototype: 300)."""

    def __post_init__(self) -> None:
        def bad(name: str, fix: str) -> StateError:
            return StateError(f"AgentConfig.{name} is {getattr(self, name)!r}", fix)

        if self.n_request_types < 1:
            raise bad("n_request_types", "give at least 1 request type")
        for name in ("alpha",):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                raise bad(name, "give a value in [0, 1]")
        for name in ("tau",):
            if not 0 < getattr(self, name) <= 1:
                raise bad(name, "give a value in (0, 1]")
        if not 0 <= self.gamma < 1:
            raise bad("gamma", "give a discount in [0, 1)")
        for name in ("sr_clip", "wc_clip", "actor_lr", "critic_lr", "noise_sigma", "ou_theta"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise bad(name, "give a positive, finite number")
        if not (math.isfinite(self.max_step) and self.max_step > 1):
            raise bad("max_step", "give a factor above 1 (2.0 doubles or halves a limit per step)")
        if not -1 <= self.scale_out_threshold <= 1:
            raise bad("scale_out_threshold", "give a value in [-1, 1]")
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise bad("hidden", "give one or more positive layer widths, e.g. (40, 40)")
        for name in ("batch_size", "buffer_size", "episode_steps"):
            if getattr(self, name) < 1:
                raise bad(name, "give a positive count")
        if self.learning_starts < 0:
            raise bad("learning_starts", "give a non-negative count")
        if self.grad_clip < 0 or not math.isfinite(self.grad_clip):
            raise bad("grad_clip", "give a non-negative, finite norm (0 turns clipping off)")
        if self.noise not in ("ou", "gaussian"):
            raise bad("noise", "use 'ou' or 'gaussian'")

    @property
    def state_dim(self) -> int:
        """Length of the state vector (``2 + n_request_types + 5``)."""
        return state_size(self.n_request_types)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (tuples as lists)."""
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, data: Any) -> AgentConfig:
        """Inverse of :meth:`as_dict` (a model file's ``config``); raises :class:`ModelError` naming
        what differs when it is not a mapping, names unknown fields, or gives a field a value of
        another type than this firm's (``hidden: 5``, ``batch_size: "64"``), and :class:`StateError`
        for a value out of range."""
        retrain = "load it with the firm version that wrote it, or retrain with firm train-rl"
        if data is None:
            raise ModelError("the model has no 'config' (its settings)", retrain)
        if not isinstance(data, dict):
            raise ModelError(
                f"the model's config is {type(data).__name__}, not a mapping of settings", retrain
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in set(data) - known)
        if unknown:
            raise ModelError(f"the model's config has unknown fields {unknown}", retrain)
        d = dict(data)
        defaults = cls()
        for name, value in d.items():
            wants = _kind_of(getattr(defaults, name))
            if _kind_of(value) != wants and not (wants == "a number" and _kind_of(value) == "a whole number"):
                raise ModelError(
                    f"the model's config gives {name} {value!r:.60}, not {wants} as this firm reads it",
                    retrain,
                )
        if "hidden" in d:
            d["hidden"] = tuple(d["hidden"])
        return cls(**d)


def _kind_of(value: Any) -> str:
    """What a setting of :class:`AgentConfig` is, in words: ``a whole number``, ``a number``, ``true or
    false``, ``text``, ``a list of whole numbers`` (what a model file's config must give each field)."""
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int):
        return "a whole number"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, (list, tuple)) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return "a list of whole numbers"
    return type(value).__name__
