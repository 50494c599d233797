"""The admin API: a small, read-only JSON app built per configuration, served in process.

It answers only what it is asked; who may ask is decided before it runs (see
:mod:`onegate.gateway.admin.surface`). It reads the configuration and upstreams it was built
from, so after a reload the new app describes the new configuration while requests in flight
finish on the old.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from onegate.auth.assertion import SigningKeys
from onegate.errors import PROBLEM_CONTENT_TYPE, PROBLEM_TYPE_BASE
from onegate.gateway.config import Config, GatewayConfig, RouteConfig
from onegate.gateway.upstreams import Upstream
from onegate.http import http_date


def _headers(cache: str = "no-store") -> dict[str, str]:
    # uvicorn's Date header is off (an upstream's is relayed): in-process apps add their own.
    return {"cache-control": cache, "date": http_date().decode("ascii")}


def create_admin_app(
    source: Config, upstreams: Mapping[str, Upstream], keys: SigningKeys
) -> Starlette:
    config = source.gateway
    metrics = config.observability.metrics

    async def index(request: Request) -> Response:
        return JSONResponse(
            {
                "service": "onegate admin API",
                "endpoints": {
                    "config": "/_onegate/config",
                    "routes": "/_onegate/routes",
                    "upstreams": "/_onegate/upstreams",
                    "jwks": "/_onegate/jwks.json",
                    "metrics": metrics.path if metrics.enabled else None,
                },
            },
            headers=_headers(),
        )

    async def effective_config(request: Request) -> Response:
        return JSONResponse(source.masked(), headers=_headers())

    async def list_upstreams(request: Request) -> Response:
        # The same document as /readyz's "upstreams": targets, health, breakers, pools.
        described = {name: u.describe() for name, u in upstreams.items()}
        return JSONResponse({"upstreams": described}, headers=_headers())

    async def routes(request: Request) -> Response:
        listed = [_describe_route(config, r) for r in config.routes]
        return JSONResponse({"routes": listed}, headers=_headers())

    def jwks(request: Request) -> Response:
        # Public and cacheable: upstreams poll it to verify the gateway's assertions. A plain
        # function, so Starlette runs it in a thread: the key may have to be read from disk.
        return JSONResponse(
            keys.jwks(config.auth, source.directory), headers=_headers("max-age=300")
        )

    async def problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        document: dict[str, Any] = {
            "type": PROBLEM_TYPE_BASE + ("not-found" if exc.status_code == 404 else "admin-error"),
            "title": exc.detail,
            "status": exc.status_code,
            "instance": request.url.path,
        }
        request_id = request.headers.get("x-request-id")
        if request_id:
            document["request_id"] = request_id
        return JSONResponse(
            document,
            status_code=exc.status_code,
            headers={**_headers(), **(exc.headers or {})},
            media_type=PROBLEM_CONTENT_TYPE.decode(),
        )

    return Starlette(
        routes=[
            Route("/_onegate", index, methods=["GET"]),
            Route("/_onegate/", index, methods=["GET"]),
            Route("/_onegate/config", effective_config, methods=["GET"]),
            Route("/_onegate/routes", routes, methods=["GET"]),
            Route("/_onegate/upstreams", list_upstreams, methods=["GET"]),
            Route("/_onegate/jwks.json", jwks, methods=["GET"]),
        ],
        exception_handlers={HTTPException: problem},
    )


def _describe_route(config: GatewayConfig, route: RouteConfig) -> dict[str, Any]:
    auth = config.auth
    default_policy = auth.default_policy or ("authenticated" if auth.issuers else "public")
    return {
        "name": route.name,
        "match": route.match.model_dump(mode="json", exclude_none=True),
        "upstream": route.upstream,
        "policy": {
            "auth": (
                route.auth.model_dump(mode="json")
                if route.auth is not None
                else {"policy": default_policy, "default": True}
            ),
            "rate_limits": (
                route.rate_limits if route.rate_limits is not None else config.rate_limits.default
            ),
            "cors": route.cors.model_dump(mode="json") if route.cors is not None else None,
        },
    }
