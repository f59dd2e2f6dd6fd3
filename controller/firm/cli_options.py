"""Options shared by firm's commands, each defined once: ``--json``, ``--config``, ``--redis`` (a Redis
URL) and ``--overlap-tolerance``. Each function returns a click decorator; the parameter names they
give the command function are fixed (``as_json``, ``config_path``, ``redis_url``, ``tolerance``)."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
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
        type=TextFile(path_type=path_type),
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
        callback=check_redis_url,
        help=help,
    )


MAX_REDIS_DB = (1 << 31) - 1
"""The largest database number a Redis URL may name (Redis keeps it in a C int)."""


def check_redis_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Refuse a Redis URL that redis-py cannot parse (scheme, brackets, port, query options) or whose
    database number is negative or beyond :data:`MAX_REDIS_DB`, as a usage error naming the option.
    None and '' pass unchanged (some commands read '' as "no Redis")."""
    if not value:  # unset, or '' where a command reads it as "no Redis"
        return value
    from redis.connection import parse_url  # noqa: PLC0415 (redis is imported only when a URL is given)

    hint = "give a URL like redis://127.0.0.1:6379/0, rediss://HOST:PORT/DB or unix:///PATH/redis.sock"
    try:
        parsed = parse_url(value)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not a Redis URL: {exc}; {hint}", ctx, param) from None
    db = parsed.get("db", 0)
    if not isinstance(db, int) or not 0 <= db <= MAX_REDIS_DB:
        raise click.BadParameter(
            f"{value!r} names database {db}; Redis databases are numbered from 0; {hint}", ctx, param
        )
    if "connection_class" not in parsed and not parsed.get("host"):
        raise click.BadParameter(f"{value!r} names no host; {hint}", ctx, param)
    return value


MAX_TEXT_FILE_BYTES = 1 << 20
"""The largest configuration file accepted, bytes: a larger one is a data file given by mistake (a 6 MB
trace file takes PyYAML minutes to refuse)."""


class TextFile(click.Path):
    """An existing, readable file of UTF-8 text (a YAML or JSON configuration) of at most
    :data:`MAX_TEXT_FILE_BYTES`: anything else (missing, a directory, unreadable, binary, in another
    encoding, too large) is a usage error naming the option and the
    file, before the command starts. ``path_type`` as for :class:`click.Path`."""

    name = "text file"

    def __init__(self, path_type: type[Path] | None = None) -> None:
        super().__init__(exists=True, dir_okay=False, readable=True, path_type=path_type)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        converted = super().convert(value, param, ctx)
        try:
            data = Path(os.fsdecode(converted)).read_bytes()
        except OSError as exc:
            self.fail(f"{value}: cannot read it: {exc.strerror or exc}", param, ctx)
        if len(data) > MAX_TEXT_FILE_BYTES:
            self.fail(
                f"{value} holds {len(data)} bytes, more than a configuration file can "
                f"({MAX_TEXT_FILE_BYTES} bytes); give the configuration, not a data file",
                param,
                ctx,
            )
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.fail(
                f"{value} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                "give a YAML or JSON file saved as UTF-8",
                param,
                ctx,
            )
        return converted


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


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set ``stop`` (a long-running command finishes the step under way, then
    exits as asked); the old handlers come back after."""

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def describe(exc: BaseException) -> str:
    """An error's message for a user: an ``OSError`` as its reason and file, without Python's
    ``[Errno N]`` spelling, a decoding error without codec names; anything else as its own message."""
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text (byte {exc.start}); give files saved as UTF-8"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror + (f": {exc.filename}" if exc.filename is not None else "")
    return str(exc)
