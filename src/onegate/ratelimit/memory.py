"""Buckets in this process's memory: the default, one limit per gateway process.

Each policy has its own table, ordered from least to most recently used. A new bucket first
drops the expired ones at the old end of its table (each is dropped once, so this is O(1)
amortised and never a full scan), then, if the table is still at ``max_keys``, the least
recently used. A scan from random addresses therefore can't grow memory without bound: at
most ``max_keys`` buckets per policy, and in practice only those touched in the last window or
two. Nothing here awaits, so each hit is atomic under asyncio without a lock.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TypeVar

from onegate.ratelimit.algorithms import Bucket, WindowCounts, sliding_window, token_bucket
from onegate.ratelimit.config import LimitPolicy
from onegate.ratelimit.decision import Decision

_State = TypeVar("_State", WindowCounts, Bucket)


class MemoryStore:
    def __init__(self, max_keys: int = 100_000) -> None:
        self.max_keys = max_keys
        self._windows: dict[str, OrderedDict[str, WindowCounts]] = {}
        self._buckets: dict[str, OrderedDict[str, Bucket]] = {}

    async def hit(self, key: str, policy: LimitPolicy, now: float) -> Decision:
        if policy.algorithm == "sliding_window":
            windows = self._windows.get(policy.name)
            if windows is None:
                windows = self._windows[policy.name] = OrderedDict()
            counts = windows.get(key)
            if counts is None:
                counts = WindowCounts()
                self._admit(windows, key, counts, now)
            else:
                windows.move_to_end(key)
            return sliding_window(counts, policy.limit, policy.window_seconds, now)
        buckets = self._buckets.get(policy.name)
        if buckets is None:
            buckets = self._buckets[policy.name] = OrderedDict()
        bucket = buckets.get(key)
        if bucket is None:
            bucket = Bucket(policy.limit, now)
            self._admit(buckets, key, bucket, now)
        else:
            buckets.move_to_end(key)
        return token_bucket(bucket, policy.limit, policy.window_seconds, now)

    def _admit(self, table: OrderedDict[str, _State], key: str, state: _State, now: float) -> None:
        # Only a new bucket can grow the table, so this is the only place that trims it.
        while table:
            oldest = next(iter(table.values()))
            if oldest.expires > now:
                break
            table.popitem(last=False)
        while len(table) >= self.max_keys:
            table.popitem(last=False)
        table[key] = state

    def size(self) -> int:
        """Buckets held, over all policies."""
        return sum(map(len, self._windows.values())) + sum(map(len, self._buckets.values()))

    async def aclose(self) -> None:
        self._windows.clear()
        self._buckets.clear()
