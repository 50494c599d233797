"""Finds the route; every later stage reads it from the exchange.

Two things are matched before the configured routes:

- the gateway's own endpoints (``/_onegate/**`` and the metrics path, see
  :mod:`onegate.gateway.admin.surface`), so no configured route can shadow them;
- a CORS preflight is matched as the request it announces (its
  ``Access-Control-Request-Method``), because that is the request whose route's CORS policy
  it asks about. Otherwise a route whose ``methods`` leave out ``OPTIONS`` would answer the
  preflight 405 and the browser would never send the real request. If that route has no CORS
  policy, the ``OPTIONS`` request is routed as itself and its upstream answers it.
"""

from __future__ import annotations

from typing import ClassVar

from onegate.errors import MethodNotAllowed, RouteNotFound
from onegate.gateway.context import StageContext
from onegate.gateway.exchange import exchange_of
from onegate.gateway.pipeline import Stage
from onegate.gateway.routing import RouteMatch
from onegate.gateway.stages.cors import preflight_method
from onegate.http import normalize_path
from onegate.types import ASGIApp, Receive, Scope, Send


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

    def __init__(self, app: ASGIApp, context: StageContext) -> None:
        super().__init__(app, context)
        self.router = context.router
        self.upstreams = context.upstreams
        self.admin = context.admin
        self.internal_prefixes = context.admin.prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_path = scope.get("raw_path") or scope["path"].encode("utf-8")
        path = normalize_path(raw_path)
        exchange = exchange_of(scope)
        exchange.path = path
        if path.startswith(self.internal_prefixes):
            internal = self.admin.match(scope, path, exchange)
            if internal is not None:
                exchange.match, exchange.upstream = internal
                await self.app(scope, receive, send)
                return
        method = scope.get("method", "GET")
        host = request_host(scope)
        if method == "OPTIONS":
            match = self._match_options(scope, host, path)
        else:
            match = self.router.match(method, host, path)
        exchange.match = match
        exchange.upstream = self.upstreams[match.route.upstream]
        await self.app(scope, receive, send)

    def _match_options(self, scope: Scope, host: str | None, path: str) -> RouteMatch:
        announced = preflight_method(scope)
        if announced:
            try:
                match = self.router.match(announced, host, path)
            except (RouteNotFound, MethodNotAllowed):
                pass  # the real request would fail too; route the OPTIONS as itself
            else:
                if match.route.config.cors is not None:
                    return match  # the cors stage answers it; it never reaches the upstream
        return self.router.match("OPTIONS", host, path)
