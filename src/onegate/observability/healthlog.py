"""Target health changes, logged once per gateway rather than once per worker.

Every worker runs its own active health checks (each balances with its own view), so with N
workers each change would be seen, and logged, N times. One worker speaks for the gateway: the
one holding an exclusive ``flock`` on a file in the directory the workers already share
(:mod:`onegate.observability.multiprocess`). The first worker to see a change takes the lock
and keeps it for its life; the others log their changes at DEBUG only. All workers probe the
same targets with the same settings, so the speaker's view is the gateway's, give or take one
probe interval. When the speaker dies the kernel releases its lock, and the next worker to see
a change takes over: no election, no stale owner to clean up.

Why not deduplicate the events themselves (the last logged state per target in a shared file):
workers probe at different moments, so during a flapping outage a lagging worker would log an
old state after a faster one had logged the new one. One speaker keeps the sequence of events
one process's consistent sequence.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os

from onegate.observability import multiprocess

logger = logging.getLogger("onegate.upstreams")

LOCK_FILE = "health-log.lock"


class HealthLog:
    """Where an upstream reports that one of its targets changed health."""

    def __init__(self) -> None:
        self._lock_fd: int | None = None

    def changed(self, upstream: str, target: str, healthy: bool) -> None:
        state = "healthy" if healthy else "unhealthy"
        if self.speaks_for_gateway():
            logger.warning("upstream %s target %s is now %s", upstream, target, state)
        else:
            logger.debug("upstream %s target %s is now %s here", upstream, target, state)

    def speaks_for_gateway(self) -> bool:
        """Whether this process logs for the whole gateway (it holds, or now took, the lock)."""
        if self._lock_fd is not None:
            return True
        shared = multiprocess.directory()
        if shared is None:
            return True  # not under ``onegate serve``: a single process
        try:
            fd = os.open(os.path.join(shared, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return True  # better a duplicate line than a lost event
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)  # another worker speaks
            return False
        self._lock_fd = fd  # held (and the fd kept open) until this process exits
        return True

    def close(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None
