"""The SQL table of API keys. Its history lives in ``migrations/``; keep the two in step."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Index, MetaData, String, Table, Text

TABLE = "onegate_api_keys"
VERSION_TABLE = "onegate_alembic_version"
"""The key store's own Alembic version table, so sharing a database with an application (or
another onegate owner) that uses Alembic never mixes the histories. It keeps the name it had
before other owners existed, which every deployed database already holds; newer owners name
theirs ``onegate_alembic_version_<owner>``."""

metadata = MetaData()

api_keys = Table(
    TABLE,
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("issuer", String(128), nullable=False),
    Column("secret_hash", String(64), nullable=False),
    Column("subject", String(255), nullable=False),
    Column("name", String(255), nullable=False),
    Column("scopes", Text, nullable=False),
    Column("tenant", String(255), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Index("ix_onegate_api_keys_issuer", "issuer"),
)
