"""Per-instance resource telemetry: CPU, throttling, memory, disk and network, every second or faster.

- :mod:`firm.telemetry.model`: :class:`Instance` (what to sample) and :class:`Sample` (rates over an
  interval).
- :mod:`firm.telemetry.source`: the :class:`TelemetrySource` protocol the controller reads, the
  :class:`TelemetrySink` protocol samplers write to, and :class:`MemoryTelemetry` (both, in memory).
- :mod:`firm.telemetry.local`: :class:`LocalCollector`, cgroup counters through the actuation
  library's ``cgroup.read_stats`` and network bytes from sysfs or the instance's namespace.
- :mod:`firm.telemetry.sampler`: :class:`Sampler`, the loop in a thread of its own.
- :mod:`firm.telemetry.cpus`: :class:`CpuLoadReader`, each CPU's load over an interval, split into
  the managed instances' share and the rest (``foreign``), for the loop's placement.
- :mod:`firm.telemetry.redis_store`: :class:`RedisTelemetrySink` and :class:`RedisTelemetrySource`
  (streams ``firm:telemetry:<instance>``, set ``firm:telemetry:instances``).
"""

import logging

from firm.telemetry.local import Counters, InstanceGoneError, LocalCollector, rates
from firm.telemetry.model import Instance, InstanceError, Sample, TelemetryError
from firm.telemetry.redis_store import RedisTelemetrySink, RedisTelemetrySource
from firm.telemetry.sampler import Sampler, SamplerStats
from firm.telemetry.source import MemoryTelemetry, TelemetrySink, TelemetrySource

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "Counters",
    "Instance",
    "InstanceError",
    "InstanceGoneError",
    "LocalCollector",
    "MemoryTelemetry",
    "RedisTelemetrySink",
    "RedisTelemetrySource",
    "Sample",
    "Sampler",
    "SamplerStats",
    "TelemetryError",
    "TelemetrySink",
    "TelemetrySource",
    "rates",
]
