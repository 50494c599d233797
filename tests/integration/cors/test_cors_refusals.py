"""Refusals by the stages after ``cors`` (401 from auth, 429 from rate limits) stay readable by
the page: they carry the CORS headers, and preflights never need credentials."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import httpx
import jwt
import pytest

from helpers.inprocess import InProcessGateway, run_in_process

APP = "https://app.example.com"
ISSUER = "https://issuer.test"
SECRET = "cors-refusals-test-secret-" + "0123456789abcdef" * 3
SECRET_ENV = "ONEGATE_TEST_CORS_SECRET"
CORS = {
    "allow_origins": [APP],
    "allow_credentials": True,
    "expose_headers": ["x-request-id", "retry-after", "www-authenticate"],
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessGateway]:
    issuer = {
        "type": "jwt",
        "name": "test",
        "issuer": ISSUER,
        "audiences": ["onegate"],
        "algorithms": ["HS256"],
        "keys": [{"secret_env": SECRET_ENV}],
    }
    extra = {
        "auth": {"issuers": [issuer]},
        "rate_limits": {"policies": [{"name": "once", "key": "route", "limit": 1}]},
    }
    upstreams = {"demo": {"targets": ["asgi:onegate.dev.demo:app"]}}
    routes = [
        {"name": "secure", "match": {"prefix": "/secure"}, "upstream": "demo", "cors": CORS},
        {
            "name": "limited",
            "match": {"prefix": "/limited"},
            "upstream": "demo",
            "auth": {"policy": "public"},
            "rate_limits": ["once"],
            "cors": CORS,
        },
    ]
    with run_in_process(
        tmp_path_factory.mktemp("cors"),
        upstreams,
        routes,
        env={SECRET_ENV: SECRET},
        extra=extra,
        drain_seconds=1,
    ) as gw:
        yield gw


@pytest.fixture
async def client(gateway: InProcessGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway.async_client() as client:
        yield client


def assert_readable_by_the_page(response: httpx.Response) -> None:
    assert response.headers["access-control-allow-origin"] == APP
    assert response.headers["access-control-allow-credentials"] == "true"
    assert response.headers["access-control-expose-headers"] == (
        "x-request-id, retry-after, www-authenticate"
    )
    assert "Origin" in response.headers.get_list("vary")


async def test_preflight_of_an_authenticated_route_needs_no_credentials(
    client: httpx.AsyncClient,
) -> None:
    headers = {
        "origin": APP,
        "access-control-request-method": "GET",
        "access-control-request-headers": "authorization",
    }
    response = await client.options("/secure/me", headers=headers)
    assert response.status_code == 204, response.text
    assert response.headers["access-control-allow-headers"] == "authorization"


async def test_401_carries_cors_headers(client: httpx.AsyncClient) -> None:
    response = await client.get("/secure/me", headers={"origin": APP})
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert_readable_by_the_page(response)


async def test_authenticated_answer_carries_cors_headers(client: httpx.AsyncClient) -> None:
    claims = {"iss": ISSUER, "aud": "onegate", "sub": "alice", "exp": int(time.time()) + 300}
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    response = await client.get(
        "/secure/me", headers={"origin": APP, "authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200, response.text
    assert_readable_by_the_page(response)


async def test_429_carries_cors_headers(client: httpx.AsyncClient) -> None:
    statuses = []
    for _ in range(2):
        response = await client.get("/limited", headers={"origin": APP})
        statuses.append(response.status_code)
        assert_readable_by_the_page(response)
    assert statuses == [200, 429]
    assert int(response.headers["retry-after"]) >= 1
