"""The Redis of this machine, for the tests that need a real one (rate-limit stores).

``ONEGATE_TEST_REDIS_URL`` names another one. A test asking for ``redis_url`` fails, rather than
skips, when nothing answers there: a missing Redis must not pass for a green run.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import pytest
import redis

REDIS_URL = os.environ.get("ONEGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_url() -> str:
    try:
        with redis.Redis.from_url(REDIS_URL, socket_timeout=1) as client:
            client.ping()
    except redis.RedisError as exc:
        pytest.fail(
            f"these tests need the Redis at {REDIS_URL} ({exc}); start it with redis-server"
        )
    return REDIS_URL


def redis_address(url: str) -> tuple[str, int]:
    """The host and port a ``redis://`` URL points at."""
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 6379
