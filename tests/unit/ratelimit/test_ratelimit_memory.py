"""The memory store keeps only live buckets, and never more than it is allowed."""

from __future__ import annotations

import random

from onegate.ratelimit.config import LimitPolicy
from onegate.ratelimit.memory import MemoryStore

PER_IP = LimitPolicy(name="per-ip", limit=5, window_seconds=1.0)
BUCKET = LimitPolicy(name="bucket", limit=5, window_seconds=1.0, algorithm="token_bucket")


async def test_a_scan_of_random_addresses_stays_within_max_keys() -> None:
    store = MemoryStore(max_keys=1000)
    rng = random.Random(3)
    for n in range(20_000):
        address = f"ip:{rng.getrandbits(32)}"
        # All within one window: nothing has expired, so only the cap holds memory down.
        await store.hit(address, PER_IP, 1000.0 + n * 1e-6)
        await store.hit(address, BUCKET, 1000.0 + n * 1e-6)
    assert store.size() == 2000


async def test_expired_buckets_are_dropped_as_new_ones_arrive() -> None:
    store = MemoryStore(max_keys=1_000_000)
    now = 1000.0
    for n in range(20_000):
        now += 0.001  # 1,000 new addresses a second, each seen once
        await store.hit(f"ip:{n}", PER_IP, now)
        await store.hit(f"ip:{n}", BUCKET, now)
    # Sliding window state lives until its next window ends (at most 2 s here), a bucket's
    # until it is full again (0.2 s): far fewer than the 40,000 ever seen.
    assert store.size() <= 2 * 1000 + 200 + 2


async def test_the_least_recently_used_bucket_goes_first() -> None:
    store = MemoryStore(max_keys=2)
    await store.hit("ip:a", PER_IP, 1000.0)
    await store.hit("ip:b", PER_IP, 1000.0)
    await store.hit("ip:a", PER_IP, 1000.0)  # a is now the most recently used
    await store.hit("ip:c", PER_IP, 1000.0)  # evicts b
    assert (await store.hit("ip:a", PER_IP, 1000.0)).remaining == 2
    assert (await store.hit("ip:b", PER_IP, 1000.0)).remaining == 4


async def test_a_live_bucket_is_not_dropped_for_being_old() -> None:
    store = MemoryStore()
    for _ in range(5):
        await store.hit("ip:a", PER_IP, 1000.0)
    for n in range(100):
        await store.hit(f"ip:{n}", PER_IP, 1000.5)
    assert not (await store.hit("ip:a", PER_IP, 1000.9)).allowed
