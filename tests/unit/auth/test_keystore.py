"""One conformance suite for every API key store: memory, SQLite, PostgreSQL and Redis.

PostgreSQL runs in a schema of its own per test (dropped afterwards); Redis under issuer
names of their own (deleted afterwards). Both are the real servers on loopback.
"""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from helpers.storage import POSTGRES, postgres
from onegate.auth import apikey
from onegate.auth.keystore import (
    DuplicateKey,
    KeyRecord,
    KeyStore,
    KeyStoreError,
    UnknownKey,
    open_store,
)
from onegate.auth.keystore.schema import TABLE, VERSION_TABLE

REDIS = "redis://127.0.0.1:6379/0"


class Backend:
    """Opens stores of one kind for any issuer, and cleans up after them."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.stores: list[KeyStore] = []
        self.schema: str | None = None
        if kind == "memory":
            self.url = "memory"
        elif kind == "sqlite":
            self.url = "sqlite:///keys.db"
        elif kind == "postgres":
            self.schema = f"onegate_test_{uuid.uuid4().hex[:12]}"
            postgres(f'CREATE SCHEMA "{self.schema}"')
            self.url = f"{POSTGRES}?options=-csearch_path%3D{self.schema}"
        else:
            self.url = REDIS
        self.tmp_path = tmp_path
        self._memory: dict[str, KeyStore] = {}
        self.suffix = uuid.uuid4().hex[:8]

    def open(self, issuer: str = "partners") -> KeyStore:
        """A store; the memory kind hands back the same one per issuer, like a running gateway."""
        issuer = f"{issuer}-{self.suffix}"
        if self.kind == "memory":
            return self._memory.setdefault(issuer, open_store("memory", issuer, self.tmp_path))
        store = open_store(self.url, issuer, self.tmp_path)
        self.stores.append(store)
        return store

    def close(self) -> None:
        for store in self.stores:
            store.close()
        if self.schema is not None:
            postgres(f'DROP SCHEMA "{self.schema}" CASCADE')
        if self.kind == "redis":
            client = redis.Redis.from_url(REDIS)
            for name in client.scan_iter(f"onegate:api-keys:*-{self.suffix}:*"):
                client.delete(name)
            client.close()


@pytest.fixture(params=["memory", "sqlite", "postgres", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    opened = Backend(request.param, tmp_path)
    try:
        yield opened
    finally:
        opened.close()


def record(subject: str = "svc", *, created_at: float = 1000.0, **fields: object) -> KeyRecord:
    key = apikey.generate()
    settings: dict[str, object] = {
        "key_id": key.key_id,
        "secret_hash": key.secret_hash,
        "subject": subject,
        "name": f"{subject} key",
        "scopes": ("read", "write"),
        "tenant": "acme",
        "created_at": created_at,
        **fields,
    }
    return KeyRecord(**settings)  # type: ignore[arg-type]


def test_a_record_comes_back_as_it_was_stored(backend: Backend) -> None:
    store = backend.open()
    original = record(expires_at=5000.5)
    store.add(original)
    assert store.get(original.key_id) == original
    bare = record(tenant=None, scopes=())
    store.add(bare)
    assert store.get(bare.key_id) == bare


def test_unknown_ids_are_none(backend: Backend) -> None:
    assert backend.open().get("nosuchkeyxyz") is None


def test_ids_are_unique(backend: Backend) -> None:
    store = backend.open()
    first = record()
    store.add(first)
    with pytest.raises(DuplicateKey):
        store.add(record(key_id=first.key_id))


def test_listing_is_oldest_first_and_per_issuer(backend: Backend) -> None:
    store, other = backend.open("partners"), backend.open("internal")
    later, earlier = record("b", created_at=2000.0), record("a", created_at=1000.0)
    store.add(later)
    store.add(earlier)
    other.add(record("c"))
    assert [r.subject for r in store.list()] == ["a", "b"]
    assert [r.subject for r in other.list()] == ["c"]
    assert other.get(earlier.key_id) is None  # issuers never see each other's keys


def test_revocation_is_kept_and_the_first_one_stands(backend: Backend) -> None:
    store = backend.open()
    stored = record()
    store.add(stored)
    revoked = store.revoke(stored.key_id, at=3000.0)
    assert revoked.revoked_at == 3000.0 and revoked.status(3000.0) == "revoked"
    assert store.revoke(stored.key_id, at=4000.0).revoked_at == 3000.0
    assert store.get(stored.key_id) == revoked
    with pytest.raises(UnknownKey):
        store.revoke("nosuchkeyxyz", at=1.0)


def test_expiry_can_only_come_sooner(backend: Backend) -> None:
    store = backend.open()
    stored = record(expires_at=9000.0)
    store.add(stored)
    assert store.expire(stored.key_id, at=5000.0).expires_at == 5000.0
    assert store.expire(stored.key_id, at=7000.0).expires_at == 5000.0
    refreshed = store.get(stored.key_id)
    assert refreshed is not None and refreshed.status(4999.0) == "active"
    assert refreshed.status(5000.0) == "expired"
    with pytest.raises(UnknownKey):
        store.expire("nosuchkeyxyz", at=1.0)


def test_a_second_store_on_the_same_backend_sees_the_keys(backend: Backend) -> None:
    first = backend.open()
    stored = record()
    first.add(stored)
    assert backend.open().get(stored.key_id) == stored  # e.g. the CLI, then the gateway


def test_sql_stores_migrate_once_into_their_own_version_table(tmp_path: Path) -> None:
    stores = [open_store("sqlite:///keys.db", f"i{n}", tmp_path) for n in range(6)]
    # Several workers touching a fresh database at once: every one must come up.
    threads = [threading.Thread(target=store.list) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in stores:
        assert store.list() == []
        store.close()
    with sqlite3.connect(tmp_path / "keys.db") as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        versions = db.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchall()
    assert {TABLE, VERSION_TABLE} <= tables
    assert "alembic_version" not in tables  # an application's own Alembic history is untouched
    assert versions == [("0001_api_keys",)]


def test_no_secret_reaches_the_database(tmp_path: Path) -> None:
    key = apikey.generate()
    store = open_store("sqlite:///keys.db", "partners", tmp_path)
    store.add(record(key_id=key.key_id, secret_hash=key.secret_hash))
    store.close()
    raw = (tmp_path / "keys.db").read_bytes()
    assert key.secret.encode() not in raw
    assert key.secret_hash.encode() in raw


def test_an_unreachable_store_is_a_store_error(tmp_path: Path) -> None:
    for url in ("redis://127.0.0.1:1/0", "postgresql://postgres@127.0.0.1:1/test"):
        store = open_store(url, "partners", tmp_path)
        with pytest.raises(KeyStoreError):
            store.get("abcdefghijkl")
        store.close()
    with pytest.raises(KeyStoreError, match="in-memory"):
        open_store("sqlite://", "partners", tmp_path)
    with pytest.raises(KeyStoreError, match="unsupported"):
        open_store("mysql://x/y", "partners", tmp_path)
