"""SQL storage shared by every owner of tables: the key store now, migration state and services
later.

Each owner keeps its own schema, its own Alembic history (a ``migrations/`` directory of
revision files) and its own version table, and gets them through one :class:`SqlStore`::

    store = SqlStore(open_engine(url, base_dir), migrations=HERE / "migrations",
                     version_table="onegate_alembic_version_notes")
    rows = store.run(lambda connection: connection.execute(query).all())

The schema is brought to ``head`` the first time a store touches its database. This package
is infrastructure: it imports nothing of onegate but the error hierarchy, and takes plain
arguments rather than config models.
"""

from __future__ import annotations

from onegate.storage.engine import engine_url, open_engine
from onegate.storage.errors import StorageError
from onegate.storage.store import SqlStore

__all__ = ["SqlStore", "StorageError", "engine_url", "open_engine"]
