"""The endpoint of the pipeline: forward the request to a target and stream the answer back.

Retry rules: a request that provably never reached the upstream (connection refused, connect
timeout) may be retried whatever its method; otherwise only idempotent methods are retried,
and only when the body can be sent again. Timeouts after sending are not retried: the
upstream may still be working on the first attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import ClassVar

from onegate.errors import (
    ClientDisconnected,
    PayloadTooLarge,
    UpstreamError,
    UpstreamTimeout,
)
from onegate.gateway.body import RequestBody
from onegate.gateway.breaker import Ticket
from onegate.gateway.context import StageContext
from onegate.gateway.exchange import Exchange, exchange_of
from onegate.gateway.headers import (
    GATEWAY_OWNED_REQUEST,
    GATEWAY_OWNED_RESPONSE,
    REQUEST_ID,
    filter_headers,
)
from onegate.gateway.upstreams import Target, UpstreamRequest, UpstreamResponse
from onegate.gateway.websocket import proxy_websocket
from onegate.http import IDEMPOTENT_METHODS, http_date
from onegate.types import Receive, Scope, Send


class ProxyStage:
    name: ClassVar[str] = "proxy"

    def __init__(self, context: StageContext) -> None:
        self.max_body_bytes = context.config.server.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        exchange = exchange_of(scope)
        if scope["type"] == "websocket":
            await proxy_websocket(scope, receive, send, exchange)
            return
        request = self._upstream_request(scope, receive, exchange)
        target, ticket, response = await self._open(request, exchange)
        await self._relay(target, ticket, response, request, exchange, receive, send)

    def _upstream_request(
        self, scope: Scope, receive: Receive, exchange: Exchange
    ) -> UpstreamRequest:
        assert exchange.match is not None and exchange.forwarded is not None
        route = exchange.match.route.config
        limit = route.max_body_bytes if route.max_body_bytes is not None else self.max_body_bytes
        if limit is not None and exchange.body_length is not None and exchange.body_length > limit:
            raise PayloadTooLarge(f"request body of {exchange.body_length} bytes exceeds {limit}")
        drop = exchange.drop_upstream_headers
        headers = filter_headers(
            scope["headers"], GATEWAY_OWNED_REQUEST | drop if drop else GATEWAY_OWNED_REQUEST
        )
        headers += exchange.forwarded.headers()
        headers.append((REQUEST_ID, exchange.request_id.encode("ascii")))
        if exchange.upstream_headers:
            headers += exchange.upstream_headers
        body = RequestBody(
            receive,
            length=exchange.body_length,
            chunked=exchange.body_chunked,
            limit=limit,
            keep=route.retries.buffer_bytes if route.retries.attempts else 0,
        )
        return UpstreamRequest(
            method=scope["method"],
            path=exchange.match.forward_path,
            query=scope.get("query_string", b""),
            headers=headers,
            body=body,
            timeouts=route.timeouts,
            scope=scope,
        )

    async def _open(
        self, request: UpstreamRequest, exchange: Exchange
    ) -> tuple[Target, Ticket, UpstreamResponse]:
        """Send the request, retrying where that is safe; return once a response head is in."""
        upstream = exchange.upstream
        assert upstream is not None and exchange.match is not None
        retries = exchange.match.route.config.retries
        failure_statuses = upstream.config.breaker.failure_statuses
        idempotent = request.method in IDEMPOTENT_METHODS
        attempts_left = 1 + retries.attempts
        tried: list[Target] = []
        while True:
            target, ticket = upstream.pick(tried)
            tried.append(target)
            exchange.target = target
            exchange.attempts += 1
            attempts_left -= 1
            target.outstanding += 1
            try:
                response = await target.open(request)
            except UpstreamError as error:
                target.outstanding -= 1
                target.breaker.release(ticket, False)
                retryable = error.never_sent or (
                    idempotent
                    and not isinstance(error, UpstreamTimeout)
                    and request.body.replayable
                )
                if attempts_left > 0 and retryable:
                    continue
                raise
            except BaseException:
                # A body that is too large or a client that left says nothing about the target.
                target.outstanding -= 1
                target.breaker.release(ticket, None)
                raise
            status = response.status
            if (
                attempts_left > 0
                and idempotent
                and status in retries.on_statuses
                and request.body.replayable
            ):
                response.close(reusable=False)
                target.outstanding -= 1
                target.breaker.release(ticket, False if status in failure_statuses else None)
                continue
            return target, ticket, response

    async def _relay(
        self,
        target: Target,
        ticket: Ticket,
        response: UpstreamResponse,
        request: UpstreamRequest,
        exchange: Exchange,
        receive: Receive,
        send: Send,
    ) -> None:
        """Stream the response to the client, chunk by chunk, as the upstream produces it."""
        upstream = exchange.upstream
        assert upstream is not None
        healthy = response.status not in upstream.config.breaker.failure_statuses
        settled = failed = False
        watcher: asyncio.Task[None] | None = None
        try:
            dropped = exchange.drop_response_headers
            headers = filter_headers(
                response.headers,
                GATEWAY_OWNED_RESPONSE | dropped if dropped else GATEWAY_OWNED_RESPONSE,
            )
            for name, _ in headers:
                if name == b"date":
                    break
            else:  # a proxy adds the Date an upstream left out (RFC 9110 section 6.6.1)
                headers.append((b"date", http_date()))
            await send(exchange.response_start(response.status, headers))
            if not response.received and request.body.finished:
                # The body is still to come: a stream, or a slow upstream. Watch for the client
                # leaving, so an endless stream (SSE) does not keep the upstream busy for nobody.
                watcher = asyncio.get_running_loop().create_task(
                    _watch_disconnect(receive, response)
                )
            while True:
                # The body usually came with the head: take it without a coroutine round trip.
                chunk = response.take_chunk() or await response.read_chunk()
                if chunk is not None:
                    exchange.bytes_sent += len(chunk)
                    if not response.at_end:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                        continue
                # The upstream is done: settle with it before the client has the last byte, so
                # the client's next request already sees the breaker and the pool as they are.
                settled = True
                _settle(target, ticket, response, healthy)
                await send({"type": "http.response.body", "body": chunk or b"", "more_body": False})
                return
        except UpstreamError:
            failed = True  # the upstream broke off: that counts against it
            raise
        except OSError as error:
            raise ClientDisconnected("client disconnected during the response") from error
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            if not settled:
                response.close(reusable=False)
                target.outstanding -= 1
                # A client that left says nothing about the upstream.
                target.breaker.release(ticket, False if failed else None)


def _settle(target: Target, ticket: Ticket, response: UpstreamResponse, healthy: bool) -> None:
    """The upstream answered in full: reuse its connection and tell its breaker."""
    response.close(reusable=True)
    target.outstanding -= 1
    target.breaker.release(ticket, healthy)


async def _watch_disconnect(receive: Receive, response: UpstreamResponse) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            response.abort(ClientDisconnected("client disconnected"))
            return
