"""The directory where worker processes share their metric values.

prometheus_client's multiprocess mode: each worker writes its values to memory-mapped files in
``PROMETHEUS_MULTIPROC_DIR``, and whichever worker answers a scrape adds them all up. The
server process creates a fresh directory before any worker starts (also with one worker, so
there is one code path), and removes it when it exits: values left by an earlier run would
otherwise be added to this run's.

This module must not import prometheus_client at module level: the server imports it before
the variable is set, and prometheus_client decides on multiprocess mode when it is imported.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator

ENV = "PROMETHEUS_MULTIPROC_DIR"

logger = logging.getLogger("onegate.observability")


def directory() -> str | None:
    """The shared directory, when this process is part of a multiprocess server."""
    return os.environ.get(ENV) or None


@contextlib.contextmanager
def metrics_directory() -> Iterator[str]:
    """Create a fresh directory for this server's workers and remove it on the way out.

    A directory already named in the environment (by an operator or a parent onegate) is
    replaced, not reused: its files may hold another run's values.
    """
    path = tempfile.mkdtemp(prefix="onegate-metrics-")
    previous = os.environ.get(ENV)
    os.environ[ENV] = path
    try:
        yield path
    finally:
        if previous is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = previous
        shutil.rmtree(path, ignore_errors=True)


def worker_exited(pid: int) -> None:
    """Drop the gauges of a worker that is gone (in-flight count, target health, breakers).

    Counters and histograms stay: a dead worker's requests still happened. Gauges use the
    ``live*`` modes, whose files this removes, so a replaced worker's last view does not linger.
    """
    if directory() is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]  # untyped upstream


def ensure_multiprocess_values() -> None:
    """Make prometheus_client write shared files if the directory was set after its import.

    prometheus_client picks its value class when it is first imported. With one worker the
    server process serves too, and something may have imported prometheus_client before
    :func:`metrics_directory` set the variable; values would then stay in process memory and
    a scrape would see none of them.
    """
    if directory() is None:
        return
    from prometheus_client import values

    if not getattr(values.ValueClass, "_multiprocess", False):
        logger.debug("prometheus_client was imported before %s was set; switching", ENV)
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
