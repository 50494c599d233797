"""Create the API key table.

Revision ID: 0001_api_keys
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_api_keys"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "onegate_api_keys",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("issuer", sa.String(128), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("scopes", sa.Text, nullable=False),
        sa.Column("tenant", sa.String(255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_onegate_api_keys_issuer", "onegate_api_keys", ["issuer"])


def downgrade() -> None:
    op.drop_index("ix_onegate_api_keys_issuer", table_name="onegate_api_keys")
    op.drop_table("onegate_api_keys")
