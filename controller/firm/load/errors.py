"""Errors of the load generator.

A spec error names the field that is wrong and what to put there instead.
"""

from __future__ import annotations

from typing import Any

from ansible_collections.firm.core.plugins.module_utils.errors import FirmError


class LoadError(FirmError):
    """Base class of the load generator's errors."""


class LoadSpecError(LoadError):
    """A load spec was rejected before any request was sent; ``field`` names the culprit."""

    def __init__(self, field: str, message: str, fix: str = "", **details: Any) -> None:
        super().__init__(f"{field}: {message}", fix, field=field, **details)
        self.field = field


class HttpProtocolError(LoadError):
    """The server answered something that is not HTTP/1.x."""
