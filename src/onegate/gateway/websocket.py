"""WebSocket proxying: the handshake is checked at the upstream first, then frames are relayed.

The upstream handshake happens before the client's is accepted, so the client learns the
upstream's answer: its chosen subprotocol, or its refusal as a problem document (502 when the
upstream cannot be reached). In-process ASGI targets get the client's connection directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.typing import Subprotocol

from onegate.errors import (
    OnegateError,
    UpstreamConnectError,
    UpstreamConnectTimeout,
    UpstreamError,
)
from onegate.gateway.exchange import Exchange
from onegate.gateway.headers import GATEWAY_OWNED_REQUEST, REQUEST_ID, filter_headers
from onegate.gateway.tls import tls_failure
from onegate.gateway.upstreams import AsgiTarget, RemoteTarget
from onegate.types import Message, Receive, Scope, Send

logger = logging.getLogger("onegate.websocket")

#: The handshake is redone by the gateway, so the client's handshake headers stay here.
HANDSHAKE = frozenset(
    {
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
        b"sec-websocket-accept",
    }
)
_DROP = GATEWAY_OWNED_REQUEST | HANDSHAKE


class UpstreamRefused(OnegateError):
    """The upstream answered the WebSocket handshake with an HTTP status instead."""

    slug = "upstream-refused-websocket"
    title = "Upstream refused the WebSocket handshake"

    def __init__(self, status: int) -> None:
        super().__init__(f"upstream answered the handshake with HTTP {status}")
        self.status = status  # type: ignore[misc]


async def proxy_websocket(scope: Scope, receive: Receive, send: Send, exchange: Exchange) -> None:
    upstream, match, forwarded = exchange.upstream, exchange.match, exchange.forwarded
    assert upstream is not None and match is not None and forwarded is not None
    target, ticket = upstream.pick()
    exchange.target = target
    exchange.attempts = 1
    drop = exchange.drop_upstream_headers
    headers = filter_headers(scope["headers"], _DROP | drop if drop else _DROP)
    headers += forwarded.headers()
    headers.append((REQUEST_ID, exchange.request_id.encode("ascii")))
    if exchange.upstream_headers:
        headers += exchange.upstream_headers
    outcome: bool | None = None
    id_header = (REQUEST_ID, exchange.request_id.encode("ascii"))

    async def recording_send(message: Message) -> None:
        # WebSockets are rare enough to afford a wrapper: it records the handshake's outcome
        # and adds the request id, whoever answers (a remote relay or an in-process app).
        kind = message["type"]
        if kind == "websocket.accept" or kind == "websocket.http.response.start":
            exchange.status = message.get("status", 101)
            exchange.response_started = True
            message["headers"] = [*message.get("headers", ()), id_header]
        await send(message)

    target.outstanding += 1
    try:
        if isinstance(target, AsgiTarget):
            inner = dict(scope)
            inner["path"] = match.forward_path
            inner["raw_path"] = match.forward_path.encode("latin-1")
            inner["headers"] = [*headers, *[(n, v) for n, v in scope["headers"] if n in HANDSHAKE]]
            await target.app(inner, receive, recording_send)
            outcome = True
            return
        assert isinstance(target, RemoteTarget)
        outcome = await _relay_remote(
            scope,
            receive,
            recording_send,
            target,
            match.forward_path,
            headers,
            match.route.config.timeouts.connect,
        )
    except UpstreamError:
        outcome = False
        raise
    finally:
        target.outstanding -= 1
        target.breaker.release(ticket, outcome)


async def _relay_remote(
    scope: Scope,
    receive: Receive,
    send: Send,
    target: RemoteTarget,
    path: str,
    headers: list[tuple[bytes, bytes]],
    connect_timeout: float,
) -> bool:
    connect_message = await receive()
    if connect_message["type"] != "websocket.connect":
        return True
    query = scope.get("query_string", b"")
    scheme = "wss" if target.tls is not None else "ws"
    url = f"{scheme}://{target.host_header.decode()}{path}" + (
        f"?{query.decode('latin-1')}" if query else ""
    )
    offered = [Subprotocol(p) for p in scope.get("subprotocols", [])]
    # Over TLS: the upstream's context and server name, as for its HTTP requests.
    secure: dict[str, Any] = (
        {"ssl": target.tls, "server_hostname": target.server_name} if target.tls else {}
    )
    try:
        upstream = await connect(
            url,
            additional_headers=[(n.decode("latin-1"), v.decode("latin-1")) for n, v in headers],
            subprotocols=offered or None,
            open_timeout=connect_timeout,
            ping_interval=None,
            max_size=None,
            compression=None,
            user_agent_header=None,
            **secure,
        )
    except InvalidStatus as exc:
        raise UpstreamRefused(exc.response.status_code) from None
    except TimeoutError:
        raise UpstreamConnectTimeout(f"WebSocket connect to {target.url} timed out") from None
    except ssl.SSLError as exc:
        where = f"{target.host}:{target.port}"
        raise tls_failure(exc, where, target.server_name) from None
    except (OSError, WebSocketException) as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, ssl.SSLError):
            # TLS 1.3: a refused client certificate shows up while reading the handshake.
            where = f"{target.host}:{target.port}"
            raise tls_failure(cause, where, target.server_name, handshake=False) from None
        raise UpstreamConnectError(f"WebSocket connect to {target.url} failed: {exc}") from None
    async with upstream:
        # The upstream's handshake headers (cookies, its own ids) reach the client; the
        # handshake mechanics themselves were negotiated hop by hop.
        handshake = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in (upstream.response.headers.raw_items() if upstream.response else ())
        ]
        accept_headers = filter_headers(handshake, HANDSHAKE | {b"date", b"server"})
        await send(
            {
                "type": "websocket.accept",
                "subprotocol": upstream.subprotocol,
                "headers": accept_headers,
            }
        )
        await _pump(receive, send, upstream)
    return True


async def _pump(receive: Receive, send: Send, upstream: ClientConnection) -> None:
    async def client_to_upstream() -> None:
        while True:
            message = await receive()
            if message["type"] == "websocket.receive":
                text = message.get("text")
                await upstream.send(text if text is not None else message.get("bytes") or b"")
            elif message["type"] == "websocket.disconnect":
                await upstream.close(
                    code=message.get("code", 1000), reason=message.get("reason") or ""
                )
                return

    async def upstream_to_client() -> None:
        try:
            async for data in upstream:
                if isinstance(data, str):
                    await send({"type": "websocket.send", "text": data})
                else:
                    await send({"type": "websocket.send", "bytes": data})
        except ConnectionClosed:
            pass
        close = upstream.protocol.close_rcvd
        code = close.code if close is not None else 1000
        reason = close.reason if close is not None else ""
        with contextlib.suppress(OSError, RuntimeError):
            await send({"type": "websocket.close", "code": code, "reason": reason})

    tasks = [
        asyncio.ensure_future(client_to_upstream()),
        asyncio.ensure_future(upstream_to_client()),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed, OSError):
                await task
