"""The store a configuration names, one per process and shared across reloads.

A reload builds a new pipeline, but it must not reset every counter (a limit of 1,000 a day
would start over on each configuration change) nor open a second Redis pool. So a store is
kept by :class:`Stores` (one per process), by what defines it, for as long as some pipeline
uses it: each rate-limit stage acquires it when built and releases it when its pipeline is
retired; the last release closes it. A reload builds the new pipeline before it retires the
old one, so the store carries over.
"""

from __future__ import annotations

from onegate.ratelimit.config import RateLimitConfig
from onegate.ratelimit.memory import MemoryStore
from onegate.ratelimit.redis import RedisStore
from onegate.ratelimit.store import Store

Identity = tuple[str, float]


def open_store(config: RateLimitConfig) -> Store:
    """A new store as ``config`` describes it."""
    if config.store == "memory":
        return MemoryStore(config.memory_max_keys)
    return RedisStore(config.store, timeout=config.store_timeout_seconds)


def _identity(config: RateLimitConfig) -> Identity:
    if config.store == "memory":
        return ("memory", float(config.memory_max_keys))
    return (config.store, config.store_timeout_seconds)


class Stores:
    """The process's open stores, by what defines them, with how many pipelines use each."""

    def __init__(self) -> None:
        self._stores: dict[Identity, Store] = {}
        self._users: dict[Identity, int] = {}

    def acquire(self, config: RateLimitConfig) -> Store:
        """The store for ``config``: the same object for the same settings."""
        identity = _identity(config)
        store = self._stores.get(identity)
        if store is None:
            store = self._stores[identity] = open_store(config)
        self._users[identity] = self._users.get(identity, 0) + 1
        return store

    async def release(self, config: RateLimitConfig) -> None:
        """One user fewer; the last one closes the store (and forgets its counts)."""
        identity = _identity(config)
        users = self._users.get(identity, 0) - 1
        if users > 0:
            self._users[identity] = users
            return
        self._users.pop(identity, None)
        store = self._stores.pop(identity, None)
        if store is not None:
            await store.aclose()
