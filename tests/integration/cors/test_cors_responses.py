"""CORS headers on real (non-preflight) answers from the gateway app (in process), error
answers too."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from helpers.inprocess import InProcessGateway, run_in_process
from helpers.upstreams import RawUpstream, Reply

APP = "https://app.example.com"
DEMO = {"demo": {"targets": ["asgi:onegate.dev.demo:app"]}}
ROUTES: list[dict[str, Any]] = [
    {
        "name": "app",
        "match": {"prefix": "/api"},
        "upstream": "demo",
        "max_body_bytes": 16,
        "cors": {
            "allow_origins": [APP],
            "expose_headers": ["x-request-id", "x-total-count"],
            "allow_credentials": True,
        },
    },
    {
        "name": "anonymous",
        "match": {"prefix": "/anon"},
        "upstream": "demo",
        "cors": {"allow_origins": [APP], "expose_headers": []},
    },
]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessGateway]:
    with run_in_process(tmp_path_factory.mktemp("cors"), DEMO, ROUTES, drain_seconds=1) as gw:
        yield gw


@pytest.fixture
async def client(gateway: InProcessGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway.async_client() as client:
        yield client


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


async def test_allowed_origin_gets_cors_headers(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/users", headers={"origin": APP})
    assert response.status_code == 200
    assert response.json()["headers"]["origin"] == APP  # the upstream still sees it
    assert cors_headers(response) == {
        "access-control-allow-origin": APP,
        "access-control-allow-credentials": "true",
        "access-control-expose-headers": "x-request-id, x-total-count",
    }
    assert response.headers.get_list("vary") == ["Origin"]


async def test_credentials_header_only_when_the_policy_allows_them(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/anon/x", headers={"origin": APP}, content=b"{}")
    assert response.status_code == 200
    assert cors_headers(response) == {"access-control-allow-origin": APP}


async def test_other_origins_pass_without_cors_headers(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/users", headers={"origin": "https://evil.example"})
    assert response.status_code == 200  # the browser, not the gateway, withholds the answer
    assert cors_headers(response) == {}
    assert response.headers.get_list("vary") == ["Origin"]


async def test_no_origin_still_varies_on_origin(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/users")
    assert cors_headers(response) == {}
    # Or a shared cache could give this answer, without CORS headers, to a page from APP.
    assert response.headers.get_list("vary") == ["Origin"]


async def test_problem_documents_from_later_stages_carry_cors_headers(
    client: httpx.AsyncClient,
) -> None:
    # The body limit is enforced by the proxy, after the cors stage: the page must still be
    # able to read the 413.
    response = await client.post("/api/upload", headers={"origin": APP}, content=b"x" * 64)
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["access-control-allow-origin"] == APP
    assert response.headers["access-control-allow-credentials"] == "true"


def test_the_upstreams_own_cors_headers_give_way_to_the_gateways(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    chatty = Reply(
        headers=(
            ("access-control-allow-origin", "*"),
            ("access-control-allow-credentials", "true"),
            ("content-length", "2"),
        )
    )
    with RawUpstream(default=chatty) as upstream:
        routes = [{**ROUTES[0], "upstream": "legacy"}]
        upstreams = {"legacy": {"targets": [upstream.url]}}
        with (
            run_in_process(tmp_path_factory.mktemp("cors-owner"), upstreams, routes) as gateway,
            gateway.client() as client,
        ):
            response = client.get("/api/x", headers={"origin": APP})
    assert response.status_code == 200
    assert response.headers.get_list("access-control-allow-origin") == [APP]
    assert response.headers.get_list("access-control-allow-credentials") == ["true"]
