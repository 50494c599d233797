"""The access log: one JSON object per line, per request.

Keys, in order: ``ts`` (RFC 3339, UTC, when the response ended), ``request_id``, ``method``,
``path`` (normalised, never the query string: queries carry tokens), ``route``, ``upstream``,
``target``, ``status``, ``duration_ms``, ``bytes`` (response body bytes sent), ``principal``
(the caller's id, or null), ``client_ip``, ``attempts``, ``error`` (the gateway's error slug,
or null). Headers, query strings and bodies are never logged.

The line is built with an f-string rather than structlog or ``json.dumps``. Measured on the
project's VM (CPU per request, same fields, same batched writer; see
``benchmarks/observability_bench.py``): structlog with ``TimeStamper`` and ``JSONRenderer``
~23 us, a dict and ``json.dumps`` ~11 us, this line ~4.5 us, against a budget of 10 us for
metrics and the log together. JSON stays valid because every string value goes through the
json module's own string encoder, which escapes quotes, backslashes, control characters and
non-ASCII.
"""

from __future__ import annotations

import time
from json.encoder import encode_basestring_ascii as json_string
from typing import TYPE_CHECKING

from onegate.errors import BadRequest
from onegate.http import normalize_path
from onegate.observability.linewriter import LineWriter
from onegate.observability.observed import ObservedExchange

if TYPE_CHECKING:
    from onegate.types import Scope

_NULL = "null"


def request_path(scope: Scope) -> str:
    """The normalised request path, without the query string (as routing saw it)."""
    raw: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
    try:
        return normalize_path(raw)
    except BadRequest:
        return raw.decode("latin-1")  # refused as malformed: log what was sent


class Clock:
    """RFC 3339 UTC timestamps with milliseconds.

    A busy worker logs several requests per millisecond: the stamp is built once per
    millisecond, and its date and time part once per second.
    """

    __slots__ = ("_millisecond", "_prefix", "_second", "_stamp")

    def __init__(self) -> None:
        self._millisecond = -1
        self._stamp = ""
        self._second = -1
        self._prefix = ""

    def now(self) -> str:
        millisecond = int(time.time() * 1000)
        if millisecond != self._millisecond:
            self._millisecond = millisecond
            second, fraction = divmod(millisecond, 1000)
            if second != self._second:
                self._second = second
                self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._stamp = f"{self._prefix}.{fraction:03d}Z"
        return self._stamp


class AccessLog:
    def __init__(self, writer: LineWriter) -> None:
        self.writer = writer
        self.clock = Clock()

    def record(self, exchange: ObservedExchange, method: str, path: str, duration: float) -> None:
        self.writer.write(self.line(exchange, method, path, duration))

    def line(self, exchange: ObservedExchange, method: str, path: str, duration: float) -> str:
        route = exchange.route_name
        upstream = exchange.upstream_name
        target = exchange.target_url
        principal = exchange.principal_id
        error = exchange.error
        client_ip = exchange.client_ip
        return (
            f'{{"ts":"{self.clock.now()}","request_id":{json_string(exchange.request_id)},'
            f'"method":{json_string(method)},"path":{json_string(path)},'
            f'"route":{json_string(route) if route is not None else _NULL},'
            f'"upstream":{json_string(upstream) if upstream is not None else _NULL},'
            f'"target":{json_string(target) if target is not None else _NULL},'
            f'"status":{exchange.status},"duration_ms":{duration * 1000:.3f},'
            f'"bytes":{exchange.bytes_sent},'
            f'"principal":{json_string(principal) if principal is not None else _NULL},'
            f'"client_ip":{json_string(client_ip) if client_ip is not None else _NULL},'
            f'"attempts":{exchange.attempts},'
            f'"error":{json_string(error.slug) if error is not None else _NULL}}}'
        )
