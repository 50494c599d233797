"""Bringing one owner's tables to the newest revision of its own Alembic history.

Every owner's ``migrations/`` directory holds revision files only; the Alembic environment
that runs them is shared (``alembic_env/env.py``) and takes the connection and the owner's
version table from here, so there is no alembic.ini and nothing reads the environment.
"""

from __future__ import annotations

import threading
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy.engine import Connection

ENVIRONMENT = Path(__file__).parent / "alembic_env"

# Alembic installs ``alembic.context`` and ``alembic.op`` as module-level proxies for the
# length of a run (``EnvironmentContext.__enter__`` -> ``ModuleClsProxy._install_proxy``), so
# two runs in one process must not overlap, even for different databases. The database locks
# only serialise runs against the same database; this one covers the process.
_ALEMBIC_RUN = threading.Lock()


def upgrade(connection: Connection, migrations: Path, version_table: str) -> None:
    """Run the revisions in ``migrations`` up to head, on ``connection``'s transaction."""
    config = AlembicConfig()
    config.set_main_option("script_location", _option(ENVIRONMENT))
    config.set_main_option("version_locations", _option(migrations))
    # Split version_locations on os.pathsep, not on spaces and commas (Alembic's legacy rule,
    # which would cut a path such as "/Users/Jo Doe/..."). path_separator is the name since
    # Alembic 1.16 and is read first; older releases read version_path_separator.
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_path_separator", "os")
    config.attributes["connection"] = connection
    config.attributes["version_table"] = version_table
    with _ALEMBIC_RUN:
        command.upgrade(config, "head")


def _option(path: Path) -> str:
    # Alembic options go through ConfigParser interpolation: a literal % must be doubled.
    return str(path).replace("%", "%%")
