"""Request records and latency windows in a real Redis (127.0.0.1, database 15, keys removed afterwards).

Needs the Redis that `make test` starts (FIRM_REDIS_PORT, default 6379); skipped, saying so, without it.
"""

from __future__ import annotations

import itertools
import socket
import uuid
from collections.abc import Iterator

import pytest
import redis

from firm.load import ConstantRate, LoadError, LoadSpec, RedisOutput, parse_slos, run_load
from tests.helpers.redis_db import REDIS_URL, connect
from tests.unit.load.frontend import FrontendOptions, running_frontend


@pytest.fixture
def store() -> Iterator[redis.Redis]:
    client = connect()
    yield client
    for key in client.scan_iter("firm:test-load-*"):
        client.delete(key)
    client.close()


def entries(client: redis.Redis, key: str) -> list[dict[str, str]]:
    """The fields of every entry of a stream, oldest first."""
    return [{str(k): str(v) for k, v in (fields or {}).items()} for _, fields in client.xrange(key) or []]


def output(**kwargs: object) -> RedisOutput:
    prefix = f"firm:test-load-{uuid.uuid4().hex[:8]}"
    values: dict[str, object] = {"requests_key": f"{prefix}:requests", "latency_key": f"{prefix}:latency"}
    values.update(kwargs)
    return RedisOutput(REDIS_URL, **values)  # type: ignore[arg-type]


def test_every_request_and_every_window_is_stored(store: redis.Redis) -> None:
    out = output()
    with running_frontend(FrontendOptions(delay_s=0.002)) as frontend:
        spec = LoadSpec(
            f"http://127.0.0.1:{frontend.port}",
            ConstantRate(150),
            duration_s=1.5,
            seed=4,
            window_s=0.5,
            slos=parse_slos("compose=100,home=50,user=50"),
        )
        summary = run_load(spec, redis=out)
    fields = entries(store, out.requests_key)
    assert len(fields) == summary.overall.sent == summary.records_written > 150
    assert summary.records_dropped == 0
    assert all(set(f) == {"type", "trace_id", "latency_ms", "status", "intended_at", "error"} for f in fields)
    assert {f["trace_id"] for f in fields} == {r.trace_id for r in frontend.received}
    assert {f["type"] for f in fields} == {"compose-post", "read-home-timeline", "read-user-timeline"}
    assert all(f["status"] == "200" and f["error"] == "" and float(f["latency_ms"]) > 0 for f in fields)
    intended = [float(f["intended_at"]) for f in fields]
    assert max(intended) - min(intended) < 1.5

    windows = entries(store, out.latency_key)
    assert set(windows[0]) == {
        "window_end",
        "type",
        "count",
        "errors",
        "p50_ms",
        "p99_ms",
        "slo_ms",
        "violated",
    }
    assert len(windows) == 3 * summary.overall.windows  # one entry per type and window
    assert sum(int(w["count"]) for w in windows) == summary.overall.sent
    home = [w for w in windows if w["type"] == "read-home-timeline"]
    assert all(w["slo_ms"] == "50.000" and w["violated"] in ("0", "1") for w in home if int(w["count"]))
    ends = sorted({float(w["window_end"]) for w in windows})
    assert all(b - a == pytest.approx(0.5, abs=1e-3) for a, b in itertools.pairwise(ends))


def test_the_requests_stream_is_bounded(store: redis.Redis) -> None:
    out = output(requests_maxlen=100)
    with running_frontend() as frontend:
        summary = run_load(
            LoadSpec(f"http://127.0.0.1:{frontend.port}", ConstantRate(400), duration_s=1.5, seed=1),
            redis=out,
        )
    assert summary.overall.sent > 400
    # MAXLEN ~ trims whole stream nodes (100 entries each by default), so it keeps at least 100.
    assert 100 <= store.xlen(out.requests_key) < summary.overall.sent - 100


def test_an_unreachable_redis_stops_the_run_before_any_request() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with running_frontend() as frontend:
        spec = LoadSpec(f"http://127.0.0.1:{frontend.port}", ConstantRate(50), duration_s=0.5)
        with pytest.raises(LoadError) as info:
            run_load(spec, redis=RedisOutput(f"redis://127.0.0.1:{port}/15"))
    assert "does not answer" in str(info.value) and info.value.fix
    assert frontend.received == []
