"""The sampling loop: every interval, one sample per instance, handed to the sinks.

It runs in a thread of its own (``start()`` / ``stop()``, or as a context manager). An instance
whose cgroup disappears is skipped (and logged once) until it comes back; a sink that fails (Redis
down) is logged and retried next round. Its own CPU time is measured per round, so its cost on a
busy machine is known.
"""

from __future__ import annotations

import logging
import resource
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType

from firm.telemetry.local import InstanceGoneError, LocalCollector
from firm.telemetry.model import Instance, Sample, TelemetryError
from firm.telemetry.source import TelemetrySink

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplerStats:
    """What the sampler did and what it cost."""

    rounds: int
    """Sampling rounds run."""
    samples: int
    """Samples handed to the sinks."""
    skipped: int
    """Instance readings skipped because the instance's cgroup was gone."""
    sink_errors: int
    """Rounds a sink refused."""
    cpu_s: float
    """CPU seconds of the sampling rounds (the sampler's thread, plus any ``ip`` it ran)."""
    instance_readings: int
    """Instance readings attempted over all rounds."""

    @property
    def cpu_ms_per_round(self) -> float | None:
        return 1000 * self.cpu_s / self.rounds if self.rounds else None

    @property
    def cpu_ms_per_instance(self) -> float | None:
        return 1000 * self.cpu_s / self.instance_readings if self.instance_readings else None


class Sampler:
    """Samples ``instances`` every ``interval_s`` seconds into ``sinks``."""

    def __init__(
        self,
        instances: Iterable[Instance] = (),
        *,
        sinks: Sequence[TelemetrySink] = (),
        collector: LocalCollector | None = None,
        interval_s: float = 1.0,
    ) -> None:
        if interval_s <= 0:
            raise TelemetryError(
                f"interval_s {interval_s!r} is not positive", fix="give seconds above 0, e.g. 1"
            )
        self.interval_s = interval_s
        self.sinks = list(sinks)
        self.collector = collector or LocalCollector()
        self._instances: dict[str, Instance] = {}
        self._gone: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rounds = self._samples = self._skipped = self._sink_errors = self._readings = 0
        self._cpu_s = 0.0
        for instance in instances:
            self.add(instance)

    def add(self, instance: Instance) -> None:
        """Sample ``instance`` from the next round on (replaces one of the same name)."""
        with self._lock:
            if instance.name in self._instances:
                self.collector.forget(instance.name)
            self._instances[instance.name] = instance

    def remove(self, name: str) -> None:
        """Stop sampling the instance called ``name``."""
        with self._lock:
            self._instances.pop(name, None)
            self._gone.discard(name)
            self.collector.forget(name)

    def instances(self) -> list[Instance]:
        with self._lock:
            return list(self._instances.values())

    def sample_once(self) -> list[Sample]:
        """One round: a sample per readable instance (none for a first reading), written to the sinks."""
        cpu_start = time.thread_time()
        children_start = _children_cpu()
        samples: list[Sample] = []
        with self._lock:
            instances = list(self._instances.values())
            for instance in instances:
                try:
                    sample = self.collector.sample(instance)
                except InstanceGoneError as exc:
                    self._skipped += 1
                    if instance.name not in self._gone:
                        log.warning("skipping %s: %s", instance.name, exc.message)
                        self._gone.add(instance.name)
                        self.collector.forget(instance.name)
                    continue
                if instance.name in self._gone:
                    log.info("%s is back", instance.name)
                    self._gone.discard(instance.name)
                if sample is not None:
                    samples.append(sample)
        for sink in self.sinks:
            try:
                sink.write(samples)
            except Exception as exc:  # a sink must never stop the sampling
                with self._lock:
                    self._sink_errors += 1
                    first = self._sink_errors == 1
                log.log(
                    logging.WARNING if first else logging.DEBUG,
                    "%s could not store samples: %s",
                    type(sink).__name__,
                    exc,
                )
        with self._lock:
            self._rounds += 1
            self._readings += len(instances)
            self._samples += len(samples)
            self._cpu_s += time.thread_time() - cpu_start + _children_cpu() - children_start
        return samples

    def stats(self) -> SamplerStats:
        with self._lock:
            return SamplerStats(
                self._rounds, self._samples, self._skipped, self._sink_errors, self._cpu_s, self._readings
            )

    def start(self) -> None:
        """Sample in a background thread until :meth:`stop`."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="firm-telemetry", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the thread (the round in progress finishes) and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("the sampler thread did not stop within %.1f s", timeout_s)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> Sampler:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _run(self) -> None:
        deadline = time.monotonic()
        while not self._stop.is_set():
            try:
                self.sample_once()
            except Exception:
                log.exception("a sampling round failed")
            deadline += self.interval_s
            now = time.monotonic()
            if deadline < now:  # a round took longer than the interval: skip the missed ticks
                deadline += self.interval_s * (int((now - deadline) / self.interval_s) + 1)
            self._stop.wait(deadline - now)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
