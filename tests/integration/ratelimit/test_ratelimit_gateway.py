"""Rate limits through a real ``onegate serve`` process, with the default memory store.

The test client always connects from 127.0.0.1, which the gateway trusts as a proxy here, so
each test picks its callers' addresses with X-Forwarded-For and owns its buckets.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from helpers.gateway import GatewayProcess, run_gateway

HOUR = 3600  # windows long enough that no test straddles a boundary that matters

POLICIES = [
    {"name": "per-ip", "key": "client_ip", "limit": 3, "window_seconds": HOUR},
    {"name": "per-route", "key": "route", "limit": 3, "window_seconds": HOUR},
    {"name": "pair-ip", "key": "client_ip", "limit": 2, "window_seconds": HOUR},
    {"name": "pair-route", "key": "route", "limit": 5, "window_seconds": HOUR},
    {"name": "fallback", "key": "client_ip", "limit": 4, "window_seconds": HOUR},
    {"name": "anyone", "key": "principal", "limit": 2, "window_seconds": HOUR},
    {"name": "keys", "key": "api_key", "limit": 1, "window_seconds": HOUR},
    {"name": "burst", "key": "client_ip", "limit": 2, "window_seconds": 0.5,
     "algorithm": "token_bucket"},
]  # fmt: skip

ROUTES = [
    ("per-ip", ["per-ip"]),
    ("per-ip-too", ["per-ip"]),
    ("shared", ["per-route"]),
    ("pair", ["pair-route", "pair-ip"]),  # listed route-first on purpose
    ("unlimited", []),
    ("inherits", None),
    ("anonymous", ["anyone", "keys"]),
    ("burst", ["burst"]),
]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    routes = []
    for name, limits in ROUTES:
        route = {"name": name, "match": {"prefix": f"/{name}"}, "upstream": "demo"}
        if limits is not None:
            route["rate_limits"] = limits
        routes.append(route)
    with run_gateway(
        tmp_path_factory.mktemp("ratelimit"),
        {"demo": {"targets": ["asgi:onegate.dev.demo:app"]}},
        routes,
        trusted_proxies=["127.0.0.1/32"],
        drain_seconds=1,
        extra={"rate_limits": {"policies": POLICIES, "default": ["fallback"]}},
    ) as gw:
        yield gw


class Caller:
    """Requests to the gateway from a chosen client address, over one client (making an
    httpx client per request costs ~50 ms)."""

    def __init__(self, gateway: GatewayProcess, client: httpx.Client) -> None:
        self.gateway = gateway
        self.client = client

    def get(self, path: str, client_ip: str) -> httpx.Response:
        return self.client.get(self.gateway.url + path, headers={"X-Forwarded-For": client_ip})


@pytest.fixture(scope="module")
def gw(gateway: GatewayProcess) -> Iterator[Caller]:
    with httpx.Client(timeout=5) as client:
        yield Caller(gateway, client)


def limits(response: httpx.Response) -> tuple[str, str, str] | None:
    """(limit, remaining, policy) from the RateLimit headers, or None if there are none."""
    if "ratelimit-limit" not in response.headers:
        assert not any(h.startswith("ratelimit-") for h in response.headers)
        return None
    return (
        response.headers["ratelimit-limit"],
        response.headers["ratelimit-remaining"],
        response.headers["ratelimit-policy"],
    )


def test_remaining_counts_down_to_zero_and_the_next_is_a_problem(gw: Caller) -> None:
    ip = "198.51.100.1"
    allowed = [gw.get("/per-ip/x", ip) for _ in range(3)]
    assert [r.status_code for r in allowed] == [200, 200, 200]
    assert [limits(r) for r in allowed] == [("3", n, "3;w=3600") for n in ("2", "1", "0")]
    assert all(1 <= int(r.headers["ratelimit-reset"]) <= HOUR for r in allowed[:2])
    # Nothing left: Reset is when the next request fits: the window's end, then until the 3
    # weigh 2 (a third of the next window).
    assert HOUR // 3 <= int(allowed[2].headers["ratelimit-reset"]) <= 4 * HOUR // 3 + 1

    refused = gw.get("/per-ip/x", ip)
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["cache-control"] == "no-store"
    assert limits(refused) == ("3", "0", "3;w=3600")
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["retry-after"] == refused.headers["ratelimit-reset"]
    problem = refused.json()
    assert problem["type"] == "https://onegate.dev/problems/rate-limited"
    assert problem["status"] == 429
    assert problem["title"] == "Too many requests"
    assert problem["request_id"] == refused.headers["x-request-id"]
    assert problem["instance"] == "/per-ip/x"
    assert "per-ip" in problem["detail"]


def test_each_address_has_its_own_bucket(gw: Caller) -> None:
    for _ in range(3):
        gw.get("/per-ip/x", "198.51.100.2")
    assert gw.get("/per-ip/x", "198.51.100.2").status_code == 429
    other = gw.get("/per-ip/x", "198.51.100.3")
    assert other.status_code == 200
    assert limits(other) == ("3", "2", "3;w=3600")


def test_a_per_route_limit_is_shared_by_every_address(gw: Caller) -> None:
    statuses = [gw.get("/shared/x", f"198.51.100.{10 + n}").status_code for n in range(4)]
    assert statuses == [200, 200, 200, 429]


def test_a_policy_counts_an_address_across_the_routes_it_is_attached_to(gw: Caller) -> None:
    ip = "198.51.100.20"
    assert limits(gw.get("/per-ip/x", ip)) == ("3", "2", "3;w=3600")
    assert limits(gw.get("/per-ip-too/x", ip)) == ("3", "1", "3;w=3600")


def test_the_tightest_policy_is_reported_and_refusals_spend_nothing_shared(gw: Caller) -> None:
    a, b, c, d, e = (f"198.51.100.{30 + n}" for n in range(5))
    # Per address 2, for the route 5: the address's own limit is the tighter one at first.
    assert limits(gw.get("/pair/x", a)) == ("2", "1", "2;w=3600")
    assert limits(gw.get("/pair/x", a)) == ("2", "0", "2;w=3600")
    refused = gw.get("/pair/x", a)
    assert refused.status_code == 429
    assert limits(refused) == ("2", "0", "2;w=3600")
    # a's refusal did not spend the route's budget: 3 of 5 are left for b, c and d.
    assert limits(gw.get("/pair/x", b)) == ("2", "1", "2;w=3600")  # route: 2 left
    assert limits(gw.get("/pair/x", c)) == ("2", "1", "2;w=3600")  # route: 1 left
    assert limits(gw.get("/pair/x", d)) == ("5", "0", "5;w=3600")  # now the route is
    refused = gw.get("/pair/x", e)
    assert refused.status_code == 429
    assert limits(refused) == ("5", "0", "5;w=3600")


def test_routes_without_policies_are_not_limited(gw: Caller) -> None:
    for _ in range(10):
        response = gw.get("/unlimited/x", "198.51.100.40")
        assert response.status_code == 200
        assert limits(response) is None


def test_routes_without_their_own_list_get_the_default(gw: Caller) -> None:
    statuses = [gw.get("/inherits/x", "198.51.100.41").status_code for _ in range(5)]
    assert statuses == [200] * 4 + [429]


def test_anonymous_callers_are_counted_by_address_and_skip_api_key_limits(gw: Caller) -> None:
    # No auth configured: "principal" falls back to the address, "api_key" doesn't apply.
    responses = [gw.get("/anonymous/x", "198.51.100.42") for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert [limits(r) for r in responses] == [("2", n, "2;w=3600") for n in ("1", "0", "0")]
    assert gw.get("/anonymous/x", "198.51.100.43").status_code == 200


def test_a_token_bucket_refills_in_real_time(gw: Caller) -> None:
    ip = "198.51.100.50"
    assert [gw.get("/burst/x", ip).status_code for _ in range(2)] == [200, 200]
    refused = gw.get("/burst/x", ip)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"  # 0.25 s, rounded up to whole seconds
    assert refused.headers["ratelimit-policy"] == "2;w=1"
    time.sleep(0.3)  # 4 tokens a second: one is back
    assert gw.get("/burst/x", ip).status_code == 200


def test_a_reload_keeps_the_counts(tmp_path: Path) -> None:
    policy = {"name": "per-ip", "limit": 3, "window_seconds": HOUR}
    with (
        run_gateway(
            tmp_path,
            {"demo": {"targets": ["asgi:onegate.dev.demo:app"]}},
            [{"name": "api", "match": {"prefix": "/api"}, "upstream": "demo"}],
            drain_seconds=1,
            extra={"rate_limits": {"policies": [policy], "default": ["per-ip"]}},
        ) as gateway,
        httpx.Client(base_url=gateway.url, timeout=5) as client,
    ):
        assert client.get("/api/x").headers["ratelimit-remaining"] == "2"
        config = yaml.safe_load(gateway.config_path.read_text())
        config["routes"].append({"name": "new", "match": {"prefix": "/new"}, "upstream": "demo"})
        gateway.write_config(config)
        deadline = time.monotonic() + 10
        while client.get("/readyz").json()["config"]["reloads"] == 0:
            assert time.monotonic() < deadline, gateway.log()
            time.sleep(0.1)
        time.sleep(1.5)  # past drain_seconds: the old pipeline is retired and its stage closed
        assert client.get("/api/x").headers["ratelimit-remaining"] == "1"
        assert client.get("/new/x").headers["ratelimit-remaining"] == "0"  # same policy
