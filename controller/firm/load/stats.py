"""Latency accounting: per-request records, per-window statistics and the run's summary.

Latency is measured from a request's *intended* send time to the end of its response, so a client
that falls behind or a server that stalls is charged the full delay (no coordinated omission).
Percentiles cover every request that got a response (any status) or timed out (timeouts count with
the time waited, at least the timeout); requests that were never answered for another reason
(``overloaded``, ``connection``, ``protocol``) count as errors but have no latency. A window holds
the requests that *completed* in it. Percentiles are nearest-rank (the smallest value with at least
q % of the values at or below it).
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from firm.load.config import RequestType

ERROR_OVERLOADED = "overloaded"
ERROR_TIMEOUT = "timeout"
ERROR_CONNECTION = "connection"
ERROR_PROTOCOL = "protocol"
NO_LATENCY_ERRORS = frozenset({ERROR_OVERLOADED, ERROR_CONNECTION, ERROR_PROTOCOL})


def percentile(values: Sequence[float] | np.ndarray, q: float) -> float | None:
    """Nearest-rank ``q``-th percentile (0 < q <= 100); None for no values."""
    if len(values) == 0:
        return None
    return float(np.percentile(np.asarray(values, dtype=np.float64), q, method="inverted_cdf"))


class RequestRecord(NamedTuple):
    """What happened to one request (one entry of the requests stream)."""

    request_type: RequestType
    trace_id: str
    """The response's X-Trace-Id, or "" when there was none."""
    latency_ms: float
    """From the intended send time to the end of the response (or to the error)."""
    status: int
    """HTTP status, 0 when there was no response."""
    intended_at: float
    """Intended send time, epoch seconds."""
    error: str
    """"" on success; else overloaded, timeout, connection, protocol or http_<status>."""

    def as_fields(self) -> dict[str, str]:
        return {
            "type": self.request_type.value,
            "trace_id": self.trace_id,
            "latency_ms": f"{self.latency_ms:.3f}",
            "status": str(self.status),
            "intended_at": f"{self.intended_at:.6f}",
            "error": self.error,
        }


@dataclass(frozen=True)
class WindowStats:
    """One window of one request type (one entry of the latency stream)."""

    window_end: float
    """End of the window, epoch seconds."""
    request_type: RequestType
    count: int
    """Requests of this type that completed (or failed) in the window."""
    errors: int
    """Of those, the ones that did not get a 2xx response."""
    p50_ms: float | None
    """Median latency in milliseconds; None when no request of the window has a latency."""
    p99_ms: float | None
    """99th-percentile latency in milliseconds; None as for p50_ms."""
    slo_ms: float | None
    """The type's p99 objective in milliseconds; None when it has none."""
    violated: bool | None
    """p99 above the objective, or requests but no latency at all (all failed); None without SLO or
    without requests."""

    def as_fields(self) -> dict[str, str]:
        def num(value: float | None) -> str:
            return "" if value is None else f"{value:.3f}"

        return {
            "window_end": f"{self.window_end:.3f}",
            "type": self.request_type.value,
            "count": str(self.count),
            "errors": str(self.errors),
            "p50_ms": num(self.p50_ms),
            "p99_ms": num(self.p99_ms),
            "slo_ms": num(self.slo_ms),
            "violated": "" if self.violated is None else str(int(self.violated)),
        }

    def as_dict(self) -> dict[str, object]:
        return {
            "window_end": self.window_end,
            "type": self.request_type.value,
            "count": self.count,
            "errors": self.errors,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "slo_ms": self.slo_ms,
            "violated": self.violated,
        }


def window_stats(
    window_end: float,
    rt: RequestType,
    latencies_ms: Sequence[float],
    count: int,
    errors: int,
    slo_ms: float | None,
) -> WindowStats:
    """The statistics of one window from its latencies and counts, with the SLO verdict."""
    p50 = percentile(latencies_ms, 50)
    p99 = percentile(latencies_ms, 99)
    violated: bool | None = None
    if slo_ms is not None and count > 0:
        violated = p99 is None or p99 > slo_ms
    return WindowStats(window_end, rt, count, errors, p50, p99, slo_ms, violated)


@dataclass(frozen=True)
class TypeSummary:
    """The whole run for one request type (or ``all``)."""

    request_type: str
    sent: int
    """Requests that came due (including those refused as overloaded)."""
    succeeded: int
    """Requests answered with a 2xx status."""
    errors: Mapping[str, int]
    """Failed requests per error kind."""
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    slo_ms: float | None
    windows: int
    """Windows in which at least one request of this type completed."""
    violated_windows: int
    """Of those, the windows marked violated (for ``all``: any type violated)."""

    slo_violation_ratio: float | None
    """violated_windows / windows; None without an SLO (for ``all``: no type has one) or windows."""

    @property
    def success_ratio(self) -> float | None:
        return self.succeeded / self.sent if self.sent else None

    def as_dict(self) -> dict[str, object]:
        return {
            "type": self.request_type,
            "sent": self.sent,
            "succeeded": self.succeeded,
            "success_ratio": self.success_ratio,
            "errors": dict(sorted(self.errors.items())),
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
            "slo_ms": self.slo_ms,
            "windows": self.windows,
            "violated_windows": self.violated_windows,
            "slo_violation_ratio": self.slo_violation_ratio,
        }


@dataclass(frozen=True)
class Summary:
    """The result of a run."""

    url: str
    seed: int
    """The seed used (the given one, or the fresh one drawn)."""
    duration_s: float
    """Seconds from the run's start to its end: its length (--duration), longer while the last
    requests complete, shorter when it was stopped early."""
    scheduled_rps: float
    """The schedule's mean rate: requests it plans per second of its length (the --rate, or the
    trace's mean after scaling)."""
    per_type: tuple[TypeSummary, ...]
    overall: TypeSummary
    client_cpu_s: float
    """CPU seconds of the generator process during the run (all threads)."""
    max_dispatch_lag_ms: float
    """How late the client sent its latest request relative to its intended time."""
    records_written: int = 0
    """Request records stored in Redis."""
    records_dropped: int = 0
    """Request records that could not be stored (Redis down or too slow)."""
    sent_rps: float = 0.0
    """Requests actually sent per second of dispatching (below ``scheduled_rps`` when the run was
    stopped early or requests were refused as overloaded)."""

    @property
    def cpu_ms_per_request(self) -> float | None:
        return 1000 * self.client_cpu_s / self.overall.sent if self.overall.sent else None

    def as_dict(self) -> dict[str, object]:
        return {
            "url": self.url,
            "seed": self.seed,
            "duration_s": self.duration_s,
            "scheduled_rps": self.scheduled_rps,
            "sent_rps": self.sent_rps,
            "types": [t.as_dict() for t in self.per_type],
            "overall": self.overall.as_dict(),
            "client_cpu_s": self.client_cpu_s,
            "cpu_ms_per_request": self.cpu_ms_per_request,
            "max_dispatch_lag_ms": self.max_dispatch_lag_ms,
            "records_written": self.records_written,
            "records_dropped": self.records_dropped,
        }


@dataclass
class _WindowAcc:
    latencies: list[list[float]]
    counts: list[int]
    errors: list[int]


@dataclass
class _RunAcc:
    sent: int = 0
    succeeded: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: array[float] = field(default_factory=lambda: array("d"))
    windows: int = 0
    violated_windows: int = 0


class Accounting:
    """Collects completions into windows by completion time and into run totals.

    ``complete`` is on the hot path (a few list appends); ``close_windows`` turns every window that
    ended before ``now`` into :class:`WindowStats`, one per request type of the mix.
    """

    def __init__(
        self,
        types: Iterable[RequestType],
        slos: Mapping[RequestType, float],
        start_mono: float,
        start_epoch: float,
        window_s: float,
    ) -> None:
        self.types = list(types)
        self.slos = dict(slos)
        self.start_mono = start_mono
        self.start_epoch = start_epoch
        self.window_s = window_s
        self._index = {rt: i for i, rt in enumerate(RequestType)}
        self._windows: dict[int, _WindowAcc] = {}
        self._run = [_RunAcc() for _ in RequestType]
        self._overall_windows = 0
        self._overall_violated = 0

    def sent(self, type_index: int) -> None:
        self._run[type_index].sent += 1

    def complete(self, type_index: int, now_mono: float, latency_ms: float, error: str) -> None:
        """Account one request that ended at ``now_mono`` (loop time) with ``error`` ("" = success)."""
        window = int((now_mono - self.start_mono) / self.window_s)
        acc = self._windows.get(window)
        if acc is None:
            acc = self._windows[window] = _WindowAcc([[] for _ in RequestType], [0] * 3, [0] * 3)
        acc.counts[type_index] += 1
        run = self._run[type_index]
        if error:
            acc.errors[type_index] += 1
            run.errors[error] += 1
        else:
            run.succeeded += 1
        if error not in NO_LATENCY_ERRORS:
            acc.latencies[type_index].append(latency_ms)
            run.latencies.append(latency_ms)

    def close_windows(self, now_mono: float, final: bool = False) -> list[list[WindowStats]]:
        """Statistics of the windows that ended by ``now_mono`` (all of them when ``final``)."""
        current = math.inf if final else int((now_mono - self.start_mono) / self.window_s)
        done = sorted(w for w in self._windows if w < current)
        out: list[list[WindowStats]] = []
        for index in done:
            acc = self._windows.pop(index)
            end = self.start_epoch + (index + 1) * self.window_s
            stats = [
                window_stats(
                    end,
                    rt,
                    acc.latencies[self._index[rt]],
                    acc.counts[self._index[rt]],
                    acc.errors[self._index[rt]],
                    self.slos.get(rt),
                )
                for rt in self.types
            ]
            any_completed = False
            any_violated = False
            for s in stats:
                if s.count:
                    any_completed = True
                    run = self._run[self._index[s.request_type]]
                    run.windows += 1
                    run.violated_windows += bool(s.violated)
                    any_violated = any_violated or bool(s.violated)
            self._overall_windows += any_completed
            self._overall_violated += any_violated
            out.append(stats)
        return out

    def summaries(self) -> tuple[tuple[TypeSummary, ...], TypeSummary]:
        """Per type of the mix, and over all types."""
        per_type = tuple(
            self._summary(rt.value, self._run[self._index[rt]], self.slos.get(rt)) for rt in self.types
        )
        merged = _RunAcc(
            sent=sum(r.sent for r in self._run),
            succeeded=sum(r.succeeded for r in self._run),
            errors=sum((r.errors for r in self._run), Counter()),
            windows=self._overall_windows,
            violated_windows=self._overall_violated,
        )
        for r in self._run:
            merged.latencies.extend(r.latencies)
        return per_type, self._summary("all", merged, None, judged=any(rt in self.slos for rt in self.types))

    @staticmethod
    def _summary(name: str, run: _RunAcc, slo_ms: float | None, judged: bool | None = None) -> TypeSummary:
        values = np.frombuffer(run.latencies, dtype=np.float64) if len(run.latencies) else np.zeros(0)
        judged = slo_ms is not None if judged is None else judged
        ratio = run.violated_windows / run.windows if judged and run.windows else None
        return TypeSummary(
            name,
            run.sent,
            run.succeeded,
            dict(run.errors),
            percentile(values, 50),
            percentile(values, 99),
            float(values.max()) if values.size else None,
            slo_ms,
            run.windows,
            run.violated_windows,
            ratio,
        )
