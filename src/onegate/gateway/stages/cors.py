"""Answers CORS preflights at the edge and adds CORS headers to every other answer.

It runs before ``auth``: a browser sends a preflight without credentials, so the preflight has
to be answered before anyone asks for them, and a 401, 403 or 429 must still carry
``Access-Control-Allow-Origin`` or the page cannot even read why it was refused. Headers for
ordinary requests go through ``Exchange.add_response_header``, so they reach whatever answer is
sent, a problem document from a later stage included.

Routes without a ``cors`` policy pass through untouched, preflights included: their upstream
keeps doing its own CORS, as it did before the gateway.
"""

from __future__ import annotations

from typing import ClassVar

from onegate.gateway.config import GatewayConfig
from onegate.gateway.context import StageContext
from onegate.gateway.cors import ALLOW_ORIGIN, VARY_ORIGIN, CorsRules
from onegate.gateway.exchange import SCOPE_KEY, Exchange
from onegate.gateway.pipeline import Stage
from onegate.http import http_date
from onegate.types import ASGIApp, Receive, Scope, Send

ORIGIN = b"origin"
REQUEST_METHOD = b"access-control-request-method"
REQUEST_HEADERS = b"access-control-request-headers"


def preflight_method(scope: Scope) -> str | None:
    """The method a CORS preflight announces, or None if ``scope`` is not a preflight.

    A preflight is an ``OPTIONS`` request with both ``Origin`` and
    ``Access-Control-Request-Method``; an ``OPTIONS`` without them is an ordinary request.
    """
    if scope.get("method") != "OPTIONS":
        return None
    origin = False
    method: str | None = None
    for name, value in scope["headers"]:
        if name == ORIGIN:
            origin = True
        elif name == REQUEST_METHOD:
            method = value.decode("latin-1").strip()
    return method if origin and method else None


UPSTREAM_CORS_HEADERS = frozenset(
    {
        b"access-control-allow-origin",
        b"access-control-allow-credentials",
        b"access-control-allow-methods",
        b"access-control-allow-headers",
        b"access-control-expose-headers",
        b"access-control-max-age",
    }
)


class CorsStage(Stage):
    name: ClassVar[str] = "cors"

    @classmethod
    def enabled(cls, config: GatewayConfig) -> bool:
        return any(route.cors is not None for route in config.routes)

    def __init__(self, app: ASGIApp, context: StageContext) -> None:
        super().__init__(app, context)
        # Keyed by route name: user route names are unique and internal ones cannot collide.
        self.rules = {r.name: CorsRules(r.cors) for r in context.config.routes if r.cors}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        exchange: Exchange = scope[SCOPE_KEY]
        match = exchange.match
        if match is None or match.route.config.cors is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rules = self.rules[match.route.name]
        origin: bytes | None = None
        method: bytes | None = None
        requested: bytes | None = None
        for name, value in scope["headers"]:
            if name == ORIGIN:
                origin = value
            elif name == REQUEST_METHOD:
                method = value.strip()
            elif name == REQUEST_HEADERS:
                # Several lines are one comma-separated list (RFC 9110, section 5.3).
                requested = value if requested is None else requested + b"," + value
        if origin is not None and method and scope["method"] == "OPTIONS":
            await self._answer_preflight(exchange, send, rules, origin, method, requested)
            return
        # The answer depends on Origin even when there is none: a shared cache must not hand a
        # response without CORS headers to a page from an allowed origin.
        exchange.add_response_header(*VARY_ORIGIN)
        # The gateway speaks CORS for this route; an upstream's own answer would make the
        # headers appear twice, which browsers refuse.
        exchange.drop_response_headers = UPSTREAM_CORS_HEADERS
        if origin is not None:
            allowed = rules.allow_origin(origin)
            if allowed is not None:
                exchange.add_response_header(ALLOW_ORIGIN, allowed)
                for header in rules.simple:
                    exchange.add_response_header(*header)
        await self.app(scope, receive, send)

    @staticmethod
    async def _answer_preflight(
        exchange: Exchange,
        send: Send,
        rules: CorsRules,
        origin: bytes,
        method: bytes,
        requested: bytes | None,
    ) -> None:
        # Raises CorsRejected (403, no CORS headers, so the browser blocks the real request).
        headers = rules.preflight_headers(origin, method, requested)
        headers.append((b"date", http_date()))  # uvicorn's is off; gateway-made answers add it
        await send(exchange.response_start(204, headers))
        await send({"type": "http.response.body", "body": b""})
