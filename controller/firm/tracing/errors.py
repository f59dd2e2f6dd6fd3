"""Errors of the trace layer.

Every error names what it was reading (file or URL), and for malformed traces the trace and the
span, so that the culprit can be found in a file of thousands of spans.
"""

from __future__ import annotations

from typing import Any

from ansible_collections.firm.core.plugins.module_utils.errors import FirmError


class TraceError(FirmError):
    """Base class of the trace layer's errors."""


class TraceParseError(TraceError):
    """A trace document is malformed; the message names the source, the trace (and ``trace_id``
    holds it) in its one spelling (:func:`firm.tracing.parse.canonical_trace_id`) and the span."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        trace_id: str | None = None,
        span_id: str | None = None,
        fix: str = "",
        **details: Any,
    ) -> None:
        if trace_id is not None:
            # One spelling of a trace ID in every message, the one of the output (lower-case hex,
            # 16 digits when the high half is zero); parse imports this module, hence here.
            from firm.tracing.parse import canonical_trace_id  # noqa: PLC0415

            trace_id = canonical_trace_id(trace_id)
        where = []
        if source:
            where.append(source)
        if trace_id is not None:
            where.append(f"trace {trace_id}")
        if span_id is not None:
            where.append(f"span {span_id}")
        text = f"{', '.join(where)}: {message}" if where else message
        super().__init__(text, fix, source=source, trace_id=trace_id, span_id=span_id, **details)
        self.source = source
        self.trace_id = trace_id
        self.span_id = span_id


class JaegerError(TraceError):
    """The Jaeger query service could not be used; the message names the URL."""


class JaegerConnectionError(JaegerError):
    """No connection (refused, unknown host, timeout) after all retries."""


class JaegerHTTPError(JaegerError):
    """Jaeger answered with an HTTP error status; ``status`` holds it."""

    def __init__(self, message: str, status: int, fix: str = "", **details: Any) -> None:
        super().__init__(message, fix, status=status, **details)
        self.status = status


class JaegerResponseError(JaegerError):
    """Jaeger answered 200 but the body is not the JSON the query API returns."""
