"""The Redis database tests use: the real server `make test` starts, database 15 (never firm's own 0)."""

from __future__ import annotations

import os

import pytest
import redis

REDIS_URL = f"redis://127.0.0.1:{os.environ.get('FIRM_REDIS_PORT', '6379')}/15"


def connect() -> redis.Redis:
    """A client of the tests' database, or a skip that says why (printed, so never silent)."""
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        client.ping()
    except redis.RedisError as exc:
        reason = f"no Redis at {REDIS_URL} ({exc}); `make services` starts one"
        print(reason)
        pytest.skip(reason)
    return client
