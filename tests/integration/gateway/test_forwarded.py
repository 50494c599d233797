"""X-Forwarded-* and Forwarded are rebuilt from the real peer.

The gateways run in process (:mod:`helpers.inprocess`), so the peer is whatever the client says
in the ASGI scope: here always 127.0.0.1, as a test client on a loopback socket would be. One
gateway trusts no proxy: whatever the client claims about earlier hops is discarded. The other
trusts 127.0.0.1/32, as if the test client were a load balancer in front of onegate: its chain
is kept and the peer appended.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from helpers.inprocess import InProcessGateway, run_in_process
from helpers.legacy import LegacyBackends, legacy_backends

__all__ = ["legacy_backends"]  # the fixture, imported so pytest finds it here

SPOOFED = {
    "X-Forwarded-For": "6.6.6.6",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "evil.example",
    "Forwarded": 'for=6.6.6.6;proto=https;host="evil.example"',
    "X-Real-IP": "6.6.6.6",
}

# RFC 7239: forwarded-element = pair *( ";" pair ), elements separated by ","; values are
# tokens or quoted-strings (with backslash escapes).
_PAIR = re.compile(r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)=("(?:[^"\\]|\\.)*"|[^;,\s]*)\s*([;,]|$)')


def parse_forwarded(value: str) -> list[dict[str, str]]:
    """A Forwarded header as a list of elements, each a dict of (lower-case) parameters."""
    elements: list[dict[str, str]] = [{}]
    position = 0
    while position < len(value):
        match = _PAIR.match(value, position)
        assert match is not None, f"malformed Forwarded header at {position}: {value!r}"
        key, raw, separator = match.groups()
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        assert key.lower() not in elements[-1], f"{key} twice in one element: {value!r}"
        elements[-1][key.lower()] = raw
        if separator == ",":
            elements.append({})
        position = match.end()
    return elements


def forwarded_for(value: str) -> list[str]:
    return [element["for"] for element in parse_forwarded(value) if "for" in element]


def gateway_for(
    tmp_path_factory: pytest.TempPathFactory, backends: LegacyBackends, **server: Any
) -> Any:
    upstreams = {"main": {"targets": [backends.main_url]}}
    routes = [{"name": "main", "match": {"prefix": "/api"}, "upstream": "main"}]
    return run_in_process(
        tmp_path_factory.mktemp("forwarded"), upstreams, routes, drain_seconds=1, **server
    )


@pytest.fixture(scope="module")
def untrusting(
    tmp_path_factory: pytest.TempPathFactory, legacy_backends: LegacyBackends
) -> Iterator[InProcessGateway]:
    with gateway_for(tmp_path_factory, legacy_backends) as gw:
        yield gw


@pytest.fixture(scope="module")
def trusting(
    tmp_path_factory: pytest.TempPathFactory, legacy_backends: LegacyBackends
) -> Iterator[InProcessGateway]:
    with gateway_for(tmp_path_factory, legacy_backends, trusted_proxies=["127.0.0.1/32"]) as gw:
        yield gw


PEER = ("127.0.0.1", 50000)


async def seen_by_upstream(
    gateway: InProcessGateway,
    headers: dict[str, str] | None = None,
    peer: tuple[str, int] = PEER,
) -> dict[str, list[str]]:
    """The headers the upstream received, by lower-case name, for a request from ``peer``."""
    async with gateway.async_client(peer=peer) as client:
        response = await client.get("/api/echo/forwarded", headers=headers)
    assert response.status_code == 200, response.text
    received: dict[str, list[str]] = {}
    for name, value in response.json()["headers"]:
        received.setdefault(name, []).append(value)
    return received


# --- no trusted proxies --------------------------------------------------------------------------


async def test_headers_are_built_from_the_peer(
    untrusting: InProcessGateway,
) -> None:
    seen = await seen_by_upstream(untrusting, {"Host": "app.example.com"})
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["http"]
    assert seen["x-forwarded-host"] == ["app.example.com"]
    [forwarded] = seen["forwarded"]
    assert parse_forwarded(forwarded) == [
        {"for": "127.0.0.1", "host": "app.example.com", "proto": "http"}
    ]


async def test_a_clients_forwarding_claims_are_discarded(
    untrusting: InProcessGateway,
) -> None:
    seen = await seen_by_upstream(untrusting, {"Host": "app.example.com", **SPOOFED})
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["http"]
    assert seen["x-forwarded-host"] == ["app.example.com"]
    assert [forwarded_for(v) for v in seen["forwarded"]] == [["127.0.0.1"]]
    assert "x-real-ip" not in seen
    assert "6.6.6.6" not in str(seen)


# --- 127.0.0.1 is a trusted proxy ----------------------------------------------------------------


async def test_a_trusted_proxys_chain_is_kept_and_the_peer_appended(
    trusting: InProcessGateway,
) -> None:
    seen = await seen_by_upstream(trusting, {"X-Forwarded-For": "6.6.6.6"})
    assert seen["x-forwarded-for"] == ["6.6.6.6, 127.0.0.1"]
    [forwarded] = seen["forwarded"]
    assert forwarded_for(forwarded) == ["6.6.6.6", "127.0.0.1"]


async def test_a_longer_chain_keeps_every_hop_in_order(
    trusting: InProcessGateway,
) -> None:
    seen = await seen_by_upstream(trusting, {"X-Forwarded-For": "1.1.1.1, 6.6.6.6"})
    assert seen["x-forwarded-for"] == ["1.1.1.1, 6.6.6.6, 127.0.0.1"]
    assert forwarded_for(seen["forwarded"][0]) == ["1.1.1.1", "6.6.6.6", "127.0.0.1"]


async def test_forwarded_proto_is_honoured_only_from_a_trusted_proxy(
    trusting: InProcessGateway, untrusting: InProcessGateway
) -> None:
    claims = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "6.6.6.6"}
    trusted = await seen_by_upstream(trusting, claims)
    assert trusted["x-forwarded-proto"] == ["https"]
    assert parse_forwarded(trusted["forwarded"][0])[-1]["proto"] == "https"

    untrusted = await seen_by_upstream(untrusting, claims)
    assert untrusted["x-forwarded-proto"] == ["http"]
    assert parse_forwarded(untrusted["forwarded"][0])[-1]["proto"] == "http"


async def test_without_a_chain_the_trusted_peer_is_the_only_hop(
    trusting: InProcessGateway,
) -> None:
    seen = await seen_by_upstream(trusting)
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["http"]
    assert forwarded_for(seen["forwarded"][0]) == ["127.0.0.1"]


# --- the peer decides ----------------------------------------------------------------------------


async def test_the_peer_is_the_first_hop_whatever_its_address(
    untrusting: InProcessGateway,
) -> None:
    seen = await seen_by_upstream(untrusting, SPOOFED, peer=("203.0.113.7", 41000))
    assert seen["x-forwarded-for"] == ["203.0.113.7"]
    assert [forwarded_for(v) for v in seen["forwarded"]] == [["203.0.113.7"]]


async def test_a_peer_outside_the_trusted_networks_is_not_trusted(
    trusting: InProcessGateway,
) -> None:
    claims = {"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https"}
    seen = await seen_by_upstream(trusting, claims, peer=("203.0.113.7", 41000))
    assert seen["x-forwarded-for"] == ["203.0.113.7"]
    assert seen["x-forwarded-proto"] == ["http"]
    assert forwarded_for(seen["forwarded"][0]) == ["203.0.113.7"]


# --- quoting -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "hostile",
    ['x", for=6.6.6.6;host="y', 'x";for=6.6.6.6;host="y', 'x\\", for=6.6.6.6, x="'],
)
def test_a_hostile_host_header_cannot_inject_a_forwarded_hop(
    untrusting: InProcessGateway, hostile: str
) -> None:
    with untrusting.client(peer=PEER) as client:
        response = client.get(
            "/api/echo/forwarded", headers={"Host": hostile, "Connection": "close"}
        )
    if response.status_code == 400:
        return  # refusing a Host that is not host[:port] is a fine answer too
    assert response.status_code == 200
    headers = dict(response.json()["headers"])
    assert forwarded_for(headers["forwarded"]) == ["127.0.0.1"]


async def test_hostile_forwarded_host_and_proto_cannot_inject_a_hop(
    trusting: InProcessGateway,
) -> None:
    seen = await seen_by_upstream(
        trusting,
        {
            "X-Forwarded-Host": 'x", for=6.6.6.6;host="y',
            "X-Forwarded-Proto": "https;for=6.6.6.6",
        },
    )
    [forwarded] = seen["forwarded"]
    assert forwarded_for(forwarded) == ["127.0.0.1"]
    assert seen["x-forwarded-proto"] != ["https;for=6.6.6.6"]


async def test_a_garbage_hop_in_a_trusted_chain_keeps_forwarded_well_formed(
    trusting: InProcessGateway,
) -> None:
    # A load balancer appends to whatever X-Forwarded-For its client sent, garbage included.
    garbage = '1.1.1.1";for=6.6.6.6;by="x'
    seen = await seen_by_upstream(trusting, {"X-Forwarded-For": f"{garbage}, 2.2.2.2"})
    [forwarded] = seen["forwarded"]
    hops = forwarded_for(forwarded)
    assert len(hops) == 3
    assert hops[1:] == ["2.2.2.2", "127.0.0.1"]
    assert hops[0] in (garbage, "unknown") or hops[0].startswith("_")
