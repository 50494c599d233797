"""Keys in SQL through SQLAlchemy 2: SQLite by default, PostgreSQL for several gateways.

The table is created by the Alembic migrations shipped in this package, run (``upgrade
head``) the first time a store touches its database, so an operator never runs a separate
migration step. Several workers starting at once may race to migrate: PostgreSQL serialises
them with an advisory lock, and any loser of a race elsewhere retries once the winner is done.
"""

from __future__ import annotations

import fcntl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, create_engine, insert, select, text, update
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from onegate.auth.keystore.base import DuplicateKey, KeyStoreError, UnknownKey
from onegate.auth.keystore.record import KeyRecord
from onegate.auth.keystore.schema import api_keys

_T = TypeVar("_T")

MIGRATIONS = Path(__file__).parent / "migrations"
_MIGRATION_ATTEMPTS = 3
# Any constant will do; it only has to be the same for every onegate process.
_ADVISORY_LOCK = 0x6F6E6567617465


def engine_url(url: str, base_dir: Path) -> str:
    """``url`` with the driver onegate ships (psycopg 3) and SQLite paths made absolute."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+psycopg")
    elif backend == "sqlite":
        database = parsed.database
        if not database or database == ":memory:":
            raise KeyStoreError("an in-memory SQLite store would lose every key; use 'memory'")
        if not Path(database).is_absolute():
            parsed = parsed.set(database=str(base_dir / database))
    else:
        raise KeyStoreError(f"unsupported database {backend!r} (use sqlite or postgresql)")
    return parsed.render_as_string(hide_password=False)


class SqlKeyStore:
    blocking = True

    def __init__(self, url: str, issuer: str, base_dir: Path) -> None:
        self.issuer = issuer
        self.engine: Engine = create_engine(engine_url(url, base_dir), pool_pre_ping=True)
        self._migrated = False
        self._lock = threading.Lock()

    # --- the interface ---------------------------------------------------------------------

    def add(self, record: KeyRecord) -> None:
        row = {
            "key_id": record.key_id,
            "issuer": self.issuer,
            "secret_hash": record.secret_hash,
            "subject": record.subject,
            "name": record.name,
            "scopes": " ".join(record.scopes),
            "tenant": record.tenant,
            "created_at": _datetime(record.created_at),
            "expires_at": _datetime(record.expires_at),
            "revoked_at": _datetime(record.revoked_at),
        }
        try:
            self._run(lambda c: c.execute(insert(api_keys).values(**row)))
        except IntegrityError:
            raise DuplicateKey(record.key_id) from None

    def get(self, key_id: str) -> KeyRecord | None:
        query = select(api_keys).where(
            api_keys.c.key_id == key_id, api_keys.c.issuer == self.issuer
        )
        row = self._run(lambda c: c.execute(query).mappings().first())
        return _record(row) if row is not None else None

    def list(self) -> list[KeyRecord]:
        query = (
            select(api_keys)
            .where(api_keys.c.issuer == self.issuer)
            .order_by(api_keys.c.created_at, api_keys.c.key_id)
        )
        rows = self._run(lambda c: c.execute(query).mappings().all())
        return [_record(row) for row in rows]

    def revoke(self, key_id: str, at: float) -> KeyRecord:
        return self._update(key_id, lambda r: r.revoked(at))

    def expire(self, key_id: str, at: float) -> KeyRecord:
        return self._update(key_id, lambda r: r.expiring(at))

    def close(self) -> None:
        self.engine.dispose()

    # --- internals -------------------------------------------------------------------------

    def _update(self, key_id: str, change: Callable[[KeyRecord], KeyRecord]) -> KeyRecord:
        def apply(connection: Connection) -> KeyRecord:
            query = (
                select(api_keys)
                .where(api_keys.c.key_id == key_id, api_keys.c.issuer == self.issuer)
                .with_for_update()
            )
            row = connection.execute(query).mappings().first()
            if row is None:
                raise UnknownKey(key_id)
            updated = change(_record(row))
            connection.execute(
                update(api_keys)
                .where(api_keys.c.key_id == key_id)
                .values(
                    expires_at=_datetime(updated.expires_at),
                    revoked_at=_datetime(updated.revoked_at),
                )
            )
            return updated

        return self._run(apply)

    def _run(self, work: Callable[[Connection], _T]) -> _T:
        self._ensure_schema()
        try:
            with self.engine.begin() as connection:
                return work(connection)
        except IntegrityError:
            raise
        except SQLAlchemyError as exc:
            raise KeyStoreError(_describe(exc)) from None

    def _ensure_schema(self) -> None:
        if self._migrated:
            return
        with self._lock:
            if self._migrated:
                return
            for attempt in range(_MIGRATION_ATTEMPTS):
                try:
                    self._migrate()
                    break
                except SQLAlchemyError as exc:
                    if attempt + 1 == _MIGRATION_ATTEMPTS:
                        raise KeyStoreError(_describe(exc)) from None
                    time.sleep(0.05 * (attempt + 1))  # another process is migrating
            self._migrated = True

    def _migrate(self) -> None:
        config = AlembicConfig()
        config.set_main_option("script_location", str(MIGRATIONS))
        with _sqlite_lock(self.engine), self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:id)"), {"id": _ADVISORY_LOCK}
                )
            config.attributes["connection"] = connection
            command.upgrade(config, "head")


@contextmanager
def _sqlite_lock(engine: Engine) -> Iterator[None]:
    """Serialise migrations of one SQLite file across threads and processes.

    SQLite runs DDL outside the migration's transaction, so two migrators racing could leave
    a table created but not recorded as such; a lock file next to the database prevents it.
    """
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database:
        yield
        return
    with open(f"{database}.migrate-lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _datetime(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value is not None else None


def _timestamp(value: datetime | None) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite keeps no zone; we only ever write UTC
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def _record(row: Any) -> KeyRecord:
    scopes: str = row["scopes"]
    return KeyRecord(
        key_id=row["key_id"],
        secret_hash=row["secret_hash"],
        subject=row["subject"],
        name=row["name"],
        scopes=tuple(scopes.split()),
        tenant=row["tenant"],
        created_at=_timestamp(row["created_at"]) or 0.0,
        expires_at=_timestamp(row["expires_at"]),
        revoked_at=_timestamp(row["revoked_at"]),
    )


def _describe(exc: SQLAlchemyError) -> str:
    # The first line only: SQLAlchemy appends the statement and its parameters below it.
    original = getattr(exc, "orig", None) or exc
    return f"{type(original).__name__}: {str(original).splitlines()[0] if str(original) else ''}"
