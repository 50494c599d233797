"""Databases for the SQL storage tests: PostgreSQL statements, a database of either kind, and
an owner's migrations directory written revision by revision."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy
from sqlalchemy import Engine

from onegate.storage import SqlStore, open_engine

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def postgres(statement: str) -> None:
    engine = open_engine(POSTGRES, Path.cwd())
    try:
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text(statement))
    finally:
        engine.dispose()


@dataclass
class Database:
    kind: str
    url: str
    base_dir: Path

    def engine(self) -> Engine:
        return open_engine(self.url, self.base_dir)

    def tables(self) -> set[str]:
        engine = self.engine()
        try:
            return set(sqlalchemy.inspect(engine).get_table_names())
        finally:
            engine.dispose()

    def versions(self, version_table: str) -> list[str]:
        engine = self.engine()
        try:
            with engine.connect() as connection:
                query = sqlalchemy.text(f"SELECT version_num FROM {version_table}")
                return sorted(row[0] for row in connection.execute(query))
        finally:
            engine.dispose()


_REVISION = '''"""{doc}"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = {revision!r}
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
{body}
'''


class Migrations:
    """An owner's ``migrations/`` directory, written revision by revision."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True)
        self.head: str | None = None

    def add(self, revision: str, body: str, doc: str = "A test revision.") -> None:
        """A revision after the current head; ``body`` is the indented ``upgrade()`` body."""
        text = _REVISION.format(doc=doc, revision=revision, down=self.head, body=body)
        (self.path / f"{revision}.py").write_text(text)
        self.head = revision


def first_use_at_once(stores: Sequence[SqlStore], use: Callable[[SqlStore], object]) -> None:
    """``use`` every store from its own thread at the same time (as workers starting together
    do), close them, and fail if any use raised."""
    failures: list[BaseException] = []

    def first_use(store: SqlStore) -> None:
        try:
            use(store)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=first_use, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in stores:
        store.close()
    assert failures == []
