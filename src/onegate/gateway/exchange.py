"""The per-request record every stage reads and writes.

Stages keep no per-request state on ``self``; what one stage learns (the route, the client's
address, the chosen target, the status sent) goes here for the stages after it and for the
outermost stage, which logs and measures the whole exchange.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from onegate.types import Scope

if TYPE_CHECKING:
    from onegate.errors import OnegateError
    from onegate.gateway.headers import ForwardedInfo
    from onegate.gateway.routing import RouteMatch
    from onegate.gateway.upstreams import Target, Upstream

SCOPE_KEY = "onegate.exchange"


@dataclass(slots=True, eq=False)
class Exchange:
    request_id: str
    started: float = field(default_factory=time.perf_counter)
    forwarded: ForwardedInfo | None = None
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

    @property
    def client_ip(self) -> str | None:
        return self.forwarded.client_ip if self.forwarded is not None else None

    @property
    def route_name(self) -> str | None:
        return self.match.route.name if self.match is not None else None


def exchange_of(scope: Scope) -> Exchange:
    exchange: Exchange = scope[SCOPE_KEY]
    return exchange
