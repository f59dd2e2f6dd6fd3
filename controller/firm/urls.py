"""URLs in messages and logs: a password they carry is never shown."""

from __future__ import annotations

import socket
import sys
import urllib.parse

from ansible_collections.firm.core.plugins.module_utils.urls import redact_url

__all__ = ["describe_transport", "http_url_problem", "redact_url"]


def http_url_problem(url: str, *, whole: bool = False) -> str | None:
    """What keeps ``url`` from being the base URL of an http(s) service firm can call, as a predicate
    for ``f"{redact_url(url)!r} {problem}"``: it ``holds a space or a control character``, ``is not a
    URL (...)`` (unbalanced brackets), ``has an invalid port (...)`` (no number, out of range), ``is not
    an http(s) URL with a host``, ``names port 0``, or ``has a query or a fragment`` (firm appends its own paths and
    queries); None when it is one. The one check of such URLs (options, configuration files, specs);
    it names no part of the URL, so that no password is shown. ``whole``: the URL is called as it is
    (a metrics endpoint), so a query is allowed."""
    if any(c.isspace() or not c.isprintable() for c in url):
        return "holds a space or a control character"
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:
        return f"is not a URL ({exc})"
    try:
        port = parts.port
    except ValueError as exc:
        return f"has an invalid port ({exc}); a port is a number from 1 to 65535"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "is not an http(s) URL with a host"
    if port == 0:
        return "names port 0"
    if not whole and (parts.query or parts.fragment or url.endswith(("?", "#"))):
        return "has a query or a fragment (?...#...)"
    return None


def describe_transport(exc: BaseException, *, where: bool = True) -> str:
    """Why a connection failed, in words (``127.0.0.1:1: connection refused, after retrying``),
    without the wording of the library underneath (urllib3's "Max retries exceeded with url",
    "NewConnectionError(...)", Python's ``[Errno 111]``, urllib's ``<urlopen error ...>``).
    ``where`` False leaves out the host and port (when the message names the URL already)."""
    errors = sys.modules.get("urllib3.exceptions")
    if errors is not None:
        if isinstance(exc, errors.MaxRetryError):
            pool = getattr(exc, "pool", None)
            host = ""
            if where and pool is not None and getattr(pool, "host", None):
                host = f"{pool.host}:{pool.port}"
            reason = describe_transport(exc.reason) if exc.reason is not None else "no usable answer"
            return f"{host + ': ' if host else ''}{reason}, after retrying"
        if isinstance(exc, errors.NameResolutionError):  # before NewConnectionError, its base
            return "unknown host"
        if isinstance(exc, errors.NewConnectionError | errors.ProtocolError):
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, OSError):
                return describe_transport(cause)
            return (
                "the connection failed"
                if isinstance(exc, errors.NewConnectionError)
                else "the connection broke"
            )
        if isinstance(exc, errors.TimeoutError):
            return "no answer in time"
        if isinstance(exc, errors.SSLError):
            return "the TLS handshake failed (check the certificate authority and the server name)"
    url_errors = sys.modules.get("urllib.error")  # looked up, not imported: firm.cli imports this module
    if url_errors is not None and isinstance(exc, url_errors.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if url_errors is not None and isinstance(exc, url_errors.URLError):
        reason = exc.reason
        return describe_transport(reason) if isinstance(reason, BaseException) else str(reason)
    ssl = sys.modules.get("ssl")
    if ssl is not None and isinstance(exc, ssl.SSLError):
        return "the TLS handshake failed (check the certificate authority and the server name)"
    if isinstance(exc, socket.gaierror):
        return "unknown host"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    return str(exc) or type(exc).__name__
