"""Telemetry in Redis: one stream per instance, bounded, and the set of instance names.

Layout (``prefix`` defaults to ``firm:telemetry``):

- ``<prefix>:<instance>``: a stream, one entry per sample, fields as :meth:`Sample.to_fields`
  (``""`` for a figure that is not available), trimmed to about ``retention`` entries
  (``XADD ... MAXLEN ~``) and expiring ``ttl_s`` after its last sample, so an instance that is
  gone leaves nothing behind;
- ``<prefix>:instances``: a set of the instance names that were written.

Entry IDs are Redis's own (its clock); :meth:`RedisTelemetrySource.window` selects by the
sample's ``timestamp`` field, reading a margin around the window so that clock skew between the
sampler and Redis does not lose samples (nor the delay of samples resent after an outage).

Samples Redis does not take (it is down or restarting) wait in memory, at most ``backlog`` of them,
and are written, oldest first, with the next round Redis takes; beyond the bound the oldest are
dropped and counted (:attr:`RedisTelemetrySink.dropped`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence

import redis
from redis.typing import EncodableT, FieldT

from ansible_collections.firm.core.plugins.module_utils import redis_auth
from ansible_collections.firm.core.plugins.module_utils.redis_buffer import PendingWrites
from firm.telemetry.model import Sample

DEFAULT_PREFIX = "firm:telemetry"
DEFAULT_RETENTION = 3600
DEFAULT_BACKLOG = 100_000
log = logging.getLogger(__name__)
CLOCK_MARGIN_S = 5.0
"""Seconds of entries read beyond a window on each side: the clock skew between sampler and Redis tolerated."""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _client(target: redis.Redis | str) -> redis.Redis:
    if isinstance(target, str):
        return redis_auth.connect(target, decode_responses=True, socket_timeout=5, socket_connect_timeout=5)
    return target


class RedisTelemetrySink:
    """Writes each round of samples in one pipeline.

    ``retention`` is in samples per instance (3600 = one hour at 1 s); ``ttl_s`` (seconds, None =
    never) removes the stream of an instance that stopped being sampled; ``backlog`` (samples, all
    instances together) bounds what waits in memory while Redis does not answer.
    """

    def __init__(
        self,
        target: redis.Redis | str,
        *,
        retention: int = DEFAULT_RETENTION,
        prefix: str = DEFAULT_PREFIX,
        ttl_s: int | None = 2 * DEFAULT_RETENTION,
        backlog: int = DEFAULT_BACKLOG,
    ) -> None:
        if retention < 1:
            raise ValueError("retention must be at least one sample")
        self.client = _client(target)
        self.retention = retention
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.pending: PendingWrites[Sample] = PendingWrites(backlog)
        self._expiry_set: dict[str, float] = {}  # key -> time.monotonic() of its last EXPIRE
        self._outage = False

    @property
    def dropped(self) -> int:
        """Samples given up because more than ``backlog`` waited for Redis."""
        return self.pending.dropped

    def write(self, samples: Sequence[Sample]) -> None:
        """Write this round (after whatever still waits); never raises on a Redis outage: the samples wait."""
        if not samples and not len(self.pending):
            return
        if self.pending.add(samples) and not self._outage:
            log.warning(
                "telemetry: more than %d samples waited for Redis; the oldest are dropped", self.pending.limit
            )
        done = self.pending.flush(self._write, retry_on=(redis.RedisError,))
        if not done and not self._outage:
            log.warning(
                "telemetry: Redis does not answer; %d samples wait and are resent when it does",
                len(self.pending),
            )
        elif done and self._outage:
            log.warning(
                "telemetry: Redis answers again; the waiting samples were written (%d dropped so far)",
                self.pending.dropped,
            )
        if not done:
            self._expiry_set.clear()  # a restarted Redis lost the streams' expiry with them: set it anew
        self._outage = not done

    def _write(self, samples: Sequence[Sample]) -> None:
        now = time.monotonic()
        pipe = self.client.pipeline(transaction=False)
        refreshed: list[str] = []
        for sample in samples:
            key = f"{self.prefix}:{sample.instance}"
            fields: dict[FieldT, EncodableT] = {k: v for k, v in sample.to_fields().items()}
            pipe.xadd(key, fields, maxlen=self.retention, approximate=True)
            # The expiry only has to outlive the gap to the next refresh: renew it every tenth of it.
            if self.ttl_s is not None and now - self._expiry_set.get(key, -math.inf) >= self.ttl_s / 10:
                pipe.expire(key, self.ttl_s)
                refreshed.append(key)
        pipe.sadd(f"{self.prefix}:instances", *sorted({s.instance for s in samples}))
        pipe.execute()
        for key in refreshed:
            self._expiry_set[key] = now


class RedisTelemetrySource:
    """Reads what :class:`RedisTelemetrySink` wrote (a :class:`TelemetrySource`)."""

    def __init__(self, target: redis.Redis | str, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.client = _client(target)
        self.prefix = prefix

    def instances(self) -> list[str]:
        """Instances with a stream (names whose stream expired are left out)."""
        names = sorted(_text(n) for n in self.client.smembers(f"{self.prefix}:instances"))
        if not names:
            return []
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.exists(f"{self.prefix}:{name}")
        return [name for name, exists in zip(names, pipe.execute(), strict=True) if exists]

    def latest(self, instance: str) -> Sample | None:
        entries = self.client.xrevrange(f"{self.prefix}:{instance}", count=1)
        return _sample(entries[0][1]) if entries else None

    def window(self, instance: str, start: float, end: float) -> list[Sample]:
        low = max(0, int((start - CLOCK_MARGIN_S) * 1000))
        high = int((end + CLOCK_MARGIN_S) * 1000)
        entries = self.client.xrange(f"{self.prefix}:{instance}", min=str(low), max=str(high))
        samples = [_sample(fields) for _, fields in entries or ()]
        return sorted((s for s in samples if start <= s.timestamp <= end), key=lambda s: s.timestamp)


def _sample(fields: dict[bytes | str, bytes | str] | None) -> Sample:
    return Sample.from_fields({_text(k): _text(v) for k, v in (fields or {}).items()})
