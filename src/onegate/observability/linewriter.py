"""Log lines written in batches of whole lines, instead of one system call per line.

A write per request would cost more than formatting the line. Lines are kept in memory and
written when :meth:`LineWriter.flush` runs (every 100 ms, at shutdown, and whenever a burst
fills the buffer). Each ``write`` carries whole lines and at most ``PIPE_BUF`` bytes, so when
several workers share one pipe (a container runtime, systemd), the kernel never interleaves
their lines. A worker that is killed loses its last 100 ms of lines.
"""

from __future__ import annotations

import logging
import os
import select

logger = logging.getLogger("onegate.observability")

#: Largest write a pipe keeps in one piece (POSIX guarantees at least 512; Linux has 4096).
ATOMIC_BYTES = getattr(select, "PIPE_BUF", 512)

#: Lines held before a flush is forced: bounds memory during a burst.
MAX_PENDING_LINES = 1024


class LineWriter:
    def __init__(self, fd: int, max_pending: int = MAX_PENDING_LINES) -> None:
        self.fd = fd
        self.max_pending = max_pending
        self._lines: list[str] = []
        self._failed = False

    def write(self, line: str) -> None:
        """Queue one line (without its newline)."""
        lines = self._lines
        lines.append(line)
        if len(lines) >= self.max_pending:
            self.flush()

    def flush(self) -> None:
        lines = self._lines
        if not lines:
            return
        self._lines = []
        chunk: list[str] = []
        size = 0
        for line in lines:
            length = len(line) + 1  # lines are ASCII: JSON with non-ASCII escaped
            if chunk and size + length > ATOMIC_BYTES:
                self._write(chunk)
                chunk = []
                size = 0
            chunk.append(line)
            size += length
        self._write(chunk)

    def _write(self, lines: list[str]) -> None:
        chunk = ("\n".join(lines) + "\n").encode("utf-8")
        try:
            while chunk:
                written = os.write(self.fd, chunk)
                chunk = chunk[written:]
        except OSError as exc:
            # A closed or broken stream must not fail requests; say so once, on stderr.
            if not self._failed:
                self._failed = True
                logger.error("cannot write the access log (fd %d): %s", self.fd, exc)
            return
        self._failed = False
