"""FIRM's resource estimator: a DDPG agent that picks a culprit instance's new limits.

- :mod:`firm.rl.space`: :data:`RESOURCES`, :class:`ResourceBounds`, :func:`build_state`, the action
  scaling and the reward: the one definition of state, action and reward.
- :mod:`firm.rl.config`: :class:`AgentConfig`, hyperparameters with the prototype's defaults.
- :mod:`firm.rl.ddpg`: networks, replay buffer, noise, the DDPG update.
- :mod:`firm.rl.agent`: :class:`Agent` (load, save, decide) and :class:`Decision`.
- :mod:`firm.rl.sim`: a queueing simulator of a service under contention (a model, for pretraining).
- :mod:`firm.rl.live`: the live environment over the embedded testbed.
- :mod:`firm.rl.train`: training, evaluation against random and AIMD, run directories.
"""

import logging

from firm.rl.agent import DEFAULT_MODEL, Agent, Decision
from firm.rl.config import AgentConfig
from firm.rl.errors import LiveEnvError, ModelError, RLError, StateError, TrainingError
from firm.rl.space import RESOURCES, UNITS, ResourceBounds, build_state, state_names, state_size

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "DEFAULT_MODEL",
    "RESOURCES",
    "UNITS",
    "Agent",
    "AgentConfig",
    "Decision",
    "LiveEnvError",
    "ModelError",
    "RLError",
    "ResourceBounds",
    "StateError",
    "TrainingError",
    "build_state",
    "state_names",
    "state_size",
]
