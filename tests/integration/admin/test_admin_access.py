"""Who may use the admin surface, through the gateway app (in process) with a JWT issuer.

The metrics path's public networks are set to 10.0.0.0/8, so this test's loopback peer counts
as remote and must authenticate, as any client off the gateway's host would. Tokens are HS256
JWTs minted here with the issuer's secret.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import jwt
import pytest

from helpers.inprocess import InProcessGateway, run_in_process
from helpers.problems import assert_problem

ISSUER = "https://issuer.test"
SECRET = "admin-access-test-secret-" + "0123456789abcdef" * 3
SECRET_ENV = "ONEGATE_TEST_ADMIN_SECRET"
ADMIN_PATHS = ["/_onegate", "/_onegate/", "/_onegate/config", "/_onegate/routes", "/_onegate/x"]


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
        "auth": {"issuers": [issuer], "admin_scope": "onegate:admin"},
        "observability": {"metrics": {"public_networks": ["10.0.0.0/8"]}},
    }
    upstreams = {"demo": {"targets": ["asgi:onegate.dev.demo:app"]}}
    routes = [{"name": "app", "match": {"prefix": "/api"}, "upstream": "demo"}]
    with run_in_process(
        tmp_path_factory.mktemp("admin"),
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


def bearer(**claims: Any) -> dict[str, str]:
    payload = {"iss": ISSUER, "aud": "onegate", "sub": "alice", "exp": int(time.time()) + 300}
    token = jwt.encode({**payload, **claims}, SECRET, algorithm="HS256")
    return {"authorization": f"Bearer {token}"}


ADMIN = {"scope": "read onegate:admin"}


@pytest.mark.parametrize("path", ADMIN_PATHS)
async def test_admin_paths_need_a_credential(client: httpx.AsyncClient, path: str) -> None:
    assert_problem(await client.get(path), 401)


@pytest.mark.parametrize(
    "path", ["/_onegate/config", "/_onegate/x/../config", "/_onegate%2Fconfig"]
)
async def test_a_forged_or_disguised_request_is_not_admin(
    client: httpx.AsyncClient, path: str
) -> None:
    forged = {"x-onegate-scopes": "onegate:admin", "x-forwarded-for": "127.0.0.1"}
    assert_problem(await client.get(path, headers=forged), 401)
    wrong_key = jwt.encode({"iss": ISSUER, "aud": "onegate", "sub": "mallory"}, "x" * 64)
    response = await client.get(path, headers={"authorization": f"Bearer {wrong_key}"})
    assert_problem(response, 401)


async def test_a_caller_without_the_admin_scope_is_forbidden(client: httpx.AsyncClient) -> None:
    response = await client.get("/_onegate/config", headers=bearer(scope="read write"))
    assert assert_problem(response, 403)["type"].endswith("/admin-scope-required")


async def test_the_admin_scope_reads_the_masked_config(client: httpx.AsyncClient) -> None:
    response = await client.get("/_onegate/config", headers=bearer(**ADMIN))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    config = response.json()
    assert config["routes"][0]["name"] == "app"
    # The variable's name is shown (it is configuration); the secret it holds never is.
    assert config["auth"]["issuers"][0]["keys"][0]["secret_env"] == SECRET_ENV
    assert SECRET not in response.text


async def test_the_admin_role_is_as_good_as_the_scope(client: httpx.AsyncClient) -> None:
    response = await client.get("/_onegate/", headers=bearer(roles=["onegate:admin"]))
    assert response.status_code == 200, response.text
    assert response.json()["endpoints"]["config"] == "/_onegate/config"


async def test_routes_and_upstreams(client: httpx.AsyncClient) -> None:
    routes = (await client.get("/_onegate/routes", headers=bearer(**ADMIN))).json()["routes"]
    assert routes == [
        {
            "name": "app",
            "match": {"prefix": "/api"},
            "upstream": "demo",
            "policy": {
                "auth": {"policy": "authenticated", "default": True},
                "rate_limits": [],
                "cors": None,
            },
        }
    ]
    response = await client.get("/_onegate/upstreams", headers=bearer(**ADMIN))
    demo = response.json()["upstreams"]["demo"]
    assert demo["total"] == 1
    assert demo["targets"][0]["url"] == "asgi:onegate.dev.demo:app"


async def test_an_unknown_admin_path_is_a_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/_onegate/nothing-here", headers=bearer(**ADMIN))
    # The admin app's own 404 says it all in its title: no detail.
    assert assert_problem(response, 404, detail=False)["instance"] == "/_onegate/nothing-here"


async def test_the_admin_api_is_read_only(client: httpx.AsyncClient) -> None:
    response = await client.post("/_onegate/config", headers=bearer(**ADMIN), content=b"{}")
    assert assert_problem(response, 405)
    assert response.headers["allow"] == "GET, HEAD"


async def test_the_assertion_keys_are_public(client: httpx.AsyncClient) -> None:
    response = await client.get("/_onegate/jwks.json")
    assert response.status_code == 200, response.text
    keys = response.json()["keys"]
    assert keys and all("kid" in key and "d" not in key for key in keys)


async def test_metrics_off_the_public_networks_need_a_credential(
    client: httpx.AsyncClient,
) -> None:
    assert_problem(await client.get("/metrics"), 401)
    # The TCP peer decides, not a header the client writes.
    assert_problem(await client.get("/metrics", headers={"x-forwarded-for": "10.1.2.3"}), 401)


async def test_metrics_for_an_admin_off_the_public_networks(client: httpx.AsyncClient) -> None:
    assert (await client.get("/metrics", headers=bearer(**ADMIN))).status_code == 200
    assert_problem(await client.get("/metrics", headers=bearer(scope="read")), 403)


async def test_metrics_for_a_peer_on_the_public_networks(gateway: InProcessGateway) -> None:
    async with gateway.async_client(peer=("10.1.2.3", 40000)) as client:
        assert (await client.get("/metrics")).status_code == 200
        # The metrics path only: the admin API still wants a credential from that peer.
        assert_problem(await client.get("/_onegate/config"), 401)
