"""The AI-agents stand-in (port 8000): chat, Server-Sent Events and a WebSocket echo."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from onegate.dev.legacy.shared import (
    MAX_SLOW_MS,
    Unprocessable,
    backend_name,
    build,
    digest_of,
    echo_and_slow,
    health_endpoint,
    json_object,
    query_int,
    root_endpoint,
    validation_error,
)

_MAX_EVENTS = 100_000
# A WebSocket sub-protocol the AI service speaks; chosen whenever a client offers it.
_AI_SUBPROTOCOL = "chat.v1"


async def _chat(request: Request) -> Response:
    body = await json_object(request)
    message = body.get("message")
    if "message" not in body:
        raise Unprocessable([validation_error("missing", ["message"], "Field required", body)])
    if not isinstance(message, str):
        msg = "Input should be a valid string"
        raise Unprocessable([validation_error("string_type", ["message"], msg, message)])
    return JSONResponse(
        {
            "id": "chat_" + digest_of(message.encode())[:16],
            "object": "chat.reply",
            "backend": backend_name(request),
            "reply": f"echo: {message}",
        }
    )


async def _stream(request: Request) -> Response:
    count = query_int(request, "events", 5, 0, _MAX_EVENTS)
    interval = query_int(request, "interval_ms", 100, 0, MAX_SLOW_MS) / 1000

    async def events() -> AsyncIterator[bytes]:
        # One yield is one ASGI body message, so each event leaves the server when it is made.
        for i in range(count):
            if i:
                await asyncio.sleep(interval)
            data = json.dumps({"i": i, "t": time.time()})
            yield f"id: {i}\ndata: {data}\n\n".encode()

    return StreamingResponse(
        events(),
        headers={
            "content-type": "text/event-stream",
            "cache-control": "no-cache",
            "x-accel-buffering": "no",  # what SSE servers send to ask proxies not to buffer
        },
    )


async def _ws_echo(websocket: WebSocket) -> None:
    offered = websocket.scope.get("subprotocols", [])
    await websocket.accept(subprotocol=_AI_SUBPROTOCOL if _AI_SUBPROTOCOL in offered else None)
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await websocket.send_text(message["text"])
        elif message.get("bytes") is not None:
            await websocket.send_bytes(message["bytes"])


ai_app = build(
    "ai",
    [
        Route("/", root_endpoint("AI-agents service", "/health")),
        Route("/health", health_endpoint()),
        Route("/api/ai/health", health_endpoint("ai")),
        Route("/api/ai/chat", _chat, methods=["POST"]),
        Route("/api/ai/stream", _stream),
        WebSocketRoute("/api/ai/ws", _ws_echo),
        *echo_and_slow("/api/ai"),
    ],
    {},
)
"""The AI-agents stand-in (port 8000)."""
