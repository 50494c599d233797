"""Migrations run under the database's migration lock, and one Alembic run at a time.

A revision here looks from the inside whether the lock is held while it runs, so removing
either lock (the SQLite lock file, the PostgreSQL advisory lock) fails these tests.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy

from helpers.storage import Database, Migrations, first_use_at_once
from onegate.storage import SqlStore, open_engine
from onegate.storage.locks import ADVISORY_LOCK, SQLITE_LOCK_SUFFIX

PROBE_BODY = f"""\
    import fcntl

    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        # flock locks belong to an open file: a fresh open cannot take a lock held elsewhere.
        with open(bind.engine.url.database + {SQLITE_LOCK_SUFFIX!r}, "a+b") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = False
                fcntl.flock(lock, fcntl.LOCK_UN)
            except BlockingIOError:
                held = True
    else:
        count = bind.execute(
            sa.text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND pid = pg_backend_pid() AND classid::bigint = :high"
                " AND objid::bigint = :low AND objsubid = 1"
            ),
            {{"high": {ADVISORY_LOCK >> 32}, "low": {ADVISORY_LOCK & 0xFFFFFFFF}}},
        ).scalar()
        held = count == 1
    op.create_table("onegate_test_probe", sa.Column("held", sa.Boolean, nullable=False))
    probe = sa.text("INSERT INTO onegate_test_probe (held) VALUES (:held)")
    op.execute(probe.bindparams(held=held))
"""


def test_a_migration_runs_holding_the_database_lock(database: Database, tmp_path: Path) -> None:
    migrations = Migrations(tmp_path / "probe" / "migrations")
    migrations.add("probe_0001", PROBE_BODY)
    store = SqlStore(database.engine(), migrations=migrations.path, version_table="v_probe")
    query = sqlalchemy.text("SELECT held FROM onegate_test_probe")
    assert bool(store.run(lambda c: c.execute(query).scalar_one()))
    # ...and releases it once done: a later migrator of the same database gets through.
    migrations.add("probe_0002", "    pass")
    later = SqlStore(database.engine(), migrations=migrations.path, version_table="v_probe")
    later.ensure_schema()
    later.close()
    store.close()
    assert database.versions("v_probe") == ["probe_0002"]


def test_owners_of_different_databases_migrate_side_by_side(tmp_path: Path) -> None:
    # Alembic's ``op`` is a process-wide proxy: two runs overlapping in one process (even on
    # two databases, so no database lock applies) would send one's DDL through the other's
    # connection. Each revision dawdles before its DDL so that, without the process lock,
    # the runs would overlap.
    stores = []
    for name in ("left", "right"):
        migrations = Migrations(tmp_path / name / "migrations")
        migrations.add(
            f"{name}_0001",
            "    import time\n\n"
            "    time.sleep(0.2)\n"
            f'    op.create_table("onegate_test_{name}", sa.Column("id", sa.Integer))',
        )
        engine = open_engine(f"sqlite:///{name}.db", tmp_path)
        stores.append(SqlStore(engine, migrations=migrations.path, version_table="v_side"))
    first_use_at_once(stores, SqlStore.ensure_schema)
    for name in ("left", "right"):
        database = Database("sqlite", f"sqlite:///{name}.db", tmp_path)
        assert database.tables() == {f"onegate_test_{name}", "v_side"}
        assert database.versions("v_side") == [f"{name}_0001"]
