"""The lock every migration of a database runs under, across threads and processes.

Several workers starting at once all find a fresh database and all try to migrate it. One
lock per database is enough (migrations are rare and quick), and it serialises the owners too:
the key store and a service migrating the same database take turns.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text
from sqlalchemy.engine import Connection

ADVISORY_LOCK = 0x6F6E6567617465
"""PostgreSQL advisory lock key ("onegate" in ASCII). Any constant would do, but it must stay
the one every onegate release uses, so that old and new gateways of a rolling upgrade still
take turns."""

SQLITE_LOCK_SUFFIX = ".migrate-lock"


@contextmanager
def migration_lock(engine: Engine) -> Iterator[Connection]:
    """A connection, inside a transaction, that no other migrator of the database holds now."""
    with _sqlite_file_lock(engine), engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Transaction-scoped: released by the commit or rollback, even if we crash midway.
            connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": ADVISORY_LOCK})
        yield connection


@contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    """Serialise migrations of one SQLite file across threads and processes.

    SQLite runs DDL outside the migration's transaction, so two migrators racing could leave
    a table created but not recorded as such; a lock file next to the database prevents it.
    ``flock`` locks belong to an open file, so each call opens its own: threads of one process
    exclude each other as processes do.
    """
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database:
        yield
        return
    with open(database + SQLITE_LOCK_SUFFIX, "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
