"""URLs in messages and logs: a password they carry is never shown (the modules' and the
controller's one rule)."""

from __future__ import annotations

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
