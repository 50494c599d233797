"""Outermost stage: gives every request its id and its client address.

It sees every answer (the exchange records status and bytes), so metrics and the access log
belong here."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from onegate.gateway.exchange import SCOPE_KEY, Exchange
from onegate.gateway.headers import REQUEST_ID, ForwardedInfo, accept_request_id
from onegate.gateway.pipeline import Stage
from onegate.types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from onegate.gateway.runtime import Runtime


class ObserveStage(Stage):
    name: ClassVar[str] = "observe"

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        super().__init__(app, runtime)
        self.trusted = runtime.trusted_proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = scope["headers"]
        client_id = None
        for name, value in headers:
            if name == REQUEST_ID:
                client_id = value
                break
        exchange = Exchange(accept_request_id(client_id))
        client = scope.get("client")
        peer = client[0] if client else "unknown"
        exchange.forwarded = ForwardedInfo.from_request(
            peer, scope.get("scheme", "http"), headers, self.trusted
        )
        scope[SCOPE_KEY] = exchange
        # Responders record their status on the exchange (Exchange.start_response) instead
        # of this stage wrapping ``send``: one closure and two calls fewer per request.
        await self.app(scope, receive, send)
