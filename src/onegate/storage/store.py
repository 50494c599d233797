"""One owner's tables in a SQL database: migrated on first use, worked on in transactions.

Migrations (``upgrade head``) run the first time a store touches its database, so an operator
never runs a separate migration step. Several workers starting at once may race to migrate:
:mod:`onegate.storage.locks` serialises them, and any loser of a race elsewhere retries once
the winner is done.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from alembic.util import CommandError
from sqlalchemy import Engine
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from onegate.storage import migrate
from onegate.storage.errors import StorageError, describe
from onegate.storage.locks import migration_lock

_T = TypeVar("_T")

_MIGRATION_ATTEMPTS = 3


class SqlStore:
    """The tables of one owner (the key store, a service...) in the database of ``engine``.

    ``migrations`` is the owner's directory of Alembic revision files and ``version_table``
    the table that records how far they ran: its own, so owners sharing a database (with each
    other or with an application's own Alembic) never read each other's history. Several
    stores may share one engine.
    """

    def __init__(self, engine: Engine, *, migrations: Path, version_table: str) -> None:
        self.engine = engine
        self.migrations = migrations
        self.version_table = version_table
        self._migrated = False
        self._lock = threading.Lock()

    def run(self, work: Callable[[Connection], _T]) -> _T:
        """``work`` in one transaction, committed if it returns, after migrating if needed.

        Database errors become :class:`StorageError`, except an :class:`IntegrityError`, which
        is raised as it is: only the owner knows which constraint means what.
        """
        self.ensure_schema()
        try:
            with self.engine.begin() as connection:
                return work(connection)
        except IntegrityError:
            raise
        except SQLAlchemyError as exc:
            raise StorageError(describe(exc)) from None

    def ensure_schema(self) -> None:
        """Bring the owner's tables to head, once per store."""
        if self._migrated:
            return
        with self._lock:
            if self._migrated:
                return
            for attempt in range(_MIGRATION_ATTEMPTS):
                try:
                    with migration_lock(self.engine) as connection:
                        migrate.upgrade(connection, self.migrations, self.version_table)
                    break
                except CommandError as exc:
                    # e.g. the version table names a revision missing here: a newer release
                    # migrated this database. Retrying would not help.
                    raise StorageError(f"{self.version_table}: {exc}") from None
                except SQLAlchemyError as exc:
                    if attempt + 1 == _MIGRATION_ATTEMPTS:
                        raise StorageError(describe(exc)) from None
                    time.sleep(0.05 * (attempt + 1))  # another process is migrating
            self._migrated = True

    def close(self) -> None:
        """Close the engine's pooled connections (a shared engine stays usable)."""
        self.engine.dispose()
