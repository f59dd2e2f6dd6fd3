"""The contract between telemetry and its users: where samples go (:class:`TelemetrySink`) and where
the controller reads them (:class:`TelemetrySource`), plus an in-memory implementation of both."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from firm.telemetry.model import Sample


@runtime_checkable
class TelemetrySource(Protocol):
    """Per-instance samples over time, whatever collected them (local sampler, cAdvisor, kubelet)."""

    def instances(self) -> list[str]:
        """Names of the instances that have samples."""
        ...

    def latest(self, instance: str) -> Sample | None:
        """The most recent sample of ``instance``, or None when there is none."""
        ...

    def window(self, instance: str, start: float, end: float) -> list[Sample]:
        """Samples of ``instance`` whose timestamp is in ``[start, end]`` (epoch seconds), oldest first."""
        ...


class TelemetrySink(Protocol):
    """Receives each round of samples (one per instance that could be read)."""

    def write(self, samples: Sequence[Sample]) -> None: ...


class MemoryTelemetry:
    """The last ``retention`` samples of each instance in memory: a sink and a source.

    Thread-safe: a sampler thread writes while the controller reads.
    """

    def __init__(self, retention: int = 3600) -> None:
        if retention < 1:
            raise ValueError("retention must be at least one sample")
        self.retention = retention
        self._samples: dict[str, deque[Sample]] = {}
        self._lock = threading.Lock()

    def write(self, samples: Sequence[Sample]) -> None:
        with self._lock:
            for sample in samples:
                kept = self._samples.get(sample.instance)
                if kept is None:
                    kept = self._samples[sample.instance] = deque(maxlen=self.retention)
                kept.append(sample)

    def instances(self) -> list[str]:
        with self._lock:
            return sorted(self._samples)

    def latest(self, instance: str) -> Sample | None:
        with self._lock:
            kept = self._samples.get(instance)
            return kept[-1] if kept else None

    def window(self, instance: str, start: float, end: float) -> list[Sample]:
        with self._lock:
            return [s for s in self._samples.get(instance, ()) if start <= s.timestamp <= end]
