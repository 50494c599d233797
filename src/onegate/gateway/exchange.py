"""The per-request record every stage reads and writes.

Stages keep no per-request state on ``self``; what one stage learns (the route, the client's
address, the chosen target, the status sent) goes here for the stages after it and for the
outermost stage, which logs and measures the whole exchange.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from onegate.auth.principal import Principal
from onegate.errors import OnegateError
from onegate.gateway.headers import ForwardedInfo
from onegate.gateway.routing import RouteMatch
from onegate.gateway.upstreams import Target, Upstream
from onegate.types import Message, Scope

SCOPE_KEY = "onegate.exchange"


@dataclass(slots=True, eq=False)
class Exchange:
    request_id: str
    started: float = field(default_factory=time.perf_counter)
    forwarded: ForwardedInfo | None = None
    path: str | None = None
    """The normalised path, once the match stage has computed it."""
    match: RouteMatch | None = None
    upstream: Upstream | None = None
    target: Target | None = None
    body_length: int | None = None
    """The request's Content-Length, once the framing has been checked."""
    body_chunked: bool = False
    attempts: int = 0
    status: int = 0
    response_started: bool = False
    bytes_sent: int = 0
    error: OnegateError | None = None
    rate_limit_skipped: bool = False
    """Set when rate limits could not be checked (store down) and the request went through."""
    principal: Principal | None = None
    """Set by the auth stage once the caller is known."""
    response_headers: list[tuple[bytes, bytes]] | None = None
    """Headers stages ask to add to whatever response is sent (CORS, RateLimit-*)."""

    upstream_headers: list[tuple[bytes, bytes]] | None = None
    """Headers stages ask to add to the request sent upstream (identity, traceparent), after
    the client's headers have been filtered, so a client can never supply or remove them."""
    drop_response_headers: frozenset[bytes] = frozenset()
    """Upstream response header names (lower-case) the gateway answers for itself (CORS)."""
    drop_upstream_headers: frozenset[bytes] = frozenset()
    """Further client header names (lower-case) not to forward (e.g. a consumed API key)."""

    def add_upstream_header(self, name: bytes, value: bytes) -> None:
        if self.upstream_headers is None:
            self.upstream_headers = []
        self.upstream_headers.append((name, value))

    def add_response_header(self, name: bytes, value: bytes) -> None:
        if self.response_headers is None:
            self.response_headers = []
        self.response_headers.append((name, value))

    def response_start(self, status: int, headers: list[tuple[bytes, bytes]]) -> Message:
        """The ``http.response.start`` message: every responder in the pipeline builds it here.

        It records the status for the outermost stage and adds the request id and the headers
        stages asked for, which is cheaper than wrapping ``send`` for every request.
        """
        headers.append((b"x-request-id", self.request_id.encode("ascii")))
        if self.response_headers:
            headers += self.response_headers
        self.status = status
        self.response_started = True
        return {"type": "http.response.start", "status": status, "headers": headers}

    @property
    def client_ip(self) -> str | None:
        return self.forwarded.client_ip if self.forwarded is not None else None

    @property
    def route_name(self) -> str | None:
        return self.match.route.name if self.match is not None else None

    @property
    def route_template(self) -> str | None:
        """The matched route's path template or prefix (OpenTelemetry's ``http.route``)."""
        if self.match is None:
            return None
        match = self.match.route.config.match
        return match.path or match.prefix

    @property
    def upstream_name(self) -> str | None:
        return self.upstream.name if self.upstream is not None else None

    @property
    def target_url(self) -> str | None:
        return self.target.url if self.target is not None else None

    @property
    def principal_id(self) -> str | None:
        return self.principal.id if self.principal is not None else None


def exchange_of(scope: Scope) -> Exchange:
    exchange: Exchange = scope[SCOPE_KEY]
    return exchange
