"""Which internal route a request gets, and which configured routes are refused."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from onegate.errors import ConfigError, MethodNotAllowed, RouteNotFound
from onegate.gateway.admin.errors import AdminDisabled
from onegate.gateway.admin.networks import Networks
from onegate.gateway.admin.surface import AdminSurface
from onegate.gateway.config import load_config
from onegate.gateway.exchange import Exchange
from onegate.gateway.headers import ForwardedInfo, TrustedProxies
from onegate.gateway.runtime import Runtime

BASE = """\
upstreams:
  demo: {targets: ["asgi:onegate.dev.demo:app"]}
routes:
  - name: app
    match: {prefix: /api}
    upstream: demo
"""
ISSUER = """\
auth:
  issuers:
    - {type: jwt, name: t, issuer: i, audiences: [a], algorithms: [HS256],
       keys: [{secret_env: ONEGATE_UNIT_SECRET}]}
"""


@pytest.fixture(autouse=True)
def issuer_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONEGATE_UNIT_SECRET", "unit-test-secret-" + "0123456789abcdef" * 3)


def runtime(text: str, tmp_path: Path) -> Runtime:
    path = tmp_path / "onegate.yaml"
    path.write_text(textwrap.dedent(text))
    return Runtime(load_config(path, environ={}))


def request(
    method: str = "GET", peer: str = "127.0.0.1", trusted: tuple[str, ...] = (), **headers: str
) -> tuple[dict[str, Any], Exchange]:
    raw = [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    scope = {"type": "http", "method": method, "client": (peer, 50000), "headers": raw}
    exchange = Exchange("id")
    exchange.forwarded = ForwardedInfo.from_request(peer, "http", raw, TrustedProxies(trusted))
    return scope, exchange


def route_of(surface: AdminSurface, path: str, method: str = "GET", **kwargs: Any) -> str | None:
    scope, exchange = request(method, **kwargs)
    found = surface.match(scope, path, exchange)
    return None if found is None else found[0].route.name


def policy_of(surface: AdminSurface, path: str, **kwargs: Any) -> str:
    scope, exchange = request(**kwargs)
    found = surface.match(scope, path, exchange)
    assert found is not None and found[0].route.config.auth is not None
    return found[0].route.config.auth.policy


def test_internal_paths_and_their_policies(tmp_path: Path) -> None:
    surface = runtime(BASE + ISSUER, tmp_path).context.admin
    assert route_of(surface, "/_onegate/jwks.json") == "_onegate.jwks"
    assert route_of(surface, "/_onegate") == "_onegate.admin"
    assert route_of(surface, "/_onegate/config") == "_onegate.admin"
    assert route_of(surface, "/_onegate/jwks.json/x") == "_onegate.admin"
    assert route_of(surface, "/_onegatex") is None
    assert route_of(surface, "/api") is None
    assert policy_of(surface, "/_onegate/jwks.json") == "public"
    assert policy_of(surface, "/_onegate/config") == "authenticated"


def test_without_issuers_only_the_jwks_is_served(tmp_path: Path) -> None:
    surface = runtime(BASE, tmp_path).context.admin
    assert route_of(surface, "/_onegate/jwks.json") == "_onegate.jwks"
    for path in ("/_onegate", "/_onegate/config"):
        with pytest.raises(AdminDisabled):
            route_of(surface, path)


def test_read_only_and_http_only(tmp_path: Path) -> None:
    surface = runtime(BASE + ISSUER, tmp_path).context.admin
    with pytest.raises(MethodNotAllowed):
        route_of(surface, "/_onegate/config", "DELETE")
    assert route_of(surface, "/_onegate/config", "HEAD") == "_onegate.admin"
    scope, exchange = request()
    scope["type"] = "websocket"
    with pytest.raises(RouteNotFound):
        surface.match(scope, "/_onegate/config", exchange)


def test_public_peers() -> None:
    loopback = Networks(["127.0.0.0/8", "::1/128"])
    assert "127.0.0.1" in loopback
    assert "127.9.9.9" in loopback
    assert "::1" in loopback
    assert "::ffff:127.0.0.1" in loopback  # an IPv4 peer on a dual-stack socket
    assert "10.0.0.1" not in loopback
    assert "unknown" not in loopback
    assert None not in loopback


def public(surface: AdminSurface, **kwargs: Any) -> bool:
    scope, exchange = request(**kwargs)
    return surface.is_public_peer(scope, exchange)


def test_the_metrics_peer_decision(tmp_path: Path) -> None:
    surface = runtime(BASE + ISSUER, tmp_path).context.admin
    assert public(surface)
    assert not public(surface, peer="10.0.0.7")
    # A header cannot make a remote peer local...
    assert not public(surface, peer="10.0.0.7", x_forwarded_for="127.0.0.1")
    # ...and a trusted proxy on the same host does not make its remote clients local.
    assert not public(surface, trusted=("127.0.0.1/32",), x_forwarded_for="203.0.113.9")
    assert public(surface, trusted=("127.0.0.1/32",), x_forwarded_for="127.0.0.2")
    scope, exchange = request()
    scope["client"] = None  # a unix socket: no address to trust
    assert not surface.is_public_peer(scope, exchange)


def test_the_metrics_routes(tmp_path: Path) -> None:
    surface = runtime(BASE + ISSUER, tmp_path).context.admin
    assert route_of(surface, "/metrics") == "_onegate.metrics-local"
    assert policy_of(surface, "/metrics") == "public"
    assert route_of(surface, "/metrics", peer="10.0.0.7") == "_onegate.metrics"
    assert policy_of(surface, "/metrics", peer="10.0.0.7") == "authenticated"
    # Off the public networks, metrics are admin-only: closed without an issuer.
    with pytest.raises(AdminDisabled):
        route_of(runtime(BASE, tmp_path).context.admin, "/metrics", peer="10.0.0.7")
    assert route_of(runtime(BASE, tmp_path).context.admin, "/metrics") == "_onegate.metrics-local"


@pytest.mark.parametrize(
    ("match", "message"),
    [
        ("{prefix: /_onegate}", "the gateway's own"),
        ("{prefix: /_onegate/tools}", "the gateway's own"),
        ("{path: '/_onegate/{x}'}", "the gateway's own"),
        ("{prefix: /_onegat%65/tools}", "the gateway's own"),  # %65 is "e"
        ("{path: /metrics}", "metrics path"),
        ("{prefix: /metrics/}", "metrics path"),
    ],
)
def test_routes_cannot_take_the_gateway_paths(tmp_path: Path, match: str, message: str) -> None:
    text = BASE + f"  - name: mine\n    match: {match}\n    upstream: demo\n"
    with pytest.raises(ConfigError) as caught:
        runtime(text, tmp_path)
    assert message in caught.value.detail
    assert caught.value.key == "routes[1].match"
    assert caught.value.location is not None and caught.value.location.endswith(
        ":8"
    )  # the "match:" line


def test_the_metrics_path_is_free_when_metrics_are_off(tmp_path: Path) -> None:
    text = BASE + "  - {name: mine, match: {path: /metrics}, upstream: demo}\n"
    text += "observability: {metrics: {enabled: false}}\n"
    surface = runtime(text, tmp_path).context.admin
    assert route_of(surface, "/metrics") is None
