"""Which bucket a request counts against, which policies a route gets, and their config."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from onegate.auth.principal import Principal
from onegate.errors import ConfigError
from onegate.gateway.config import Config, GatewayConfig, RouteConfig, load_config
from onegate.gateway.exchange import Exchange
from onegate.gateway.headers import ForwardedInfo
from onegate.gateway.routing import Route, RouteMatch
from onegate.gateway.runtime import Runtime
from onegate.ratelimit.config import LimitPolicy, RateLimitConfig
from onegate.ratelimit.keys import api_key_key, client_ip_key, principal_key, route_key
from onegate.ratelimit.rules import Rule, rules_by_route

ALICE_JWT = Principal(subject="alice", issuer="corp", method="jwt", key_id="kid-1")
BOB_KEY = Principal(subject="bob", issuer="keys", method="api_key", key_id="og_pub_123")


def exchange(principal: Principal | None = None, ip: str | None = "203.0.113.7") -> Exchange:
    ex = Exchange("req-1", principal=principal)
    if ip is not None:
        ex.forwarded = ForwardedInfo(ip, [ip], "http", "gw.example")
    route = RouteConfig.model_validate(
        {"name": "orders", "match": {"prefix": "/orders"}, "upstream": "main"}
    )
    ex.match = RouteMatch(Route(route, 0), {}, "/orders")
    return ex


# --- keys ----------------------------------------------------------------------------------


def test_principal_key_is_the_caller_or_else_the_address() -> None:
    assert principal_key(exchange(ALICE_JWT)) == "p:corp:alice"
    assert principal_key(exchange(BOB_KEY)) == "p:keys:bob"
    assert principal_key(exchange()) == "ip:203.0.113.7"
    assert principal_key(exchange(ip=None)) is None


def test_api_key_key_applies_to_api_key_callers_only() -> None:
    assert api_key_key(exchange(BOB_KEY)) == "k:og_pub_123"
    assert api_key_key(exchange(ALICE_JWT)) is None  # a JWT's kid is not an API key
    assert api_key_key(exchange()) is None


def test_client_ip_and_route_keys() -> None:
    assert client_ip_key(exchange(ALICE_JWT, ip="2001:db8::1")) == "ip:2001:db8::1"
    assert client_ip_key(exchange(ip=None)) is None
    assert route_key(exchange()) == "r:orders"


# --- rules ---------------------------------------------------------------------------------


def gateway(routes: list[dict[str, Any]], **rate_limits: Any) -> Config:
    policies = [
        {"name": "per-route", "key": "route", "limit": 100},
        {"name": "per-ip", "key": "client_ip", "limit": 10, "window_seconds": 1.5},
        {"name": "per-key", "key": "api_key", "limit": 5},
    ]
    return Config(
        GatewayConfig.model_validate(
            {
                "upstreams": {"main": {"targets": ["http://127.0.0.1:3000"]}},
                "routes": [
                    {"match": {"prefix": f"/{r['name']}"}, "upstream": "main", **r} for r in routes
                ],
                "rate_limits": {"policies": policies, **rate_limits},
            }
        )
    )


def rules_of(config: Config) -> dict[str, tuple[Rule, ...]]:
    gateway = config.gateway
    return rules_by_route(gateway.rate_limits, gateway.routes, config.error)


def names(rules: tuple[Rule, ...]) -> list[str]:
    return [rule.policy.name for rule in rules]


def test_routes_get_their_own_policies_or_the_default() -> None:
    config = gateway(
        [
            {"name": "own", "rate_limits": ["per-key"]},
            {"name": "inherits"},
            {"name": "exempt", "rate_limits": []},
        ],
        default=["per-ip"],
    )
    plans = rules_of(config)
    assert names(plans["own"]) == ["per-key"]
    assert names(plans["inherits"]) == ["per-ip"]
    assert "exempt" not in plans  # no entry: the stage passes it through untouched


def test_route_wide_policies_are_counted_after_per_caller_ones() -> None:
    config = gateway([{"name": "a", "rate_limits": ["per-route", "per-ip", "per-key", "per-ip"]}])
    assert names(rules_of(config)["a"]) == ["per-ip", "per-key", "per-route"]


def test_rule_headers_are_precomputed() -> None:
    rule = rules_of(gateway([{"name": "a"}], default=["per-ip"]))["a"][0]
    assert rule.limit_header == b"10"
    assert rule.policy_header == b"10;w=2"  # whole seconds, rounded up


def test_unknown_policy_on_a_route() -> None:
    with pytest.raises(ConfigError) as caught:
        rules_of(gateway([{"name": "a"}, {"name": "b", "rate_limits": ["nope"]}]))
    assert caught.value.key == "routes[1].rate_limits"


def test_unknown_policy_is_a_config_error_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            upstreams:
              demo: {targets: ["asgi:onegate.dev.demo:app"]}
            routes:
              - name: a
                match: {prefix: /a}
                upstream: demo
                rate_limits: [per-ipp]
            rate_limits:
              policies: [{name: per-ip, limit: 3}]
            """
        )
    )
    with pytest.raises(ConfigError) as caught:
        Runtime(load_config(path))
    assert str(caught.value) == (
        f"{path}:7: routes[0].rate_limits: unknown rate limit policy 'per-ipp'"
    )


# --- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["per ip", "a:b", "1st", ""])
def test_policy_names_are_safe_in_store_keys(name: str) -> None:
    with pytest.raises(ValueError, match="letters, digits"):
        LimitPolicy(name=name, limit=1)


@pytest.mark.parametrize(
    "store", ["memory", "redis://10.0.0.5:6379/2", "rediss://r.example", "unix:///run/r.sock"]
)
def test_store_urls(store: str) -> None:
    assert RateLimitConfig(store=store).store == store


def test_unknown_store() -> None:
    with pytest.raises(ValueError, match="expected 'memory'"):
        RateLimitConfig(store="memcached://x")


def test_unknown_default_and_duplicate_policies() -> None:
    with pytest.raises(ValueError, match="unknown rate limit policy 'x'"):
        RateLimitConfig(default=["x"])
    with pytest.raises(ValueError, match="unique"):
        RateLimitConfig.model_validate({"policies": [{"name": "a", "limit": 1}] * 2})
