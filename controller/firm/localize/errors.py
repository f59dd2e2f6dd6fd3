"""Errors of culprit localization."""

from __future__ import annotations

from ansible_collections.firm.core.plugins.module_utils.errors import FirmError

__all__ = ["DatasetError", "EmptyWindowError", "LocalizeError", "ModelError", "NoOverlapError"]


class LocalizeError(FirmError):
    """Base class of the localization layer's errors."""


class EmptyWindowError(LocalizeError):
    """The window holds no traces, so there is nothing to rank."""


class NoOverlapError(LocalizeError):
    """The window and the reference window share no instance, so nothing can be compared."""


class ModelError(LocalizeError):
    """A model file is missing, corrupt, of a newer version or made for other features."""


class DatasetError(LocalizeError):
    """A training or evaluation dataset cannot be used (missing columns, one class, no rows)."""
