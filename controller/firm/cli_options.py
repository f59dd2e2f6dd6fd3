"""Options shared by firm's commands, each defined once: ``--json``, ``--config``, ``--redis`` (a Redis
URL) and ``--overlap-tolerance``. Each function returns a click decorator; the parameter names they
give the command function are fixed (``as_json``, ``config_path``, ``redis_url``, ``tolerance``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

MAX_OVERLAP_TOLERANCE_US = 3_600_000_000
"""The largest --overlap-tolerance accepted, microseconds (an hour: far beyond any real overlap)."""

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
"""firm's own Redis (telemetry, audit, request records) when nothing else is configured."""


def json_option(help: str = "Print the result as JSON.") -> Callable[[F], F]:
    """``--json``: machine-readable output (the command function's ``as_json``)."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def config_option(
    help: str, *, path_type: type[Path] | None = None, default: Path | str | None = None
) -> Callable[[F], F]:
    """``--config FILE``: an existing YAML file (the command function's ``config_path``); ``path_type``
    ``Path`` hands it over as a :class:`pathlib.Path`, None as text."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(exists=True, dir_okay=False, path_type=path_type),
        default=default,
        help=help,
    )


def redis_url_option(
    help: str,
    *,
    default: str | None = None,
    envvar: str | None = None,
    show_default: bool = False,
    metavar: str | None = None,
) -> Callable[[F], F]:
    """``--redis URL``: a Redis to use (the command function's ``redis_url``)."""
    return click.option(
        "--redis",
        "redis_url",
        default=default,
        envvar=envvar,
        show_default=show_default,
        metavar=metavar,
        help=help,
    )


def overlap_tolerance_option() -> Callable[[F], F]:
    """``--overlap-tolerance US``: siblings overlapping by at most this many microseconds count as
    sequential (the command function's ``tolerance``, 0 to :data:`MAX_OVERLAP_TOLERANCE_US`)."""
    return click.option(
        "--overlap-tolerance",
        "tolerance",
        type=click.IntRange(min=0, max=MAX_OVERLAP_TOLERANCE_US),
        default=0,
        show_default=True,
        metavar="US",
        help="Siblings overlapping by at most this many microseconds count as sequential.",
    )
