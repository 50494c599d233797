"""The store a configuration names, one per process and shared across reloads.

A reload builds a new pipeline, but it must not reset every counter (a limit of 1,000 a day
would start over on each configuration change) nor open a second Redis pool. So stores are
kept here, by what defines them, for the life of the process.
"""

from __future__ import annotations

from onegate.ratelimit.config import RateLimitConfig
from onegate.ratelimit.memory import MemoryStore
from onegate.ratelimit.redis import RedisStore
from onegate.ratelimit.store import Store

_shared: dict[tuple[str, float], Store] = {}


def open_store(config: RateLimitConfig) -> Store:
    """A new store as ``config`` describes it."""
    if config.store == "memory":
        return MemoryStore(config.memory_max_keys)
    return RedisStore(config.store, timeout=config.store_timeout_seconds)


def shared_store(config: RateLimitConfig) -> Store:
    """The process's store for ``config``: the same object for the same settings."""
    if config.store == "memory":
        identity = ("memory", float(config.memory_max_keys))
    else:
        identity = (config.store, config.store_timeout_seconds)
    store = _shared.get(identity)
    if store is None:
        store = _shared[identity] = open_store(config)
    return store
