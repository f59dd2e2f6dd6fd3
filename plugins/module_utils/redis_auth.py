# Copyright: firm developers
# Apache License 2.0 (see galaxy.yml)
"""The password of firm's Redis: generated once per machine, kept in a file only root can read.

firm's own Redis (the embedded default's, on loopback) requires a password. ``start-redis.sh``
generates it at set-up time into ``/etc/firm/redis.password`` (mode 0600; ``FIRM_REDIS_PASSWORD_FILE``
moves it), and every firm client finds it there, so nobody types it and it never enters the
repository or a URL that is printed. The order, for a URL that carries no password itself:

1. ``FIRM_REDIS_PASSWORD`` (a cluster's Redis, whose password comes from Ansible Vault or the like);
2. the password file, but only for a Redis on this machine (a loopback address or a Unix socket),
   so that this machine's password is never sent to another host.

A URL with a password (``redis://:secret@host:6379/0``) always wins. A client of :func:`connect`
still reaches a Redis that requires no password (one started before passwords were required, or a
test's private server): the server decides what it requires, and such a server says so.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from ansible_collections.firm.core.plugins.module_utils.errors import FirmError, InvalidInputError
from ansible_collections.firm.core.plugins.module_utils.urls import redact_url

if TYPE_CHECKING:
    import redis

DEFAULT_PASSWORD_FILE = "/etc/firm/redis.password"
PASSWORD_ENV = "FIRM_REDIS_PASSWORD"
PASSWORD_FILE_ENV = "FIRM_REDIS_PASSWORD_FILE"
PASSWORD_BYTES = 24
"""Random bytes in a generated password (48 hex characters)."""


class RedisPasswordError(FirmError):
    """The password file cannot be created or is readable by others."""


def password_file() -> str:
    """Path of the password file: ``$FIRM_REDIS_PASSWORD_FILE``, else ``/etc/firm/redis.password``."""
    return os.environ.get(PASSWORD_FILE_ENV) or DEFAULT_PASSWORD_FILE


def read_password(path: str | None = None) -> str | None:
    """The password in ``path`` (default :func:`password_file`), or None when there is none to read."""
    try:
        with open(path or password_file(), encoding="utf-8") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def ensure_password(path: str | None = None) -> str:
    """The password in ``path``, generated first (random, mode 0600) when the file does not exist.

    Raises :class:`RedisPasswordError` when the file cannot be written, is empty, or is readable by
    group or others (a mode the user must fix, not one to widen or narrow silently).
    """
    path = path or password_file()
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                handle.write(secrets.token_hex(PASSWORD_BYTES) + "\n")
        mode = os.stat(path).st_mode & 0o777
    except OSError as exc:
        raise RedisPasswordError(
            f"cannot create the Redis password file {path}: {exc.strerror}",
            fix=f"run as root, or set {PASSWORD_FILE_ENV} to a writable path",
        ) from exc
    if mode & 0o077:
        raise RedisPasswordError(
            f"the Redis password file {path} has mode {mode:04o}, readable by others", fix=f"chmod 600 {path}"
        )
    password = read_password(path)
    if password is None:
        raise RedisPasswordError(
            f"the Redis password file {path} is empty or unreadable",
            fix=f"remove {path}; the next `make services` generates a new one",
        )
    return password


MAX_DB = (1 << 31) - 1
"""The highest database number (Redis's ``databases`` setting is a C int)."""

URL_FIX = "give a URL like redis://127.0.0.1:6379/0, rediss://HOST:PORT/DB or unix:///PATH/redis.sock"


def url_problem(url: object) -> str | None:
    """What keeps ``url`` from being a Redis URL that redis-py uses as it is meant, as a clause for
    ``f"{redact_url(url)!r}: {problem}"`` that names no part of the URL (so no password is shown);
    None when it is one. The one check of Redis URLs, for the modules and the controller.

    redis-py silently reads a missing host as localhost:6379 and a path that is not a number as
    database 0, and fails late (or with an exception of its own) on a port out of range or a bad
    query option; each of those is a problem here.
    """
    if not isinstance(url, str) or not url.strip():
        return "it is not a Redis URL (it is empty)"
    if any(ord(c) < 0x21 or ord(c) == 0x7F or not c.isprintable() for c in url):
        return "it holds a space or a control character"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"it is not a Redis URL ({exc})"
    scheme = parts.scheme
    if not url.startswith(("redis://", "rediss://", "unix://")):  # as redis-py reads it: in lower case
        return f"it is not a Redis URL (scheme {url.partition(':')[0]!r}; it starts redis://, rediss:// or unix://)"
    query = parse_qs(parts.query)
    path = parts.path.strip("/")
    if scheme == "unix":
        if not path:
            return "it names no socket"
        db_text = query.get("db", ["0"])[0]
    else:
        if not parts.hostname:
            return "it names no host"
        if port == 0:
            return "it names port 0"
        if path and not re.fullmatch(r"[0-9]+", path):
            return f"its path /{path} is not a database number (0 to {MAX_DB})"
        db_text = query.get("db", [path or "0"])[0]
    if not re.fullmatch(r"[0-9]+", db_text) or int(db_text) > MAX_DB:
        return f"it names database {db_text}; Redis databases are numbered from 0 to {MAX_DB}"
    try:
        from redis.connection import parse_url  # noqa: PLC0415 - where redis-py is installed

        parse_url(url)  # type: ignore[no-untyped-call]
    except ImportError:
        pass
    except ValueError as exc:  # a query option redis-py cannot read
        return f"it is not a Redis URL ({exc})"
    return None


def check_url(url: object, what: str = "redis_url") -> str:
    """``url`` when it is a Redis URL (:func:`url_problem`); else InvalidInputError naming ``what``
    and the fix, before anything connects (the password is never shown)."""
    problem = url_problem(url)
    if problem is not None:
        shown = redact_url(url) if isinstance(url, str) else url
        raise InvalidInputError(f"{what} {shown!r}: {problem}", fix=URL_FIX)
    assert isinstance(url, str)
    return url


def is_local(url: str) -> bool:
    """Whether ``url`` names a Redis on this machine (loopback address or Unix socket)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return True
    host = parts.hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def password_for(url: str) -> str | None:
    """The password a client of ``url`` sends: None when the URL has one or none is known."""
    if urlsplit(url).password:
        return None
    from_env = os.environ.get(PASSWORD_ENV)
    if from_env:
        return from_env
    return read_password() if is_local(url) else None


_NO_PASSWORD_SET = ("without any password configured", "no password is set")


def _authenticate(connection: Any) -> None:
    """redis-py's handshake, once more without the password when the server has none set."""
    import redis  # noqa: PLC0415 - here, so that a module without the redis package can import this file

    try:
        connection.on_connect()
    except redis.AuthenticationError as exc:
        if not any(words in str(exc) for words in _NO_PASSWORD_SET):
            raise
        connection.password = None
        connection.on_connect()


def connect(url: str, **options: Any) -> redis.Redis:
    """A ``redis.Redis`` client of ``url`` with the password of :func:`password_for`.

    ``options`` go to ``redis.Redis.from_url`` (timeouts, ``decode_responses``). A URL that is not
    one (:func:`check_url`) is refused before anything connects.
    """
    check_url(url, "Redis URL")
    import redis  # noqa: PLC0415 - here, so that a module without the redis package can import this file

    return redis.Redis.from_url(url, password=password_for(url), redis_connect_func=_authenticate, **options)
