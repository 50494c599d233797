"""The admin surface of a gateway with no issuer: closed, never public by default.

The gateway runs in process (:mod:`helpers.inprocess`); the client is its loopback peer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from helpers.inprocess import InProcessGateway, run_in_process


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessGateway]:
    upstreams = {"demo": {"targets": ["asgi:onegate.dev.demo:app"]}}
    # A catch-all route: it must not be able to take the gateway's own paths.
    routes = [{"name": "everything", "match": {"prefix": "/"}, "upstream": "demo"}]
    with run_in_process(tmp_path_factory.mktemp("admin"), upstreams, routes, drain_seconds=1) as gw:
        yield gw


@pytest.fixture
async def client(gateway: InProcessGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway.async_client() as client:
        yield client


@pytest.mark.parametrize("path", ["/_onegate", "/_onegate/config", "/_onegate/routes"])
async def test_without_an_issuer_the_admin_api_is_disabled(
    client: httpx.AsyncClient, path: str
) -> None:
    for headers in ({}, {"authorization": "Bearer anything", "x-api-key": "og_anything"}):
        response = await client.get(path, headers=headers)
        assert response.status_code == 403, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"].endswith("/admin-disabled")


async def test_the_jwks_is_public_and_empty_without_issuers(client: httpx.AsyncClient) -> None:
    response = await client.get("/_onegate/jwks.json")
    assert response.status_code == 200
    assert response.json() == {"keys": []}


async def test_neighbouring_paths_belong_to_the_routes(client: httpx.AsyncClient) -> None:
    response = await client.get("/_onegatex/config")
    assert response.status_code == 200
    assert response.json()["path"] == "/_onegatex/config"


async def test_metrics_are_public_to_loopback(client: httpx.AsyncClient) -> None:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert "text/plain" in response.headers["content-type"]
