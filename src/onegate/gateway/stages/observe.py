"""Outermost stage: gives every request its id and records what was finally answered."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from onegate.gateway.exchange import SCOPE_KEY, Exchange
from onegate.gateway.headers import REQUEST_ID, ForwardedInfo, accept_request_id
from onegate.gateway.pipeline import Stage
from onegate.types import ASGIApp, Message, Receive, Scope, Send

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
        id_header = (REQUEST_ID, exchange.request_id.encode("ascii"))

        async def observed_send(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start" or kind == "websocket.http.response.start":
                exchange.status = message["status"]
                exchange.response_started = True
                headers = message.get("headers")
                if type(headers) is list:  # every sender in the pipeline builds a fresh list
                    headers.append(id_header)
                else:
                    message["headers"] = [*(headers or ()), id_header]
            elif kind == "http.response.body":
                exchange.bytes_sent += len(message.get("body", b""))
            elif kind == "websocket.accept":
                exchange.status = 101
                exchange.response_started = True
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        await self.app(scope, receive, observed_send)
