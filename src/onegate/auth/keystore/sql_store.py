"""Keys in SQL through SQLAlchemy 2: SQLite by default, PostgreSQL for several gateways.

Only the table, its queries and its migrations (``migrations/``) live here; the engine, the
migration on first use and its locks are :mod:`onegate.storage`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from onegate.auth.keystore.base import DuplicateKey, KeyStoreError, UnknownKey
from onegate.auth.keystore.record import KeyRecord
from onegate.auth.keystore.schema import VERSION_TABLE, api_keys
from onegate.storage import SqlStore, StorageError, open_engine

_T = TypeVar("_T")

MIGRATIONS = Path(__file__).parent / "migrations"


class SqlKeyStore:
    blocking = True

    def __init__(self, url: str, issuer: str, base_dir: Path) -> None:
        self.issuer = issuer
        try:
            engine = open_engine(url, base_dir)
        except StorageError as exc:
            raise KeyStoreError(exc.detail) from None
        self.sql = SqlStore(engine, migrations=MIGRATIONS, version_table=VERSION_TABLE)

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
        self.sql.close()

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
        try:
            return self.sql.run(work)
        except StorageError as exc:
            raise KeyStoreError(exc.detail) from None


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
