"""Stand-ins for the three legacy backends that onegate fronts.

The mobile app talks to a Next.js server (port 3000), a FastAPI service for payments and ML
(port 8001) and an AI-agents service (port 8000). These small Starlette apps answer the same
paths the same way, closely enough to exercise the gateway end to end: identifying headers,
echoes that report exactly what arrived, slow and failing answers, big streamed bodies,
Server-Sent Events and a WebSocket. They run in one process with ``python -m
onegate.dev.legacy`` (or ``onegate dev legacy-backends``), or in-process with
:func:`serve_legacy_backends`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

__all__ = [
    "BYTES_CHUNK",
    "LegacyPorts",
    "ai_app",
    "fastapi_app",
    "main",
    "main_app",
    "pattern_chunks",
    "serve_legacy_backends",
]

BYTES_CHUNK = 64 * 1024
"""Size of each body message ``/api/bytes/{n}`` sends."""

# Byte i of a pattern chunk is i % 256; a chunk's first 8 bytes are then overwritten with its
# index so a proxy that drops, repeats or reorders whole chunks changes the digest.
_PATTERN = bytes(range(256)) * (BYTES_CHUNK // 256)
_INDEX_BYTES = 8

_MAX_SLOW_MS = 600_000
_MAX_FEED = 100
_MAX_EVENTS = 100_000
_MAX_INTENTS = 10_000
# A WebSocket sub-protocol the AI service speaks; chosen whenever a client offers it.
_AI_SUBPROTOCOL = "chat.v1"

Endpoint = Callable[[Request], Awaitable[Response]]


# --- shared pieces -------------------------------------------------------------------------


class _BackendHeaders:
    """Stamps every HTTP response and WebSocket handshake with the backend's own headers.

    A gateway test can then tell which backend answered, and whether the gateway kept or
    stripped a header such as ``x-powered-by``.
    """

    def __init__(self, app: ASGIApp, headers: dict[str, str]) -> None:
        self.app = app
        self.headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return

        async def send_stamped(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.accept"):
                message = {**message, "headers": [*message.get("headers", []), *self.headers]}
            await send(message)

        await self.app(scope, receive, send_stamped)


class _Unprocessable(Exception):
    """A request body that fails validation; answered as FastAPI answers it (422)."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("unprocessable request body")
        self.errors = errors


def _error(kind: str, loc: list[str | int], msg: str, value: Any) -> dict[str, Any]:
    """One entry of a FastAPI/pydantic v2 validation error list."""
    return {"type": kind, "loc": ["body", *loc], "msg": msg, "input": value}


async def _unprocessable(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, _Unprocessable)
    return JSONResponse({"detail": exc.errors}, status_code=422)


async def _http_error(request: Request, exc: Exception) -> Response:
    # JSON rather than Starlette's plain text, so every answer a client sees parses as JSON.
    assert isinstance(exc, HTTPException)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def _backend(request: Request) -> str:
    name: str = request.app.state.backend
    return name


def _query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HTTPException(400, f"{name} must be an integer") from None
    if not low <= value <= high:
        raise HTTPException(400, f"{name} must be between {low} and {high}")
    return value


async def _json_object(request: Request) -> dict[str, Any]:
    body = await request.body()
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise _Unprocessable(
            [_error("json_invalid", [], "JSON decode error", body.decode("utf-8", "replace"))]
        ) from exc
    if not isinstance(value, dict):
        msg = "Input should be a valid dictionary or object to extract fields from"
        raise _Unprocessable([_error("model_attributes_type", [], msg, value)])
    return value


def _is_int(value: Any) -> bool:
    # bool is an int subclass, but JSON true is not an amount.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def _digest_body(request: Request) -> dict[str, Any]:
    """Length and sha256 of the request body, read chunk by chunk in constant memory."""
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.stream():
        digest.update(chunk)
        size += len(chunk)
    return {"bytes": size, "sha256": digest.hexdigest()}


def _health(service: str | None = None) -> Endpoint:
    async def health(request: Request) -> Response:
        answer = {"status": "ok", "backend": _backend(request)}
        if service is not None:
            answer["service"] = service
        return JSONResponse(answer)

    return health


async def _echo(request: Request) -> Response:
    """Reports exactly what reached the backend, so a test can compare it with what was sent."""
    headers = [[k.decode("latin-1").lower(), v.decode("latin-1")] for k, v in request.headers.raw]
    raw_path: bytes = request.scope.get("raw_path") or request.scope["path"].encode()
    return JSONResponse(
        {
            "backend": _backend(request),
            "method": request.method,
            "path": request.scope["path"],
            "raw_path": raw_path.decode("latin-1"),
            "query": request.scope["query_string"].decode("latin-1"),
            "http_version": request.scope["http_version"],
            "headers": headers,
            "body": await _digest_body(request),
        }
    )


async def _slow(request: Request) -> Response:
    ms = _query_int(request, "ms", 1000, 0, _MAX_SLOW_MS)
    await asyncio.sleep(ms / 1000)
    return JSONResponse({"backend": _backend(request), "slept_ms": ms})


class _AnyMethod:
    """Serves an endpoint for every method, even ones Starlette has never heard of.

    Starlette limits a plain function endpoint to GET unless given a list of methods; an ASGI
    app endpoint is not limited, so the echo can report whatever method the gateway forwarded.
    """

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.endpoint(Request(scope, receive))
        await response(scope, receive, send)


def _echo_and_slow(prefix: str) -> list[BaseRoute]:
    return [
        Route(prefix + "/echo/{rest:path}", _AnyMethod(_echo)),
        Route(prefix + "/slow", _slow),
    ]


def _root(mimics: str, health: str) -> Endpoint:
    async def root(request: Request) -> Response:
        return JSONResponse(
            {"backend": _backend(request), "mimics": mimics, "health": health, "stand_in": True}
        )

    return root


def _build(backend: str, routes: list[BaseRoute], headers: dict[str, str]) -> Starlette:
    app = Starlette(
        routes=routes,
        middleware=[Middleware(_BackendHeaders, headers={**headers, "x-backend": backend})],
        exception_handlers={HTTPException: _http_error, _Unprocessable: _unprocessable},
    )
    app.state.backend = backend
    return app


def pattern_chunks(n: int) -> Iterator[bytes]:
    """The ``n`` bytes ``/api/bytes/{n}`` sends, as the 64 KiB chunks it sends them in.

    Lets a test compute the expected digest of a big download without a second download.
    """
    index = 0
    while n > 0:
        chunk = index.to_bytes(_INDEX_BYTES, "big") + _PATTERN[_INDEX_BYTES:]
        yield chunk[:n]
        n -= len(chunk)
        index += 1


# --- main: the Next.js app API -------------------------------------------------------------


def _user(user_id: str) -> dict[str, Any]:
    seed = int(_digest_of(user_id.encode())[:8], 16)
    return {
        "id": user_id,
        "name": f"User {user_id}",
        "email": f"user{user_id}@example.com",
        "followers": seed % 10_000,
        "createdAt": "2024-01-01T00:00:00.000Z",
    }


async def _get_user(request: Request) -> Response:
    return JSONResponse(_user(request.path_params["user_id"]))


async def _feed(request: Request) -> Response:
    limit = _query_int(request, "limit", 10, 0, _MAX_FEED)
    posts = [
        {"id": f"post_{i}", "author": _user(str(i % 7 + 1)), "text": f"Post number {i}"}
        for i in range(1, limit + 1)
    ]
    return JSONResponse(posts)


async def _status(request: Request) -> Response:
    code: int = request.path_params["code"]
    if not 200 <= code <= 599:
        raise HTTPException(400, "code must be a final status between 200 and 599")
    if code in (204, 205, 304):
        return Response(status_code=code)  # these statuses must not carry a body
    return JSONResponse({"backend": _backend(request), "status": code}, status_code=code)


async def _bytes(request: Request) -> Response:
    n: int = request.path_params["n"]

    async def body() -> AsyncIterator[bytes]:
        for chunk in pattern_chunks(n):
            yield chunk

    return StreamingResponse(
        body(),
        headers={"content-length": str(n), "content-type": "application/octet-stream"},
    )


async def _upload(request: Request) -> Response:
    return JSONResponse(await _digest_body(request))


main_app = _build(
    "main",
    [
        Route("/", _root("Next.js app API", "/api/health")),
        Route("/api/health", _health()),
        Route("/api/users/{user_id}", _get_user),
        Route("/api/feed", _feed),
        Route("/api/status/{code:int}", _status),
        Route("/api/bytes/{n:int}", _bytes),
        Route("/api/upload", _upload, methods=["POST"]),
        *_echo_and_slow("/api"),
    ],
    {"x-powered-by": "Next.js"},
)
"""The Next.js stand-in (port 3000)."""


# --- fastapi: payments and ML --------------------------------------------------------------


def _intent_errors(body: dict[str, Any]) -> list[dict[str, Any]]:
    errors = []
    if "amount" not in body:
        errors.append(_error("missing", ["amount"], "Field required", body))
    elif not _is_int(body["amount"]):
        msg = "Input should be a valid integer"
        errors.append(_error("int_type", ["amount"], msg, body["amount"]))
    elif body["amount"] <= 0:
        msg = "Input should be greater than 0"
        errors.append(_error("greater_than", ["amount"], msg, body["amount"]))
    if "currency" not in body:
        errors.append(_error("missing", ["currency"], "Field required", body))
    elif not isinstance(body["currency"], str):
        msg = "Input should be a valid string"
        errors.append(_error("string_type", ["currency"], msg, body["currency"]))
    elif not (len(body["currency"]) == 3 and body["currency"].isalpha()):
        msg = "String should match pattern '^[a-zA-Z]{3}$'"
        errors.append(_error("string_pattern_mismatch", ["currency"], msg, body["currency"]))
    return errors


async def _create_intent(request: Request) -> Response:
    body = await _json_object(request)
    if errors := _intent_errors(body):
        raise _Unprocessable(errors)
    fields = {
        "amount": body["amount"],
        "currency": body["currency"].lower(),
        "metadata": body.get("metadata") or {},
    }
    # The id derives from the body, so tests can predict it and a replayed POST is idempotent.
    digest = _digest_of(json.dumps(fields, sort_keys=True).encode())
    intent_id = "pi_" + digest[:24]
    intents: dict[str, dict[str, Any]] = request.app.state.intents
    if intent_id not in intents:
        if len(intents) >= _MAX_INTENTS:
            del intents[next(iter(intents))]  # oldest first: memory stays bounded under load
        intents[intent_id] = {
            "id": intent_id,
            "object": "payment_intent",
            **fields,
            "amount_received": 0,
            "client_secret": f"{intent_id}_secret_{digest[24:48]}",
            "created": int(time.time()),
            "livemode": False,
            "payment_method_types": ["card"],
            "status": "requires_payment_method",
        }
    return JSONResponse(intents[intent_id])


async def _get_intent(request: Request) -> Response:
    intent_id = request.path_params["intent_id"]
    intent = request.app.state.intents.get(intent_id)
    if intent is None:
        raise HTTPException(404, f"No such payment_intent: '{intent_id}'")
    return JSONResponse(intent)


async def _predict(request: Request) -> Response:
    body = await _json_object(request)
    inputs = body.get("inputs")
    if "inputs" not in body:
        raise _Unprocessable([_error("missing", ["inputs"], "Field required", body)])
    if not isinstance(inputs, list):
        raise _Unprocessable(
            [_error("list_type", ["inputs"], "Input should be a valid list", inputs)]
        )
    if not inputs:
        msg = "List should have at least 1 item after validation, not 0"
        raise _Unprocessable([_error("too_short", ["inputs"], msg, inputs)])
    errors = [
        _error("float_type", ["inputs", i], "Input should be a valid number", value)
        for i, value in enumerate(inputs)
        if not _is_number(value)
    ]
    if errors:
        raise _Unprocessable(errors)
    total = float(sum(inputs))
    return JSONResponse({"outputs": [total, total / len(inputs)], "model": "sum-mean-v1"})


fastapi_app = _build(
    "fastapi",
    [
        Route("/", _root("FastAPI payments and ML service", "/health")),
        Route("/health", _health()),
        Route("/api/payments/health", _health("payments")),
        Route("/api/payments/intents", _create_intent, methods=["POST"]),
        Route("/api/payments/intents/{intent_id}", _get_intent),
        *_echo_and_slow("/api/payments"),
        Route("/api/ml/health", _health("ml")),
        Route("/api/ml/predict", _predict, methods=["POST"]),
        *_echo_and_slow("/api/ml"),
    ],
    {},
)
"""The FastAPI stand-in (port 8001)."""
fastapi_app.state.intents = {}


# --- ai: the agents service ----------------------------------------------------------------


async def _chat(request: Request) -> Response:
    body = await _json_object(request)
    message = body.get("message")
    if "message" not in body:
        raise _Unprocessable([_error("missing", ["message"], "Field required", body)])
    if not isinstance(message, str):
        msg = "Input should be a valid string"
        raise _Unprocessable([_error("string_type", ["message"], msg, message)])
    return JSONResponse(
        {
            "id": "chat_" + _digest_of(message.encode())[:16],
            "object": "chat.reply",
            "backend": _backend(request),
            "reply": f"echo: {message}",
        }
    )


async def _stream(request: Request) -> Response:
    count = _query_int(request, "events", 5, 0, _MAX_EVENTS)
    interval = _query_int(request, "interval_ms", 100, 0, _MAX_SLOW_MS) / 1000

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


ai_app = _build(
    "ai",
    [
        Route("/", _root("AI-agents service", "/health")),
        Route("/health", _health()),
        Route("/api/ai/health", _health("ai")),
        Route("/api/ai/chat", _chat, methods=["POST"]),
        Route("/api/ai/stream", _stream),
        WebSocketRoute("/api/ai/ws", _ws_echo),
        *_echo_and_slow("/api/ai"),
    ],
    {},
)
"""The AI-agents stand-in (port 8000)."""


# --- running them ---------------------------------------------------------------------------


@dataclass
class LegacyPorts:
    main: int = 3000
    fastapi: int = 8001
    ai: int = 8000


@dataclass(frozen=True)
class _Backend:
    name: str
    app: ASGIApp
    port: int
    # Idle keep-alive the real server allows: Next.js closes after 5 s, gunicorn after 2 s.
    # The gateway's pool must cope with exactly these closes.
    keep_alive: int
    # Next.js sends no Server header; uvicorn-served FastAPI apps do.
    server_header: bool


def _backends(ports: LegacyPorts) -> list[_Backend]:
    return [
        _Backend("main", main_app, ports.main, keep_alive=5, server_header=False),
        _Backend("fastapi", fastapi_app, ports.fastapi, keep_alive=2, server_header=True),
        _Backend("ai", ai_app, ports.ai, keep_alive=5, server_header=True),
    ]


class _Server(uvicorn.Server):
    """A uvicorn server that can share its process and event loop with others.

    Signals are left to :func:`serve_legacy_backends`, which stops all servers at once, and a
    failure to bind becomes an exception instead of uvicorn's ``sys.exit``, which would escape
    the event loop of whoever called us.
    """

    def __init__(self, config: uvicorn.Config, name: str) -> None:
        super().__init__(config)
        self.name = name

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets=sockets)
        except SystemExit as exit_:
            # uvicorn calls sys.exit while handling the OSError; keep its errno for callers.
            cause = exit_.__context__
            if isinstance(cause, OSError):
                raise OSError(cause.errno, f"{self.name} stand-in: {cause.strerror}") from cause
            raise RuntimeError(f"{self.name} stand-in failed to start") from cause


@contextlib.contextmanager
def _stop_on_signals(servers: list[_Server]) -> Iterator[None]:
    """Turn SIGINT/SIGTERM into a graceful stop of every server; a second Ctrl-C forces it."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach only the main thread; the caller stops us by cancelling
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        for server in servers:
            if server.should_exit and signum == signal.SIGINT:
                server.force_exit = True
            server.should_exit = True

    handled = (signal.SIGINT, signal.SIGTERM)
    originals = {sig: signal.signal(sig, stop) for sig in handled}
    try:
        yield
    finally:
        for sig, original in originals.items():
            signal.signal(sig, original)


async def serve_legacy_backends(
    ports: LegacyPorts, host: str = "127.0.0.1", ready: asyncio.Event | None = None
) -> None:
    """Serve the three stand-ins until cancelled, interrupted or terminated.

    ``ready`` is set once all three listen. Cancellation, SIGINT and SIGTERM shut all three
    down gracefully (open streams get a few seconds to finish). If one cannot start or stops
    on its own, the others are stopped and its error is raised.
    """
    servers = [
        _Server(
            uvicorn.Config(
                backend.app,
                host=host,
                port=backend.port,
                log_config=None,  # leave logging set-up to the process; see main()
                log_level="warning",
                access_log=False,
                timeout_keep_alive=backend.keep_alive,
                timeout_graceful_shutdown=3,
                server_header=backend.server_header,
            ),
            backend.name,
        )
        for backend in _backends(ports)
    ]
    with _stop_on_signals(servers):
        tasks = [
            asyncio.create_task(server.serve(), name=f"legacy-{server.name}") for server in servers
        ]
        try:
            while not all(server.started for server in servers):
                done, _ = await asyncio.wait(
                    tasks, timeout=0.01, return_when=asyncio.FIRST_COMPLETED
                )
                if done:
                    break  # one failed to start; the finally below stops the rest
            else:
                if ready is not None:
                    ready.set()
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for server in servers:
                server.should_exit = True
            # asyncio.wait, unlike gather, lets the servers finish shutting down even while we
            # are being cancelled.
            await asyncio.wait(tasks)
            failures = [t.exception() for t in tasks if not t.cancelled()]
    if error := next((exc for exc in failures if exc is not None), None):
        raise error


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def _serve_and_announce(ports: LegacyPorts, host: str) -> None:
    ready = asyncio.Event()
    serving = asyncio.create_task(serve_legacy_backends(ports, host, ready))
    announced = asyncio.create_task(ready.wait())
    await asyncio.wait([serving, announced], return_when=asyncio.FIRST_COMPLETED)
    announced.cancel()
    if ready.is_set():
        # Printed only once all three listen, so a script may wait for these lines.
        for backend in _backends(ports):
            print(f"{backend.name:<9} {_url(host, backend.port)}", flush=True)
    await serving


def _port(text: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a TCP port (1-65535)")
    return port


def main(argv: list[str] | None = None) -> None:
    """Command line: serve the three stand-ins until Ctrl-C or SIGTERM."""
    defaults = LegacyPorts()
    parser = argparse.ArgumentParser(
        prog="python -m onegate.dev.legacy",
        description="Serve stand-ins for the Next.js, FastAPI and AI-agents backends.",
    )
    parser.add_argument("--main-port", type=_port, default=defaults.main, metavar="PORT")
    parser.add_argument("--fastapi-port", type=_port, default=defaults.fastapi, metavar="PORT")
    parser.add_argument("--ai-port", type=_port, default=defaults.ai, metavar="PORT")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    ports = LegacyPorts(main=args.main_port, fastapi=args.fastapi_port, ai=args.ai_port)
    try:
        asyncio.run(_serve_and_announce(ports, args.host))
    except OSError as exc:
        sys.exit(f"error: {exc}")
    except KeyboardInterrupt:
        pass  # Ctrl-C before the servers took over the signal: nothing left to stop


if __name__ == "__main__":
    main()
