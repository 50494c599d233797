"""A deliberately naive reverse proxy: the Python baseline of ``proxy_bench.py``.

One Starlette catch-all route forwards every request through a shared ``httpx.AsyncClient``:
method, path, query, headers and body go to the upstream; status, headers and body come back.
Bodies are buffered, nothing is streamed, and there is no routing, retrying or health checking.
It is what a first attempt at "a proxy in Python" usually looks like.

Run it with uvicorn, naming the upstream in an environment variable::

    NAIVE_PROXY_UPSTREAM=http://127.0.0.1:8081 \\
        uvicorn naive_proxy:app --app-dir benchmarks --loop uvloop --http httptools
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

UPSTREAM_ENV = "NAIVE_PROXY_UPSTREAM"

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

# Headers that describe one connection, not the message; never forwarded (RFC 9110 7.6.1).
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# httpx sets Host and Content-Length itself for the upstream request.
SKIP_REQUEST = HOP_BY_HOP | {b"host", b"content-length"}
# Starlette sets Content-Length for the buffered body, which httpx has already decoded.
SKIP_RESPONSE = HOP_BY_HOP | {b"content-length", b"content-encoding"}


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    upstream = os.environ.get(UPSTREAM_ENV)
    if not upstream:
        raise RuntimeError(f"set {UPSTREAM_ENV} to the upstream URL, e.g. http://127.0.0.1:8081")
    # Keep as many idle connections as the benchmark's nginx proxy does (keepalive 64), so the
    # baseline does not pay for reconnecting under 32 concurrent clients.
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:
        app.state.client = client
        app.state.upstream = httpx.URL(upstream)
        yield


async def forward(request: Request) -> Response:
    client: httpx.AsyncClient = request.app.state.client
    raw_path: bytes = request.scope.get("raw_path") or request.url.path.encode()
    query: bytes = request.scope["query_string"]
    url = request.app.state.upstream.copy_with(raw_path=raw_path + (b"?" + query if query else b""))
    headers = [(k, v) for k, v in request.headers.raw if k.lower() not in SKIP_REQUEST]

    upstream = await client.request(
        request.method, url, headers=headers, content=await request.body()
    )

    response = Response(content=upstream.content, status_code=upstream.status_code)
    response.raw_headers.extend(
        (k, v) for k, v in upstream.headers.raw if k.lower() not in SKIP_RESPONSE
    )
    return response


app = Starlette(routes=[Route("/{path:path}", forward, methods=METHODS)], lifespan=lifespan)
