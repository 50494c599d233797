"""Alembic environment for the API key table, run programmatically by the SQL store.

The store passes its open connection in ``config.attributes["connection"]``; there is no
alembic.ini and nothing here reads the environment.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from onegate.auth.keystore.schema import VERSION_TABLE, metadata

connection: Connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
