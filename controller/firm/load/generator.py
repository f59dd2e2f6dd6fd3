"""The open-loop load generator.

A dispatcher walks the schedule and hands each request, at its intended time, to a pool of
``connections`` workers, each owning one keep-alive connection. Nothing waits for a response before
the next request is due: when every connection is busy, requests queue (their wait counts in their
latency), and beyond ``max_in_flight`` they are not sent at all and count as ``overloaded``. A
request whose intended time is ``timeout_s`` in the past counts as ``timeout``, whether it was still
queued or on the wire.

Every window, a ticker turns the completions into :class:`WindowStats`, hands them (and the window's
request records) to the sink, the ``on_window`` callback and every :meth:`LoadGenerator.windows`
iterator.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from firm.load.config import LoadSpec, RedisOutput
from firm.load.errors import HttpProtocolError, LoadError
from firm.load.http import Endpoint, HttpConnection, HttpResponse
from firm.load.payload import PayloadFactory
from firm.load.schedule import TYPES, RateProfile, Schedule, rate_profile
from firm.load.sink import RecordSink, RedisSink, SinkStats
from firm.load.stats import (
    ERROR_CONNECTION,
    ERROR_OVERLOADED,
    ERROR_PROTOCOL,
    ERROR_TIMEOUT,
    Accounting,
    RequestRecord,
    Summary,
    WindowStats,
)
from firm.urls import redact_url

log = logging.getLogger(__name__)

START_DELAY_S = 0.05
"""Seconds between starting the run and the schedule's time zero (lets the workers start)."""
YIELD_EVERY = 32
"""When the dispatcher is behind, it still yields to the workers after this many requests."""

WindowCallback = Callable[[Sequence[WindowStats]], object]
_Item = tuple[float, int, bytes] | None


@dataclass
class _Run:
    loop: asyncio.AbstractEventLoop
    acct: Accounting
    start_mono: float
    start_epoch: float
    queue: asyncio.Queue[_Item]
    keep_records: bool
    pending: list[RequestRecord] = field(default_factory=list)
    in_flight: int = 0
    max_lag_s: float = 0.0
    dispatch_end_mono: float | None = None

    def record(self, type_index: int, due: float, now: float, status: int, trace_id: str, error: str) -> None:
        latency_ms = (now - due) * 1000.0
        self.acct.complete(type_index, now, latency_ms, error)
        if self.keep_records:
            self.pending.append(
                RequestRecord(
                    TYPES[type_index],
                    trace_id,
                    latency_ms,
                    status,
                    self.start_epoch + (due - self.start_mono),
                    error,
                )
            )


class LoadGenerator:
    """One run of ``spec``; ``await run()`` once.

    ``redis`` stores records and windows in Redis (or pass any :class:`RecordSink` as ``sink``);
    ``on_window`` is called in the event loop with each window's statistics (one per request type of
    the mix); :meth:`windows` gives the same as an async iterator.
    """

    def __init__(
        self,
        spec: LoadSpec,
        *,
        redis: RedisOutput | None = None,
        sink: RecordSink | None = None,
        on_window: WindowCallback | None = None,
    ) -> None:
        self.spec = spec
        self.profile: RateProfile = rate_profile(spec)  # reads and checks a trace file now
        self.seed: int = spec.seed if spec.seed is not None else secrets.randbits(32)
        self.endpoint = Endpoint.from_url(spec.url)
        self.sink: RecordSink | None = sink if sink is not None else (RedisSink(redis) if redis else None)
        self.on_window = on_window
        self._subscribers: list[asyncio.Queue[list[WindowStats] | None]] = []
        self._stopping = False
        self._started = False
        self._finished = False
        self._dispatcher: asyncio.Task[None] | None = None

    def windows(self) -> AsyncIterator[list[WindowStats]]:
        """Each window's statistics as the run produces them; ends with the run."""
        inbox: asyncio.Queue[list[WindowStats] | None] = asyncio.Queue()
        if self._finished:
            inbox.put_nowait(None)
        else:
            self._subscribers.append(inbox)
        return _drain(inbox)

    def stop(self) -> None:
        """End the run early (from the event loop's thread, e.g. a signal handler): no new request
        is sent; those in flight finish or time out, and the summary covers what was sent."""
        self._stopping = True
        if self._dispatcher is not None:
            self._dispatcher.cancel()

    async def run(self) -> Summary:
        """Send the load, then return the summary."""
        if self._started:
            raise LoadError("this LoadGenerator has already run", fix="make a new LoadGenerator for each run")
        self._started = True
        spec = self.spec
        if isinstance(self.sink, RedisSink):
            await asyncio.to_thread(self.sink.check)
        loop = asyncio.get_running_loop()
        cpu_start = time.process_time()
        seeds = np.random.SeedSequence(self.seed).spawn(2)
        schedule = Schedule(self.profile, spec.mix, spec.users, np.random.default_rng(seeds[0]))
        payloads = PayloadFactory(spec.users, random.Random(int(seeds[1].generate_state(1)[0])))
        start_mono = loop.time() + START_DELAY_S
        start_epoch = time.time() + START_DELAY_S
        slos = {rt: ms for rt in TYPES if (ms := spec.slo_ms(rt)) is not None}
        run = _Run(
            loop,
            Accounting(spec.mix.types(), slos, start_mono, start_epoch, spec.window_s),
            start_mono,
            start_epoch,
            asyncio.Queue(),
            keep_records=self.sink is not None,
        )
        workers = [asyncio.create_task(self._worker(run)) for _ in range(spec.connections)]
        ticker = asyncio.create_task(self._ticker(run))
        self._dispatcher = asyncio.create_task(self._dispatch(run, schedule, payloads))
        if self._stopping:  # stop() came before the run started
            self._dispatcher.cancel()
        try:
            try:
                await self._dispatcher
            except asyncio.CancelledError:
                if not self._stopping:
                    raise
            run.dispatch_end_mono = run.dispatch_end_mono or loop.time()
            for _ in workers:
                run.queue.put_nowait(None)
            await asyncio.gather(*workers)
        finally:
            for task in (*workers, ticker, self._dispatcher):
                task.cancel()
            await asyncio.gather(*workers, ticker, self._dispatcher, return_exceptions=True)
            end_mono = loop.time()
            self._emit(run, run.acct.close_windows(end_mono, final=True))
            self._finished = True
            for inbox in self._subscribers:
                inbox.put_nowait(None)
            sink_stats = await asyncio.to_thread(self.sink.close) if self.sink else SinkStats(0, 0, 0, 0)
        cpu_s = time.process_time() - cpu_start
        per_type, overall = run.acct.summaries()
        dispatch_span = max(run.dispatch_end_mono - start_mono, 1e-9)
        scheduled_rps = (
            self.profile.expected_requests() / self.profile.duration_s if self.profile.duration_s else 0.0
        )
        return Summary(
            redact_url(spec.url),  # what is shown and stored: never a password
            self.seed,
            max(0.0, end_mono - start_mono),
            scheduled_rps,
            per_type,
            overall,
            cpu_s,
            run.max_lag_s * 1000.0,
            sink_stats.records_written,
            sink_stats.records_dropped,
            sent_rps=overall.sent / min(dispatch_span, self.profile.duration_s) if overall.sent else 0.0,
        )

    async def _dispatch(self, run: _Run, schedule: Schedule, payloads: PayloadFactory) -> None:
        loop = run.loop
        acct = run.acct
        queue = run.queue
        start = run.start_mono
        limit = self.spec.max_in_flight
        behind = 0
        chunks = iter(schedule)
        chunk = next(chunks, None)
        while chunk is not None:
            upcoming = next(chunks, None)  # computed a chunk ahead, before its first request is due
            for offset, type_index, user in zip(
                chunk.times.tolist(), chunk.types.tolist(), chunk.users.tolist(), strict=True
            ):
                due = start + offset
                now = loop.time()
                if due > now:
                    await asyncio.sleep(due - now)
                    now = loop.time()
                    behind = 0
                else:
                    behind += 1
                    if behind >= YIELD_EVERY:
                        behind = 0
                        await asyncio.sleep(0)
                lag = now - due
                run.max_lag_s = max(run.max_lag_s, lag)
                body = payloads.body(TYPES[type_index], user)
                acct.sent(type_index)
                if run.in_flight >= limit:
                    run.record(type_index, due, now, 0, "", ERROR_OVERLOADED)
                    continue
                run.in_flight += 1
                queue.put_nowait((due, type_index, body))
            chunk = upcoming
        # The run lasts its length even when its last request is due earlier (a low rate): its
        # duration and sent rate are then those of the run, not of the span of its requests.
        end = start + self.profile.duration_s
        if loop.time() < end:
            await asyncio.sleep(end - loop.time())
        run.dispatch_end_mono = loop.time()

    async def _worker(self, run: _Run) -> None:
        loop = run.loop
        queue = run.queue
        timeout_s = self.spec.timeout_s
        heads = [self.endpoint.post_head(rt.path) for rt in TYPES]
        channel = _Channel(self.endpoint)
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                due, type_index, body = item
                status, trace_id, error = 0, "", ""
                if loop.time() >= due + timeout_s:
                    error = ERROR_TIMEOUT
                else:
                    try:
                        async with asyncio.timeout_at(due + timeout_s):
                            response = await channel.post(heads[type_index], body)
                    except TimeoutError:
                        error = ERROR_TIMEOUT
                    except HttpProtocolError as exc:
                        error = ERROR_PROTOCOL
                        log.debug("protocol error: %s", exc)
                    except (OSError, asyncio.IncompleteReadError) as exc:
                        error = ERROR_CONNECTION
                        log.debug("connection error: %s", exc)
                    else:
                        status = response.status
                        trace_id = response.headers.get("x-trace-id", "")
                        if not 200 <= status < 300:
                            error = f"http_{status}"
                    if status == 0:  # the exchange failed part-way: the connection is unusable
                        channel.discard()
                run.in_flight -= 1
                run.record(type_index, due, loop.time(), status, trace_id, error)
        finally:
            channel.discard()

    async def _ticker(self, run: _Run) -> None:
        loop = run.loop
        window_s = self.spec.window_s
        index = 1
        while True:
            await asyncio.sleep(max(0.0, run.start_mono + index * window_s - loop.time()))
            now = loop.time()
            self._emit(run, run.acct.close_windows(now))
            index = int((now - run.start_mono) / window_s) + 1

    def _emit(self, run: _Run, windows: list[list[WindowStats]]) -> None:
        records, run.pending = run.pending, []
        if self.sink is not None and (records or windows):
            self.sink.submit(records, [s for w in windows for s in w])
        for stats in windows:
            if self.on_window is not None:
                try:
                    self.on_window(stats)
                except Exception:
                    log.exception("the window callback failed")
            for inbox in self._subscribers:
                inbox.put_nowait(stats)


class _Channel:
    """A worker's keep-alive connection, opened on first use and replaced when it breaks."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.conn: HttpConnection | None = None

    async def post(self, head: bytes, body: bytes) -> HttpResponse:
        """Send one request; a reused connection that the server had closed is replaced once."""
        for attempt in (0, 1):
            conn = self.conn
            fresh = False
            if conn is None or not conn.usable():
                fresh = True
                self.discard()
                conn = self.conn = await HttpConnection.open(self.endpoint)
            try:
                response = await conn.post(head, body)
            except (ConnectionResetError, BrokenPipeError, asyncio.IncompleteReadError) as exc:
                self.discard()
                unanswered = not isinstance(exc, asyncio.IncompleteReadError) or not exc.partial
                if fresh or attempt or not unanswered:
                    raise
                continue
            if not conn.reusable:
                self.discard()
            return response
        raise AssertionError("unreachable: the second attempt returns or raises")

    def discard(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


async def _drain(inbox: asyncio.Queue[list[WindowStats] | None]) -> AsyncIterator[list[WindowStats]]:
    while (item := await inbox.get()) is not None:
        yield item


def run_load(
    spec: LoadSpec,
    *,
    redis: RedisOutput | None = None,
    sink: RecordSink | None = None,
    on_window: WindowCallback | None = None,
) -> Summary:
    """Run ``spec`` in a fresh event loop and return the summary."""
    return asyncio.run(LoadGenerator(spec, redis=redis, sink=sink, on_window=on_window).run())
