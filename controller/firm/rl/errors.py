"""Errors of the resource estimator: every one says what was wrong and how to fix it."""

from __future__ import annotations

from ansible_collections.firm.core.plugins.module_utils.errors import FirmError


class RLError(FirmError):
    """Base class of the resource estimator's errors."""


class StateError(RLError):
    """A state, a limit, a bound or a mask handed to the agent is malformed (wrong size, key, range)."""


class ModelError(RLError):
    """A model file is missing, unreadable or was written for another state/action layout or version."""


class TrainingError(RLError):
    """Training could not go on (non-finite values, a run directory that does not match, ...)."""


class LiveEnvError(RLError):
    """The live environment cannot run here (no testbed, no telemetry, no root, ...)."""
