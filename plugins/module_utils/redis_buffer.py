# Copyright: firm developers
# Apache License 2.0 (see galaxy.yml)
"""Records that Redis could not take yet, kept in memory and resent when it answers again.

One small class serves every writer of firm's records (request records, telemetry samples, campaign
records, the control loop's audit): a writer adds what it has, then flushes; a flush writes the
oldest first and keeps whatever a failed write did not take, so a Redis that restarts loses nothing
that fits in the bound. Beyond the bound the oldest items go and are counted in ``dropped``.

Delivery is at least once: a write that failed half-way (a pipeline Redis partly executed before
the connection dropped) is sent again whole, so an item may be stored twice, never lost silently.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class PendingWrites(Generic[T]):
    """At most ``limit`` items waiting to be written, oldest first (thread-safe).

    ``chunk`` (items) bounds how many one call of the write function receives.
    """

    def __init__(self, limit: int, *, chunk: int = 1000) -> None:
        if limit < 1 or chunk < 1:
            raise ValueError("limit and chunk must be at least 1")
        self.limit = limit
        self.chunk = chunk
        self.dropped = 0
        """Items given up because more than ``limit`` waited (never written)."""
        self.resent = 0
        """Items written by a flush after an earlier write of them had failed."""
        self._items: deque[T] = deque()
        self._failed = 0  # of the items at the front, how many a write already failed on
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def add(self, items: Iterable[T]) -> list[T]:
        """Queue ``items`` behind those waiting; returns the oldest items the bound dropped now (never written)."""
        with self._lock:
            self._items.extend(items)
            over = max(0, len(self._items) - self.limit)
            dropped = [self._items.popleft() for _ in range(over)]
            self._failed = max(0, self._failed - over)
            self.dropped += over
            return dropped

    def flush(
        self, write: Callable[[list[T]], None], retry_on: tuple[type[BaseException], ...] = (Exception,)
    ) -> bool:
        """Write everything waiting through ``write``, in order, ``chunk`` items a call.

        Returns True when nothing waits any more. An exception of ``retry_on`` keeps the chunk it
        failed on (and everything after it) for the next flush and returns False; any other
        exception propagates, with the chunk still kept.
        """
        while True:
            with self._lock:
                batch = [self._items[i] for i in range(min(self.chunk, len(self._items)))]
            if not batch:
                return True
            try:
                write(batch)
            except retry_on:
                with self._lock:
                    self._failed = max(self._failed, len(batch))
                return False
            with self._lock:
                # add() may have dropped the oldest of this batch meanwhile: remove what is still at the front.
                taken = 0
                for item in batch:
                    if self._items and self._items[0] is item:
                        self._items.popleft()
                        taken += 1
                self.resent += min(taken, self._failed)
                self._failed = max(0, self._failed - taken)

    def drop_all(self) -> list[T]:
        """Give up everything waiting (counted in ``dropped``); returns those items."""
        with self._lock:
            dropped = list(self._items)
            self._items.clear()
            self._failed = 0
            self.dropped += len(dropped)
            return dropped
