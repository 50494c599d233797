"""The SQLAlchemy engine for a configured database URL: SQLite or PostgreSQL (psycopg 3)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from onegate.storage.errors import StorageError


def engine_url(url: str, base_dir: Path) -> str:
    """``url`` with the driver onegate ships (psycopg 3) and SQLite paths made absolute.

    A relative SQLite path is resolved against ``base_dir`` (the config file's directory), so
    the gateway and the CLI mean the same file wherever they were started from.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StorageError(f"not a database URL: {exc}") from None
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):  # "postgres" is Heroku's and libpq's spelling
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+psycopg")
    elif backend == "sqlite":
        database = parsed.database
        if not database or database == ":memory:":
            raise StorageError(
                "an in-memory SQLite database loses everything it holds; name a file"
            )
        if not Path(database).is_absolute():
            parsed = parsed.set(database=str(base_dir / database))
    else:
        raise StorageError(f"unsupported database {backend!r} (use sqlite or postgresql)")
    return parsed.render_as_string(hide_password=False)


def open_engine(url: str, base_dir: Path) -> Engine:
    """An engine for ``url`` (see :func:`engine_url`). It connects to nothing yet."""
    # pre_ping: a gateway holds connections for days; a database restart must not fail the
    # first request after it.
    return create_engine(engine_url(url, base_dir), pool_pre_ping=True)
