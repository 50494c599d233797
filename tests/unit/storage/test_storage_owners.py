"""Owners share a database without sharing a history: the key store and a second owner.

Each owner brings its own revisions and version table; migrating one never reads, moves or
trips over the other's history, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from helpers.storage import Database, Migrations, first_use_at_once
from onegate.auth import apikey
from onegate.auth.keystore import KeyRecord, open_store
from onegate.auth.keystore.schema import TABLE as KEYS_TABLE
from onegate.auth.keystore.schema import VERSION_TABLE as KEYS_VERSIONS
from onegate.storage import SqlStore, StorageError, open_engine

NOTES_VERSIONS = "onegate_alembic_version_notes"


def notes_store(database: Database, migrations: Migrations) -> SqlStore:
    return SqlStore(database.engine(), migrations=migrations.path, version_table=NOTES_VERSIONS)


def write_note(text: str) -> Callable[[Connection], None]:
    def work(connection: Connection) -> None:
        query = sqlalchemy.text("INSERT INTO onegate_test_notes (text) VALUES (:t)")
        connection.execute(query, {"t": text})

    return work


def read_notes(connection: Connection) -> list[str]:
    query = sqlalchemy.text("SELECT text FROM onegate_test_notes ORDER BY text")
    return [row[0] for row in connection.execute(query)]


def a_key(subject: str) -> KeyRecord:
    key = apikey.generate()
    return KeyRecord(key.key_id, key.secret_hash, subject, f"{subject} key", created_at=1.0)


def test_a_second_owner_keeps_its_own_history_beside_the_key_store(
    database: Database, notes: Migrations
) -> None:
    keys = open_store(database.url, "partners", database.base_dir)
    stored = a_key("svc")
    keys.add(stored)
    store = notes_store(database, notes)
    store.run(write_note("first"))
    store.close()
    assert {KEYS_TABLE, KEYS_VERSIONS, "onegate_test_notes", NOTES_VERSIONS} <= database.tables()
    assert database.versions(KEYS_VERSIONS) == ["0001_api_keys"]
    assert database.versions(NOTES_VERSIONS) == ["notes_0001"]

    # The second owner moves on; the key store's history and data stay where they were.
    notes.add(
        "notes_0002",
        '    op.add_column("onegate_test_notes", sa.Column("pinned", sa.Boolean))',
    )
    upgraded = notes_store(database, notes)
    assert upgraded.run(read_notes) == ["first"]
    upgraded.close()
    assert database.versions(NOTES_VERSIONS) == ["notes_0002"]
    assert database.versions(KEYS_VERSIONS) == ["0001_api_keys"]
    keys.close()
    reopened = open_store(database.url, "partners", database.base_dir)
    assert reopened.get(stored.key_id) == stored
    reopened.close()


def test_owners_sharing_one_version_table_would_collide(
    database: Database, notes: Migrations
) -> None:
    # The control for the test above: one version table for two histories fails, which is
    # what giving each owner its own prevents.
    keys = open_store(database.url, "partners", database.base_dir)
    keys.list()
    keys.close()
    clash = SqlStore(database.engine(), migrations=notes.path, version_table=KEYS_VERSIONS)
    with pytest.raises(StorageError, match="0001_api_keys"):
        clash.run(read_notes)
    clash.close()


def test_workers_starting_at_once_migrate_once(database: Database, notes: Migrations) -> None:
    stores = [notes_store(database, notes) for _ in range(4)]
    first_use_at_once(stores, lambda store: store.run(read_notes))
    assert database.versions(NOTES_VERSIONS) == ["notes_0001"]


def test_work_commits_or_rolls_back_as_a_whole(database: Database, notes: Migrations) -> None:
    store = notes_store(database, notes)

    def half_done(connection: Connection) -> None:
        write_note("lost")(connection)
        raise RuntimeError("the owner gave up")

    with pytest.raises(RuntimeError):
        store.run(half_done)
    store.run(write_note("kept"))
    assert store.run(read_notes) == ["kept"]
    store.close()


def test_integrity_errors_reach_the_owner_and_others_become_storage_errors(
    database: Database, tmp_path: Path
) -> None:
    migrations = Migrations(tmp_path / "unique" / "migrations")
    migrations.add(
        "unique_0001",
        '    op.create_table("onegate_test_unique", sa.Column("id", sa.Text, primary_key=True))',
    )
    store = SqlStore(database.engine(), migrations=migrations.path, version_table="v_unique")
    insert = sqlalchemy.text("INSERT INTO onegate_test_unique (id) VALUES ('secret-value')")
    store.run(lambda c: c.execute(insert))
    with pytest.raises(IntegrityError):  # only the owner knows what a duplicate means
        store.run(lambda c: c.execute(insert))
    missing = sqlalchemy.text("SELECT * FROM no_such_table WHERE id = :v")
    with pytest.raises(StorageError) as caught:
        store.run(lambda c: c.execute(missing, {"v": "secret-value"}))
    message = str(caught.value)
    assert "\n" not in message and "secret-value" not in message  # no statement, no parameters
    store.close()


def test_an_unreachable_database_is_a_storage_error(tmp_path: Path, notes: Migrations) -> None:
    engine = open_engine("postgresql://postgres@127.0.0.1:1/test", tmp_path)
    store = SqlStore(engine, migrations=notes.path, version_table=NOTES_VERSIONS)
    with pytest.raises(StorageError, match="OperationalError"):
        store.run(read_notes)
    store.close()
