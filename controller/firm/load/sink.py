"""Storing request records and latency windows in Redis, off the hot path.

The generator hands over one batch per window (a list it already built); a writer thread turns it
into pipelined ``XADD ... MAXLEN ~ N`` commands. A Redis that is down, restarting or slow never
stalls the load: batches wait in memory (:class:`PendingWrites`, at most ``max_pending_batches``) and
are resent, oldest first, as soon as Redis answers again; only beyond that bound is the oldest batch
dropped, and counted. Delivery is at least once: a pipeline cut off half-way is sent again whole.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import redis
from redis.typing import EncodableT, FieldT

from ansible_collections.firm.core.plugins.module_utils import redis_auth
from ansible_collections.firm.core.plugins.module_utils.redis_buffer import PendingWrites
from firm.load.config import RedisOutput
from firm.load.errors import LoadError
from firm.load.stats import RequestRecord, WindowStats

log = logging.getLogger(__name__)

PIPELINE_COMMANDS = 1000
RETRY_INTERVAL_S = 0.5
"""Seconds between attempts to resend waiting batches while no new batch arrives."""

Batch = tuple[Sequence[RequestRecord], Sequence[WindowStats]]


@dataclass(frozen=True)
class SinkStats:
    """What a sink stored and what it had to give up (counts of request records, windows and failed writes)."""

    records_written: int
    records_dropped: int
    windows_written: int
    errors: int
    records_resent: int = 0
    """Records written after Redis had refused them once (it was down or restarting)."""


class RecordSink(Protocol):
    """Receives each window's request records and statistics; must not block."""

    def submit(self, records: Sequence[RequestRecord], windows: Sequence[WindowStats]) -> None: ...

    def close(self, timeout_s: float = 10.0) -> SinkStats: ...


class RedisSink:
    """Writes to the streams of a :class:`RedisOutput` from a thread of its own.

    The URL needs no password for firm's own Redis: :func:`redis_auth.password_for` finds it.
    """

    def __init__(self, output: RedisOutput, client: redis.Redis | None = None) -> None:
        self.output = output
        self.client = client or redis_auth.connect(output.url, socket_timeout=5, socket_connect_timeout=5)
        self._queue: queue.Queue[Batch | None] = queue.Queue(maxsize=output.max_pending_batches)
        self._pending: PendingWrites[Batch] = PendingWrites(output.max_pending_batches, chunk=20)
        self._lock = threading.Lock()
        self._written = self._dropped = self._windows = self._errors = self._resent = 0
        self._thread: threading.Thread | None = None
        self._close_deadline = 0.0
        self._outage = False
        self._refused: set[int] = set()  # id() of waiting batches that Redis refused once

    def check(self) -> None:
        """Raise :class:`LoadError` when Redis does not answer (call before the load starts)."""
        try:
            self.client.ping()
        except redis.RedisError as exc:
            raise LoadError(
                f"Redis at {self.output.url} does not answer: {exc}",
                fix="start it (make services) or give the right --redis URL",
            ) from exc

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="firm-load-redis", daemon=True)
            self._thread.start()

    def submit(self, records: Sequence[RequestRecord], windows: Sequence[WindowStats]) -> None:
        self.start()
        while True:
            try:
                self._queue.put_nowait((records, windows))
                return
            except queue.Full:
                try:
                    old = self._queue.get_nowait()
                except queue.Empty:
                    continue
                if old is not None:
                    self._count_dropped([old], "Redis is too slow")

    def close(self, timeout_s: float = 10.0) -> SinkStats:
        """Write what waits (retrying a Redis that is down for at most ``timeout_s``), stop, return the counts."""
        if self._thread is not None:
            self._close_deadline = time.monotonic() + timeout_s
            self._queue.put(None)
            self._thread.join(timeout_s + 5.0)
            if self._thread.is_alive():
                log.warning("Redis writer did not finish within %.0f s; the rest is dropped", timeout_s)
            leftovers: list[Batch] = []
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    leftovers.append(item)
            self._count_dropped(leftovers + self._pending.drop_all(), "Redis did not answer before the end")
        with self._lock:
            return SinkStats(self._written, self._dropped, self._windows, self._errors, self._resent)

    def _count_dropped(self, batches: Sequence[Batch], why: str) -> None:
        count = sum(len(records) for records, _ in batches)
        if count:
            with self._lock:
                self._dropped += count
            log.warning("%s: dropped %d request records", why, count)

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=RETRY_INTERVAL_S)
            except queue.Empty:
                if len(self._pending):
                    self._flush()
                continue
            if item is None:
                while not self._flush() and time.monotonic() < self._close_deadline:
                    time.sleep(RETRY_INTERVAL_S)
                return
            self._count_dropped(
                self._pending.add([item]), "more batches waited for Redis than max_pending_batches"
            )
            self._flush()

    def _flush(self) -> bool:
        """Write every waiting batch, oldest first; False when Redis failed (they keep waiting)."""
        done = self._pending.flush(self._write_batches, retry_on=(redis.RedisError,))
        if not done and not self._outage:
            self._outage = True
            log.warning(
                "cannot write request records to Redis at %s; %d batches wait and are resent when it answers",
                self.output.url,
                len(self._pending),
            )
        elif done and self._outage:
            self._outage = False
            log.warning(
                "Redis at %s answers again; the waiting request records were written", self.output.url
            )
        return done

    def _write_batches(self, batches: list[Batch]) -> None:
        out = self.output
        pipe = self.client.pipeline(transaction=False)
        pending = 0
        try:
            for records, windows in batches:
                for record in records:
                    pipe.xadd(
                        out.requests_key,
                        _fields(record.as_fields()),
                        maxlen=out.requests_maxlen,
                        approximate=True,
                    )
                    pending += 1
                    if pending >= PIPELINE_COMMANDS:
                        pipe.execute()
                        pending = 0
                for stats in windows:
                    pipe.xadd(
                        out.latency_key,
                        _fields(stats.as_fields()),
                        maxlen=out.latency_maxlen,
                        approximate=True,
                    )
                    pending += 1
            if pending:
                pipe.execute()
        except redis.RedisError:
            with self._lock:
                self._errors += 1
            self._refused.update(id(batch) for batch in batches)
            raise
        with self._lock:
            for batch in batches:
                self._written += len(batch[0])
                self._windows += len(batch[1])
                if id(batch) in self._refused:
                    self._refused.discard(id(batch))
                    self._resent += len(batch[0])


def _fields(values: dict[str, str]) -> dict[FieldT, EncodableT]:
    return {key: value for key, value in values.items()}
