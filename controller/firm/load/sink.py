"""Storing request records and latency windows in Redis, off the hot path.

The generator hands over one batch per window (a list it already built); a writer thread turns it
into pipelined ``XADD ... MAXLEN ~ N`` commands. A Redis that is down or slow never stalls the load:
batches wait in a bounded queue, and when it is full the oldest is dropped and counted.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import redis
from redis.typing import EncodableT, FieldT

from firm.load.config import RedisOutput
from firm.load.errors import LoadError
from firm.load.stats import RequestRecord, WindowStats

log = logging.getLogger(__name__)

PIPELINE_COMMANDS = 1000


@dataclass(frozen=True)
class SinkStats:
    """What a sink stored and what it had to give up."""

    records_written: int
    records_dropped: int
    windows_written: int
    errors: int


class RecordSink(Protocol):
    """Receives each window's request records and statistics; must not block."""

    def submit(self, records: Sequence[RequestRecord], windows: Sequence[WindowStats]) -> None: ...

    def close(self, timeout_s: float = 10.0) -> SinkStats: ...


class RedisSink:
    """Writes to the streams of a :class:`RedisOutput` from a thread of its own."""

    def __init__(self, output: RedisOutput, client: redis.Redis | None = None) -> None:
        self.output = output
        self.client = client or redis.Redis.from_url(output.url, socket_timeout=5, socket_connect_timeout=5)
        self._queue: queue.Queue[tuple[Sequence[RequestRecord], Sequence[WindowStats]] | None] = queue.Queue(
            maxsize=output.max_pending_batches)
        self._lock = threading.Lock()
        self._written = self._dropped = self._windows = self._errors = 0
        self._thread: threading.Thread | None = None

    def check(self) -> None:
        """Raise :class:`LoadError` when Redis does not answer (call before the load starts)."""
        try:
            self.client.ping()
        except redis.RedisError as exc:
            raise LoadError(f"Redis at {self.output.url} does not answer: {exc}",
                            fix="start it (make services) or give the right --redis URL") from exc

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
                    with self._lock:
                        self._dropped += len(old[0])
                    log.warning("Redis is too slow: dropped %d request records", len(old[0]))

    def close(self, timeout_s: float = 10.0) -> SinkStats:
        """Write what is queued (waiting at most ``timeout_s``), stop the thread, return the counts."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("Redis writer did not finish within %.0f s; the rest is dropped", timeout_s)
                while True:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is not None:
                        with self._lock:
                            self._dropped += len(item[0])
        with self._lock:
            return SinkStats(self._written, self._dropped, self._windows, self._errors)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            records, windows = item
            try:
                self._write(records, windows)
            except redis.RedisError as exc:
                with self._lock:
                    self._errors += 1
                    self._dropped += len(records)
                log.warning("cannot write %d request records to Redis: %s", len(records), exc)
            else:
                with self._lock:
                    self._written += len(records)
                    self._windows += len(windows)

    def _write(self, records: Sequence[RequestRecord], windows: Sequence[WindowStats]) -> None:
        out = self.output
        pipe = self.client.pipeline(transaction=False)
        pending = 0
        for record in records:
            pipe.xadd(out.requests_key, _fields(record.as_fields()), maxlen=out.requests_maxlen, approximate=True)
            pending += 1
            if pending >= PIPELINE_COMMANDS:
                pipe.execute()
                pending = 0
        for stats in windows:
            pipe.xadd(out.latency_key, _fields(stats.as_fields()), maxlen=out.latency_maxlen, approximate=True)
            pending += 1
        if pending:
            pipe.execute()


def _fields(values: dict[str, str]) -> dict[FieldT, EncodableT]:
    return {key: value for key, value in values.items()}
