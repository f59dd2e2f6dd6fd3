"""OpenTelemetry for the testbed's services: W3C context propagation, spans into the trace store.

Each service instance has a TracerProvider whose resource names the service and the instance
(``host.name`` = the instance, as a container's hostname would). Finished spans are batched and
appended, as compact JSON, to the Redis stream the trace store reads (``firm:spans``, bounded).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

import redis
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger(__name__)

SPANS_STREAM = "firm:spans"
PROPAGATOR = TraceContextTextMapPropagator()
_KINDS = {
    trace.SpanKind.SERVER: "server",
    trace.SpanKind.CLIENT: "client",
    trace.SpanKind.INTERNAL: "internal",
    trace.SpanKind.PRODUCER: "producer",
    trace.SpanKind.CONSUMER: "consumer",
}


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """The stored form of a finished span (times in microseconds since the epoch)."""
    context = span.get_span_context()
    assert context is not None  # a finished span always has one
    parent = span.parent
    resource = span.resource.attributes
    start = (span.start_time or 0) // 1000
    return {
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
        "parent_id": format(parent.span_id, "016x") if parent is not None else None,
        "name": span.name,
        "kind": _KINDS.get(span.kind, ""),
        "start_us": start,
        "duration_us": max(0, (span.end_time or 0) // 1000 - start),
        "service": resource.get("service.name", ""),
        "instance": resource.get("host.name", ""),
        "error": not span.status.is_ok,
        "attributes": {
            k: v for k, v in (span.attributes or {}).items() if isinstance(v, (str, int, float, bool))
        },
    }


class RedisSpanExporter(SpanExporter):
    """Appends span records to the trace store's stream, trimming it to about ``retention`` spans."""

    def __init__(self, client: redis.Redis, retention: int) -> None:
        self.client = client
        self.retention = retention

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        pipe = self.client.pipeline(transaction=False)
        for span in spans:
            pipe.xadd(
                SPANS_STREAM,
                {"s": json.dumps(span_record(span), separators=(",", ":"))},
                maxlen=self.retention,
                approximate=True,
            )
        try:
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("could not store %d spans: %s", len(spans), exc)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.client.close()


def tracer_for(
    service: str, instance: str, client: redis.Redis, retention: int, sampling: float = 1.0
) -> tuple[trace.Tracer, TracerProvider]:
    """A tracer for one service instance; the provider must be shut down to flush its spans."""
    resource = Resource.create(
        {"service.name": service, "service.instance.id": instance, "host.name": instance}
    )
    provider = TracerProvider(resource=resource, sampler=ParentBased(TraceIdRatioBased(sampling)))
    provider.add_span_processor(
        BatchSpanProcessor(
            RedisSpanExporter(client, retention), schedule_delay_millis=500, max_export_batch_size=512
        )
    )
    return provider.get_tracer("firm.testbed"), provider


def extract(headers: Mapping[str, str]) -> otel_context.Context:
    """The caller's trace context from W3C ``traceparent`` / ``tracestate`` headers."""
    return PROPAGATOR.extract(carrier=headers)


def inject(headers: MutableMapping[str, str]) -> None:
    """Add the current trace context to outgoing headers."""
    PROPAGATOR.inject(carrier=headers)
