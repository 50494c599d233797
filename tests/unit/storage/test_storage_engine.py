"""Database URLs: the shipped driver, SQLite paths that mean the same file to everyone."""

from __future__ import annotations

from pathlib import Path

import pytest

from onegate.storage import StorageError, engine_url, open_engine


def test_postgresql_urls_get_the_psycopg_driver_and_keep_their_password(tmp_path: Path) -> None:
    for scheme in ("postgresql", "postgres"):
        url = engine_url(f"{scheme}://gate:p%40ss@db.internal:5433/keys", tmp_path)
        assert url == "postgresql+psycopg://gate:p%40ss@db.internal:5433/keys"
    # A driver the operator chose explicitly stands.
    chosen = "postgresql+psycopg2://gate@db/keys"
    assert engine_url(chosen, tmp_path) == chosen


def test_relative_sqlite_paths_resolve_against_the_base_directory(tmp_path: Path) -> None:
    assert engine_url("sqlite:///keys.db", tmp_path) == f"sqlite:///{tmp_path}/keys.db"
    assert engine_url("sqlite:///data/keys.db", tmp_path) == f"sqlite:///{tmp_path}/data/keys.db"
    assert engine_url("sqlite:////var/lib/keys.db", tmp_path) == "sqlite:////var/lib/keys.db"


def test_urls_onegate_cannot_keep_data_in_are_refused(tmp_path: Path) -> None:
    for url in ("sqlite://", "sqlite:///:memory:"):
        with pytest.raises(StorageError, match="in-memory"):
            engine_url(url, tmp_path)
    with pytest.raises(StorageError, match="unsupported database 'mysql'"):
        engine_url("mysql://x/y", tmp_path)
    with pytest.raises(StorageError, match="not a database URL"):
        engine_url("keys.db", tmp_path)


def test_opening_an_engine_connects_to_nothing(tmp_path: Path) -> None:
    engine = open_engine("sqlite:///never.db", tmp_path)
    assert engine.url.database == str(tmp_path / "never.db")
    engine.dispose()
    assert not (tmp_path / "never.db").exists()
