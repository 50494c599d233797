"""Stores under test: the memory store and a Redis store on the real Redis of this machine.

Redis tests use the caller's clock (so they can drive time) and a key prefix of their own,
deleted afterwards, so they never meet the keys of another test or of a running gateway.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis

from onegate.ratelimit.memory import MemoryStore
from onegate.ratelimit.redis import RedisStore
from onegate.ratelimit.store import Store


async def _redis_store(url: str) -> AsyncIterator[RedisStore]:
    prefix = f"onegate:test:{uuid.uuid4().hex}:"
    # A generous deadline: these tests are about counting, not about timeouts.
    store = RedisStore(url, timeout=2.0, clock="caller", prefix=prefix)
    try:
        yield store
    finally:
        await store.aclose()
        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    """Each conformance test runs once per store."""
    if request.param == "memory":
        memory = MemoryStore()
        yield memory
        await memory.aclose()
        return
    async for redis_store in _redis_store(request.getfixturevalue("redis_url")):
        yield redis_store


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client, to look at and clean up what a store wrote."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
async def redis_store(redis_url: str) -> AsyncIterator[RedisStore]:
    async for redis_store in _redis_store(redis_url):
        yield redis_store
