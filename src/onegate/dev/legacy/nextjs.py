"""The Next.js app API stand-in (port 3000): users, a feed, any status, big bodies both ways."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from onegate.dev.legacy.shared import (
    backend_name,
    build,
    digest_body,
    digest_of,
    echo_and_slow,
    health_endpoint,
    query_int,
    root_endpoint,
)

BYTES_CHUNK = 64 * 1024
"""Size of each body message ``/api/bytes/{n}`` sends."""

# Byte i of a pattern chunk is i % 256; a chunk's first 8 bytes are then overwritten with its
# index so a proxy that drops, repeats or reorders whole chunks changes the digest.
_PATTERN = bytes(range(256)) * (BYTES_CHUNK // 256)
_INDEX_BYTES = 8

_MAX_FEED = 100


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


def _user(user_id: str) -> dict[str, Any]:
    seed = int(digest_of(user_id.encode())[:8], 16)
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
    limit = query_int(request, "limit", 10, 0, _MAX_FEED)
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
    return JSONResponse({"backend": backend_name(request), "status": code}, status_code=code)


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
    return JSONResponse(await digest_body(request))


main_app = build(
    "main",
    [
        Route("/", root_endpoint("Next.js app API", "/api/health")),
        Route("/api/health", health_endpoint()),
        Route("/api/users/{user_id}", _get_user),
        Route("/api/feed", _feed),
        Route("/api/status/{code:int}", _status),
        Route("/api/bytes/{n:int}", _bytes),
        Route("/api/upload", _upload, methods=["POST"]),
        *echo_and_slow("/api"),
    ],
    {"x-powered-by": "Next.js"},
)
"""The Next.js stand-in (port 3000)."""
