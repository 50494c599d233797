"""Turns every OnegateError into an RFC 9457 problem document carrying the request id."""

from __future__ import annotations

import logging
from typing import ClassVar

from onegate.errors import (
    PROBLEM_CONTENT_TYPE,
    AmbiguousFraming,
    BadRequest,
    ClientDisconnected,
    HeadersTooLarge,
    OnegateError,
    PayloadTooLarge,
    problem_body,
)
from onegate.gateway.context import StageContext
from onegate.gateway.exchange import exchange_of
from onegate.gateway.pipeline import Stage
from onegate.http import http_date
from onegate.types import ASGIApp, Receive, Scope, Send

logger = logging.getLogger("onegate.errors")

#: After these the connection is closed: the rest of the request body is unread or ambiguous.
_CLOSE_AFTER = (AmbiguousFraming, BadRequest, PayloadTooLarge, HeadersTooLarge)


class ErrorsStage(Stage):
    name: ClassVar[str] = "errors"

    def __init__(self, app: ASGIApp, context: StageContext) -> None:
        super().__init__(app, context)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except OnegateError as error:
            await self._answer(scope, send, error)
        except Exception as exc:
            logger.exception("unexpected error while handling %s", scope.get("path"))
            await self._answer(scope, send, OnegateError(f"unexpected {type(exc).__name__}"))

    async def _answer(self, scope: Scope, send: Send, error: OnegateError) -> None:
        exchange = exchange_of(scope)
        if isinstance(error, ClientDisconnected):
            exchange.error = error
            exchange.status = exchange.status or error.status
            return
        if exchange.response_started:
            exchange.error = error  # the access log and metrics still learn what went wrong
            # Too late for a problem document: ending without completing the response makes
            # the server close the connection, so the client sees the truncation.
            logger.warning(
                "request %s failed after the response started: %s", exchange.request_id, error
            )
            return
        await send_problem(scope, send, error)


async def send_problem(scope: Scope, send: Send, error: OnegateError) -> None:
    """Answer with ``error`` as a problem document (HTTP, or the denial of a WebSocket)."""
    exchange = exchange_of(scope)
    exchange.error = error
    body = problem_body(error.problem(request_id=exchange.request_id, instance=scope.get("path")))
    headers = [
        (b"content-type", PROBLEM_CONTENT_TYPE),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        (b"date", http_date()),
    ]
    headers += [(k.encode(), v.encode()) for k, v in error.headers.items()]
    if isinstance(error, _CLOSE_AFTER):
        headers.append((b"connection", b"close"))
    exchange.bytes_sent += len(body)
    if scope["type"] == "websocket":
        exchange.status = error.status
        if "websocket.http.response" in scope.get("extensions", {}):
            headers.append((b"x-request-id", exchange.request_id.encode("ascii")))
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": error.status,
                    "headers": headers,
                }
            )
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1011 if error.status >= 500 else 1008})
        return
    await send(exchange.response_start(error.status, headers))
    await send({"type": "http.response.body", "body": body})
