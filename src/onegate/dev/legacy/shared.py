"""What the three stand-ins share: headers that name the backend, FastAPI-shaped errors,
the echo and slow endpoints, and the app builder.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_SLOW_MS = 600_000

Endpoint = Callable[[Request], Awaitable[Response]]


class BackendHeaders:
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


class Unprocessable(Exception):
    """A request body that fails validation; answered as FastAPI answers it (422)."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("unprocessable request body")
        self.errors = errors


def validation_error(kind: str, loc: list[str | int], msg: str, value: Any) -> dict[str, Any]:
    """One entry of a FastAPI/pydantic v2 validation error list."""
    return {"type": kind, "loc": ["body", *loc], "msg": msg, "input": value}


async def _unprocessable(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Unprocessable)
    return JSONResponse({"detail": exc.errors}, status_code=422)


async def _http_error(request: Request, exc: Exception) -> Response:
    # JSON rather than Starlette's plain text, so every answer a client sees parses as JSON.
    assert isinstance(exc, HTTPException)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def backend_name(request: Request) -> str:
    name: str = request.app.state.backend
    return name


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
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


async def json_object(request: Request) -> dict[str, Any]:
    body = await request.body()
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise Unprocessable(
            [
                validation_error(
                    "json_invalid", [], "JSON decode error", body.decode("utf-8", "replace")
                )
            ]
        ) from exc
    if not isinstance(value, dict):
        msg = "Input should be a valid dictionary or object to extract fields from"
        raise Unprocessable([validation_error("model_attributes_type", [], msg, value)])
    return value


def is_int(value: Any) -> bool:
    # bool is an int subclass, but JSON true is not an amount.
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def digest_body(request: Request) -> dict[str, Any]:
    """Length and sha256 of the request body, read chunk by chunk in constant memory."""
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.stream():
        digest.update(chunk)
        size += len(chunk)
    return {"bytes": size, "sha256": digest.hexdigest()}


def health_endpoint(service: str | None = None) -> Endpoint:
    async def health(request: Request) -> Response:
        answer = {"status": "ok", "backend": backend_name(request)}
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
            "backend": backend_name(request),
            "method": request.method,
            "path": request.scope["path"],
            "raw_path": raw_path.decode("latin-1"),
            "query": request.scope["query_string"].decode("latin-1"),
            "http_version": request.scope["http_version"],
            "headers": headers,
            "body": await digest_body(request),
        }
    )


async def _slow(request: Request) -> Response:
    ms = query_int(request, "ms", 1000, 0, MAX_SLOW_MS)
    await asyncio.sleep(ms / 1000)
    return JSONResponse({"backend": backend_name(request), "slept_ms": ms})


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


def echo_and_slow(prefix: str) -> list[BaseRoute]:
    return [
        Route(prefix + "/echo/{rest:path}", _AnyMethod(_echo)),
        Route(prefix + "/slow", _slow),
    ]


def root_endpoint(mimics: str, health: str) -> Endpoint:
    async def root(request: Request) -> Response:
        return JSONResponse(
            {"backend": backend_name(request), "mimics": mimics, "health": health, "stand_in": True}
        )

    return root


def build(backend: str, routes: list[BaseRoute], headers: dict[str, str]) -> Starlette:
    app = Starlette(
        routes=routes,
        middleware=[Middleware(BackendHeaders, headers={**headers, "x-backend": backend})],
        exception_handlers={HTTPException: _http_error, Unprocessable: _unprocessable},
    )
    app.state.backend = backend
    return app
