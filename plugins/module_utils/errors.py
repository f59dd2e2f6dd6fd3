# Copyright: firm developers
# Apache License 2.0 (see galaxy.yml)
"""Exception types shared by firm's actuation library.

Every error says what was wrong and how to fix it. The Ansible modules turn them into ``fail_json``
at their edge; the controller catches them by type.
"""

from __future__ import annotations

from typing import Any


class FirmError(Exception):
    """Base class: ``message`` says what went wrong, ``fix`` what the user can do about it."""

    def __init__(self, message: str, fix: str = "", **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix
        self.details = details

    def __str__(self) -> str:
        return f"{self.message}. Fix: {self.fix}" if self.fix else self.message

    def as_dict(self) -> dict[str, Any]:
        """The fields a module passes to ``fail_json``."""
        return {"msg": str(self), "fix": self.fix, **self.details}


class InvalidInputError(FirmError):
    """The request was rejected before anything was written."""


class NotFoundError(FirmError):
    """A target (group, device, interface, namespace, mount) does not exist."""


class KernelWriteError(FirmError):
    """The kernel refused a write; earlier writes of the same change were rolled back."""


class CommandError(FirmError):
    """An external command (tc, ip) failed; ``details`` carries its rc, stdout and stderr."""
