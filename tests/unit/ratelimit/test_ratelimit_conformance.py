"""One behaviour, two stores: every test here runs against the memory store and Redis."""

from __future__ import annotations

import asyncio
import random

import pytest

from onegate.ratelimit.config import Algorithm, LimitPolicy
from onegate.ratelimit.memory import MemoryStore
from onegate.ratelimit.redis import RedisStore
from onegate.ratelimit.store import Store

ALGORITHMS: list[Algorithm] = ["sliding_window", "token_bucket"]


def policy(
    algorithm: Algorithm, limit: int = 3, window: float = 10.0, name: str = "p"
) -> LimitPolicy:
    return LimitPolicy(name=name, limit=limit, window_seconds=window, algorithm=algorithm)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_counts_down_to_zero_then_refuses(store: Store, algorithm: Algorithm) -> None:
    rule = policy(algorithm)
    decisions = [await store.hit("ip:1", rule, 1000.0) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert decisions[3].retry_after > 0
    assert all(d.limit == 3 for d in decisions)


async def test_sliding_window_slides(store: Store) -> None:
    rule = policy("sliding_window")
    for _ in range(3):
        await store.hit("ip:1", rule, 1000.0)
    refused = await store.hit("ip:1", rule, 1004.0)
    assert refused.retry_after == pytest.approx(6 + 10 / 3)
    assert refused.reset_seconds == refused.retry_after  # when a retry fits, not the window's end
    assert not (await store.hit("ip:1", rule, 1004.0 + refused.retry_after - 0.01)).allowed
    assert (await store.hit("ip:1", rule, 1004.0 + refused.retry_after + 0.01)).allowed
    later = [await store.hit("ip:1", rule, 1030.0) for _ in range(4)]
    assert [d.remaining for d in later] == [2, 1, 0, 0]


async def test_token_bucket_refills(store: Store) -> None:
    rule = policy("token_bucket", window=3.0)
    for _ in range(3):
        await store.hit("k:1", rule, 1000.0)
    refused = await store.hit("k:1", rule, 1000.25)
    assert refused.retry_after == pytest.approx(0.75)
    assert refused.reset_seconds == pytest.approx(0.75)
    allowed = await store.hit("k:1", rule, 1001.0)
    assert allowed.allowed and allowed.remaining == 0
    assert allowed.reset_seconds == pytest.approx(1.0)  # the next token, not a full bucket
    more = await store.hit("k:2", rule, 1001.0)
    assert more.remaining == 2 and more.reset_seconds == pytest.approx(1.0)  # full again


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_keys_and_policies_are_separate_buckets(store: Store, algorithm: Algorithm) -> None:
    one, other = policy(algorithm, limit=1, name="one"), policy(algorithm, limit=1, name="other")
    assert (await store.hit("ip:1", one, 1000.0)).allowed
    assert not (await store.hit("ip:1", one, 1000.0)).allowed
    assert (await store.hit("ip:2", one, 1000.0)).allowed
    assert (await store.hit("ip:1", other, 1000.0)).allowed


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_concurrent_hits_allow_exactly_the_limit(store: Store, algorithm: Algorithm) -> None:
    rule = policy(algorithm, limit=50, window=3600.0)
    decisions = await asyncio.gather(*(store.hit("ip:1", rule, 1000.0) for _ in range(200)))
    assert sum(d.allowed for d in decisions) == 50
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(50))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_memory_and_redis_decide_identically(
    redis_store: RedisStore, algorithm: Algorithm
) -> None:
    """The Lua scripts are the Python algorithms, decision for decision, on random traffic."""
    memory = MemoryStore()
    rng = random.Random(11)
    for round_ in range(20):
        rule = policy(algorithm, rng.randint(1, 8), rng.choice([0.5, 1.0, 6.0]), f"p{round_}")
        now = rng.uniform(0, 10_000)
        for _ in range(40):
            now += rng.expovariate(2 * rule.limit / rule.window_seconds)
            key = rng.choice(["ip:1", "ip:2"])
            assert await memory.hit(key, rule, now) == await redis_store.hit(key, rule, now)
