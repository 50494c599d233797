"""What only the Redis store does: namespaced keys that expire, the server's clock, and
failing fast (never hanging) when Redis is gone, refusing or silent."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis

from helpers.redis_server import redis_address
from onegate.errors import RateLimitStoreUnavailable
from onegate.ratelimit.config import LimitPolicy
from onegate.ratelimit.redis import RedisStore


def unique_policy(**fields: object) -> LimitPolicy:
    return LimitPolicy.model_validate({"name": f"t{uuid.uuid4().hex[:12]}", "limit": 3, **fields})


@contextlib.asynccontextmanager
async def listener(
    relay_to: tuple[str, int] | None = None, port: int = 0
) -> AsyncIterator[tuple[int, asyncio.Server]]:
    """A local TCP server: relays to Redis, or (``relay_to`` None) accepts and never answers."""
    writers: list[asyncio.StreamWriter] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        if relay_to is None:
            await reader.read()  # silence until the client gives up
            return
        up_reader, up_writer = await asyncio.open_connection(*relay_to)
        writers.append(up_writer)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    try:
        yield server.sockets[0].getsockname()[1], server
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()


async def test_nothing_listening_fails_at_once() -> None:
    store = RedisStore("redis://127.0.0.1:1", timeout=0.05)
    started = time.monotonic()
    with pytest.raises(RateLimitStoreUnavailable):
        await store.hit("ip:1", unique_policy(), 0.0)
    assert time.monotonic() - started < 0.5
    await store.aclose()


async def test_a_silent_server_times_out_within_the_deadline() -> None:
    async with listener() as (port, _):
        store = RedisStore(f"redis://127.0.0.1:{port}", timeout=0.1)
        for _ in range(3):
            started = time.monotonic()
            with pytest.raises(RateLimitStoreUnavailable):
                await store.hit("ip:1", unique_policy(), 0.0)
            assert time.monotonic() - started < 0.5
        await store.aclose()


async def test_the_store_recovers_when_redis_comes_back(
    redis_url: str, redis_client: redis.Redis
) -> None:
    target = redis_address(redis_url)
    rule = unique_policy()
    async with listener(target) as (port, _):
        store = RedisStore(f"redis://127.0.0.1:{port}", timeout=0.5)
        assert (await store.hit("ip:1", rule, 0.0)).remaining == 2
    with pytest.raises(RateLimitStoreUnavailable):  # the relay is gone: refused
        await store.hit("ip:1", rule, 0.0)
    async with listener(target, port):
        assert (await store.hit("ip:1", rule, 0.0)).remaining == 1
    await store.aclose()
    redis_client.delete(f"onegate:rl:{rule.name}:ip:1")


async def test_keys_are_namespaced_and_expire(redis_url: str, redis_client: redis.Redis) -> None:
    window = unique_policy(window_seconds=60)
    bucket = unique_policy(window_seconds=30, algorithm="token_bucket")
    store = RedisStore(redis_url)
    await store.hit("ip:203.0.113.7", window, 0.0)
    await store.hit("k:key-1", bucket, 0.0)
    await store.aclose()
    window_key = f"onegate:rl:{window.name}:ip:203.0.113.7"
    bucket_key = f"onegate:rl:{bucket.name}:k:key-1"
    try:
        # Window state matters until the next window ends; a bucket until it is full again.
        assert 60_000 < redis_client.pttl(window_key) <= 120_000
        assert 0 < redis_client.pttl(bucket_key) <= 10_000
    finally:
        redis_client.delete(window_key, bucket_key)


async def test_the_server_clock_is_used_whatever_the_caller_says(
    redis_url: str, redis_client: redis.Redis
) -> None:
    rule = unique_policy(window_seconds=3600)
    store = RedisStore(redis_url)
    try:
        times = [0.0, 1e9, -5.0, 123.4]
        decisions = [await store.hit("ip:1", rule, now) for now in times]
        assert [d.remaining for d in decisions] == [2, 1, 0, 0]
        assert not decisions[-1].allowed
    finally:
        await store.aclose()
        redis_client.delete(f"onegate:rl:{rule.name}:ip:1")
