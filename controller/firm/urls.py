"""URLs in messages and logs: a password they carry is never shown."""

from __future__ import annotations

import socket
import sys
import urllib.parse


def redact_url(url: str) -> str:
    """``url`` with the password of its ``user:password@`` part replaced by ``***``, for messages and
    logs (a URL that cannot be parsed loses everything before its last ``@``)."""
    if "@" not in url:
        return url
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        scheme, sep, rest = url.partition("://")
        return (scheme + sep if sep else "") + "***@" + rest.rsplit("@", 1)[-1]
    if parts.password is None and "@" not in parts.netloc:
        return url
    user, _, host = parts.netloc.rpartition("@")
    shown = user.split(":", 1)[0] + (":***" if ":" in user else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{shown}@{host}"))


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
