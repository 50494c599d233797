"""CORS through the gateway app (in process): preflights answered at the edge, headers on
answers.

The upstream is the built-in demo app, in process; it answers 200 with a JSON echo, so a 204
with an empty body can only come from the gateway's ``cors`` stage.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from helpers.inprocess import InProcessGateway, run_in_process

APP = "https://app.example.com"
EVIL = "https://evil.example"
DEMO = {"demo": {"targets": ["asgi:onegate.dev.demo:app"]}}
APP_CORS = {
    "allow_origins": [APP, "http://localhost:3000"],
    "allow_methods": ["GET", "POST", "PUT"],
    "allow_headers": ["authorization", "content-type", "x-trace-id"],
    "expose_headers": ["x-request-id", "x-total-count"],
    "allow_credentials": True,
    "max_age_seconds": 120,
}
ROUTES = [
    {
        "name": "app",
        "match": {"prefix": "/api"},
        "upstream": "demo",
        "cors": APP_CORS,
    },
    {
        "name": "open-data",
        "match": {"prefix": "/open"},
        "upstream": "demo",
        "cors": {"allow_origins": ["*"]},
    },
    {
        "name": "read-only",
        "match": {"prefix": "/ro", "methods": ["GET"]},
        "upstream": "demo",
        "cors": {"allow_origins": [APP], "allow_methods": ["GET"]},
    },
    {"name": "no-cors", "match": {"prefix": "/plain"}, "upstream": "demo"},
]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessGateway]:
    with run_in_process(tmp_path_factory.mktemp("cors"), DEMO, ROUTES, drain_seconds=1) as gw:
        yield gw


@pytest.fixture
async def client(gateway: InProcessGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway.async_client() as client:
        yield client


def preflight_headers(origin: str, method: str, headers: str | None = None) -> dict[str, str]:
    sent = {"origin": origin, "access-control-request-method": method}
    if headers is not None:
        sent["access-control-request-headers"] = headers
    return sent


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


def vary(response: httpx.Response) -> set[str]:
    return {v.strip().lower() for v in ",".join(response.headers.get_list("vary")).split(",")}


async def test_allowed_preflight_is_answered_at_the_edge(client: httpx.AsyncClient) -> None:
    response = await client.options(
        "/api/users/42", headers=preflight_headers(APP, "PUT", "Content-Type, X-Trace-Id")
    )
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert cors_headers(response) == {
        "access-control-allow-origin": APP,
        "access-control-allow-methods": "GET, POST, PUT",
        "access-control-allow-headers": "content-type, x-trace-id",
        "access-control-max-age": "120",
        "access-control-allow-credentials": "true",
    }
    assert vary(response) == {
        "origin",
        "access-control-request-method",
        "access-control-request-headers",
    }
    assert response.headers["x-request-id"]


async def test_preflight_echoes_only_the_requested_headers(client: httpx.AsyncClient) -> None:
    response = await client.options("/api/x", headers=preflight_headers(APP, "POST"))
    assert response.status_code == 204
    assert "access-control-allow-headers" not in response.headers
    # Several Access-Control-Request-Headers lines are one list.
    response = await client.options(
        "/api/x",
        headers=[
            ("origin", APP),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "authorization"),
            ("access-control-request-headers", "X-TRACE-ID"),
        ],
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-headers"] == "authorization, x-trace-id"


async def test_origins_compare_as_browsers_serialise_them(client: httpx.AsyncClient) -> None:
    response = await client.options(
        "/api/x", headers=preflight_headers("http://localhost:3000", "GET")
    )
    assert response.headers["access-control-allow-origin"] == "http://localhost:3000"
    # Another port is another origin.
    response = await client.options(
        "/api/x", headers=preflight_headers("http://localhost:3001", "GET")
    )
    assert response.status_code == 403


@pytest.mark.parametrize(
    ("origin", "method", "headers", "refused"),
    [
        (EVIL, "GET", None, "origin"),
        (APP + ".evil.example", "GET", None, "origin"),
        ("null", "GET", None, "origin"),
        (APP, "DELETE", None, "DELETE"),
        (APP, "PUT", "content-type, x-secret", "x-secret"),
    ],
)
async def test_refused_preflight_is_a_problem_without_cors_headers(
    client: httpx.AsyncClient, origin: str, method: str, headers: str | None, refused: str
) -> None:
    response = await client.options("/api/x", headers=preflight_headers(origin, method, headers))
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"].endswith("/cors-rejected")
    assert refused in problem["detail"]
    assert problem["request_id"] == response.headers["x-request-id"]
    # Nothing the browser could mistake for a permission.
    assert cors_headers(response) == {}


async def test_wildcard_policy_allows_any_origin_without_credentials(
    client: httpx.AsyncClient,
) -> None:
    response = await client.options("/open/data", headers=preflight_headers(EVIL, "GET"))
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in response.headers
    response = await client.get("/open/data", headers={"origin": EVIL})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in response.headers


async def test_preflight_reaches_a_route_whose_methods_leave_out_options(
    client: httpx.AsyncClient,
) -> None:
    response = await client.options("/ro/items", headers=preflight_headers(APP, "GET"))
    assert response.status_code == 204, response.text
    assert response.headers["access-control-allow-origin"] == APP
    assert response.headers["access-control-allow-methods"] == "GET"
    # It is the real request's method that decides: a PUT would not be routed at all.
    response = await client.options("/ro/items", headers=preflight_headers(APP, "PUT"))
    assert response.status_code == 405
    # An OPTIONS that is not a preflight is an ordinary request, refused as before.
    response = await client.options("/ro/items", headers={"origin": APP})
    assert response.status_code == 405


async def test_route_without_cors_forwards_the_preflight(client: httpx.AsyncClient) -> None:
    response = await client.options("/plain/x", headers=preflight_headers(APP, "PUT"))
    assert response.status_code == 200
    echo = response.json()
    assert echo["method"] == "OPTIONS"
    assert echo["headers"]["access-control-request-method"] == "PUT"
    assert cors_headers(response) == {}
    assert "vary" not in response.headers
