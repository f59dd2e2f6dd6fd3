"""The trace layer: trace sources, critical paths and the per-instance features FIRM acts on.

- :mod:`firm.tracing.model`: :class:`Span` and :class:`Trace` (integer microseconds).
- :mod:`firm.tracing.parse`: Jaeger query-API JSON, Jaeger traces, Jaeger domain JSON, OTLP JSON.
- :mod:`firm.tracing.jaeger`: the :class:`TraceSource` protocol and a Jaeger query-API client.
- :mod:`firm.tracing.critical_path`: FIRM's Algorithm 1, fixed; Jaeger UI's sections.
- :mod:`firm.tracing.features`: RI, CI and critical-path share per service instance.
- :mod:`firm.tracing.stream`: files read in bounded batches (``firm critical-path``, ``firm features``).
"""

from firm.tracing.critical_path import (
    CriticalPath,
    PathStep,
    RootPath,
    Section,
    critical_path,
    critical_path_of,
    critical_path_walk,
    critical_paths,
)
from firm.tracing.errors import (
    JaegerConnectionError,
    JaegerError,
    JaegerHTTPError,
    JaegerResponseError,
    TraceError,
    TraceParseError,
)
from firm.tracing.features import InstanceFeatures, WindowFeatures, trace_features, window_features
from firm.tracing.jaeger import JaegerClient, TraceSource
from firm.tracing.model import RefType, Span, Trace
from firm.tracing.parse import (
    INSTANCE_KEYS,
    MAX_DURATION_US,
    MAX_TIME_US,
    TraceReader,
    canonical_trace_id,
    load_trace_files,
    load_traces,
    loads_traces,
    parse_duration_us,
    parse_traces,
)

__all__ = [
    "INSTANCE_KEYS",
    "MAX_DURATION_US",
    "MAX_TIME_US",
    "CriticalPath",
    "InstanceFeatures",
    "JaegerClient",
    "JaegerConnectionError",
    "JaegerError",
    "JaegerHTTPError",
    "JaegerResponseError",
    "PathStep",
    "RefType",
    "RootPath",
    "Section",
    "Span",
    "Trace",
    "TraceError",
    "TraceParseError",
    "TraceReader",
    "TraceSource",
    "WindowFeatures",
    "canonical_trace_id",
    "critical_path",
    "critical_path_of",
    "critical_path_walk",
    "critical_paths",
    "load_trace_files",
    "load_traces",
    "loads_traces",
    "parse_duration_us",
    "parse_traces",
    "trace_features",
    "window_features",
]
