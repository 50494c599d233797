"""The Alembic environment every storage owner's migrations run in.

Run only by :func:`onegate.storage.migrate.upgrade`, which passes an open connection (inside
the transaction that holds the migration lock) and the owner's version table in
``config.attributes``. The owner's revision files are found through ``version_locations``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

connection: Connection = context.config.attributes["connection"]
version_table: str = context.config.attributes["version_table"]
# No target_metadata: upgrades replay hand-written revisions and never autogenerate.
context.configure(connection=connection, version_table=version_table)
with context.begin_transaction():
    context.run_migrations()
