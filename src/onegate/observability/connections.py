"""Counts of client connections: how many are open, and why the gateway closed the others.

The HTTP protocol (one object per connection, see :mod:`onegate.gateway.protocol`) counts
into the worker's :class:`ConnectionStats` with a dict increment; the worker's housekeeping
hands the counts to prometheus_client every 100 ms, with the request metrics.
The open count is read from uvicorn's own set of connections when flushing, so opening and
closing a connection costs nothing here.
"""

from __future__ import annotations

from collections.abc import Sized
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from prometheus_client import Counter

    from onegate.observability.families import Families

#: Every reason the gateway closes (or refuses) a client connection itself. A fixed set, so
#: the counter's series stay bounded whatever clients do.
CLOSE_REASONS: Final = (
    "first_byte_timeout",  # a new connection sent nothing
    "keep_alive_timeout",  # idle between requests for too long
    "head_timeout",  # a request head did not complete in time (slow-loris)
    "body_timeout",  # a request body stalled
    "head_too_large",  # 431 while the head was arriving
    "request_line_too_long",  # 414 while the request line was arriving
    "malformed",  # 400: not an HTTP/1.x request (HTTP/0.9 included)
    "unsupported_version",  # 505
    "over_capacity",  # refused with 503: the worker holds max_client_connections
    "reclaimed",  # an idle kept-alive connection closed to make room for a new one
    "drain",  # an idle connection closed at shutdown
)


class ConnectionStats:
    """This worker's connection counts since the last flush."""

    def __init__(self) -> None:
        self.pending: dict[str, int] = {}
        self._open: Sized = ()
        self._children: dict[str, Counter] = {}
        self._open_written: int | None = None

    def track(self, connections: Sized) -> None:
        """Read the open count from ``connections`` (the server's set of live connections)."""
        self._open = connections

    def closed(self, reason: str) -> None:
        """Count one connection the gateway closed or refused for ``reason``."""
        self.pending[reason] = self.pending.get(reason, 0) + 1

    @property
    def open(self) -> int:
        return len(self._open)

    def flush(self, families: Families) -> None:
        for reason, count in self.pending.items():
            child = self._children.get(reason)
            if child is None:
                child = self._children[reason] = families.connections_closed.labels(reason)
            child.inc(count)
        self.pending.clear()
        now_open = len(self._open)
        if now_open != self._open_written:
            families.connections_open.set(now_open)
            self._open_written = now_open
