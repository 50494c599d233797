"""Fixtures of the storage tests: a fresh database of each kind, and a second owner.

PostgreSQL runs in a schema of its own per test (dropped afterwards), so parallel runs and
other suites sharing the ``test`` database never see these tables.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.storage import POSTGRES, Database, Migrations, postgres


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        yield Database("sqlite", "sqlite:///shared.db", tmp_path)
        return
    schema = f"onegate_storage_{uuid.uuid4().hex[:12]}"
    postgres(f'CREATE SCHEMA "{schema}"')
    try:
        yield Database("postgres", f"{POSTGRES}?options=-csearch_path%3D{schema}", tmp_path)
    finally:
        postgres(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def notes(tmp_path: Path) -> Migrations:
    """A second owner with a tiny schema: one table of notes."""
    migrations = Migrations(tmp_path / "notes" / "migrations")
    migrations.add(
        "notes_0001",
        '    op.create_table("onegate_test_notes", sa.Column("text", sa.Text, nullable=False))',
    )
    return migrations
