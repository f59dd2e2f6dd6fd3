"""The Redis database tests use: the real server `make test` starts, database 15 (never firm's own 0).

That server requires the password `make services` generated (``/etc/firm/redis.password``, or
``$FIRM_REDIS_PASSWORD_FILE``); :func:`connect` reads it as every firm client does.
"""

from __future__ import annotations

import os

import pytest
import redis

from ansible_collections.firm.core.plugins.module_utils import redis_auth

REDIS_URL = f"redis://127.0.0.1:{os.environ.get('FIRM_REDIS_PORT', '6379')}/15"


def connect(url: str = REDIS_URL) -> redis.Redis:
    """A client of the tests' database, or a skip that says why (printed, so never silent)."""
    client = redis_auth.connect(url, decode_responses=True)
    try:
        client.ping()
    except redis.RedisError as exc:
        reason = f"no Redis at {url} ({exc}); `make services` starts one"
        print(reason)
        pytest.skip(reason)
    return client
