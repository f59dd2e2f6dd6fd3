"""The loop's trace source on a cluster: Jaeger's query API, one window per control interval.

Each :meth:`JaegerWindow.read` asks Jaeger (``GET /api/traces`` per entry service) for the traces
that started in ``[start - horizon, end]`` and returns those whose root span *ended* in the window
(the loop's definition of a window's requests; the horizon catches the slow ones that began
earlier). Traces are kept by ID across windows (a later answer with more spans replaces an earlier
one) and dropped once they fall behind the horizon.

**Back-pressure.** At most one query is in flight. A read waits for it at most ``deadline_s``; if
Jaeger has not answered by then the read raises :class:`JaegerBehindError` (a :class:`FirmError`: the
loop audits the step as ``stale`` and decides nothing) and the next read waits for the *same*
query instead of sending another, so a slow Jaeger never gets a growing pile of requests. The
page size adapts: a query slower than ``deadline_s`` halves ``limit`` (down to ``min_limit``), an
answer that filled the page doubles it (up to ``max_limit``) and is reported in :attr:`truncated`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from ansible_collections.firm.core.plugins.module_utils.errors import FirmError
from firm.loop.observe import completed_in, root_span
from firm.tracing.jaeger import JaegerClient
from firm.tracing.model import Trace

log = logging.getLogger(__name__)


class JaegerBehindError(FirmError):
    """Jaeger has not answered the query under way in time; the window's traces are not known yet."""


@dataclass(frozen=True)
class _Fetched:
    traces: list[Trace]
    seconds: float
    full: bool
    """Some service's answer filled the page (traces may be missing)."""
    window: tuple[int, int]


class JaegerWindow:
    """Traces per control window from Jaeger (see the module's docstring).

    ``services`` are the entry services whose traces are searched (e.g. ``nginx-web-server``);
    ``horizon_s`` how long before a window a request may have started and still end in it (above
    the slowest request's latency); ``deadline_s`` how long a read waits for Jaeger.
    """

    def __init__(
        self,
        client: JaegerClient,
        services: Sequence[str],
        *,
        horizon_s: float = 10.0,
        deadline_s: float = 1.0,
        limit: int = 1000,
        min_limit: int = 100,
        max_limit: int = 20000,
    ) -> None:
        if not services:
            raise FirmError(
                "no entry service to search traces of",
                fix="name the service whose spans start each request, e.g. nginx-web-server",
            )
        if not 0 < min_limit <= limit <= max_limit:
            raise FirmError(
                f"limits {min_limit} <= {limit} <= {max_limit} do not hold",
                fix="give 0 < min_limit <= limit <= max_limit",
            )
        self.client = client
        self.services = list(services)
        self.horizon_us = int(horizon_s * 1e6)
        self.deadline_s = deadline_s
        self.limit, self.min_limit, self.max_limit = limit, min_limit, max_limit
        self.truncated = 0
        """Queries whose answer filled the page."""
        self.behind = 0
        """Reads that found Jaeger still busy with the query under way."""
        self.queries = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="firm-jaeger")
        self._inflight: Future[_Fetched] | None = None
        self._traces: dict[str, Trace] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _fetch(self, start_us: int, end_us: int, limit: int) -> _Fetched:
        began = time.monotonic()
        found: list[Trace] = []
        full = False
        for service in self.services:
            answer = self.client.search(service, start_us, end_us, limit=limit)
            full = full or len(answer) >= limit
            found += answer
        return _Fetched(found, time.monotonic() - began, full, (start_us, end_us))

    def read(self, start_us: int, end_us: int) -> list[Trace]:
        """Requests completed in ``[start_us, end_us]`` (us since the epoch), oldest first.

        Raises :class:`JaegerBehindError` when Jaeger has not answered within ``deadline_s`` and the
        Jaeger client's errors (:class:`firm.tracing.errors.JaegerError`) when it failed.
        """
        with self._lock:
            if self._inflight is None:
                self.queries += 1
                self._inflight = self._pool.submit(
                    self._fetch, start_us - self.horizon_us, end_us, self.limit
                )
            inflight = self._inflight
            try:
                fetched = inflight.result(timeout=self.deadline_s)
            except FutureTimeout:
                self.behind += 1
                self.limit = max(self.min_limit, self.limit // 2)
                raise JaegerBehindError(
                    f"Jaeger has not answered the trace query in {self.deadline_s:g} s "
                    f"({self.behind} reads behind); no new query is sent until it does",
                    fix="give Jaeger's query service more resources, or raise the loop's interval",
                ) from None
            finally:
                if inflight.done():
                    self._inflight = None
            self._merge(fetched, start_us)
            return sorted(completed_in(self._traces.values(), start_us, end_us), key=lambda t: t.start)

    def _merge(self, fetched: _Fetched, start_us: int) -> None:
        if fetched.full:
            self.truncated += 1
            log.warning("Jaeger's answer filled the page of %d traces; raising it", self.limit)
            self.limit = min(self.max_limit, self.limit * 2)
        elif fetched.seconds > self.deadline_s:
            self.limit = max(self.min_limit, self.limit // 2)
        for trace in fetched.traces:
            kept = self._traces.get(trace.trace_id)
            if kept is None or len(trace.spans) >= len(kept.spans):
                self._traces[trace.trace_id] = trace
        oldest = start_us - self.horizon_us
        for trace_id in [i for i, t in self._traces.items() if root_span(t).end < oldest]:
            del self._traces[trace_id]
