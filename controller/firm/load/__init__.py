"""Open-loop load for the Social Network frontend, with latency windows and SLO verdicts.

- :mod:`firm.load.config`: :class:`LoadSpec`, :class:`Mix`, :class:`Slo`, rates, :class:`RedisOutput`.
- :mod:`firm.load.schedule`: rate traces and the exponential arrival process, computed ahead.
- :mod:`firm.load.generator`: :class:`LoadGenerator` (asyncio) and :func:`run_load`.
- :mod:`firm.load.stats`: request records, :class:`WindowStats`, :class:`Summary`.
- :mod:`firm.load.sink`: the Redis streams ``firm:requests`` and ``firm:latency``.
- :mod:`firm.load.http`: the minimal keep-alive HTTP/1.1 client.
"""

import logging

from firm.load.config import (
    ConstantRate,
    LoadSpec,
    Mix,
    RedisOutput,
    RequestType,
    Slo,
    TraceRate,
    parse_mix,
    parse_slos,
)
from firm.load.errors import HttpProtocolError, LoadError, LoadSpecError
from firm.load.generator import LoadGenerator, run_load
from firm.load.schedule import (
    RateProfile,
    Schedule,
    ScheduleChunk,
    arrival_times,
    interarrival_times,
    rate_profile,
    read_rate_trace,
    scale_trace,
)
from firm.load.sink import RecordSink, RedisSink, SinkStats
from firm.load.stats import RequestRecord, Summary, TypeSummary, WindowStats, percentile, window_stats

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "ConstantRate",
    "HttpProtocolError",
    "LoadError",
    "LoadGenerator",
    "LoadSpec",
    "LoadSpecError",
    "Mix",
    "RateProfile",
    "RecordSink",
    "RedisOutput",
    "RedisSink",
    "RequestRecord",
    "RequestType",
    "Schedule",
    "ScheduleChunk",
    "SinkStats",
    "Slo",
    "Summary",
    "TraceRate",
    "TypeSummary",
    "WindowStats",
    "arrival_times",
    "interarrival_times",
    "parse_mix",
    "parse_slos",
    "percentile",
    "rate_profile",
    "read_rate_trace",
    "run_load",
    "scale_trace",
    "window_stats",
]
