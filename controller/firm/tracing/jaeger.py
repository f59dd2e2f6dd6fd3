"""Trace sources: the :class:`TraceSource` protocol and a client of Jaeger's HTTP query API.

The client uses only the standard library (``urllib``). It searches traces by service (and
optionally operation) over a time window (``GET /api/traces``), fetches one trace by ID
(``GET /api/traces/{id}``) and lists services and operations. Connection failures, timeouts and
the answers that mean "try again" (HTTP 429, 500, 502, 503, 504) are retried with exponential
backoff (a ``Retry-After`` header is honoured, within the backoff cap); anything else fails at
once with an error naming the URL and what to do.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import math
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from firm.tracing.errors import (
    JaegerConnectionError,
    JaegerError,
    JaegerHTTPError,
    JaegerResponseError,
)
from firm.tracing.model import Trace
from firm.tracing.parse import TraceReader, canonical_trace_id, decode_json, query_error
from firm.urls import describe_transport, redact_url

__all__ = ["RETRY_STATUSES", "JaegerClient", "TraceSource"]

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
"""HTTP statuses after which a request is tried again."""


@runtime_checkable
class TraceSource(Protocol):
    """Anything that returns the traces of a service over a time window."""

    def fetch(
        self, service: str, start: int, end: int, limit: int = 100, operation: str | None = None
    ) -> list[Trace]:
        """Traces with a span of ``service`` (and ``operation``) that started in ``[start, end]``.

        ``start`` and ``end`` are microseconds since the epoch; at most ``limit`` traces.
        """
        ...


class JaegerClient:
    """Client of the Jaeger query service (``jaeger-query``, default port 16686).

    ``base_url`` is the query service's root (``http://jaeger:16686``, or with a path prefix
    when it is served under one). ``timeout`` is per attempt, in seconds; ``retries`` is how many
    times a failed attempt is repeated; the wait before retry ``k`` is ``backoff * 2**k``
    seconds, at most ``max_backoff``. What the answers' traces lose (refused spans, the query API's
    per-trace errors) goes to ``warn``, one message each; the default logs it as a warning.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        sleep: Callable[[float], None] = time.sleep,
        warn: Callable[[str], object] | None = None,
    ) -> None:
        shown = redact_url(base_url)
        fix = "give the query service's address, e.g. http://localhost:16686 or http://[::1]:16686"
        if any(c.isspace() or not c.isprintable() for c in base_url):
            raise JaegerError(f"not a valid URL: {shown!r} holds a space or a control character", fix)
        try:
            parsed = urllib.parse.urlsplit(base_url)
            parsed.port  # noqa: B018 - reading it validates the port
        except ValueError as err:
            raise JaegerError(f"not a valid URL: {shown!r} ({err})", fix) from None
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise JaegerError(f"not an http(s) URL: {shown!r}", fix)
        if not (math.isfinite(timeout) and timeout > 0) or retries < 0 or not backoff >= 0:
            raise ValueError("timeout must be finite and > 0, retries and backoff >= 0")
        self._authorization: str | None = None
        if parsed.username is not None or parsed.password is not None:  # a proxy with basic authentication
            user = urllib.parse.unquote(parsed.username or "")
            password = urllib.parse.unquote(parsed.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            self._authorization = f"Basic {token}"
            parsed = parsed._replace(netloc=parsed.netloc.rpartition("@")[2])
        self.base_url = urllib.parse.urlunsplit(parsed).rstrip("/")
        """The query service's root, without credentials (so messages and logs never show them)."""
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._sleep = sleep
        self._warn: Callable[[str], object] = warn or (lambda message: log.warning("%s", message))

    # -- the API ------------------------------------------------------------------------------

    def services(self) -> list[str]:
        """Names of the services Jaeger has traces of."""
        return self._string_list(self._get("/api/services", {}))

    def operations(self, service: str) -> list[str]:
        """Operation names of ``service``."""
        path = "/api/services/" + urllib.parse.quote(service, safe="") + "/operations"
        return self._string_list(self._get(path, {}))

    def search(
        self,
        service: str,
        start: int,
        end: int,
        *,
        limit: int = 100,
        operation: str | None = None,
        tags: Mapping[str, str] | None = None,
        min_duration_us: int | None = None,
    ) -> list[Trace]:
        """Traces of ``service`` (``operation``) started in ``[start, end]`` (us since epoch)."""
        if not service:
            raise ValueError("a service name is required")
        if end < start:
            raise ValueError(f"the window ends ({end}) before it starts ({start})")
        if limit < 1:
            raise ValueError(f"limit must be >= 1, not {limit}")
        params: dict[str, str] = {
            "service": service,
            "start": str(int(start)),
            "end": str(int(end)),
            "limit": str(int(limit)),
        }
        if operation:
            params["operation"] = operation
        if tags:
            params["tags"] = json.dumps(dict(tags), sort_keys=True)
        if min_duration_us is not None:
            params["minDuration"] = f"{int(min_duration_us)}us"
        return self._traces("/api/traces", params)

    def fetch(
        self, service: str, start: int, end: int, limit: int = 100, operation: str | None = None
    ) -> list[Trace]:
        """:class:`TraceSource` interface: :meth:`search`."""
        return self.search(service, start, end, limit=limit, operation=operation)

    def trace(self, trace_id: str) -> Trace:
        """One trace by ID."""
        traces = self._traces("/api/traces/" + urllib.parse.quote(trace_id, safe=""), {})
        if not traces:
            raise JaegerResponseError(
                f"Jaeger at {self.base_url} returned no trace {canonical_trace_id(trace_id)}"
            )
        return traces[0]

    # -- transport ----------------------------------------------------------------------------

    def _url(self, path: str, params: Mapping[str, str]) -> str:
        query = urllib.parse.urlencode(params)
        return f"{self.base_url}{path}" + (f"?{query}" if query else "")

    def _traces(self, path: str, params: Mapping[str, str]) -> list[Trace]:
        url = self._url(path, params)
        doc = self._get(path, params)
        if not isinstance(doc, dict) or "data" not in doc:
            raise JaegerResponseError(
                f'Jaeger at {url} answered JSON without a "data" field',
                "check that the URL is the query service (jaeger-query), not the collector",
            )
        if doc["data"] is None:
            return []
        reader = TraceReader()
        reader.read_document(doc, source=url)
        traces = reader.traces()
        for message in reader.diagnostics:
            self._warn(message)
        return traces

    @staticmethod
    def _string_list(doc: Any) -> list[str]:
        data = doc.get("data") if isinstance(doc, dict) else None
        return [str(x) for x in data] if isinstance(data, list) else []

    def _get(self, path: str, params: Mapping[str, str]) -> Any:
        """GET ``path`` and decode its JSON, retrying what may pass."""
        url = self._url(path, params)
        attempts = self.retries + 1
        last: JaegerError | None = None
        for attempt in range(attempts):
            if attempt:
                delay = min(self.backoff * 2 ** (attempt - 1), self.max_backoff)
                if isinstance(last, JaegerHTTPError) and last.details.get("retry_after") is not None:
                    delay = min(max(float(last.details["retry_after"]), delay), self.max_backoff)
                log.info(
                    "retrying %s in %.2f s (attempt %d of %d): %s", url, delay, attempt + 1, attempts, last
                )
                self._sleep(delay)
            try:
                body = self._once(url)
            except JaegerHTTPError as err:
                if err.status not in RETRY_STATUSES:
                    raise
                last = err
                continue
            except JaegerConnectionError as err:
                last = err
                continue
            try:
                return decode_json(body)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                snippet = body[:120].decode("utf-8", "replace")
                raise JaegerResponseError(
                    f"Jaeger at {url} returned invalid JSON ({err}); the answer begins {snippet!r}",
                    "check that the URL is the query service's API, not its UI or a proxy page",
                ) from err
        assert last is not None
        message = f"{last.message} (gave up after {attempts} attempt{'s' if attempts > 1 else ''})"
        if isinstance(last, JaegerHTTPError):
            raise JaegerHTTPError(message, last.status, last.fix) from last
        raise JaegerConnectionError(message, last.fix) from last

    def _once(self, url: str) -> bytes:
        headers = {"Accept": "application/json"}
        if self._authorization is not None:
            headers["Authorization"] = self._authorization
        req = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                data: bytes = resp.read()
                return data
        except urllib.error.HTTPError as err:
            raw = err.read() if err.fp is not None else b""
            detail = _error_message(raw)
            retry_after = err.headers.get("Retry-After") if err.headers else None
            try:
                retry_s: float | None = float(retry_after) if retry_after is not None else None
            except ValueError:
                retry_s = None
            fix = {
                404: "check the URL: the query API lives under /api on the query service (port 16686)",
                400: "check the service, operation and time window",
            }.get(err.code, "check the Jaeger query service's logs")
            raise JaegerHTTPError(
                f"Jaeger at {url} answered HTTP {err.code} {err.reason}" + (f": {detail}" if detail else ""),
                err.code,
                fix,
                retry_after=retry_s,
            ) from err
        except TimeoutError as err:
            raise JaegerConnectionError(
                f"Jaeger at {url} did not answer within {self.timeout:g} s",
                "check that the query service is up, or raise the timeout",
            ) from err
        except urllib.error.URLError as err:
            reason = err.reason
            if isinstance(reason, TimeoutError | socket.timeout):
                raise JaegerConnectionError(
                    f"Jaeger at {url} did not answer within {self.timeout:g} s",
                    "check that the query service is up, or raise the timeout",
                ) from err
            if isinstance(reason, ConnectionRefusedError):
                text = "connection refused"
            elif isinstance(reason, socket.gaierror):
                text = f"unknown host ({reason.strerror})"
            else:
                text = describe_error(reason) if isinstance(reason, BaseException) else str(reason)
            raise JaegerConnectionError(
                f"cannot reach Jaeger at {url}: {text}",
                "check the URL and that jaeger-query is running and reachable (default port 16686)",
            ) from err
        except (ConnectionError, OSError, http.client.HTTPException) as err:
            raise JaegerConnectionError(
                f"cannot reach Jaeger at {url}: {describe_error(err)}",
                "check the URL and that jaeger-query is running and reachable (default port 16686)",
            ) from err


def describe_error(err: BaseException) -> str:
    """A transport error in words, without Python's spelling (``[Errno 104]``, class names)."""
    if isinstance(err, http.client.RemoteDisconnected):
        return "the connection closed without an answer"
    if isinstance(err, http.client.HTTPException):
        return f"not an HTTP answer ({err or type(err).__name__})"
    return describe_transport(err)


def _error_message(raw: bytes) -> str:
    """The message of a Jaeger error body (``{"errors": [{"code", "msg"}]}``), else its text."""
    try:
        doc = decode_json(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return raw[:200].decode("utf-8", "replace").strip()
    if isinstance(doc, dict) and isinstance(doc.get("errors"), list):
        return "; ".join(query_error(e, with_code=False) for e in doc["errors"])  # the HTTP status says it
    return raw[:200].decode("utf-8", "replace").strip()
