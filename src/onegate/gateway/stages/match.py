"""Finds the route; every later stage reads it from the exchange."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from onegate.gateway.exchange import exchange_of
from onegate.gateway.pipeline import Stage
from onegate.gateway.routing import normalize_path
from onegate.types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from onegate.gateway.runtime import Runtime


def request_host(scope: Scope) -> str | None:
    """The Host header without port, lower-cased."""
    for name, value in scope["headers"]:
        if name == b"host":
            host: str = value.decode("latin-1").strip().lower()
            if host.startswith("["):  # IPv6 literal
                return host.split("]", 1)[0] + "]"
            return host.rsplit(":", 1)[0] if ":" in host else host
    return None


class MatchStage(Stage):
    name: ClassVar[str] = "match"

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        super().__init__(app, runtime)
        self.router = runtime.router
        self.upstreams = runtime.upstreams

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_path = scope.get("raw_path") or scope["path"].encode("utf-8")
        path = normalize_path(raw_path)
        method = scope.get("method", "GET")
        match = self.router.match(method, request_host(scope), path)
        exchange = exchange_of(scope)
        exchange.match = match
        exchange.upstream = self.upstreams[match.route.upstream]
        await self.app(scope, receive, send)
