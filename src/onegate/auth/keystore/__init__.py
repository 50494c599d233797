"""Where API keys live: memory, SQL (SQLite, PostgreSQL) or Redis, behind one interface."""

from __future__ import annotations

from pathlib import Path

from onegate.auth.keystore.base import DuplicateKey, KeyStore, KeyStoreError, UnknownKey
from onegate.auth.keystore.record import KeyRecord, KeyStatus

__all__ = [
    "DuplicateKey",
    "KeyRecord",
    "KeyStatus",
    "KeyStore",
    "KeyStoreError",
    "UnknownKey",
    "open_store",
]


def open_store(url: str, issuer: str, base_dir: Path) -> KeyStore:
    """The store ``url`` names, for ``issuer``. Opening connects to nothing yet."""
    if url == "memory":
        from onegate.auth.keystore.memory_store import MemoryKeyStore

        return MemoryKeyStore(issuer)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from onegate.auth.keystore.redis_store import RedisKeyStore

        return RedisKeyStore(url, issuer)
    from onegate.auth.keystore.sql_store import SqlKeyStore

    return SqlKeyStore(url, issuer, base_dir)
