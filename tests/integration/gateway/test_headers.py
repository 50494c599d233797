"""Header hygiene across the gateway.

Requests go through the gateway app (in process, :mod:`helpers.inprocess`) over real sockets to
the legacy ``main`` stand-in, whose echo reports exactly which headers arrived. Responses come
from a raw upstream that sends hop-by-hop headers a proxy must not pass on.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from helpers.inprocess import InProcessGateway, run_in_process
from helpers.legacy import LegacyBackends, legacy_backends
from helpers.upstreams import RawUpstream, Reply

__all__ = ["legacy_backends"]  # the fixture, imported so pytest finds it here

GENERATED_ID = re.compile(r"^[0-9a-f]{32}$")
HOP_BY_HOP = ("connection", "keep-alive", "te", "trailer", "upgrade", "proxy-authorization")

UPSTREAM_RESPONSE_HEADERS = (
    ("Connection", "X-Upstream-Secret"),
    ("Keep-Alive", "timeout=5, max=100"),
    ("Proxy-Authenticate", 'Basic realm="upstream"'),
    ("X-Upstream-Secret", "s3cr3t"),
    ("X-Request-ID", "chosen-by-the-upstream"),
    ("X-Visible", "yes"),
)


@pytest.fixture(scope="module")
def raw_upstream() -> Iterator[RawUpstream]:
    with RawUpstream(default=Reply(200, b"hello", UPSTREAM_RESPONSE_HEADERS)) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
    legacy_backends: LegacyBackends,
    raw_upstream: RawUpstream,
) -> Iterator[InProcessGateway]:
    upstreams = {
        "main": {"targets": [legacy_backends.main_url]},
        "raw": {"targets": [raw_upstream.url]},
    }
    routes = [
        {"name": "main", "match": {"prefix": "/api"}, "upstream": "main"},
        {"name": "raw", "match": {"prefix": "/raw"}, "upstream": "raw"},
    ]
    with run_in_process(
        tmp_path_factory.mktemp("headers"), upstreams, routes, drain_seconds=1
    ) as gw:
        yield gw


@pytest.fixture
async def client(gateway: InProcessGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway.async_client() as client:
        yield client


class Echo:
    """What the legacy echo saw, with the response the client got."""

    def __init__(self, response: httpx.Response) -> None:
        assert response.status_code == 200, response.text
        self.response = response
        self.data: dict[str, Any] = response.json()
        self.headers: list[tuple[str, str]] = [(n, v) for n, v in self.data["headers"]]

    def values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]

    def one(self, name: str) -> str:
        values = self.values(name)
        assert len(values) == 1, f"{name}: {values}"
        return values[0]

    @property
    def names(self) -> set[str]:
        return {key for key, _ in self.headers}


async def echo(client: httpx.AsyncClient, method: str = "GET", **kwargs: Any) -> Echo:
    return Echo(await client.request(method, "/api/echo/headers", **kwargs))


# --- request: hop-by-hop headers -----------------------------------------------------------------


async def test_hop_by_hop_request_headers_stop_at_the_gateway(client: httpx.AsyncClient) -> None:
    seen = await echo(
        client,
        headers={
            "Connection": "keep-alive",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Trailer": "X-Checksum",
            "Upgrade": "h2c",
            "Proxy-Authorization": "Basic c2VjcmV0OnNlY3JldA==",
            "Proxy-Connection": "keep-alive",
            "X-End-To-End": "kept",
        },
    )
    assert not seen.names & {*HOP_BY_HOP, "proxy-connection"}
    assert seen.one("x-end-to-end") == "kept"


async def test_headers_named_in_connection_are_dropped(client: httpx.AsyncClient) -> None:
    seen = await echo(
        client,
        headers={
            "Connection": "close, X-Secret,x-also-secret",
            "X-Secret": "for the next hop only",
            "X-Also-Secret": "this too",
            "X-Public": "for the upstream",
        },
    )
    assert "x-secret" not in seen.names
    assert "x-also-secret" not in seen.names
    assert seen.one("x-public") == "for the upstream"


async def test_every_connection_header_counts(client: httpx.AsyncClient) -> None:
    """Two Connection headers (as sent on the wire: a header list, not a dict) each name a
    header to drop."""
    headers = [
        ("Host", "gw"),
        ("Connection", "X-First"),
        ("X-First", "1"),
        ("Connection", "close, X-Second"),
        ("X-Second", "2"),
        ("X-Third", "3"),
    ]
    response = await client.get("/api/echo/two-connection-headers", headers=headers)
    assert response.status_code == 200
    names = {name for name, _ in response.json()["headers"]}
    assert not names & {"x-first", "x-second", "connection"}
    assert "x-third" in names


async def test_connection_cannot_remove_headers_the_gateway_sets(
    client: httpx.AsyncClient,
) -> None:
    seen = await echo(
        client, headers={"Connection": "X-Forwarded-For, X-Request-ID, Host, Forwarded"}
    )
    assert seen.one("x-forwarded-for") == "127.0.0.1"
    assert seen.one("forwarded").startswith("for=127.0.0.1")
    assert seen.one("x-request-id") == seen.response.headers["x-request-id"]
    assert seen.one("host")


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
async def test_connection_naming_framing_headers_cannot_break_the_body(
    client: httpx.AsyncClient, streamed: bool
) -> None:
    body = bytes(range(256)) * 40  # 10 KiB

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    seen = await echo(
        client,
        "POST",
        content=pieces() if streamed else body,
        headers={"Connection": "Content-Length, Transfer-Encoding"},
    )
    assert seen.data["body"] == {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    if streamed:
        assert seen.one("transfer-encoding") == "chunked"
    else:
        assert seen.one("content-length") == str(len(body))


# --- request: Host -------------------------------------------------------------------------------


async def test_upstream_host_is_the_targets_not_the_clients(
    client: httpx.AsyncClient, legacy_backends: LegacyBackends
) -> None:
    seen = await echo(client, headers={"Host": "shop.example.com"})
    assert seen.one("host") == f"127.0.0.1:{legacy_backends.ports.main}"
    assert seen.one("x-forwarded-host") == "shop.example.com"


# --- X-Request-ID --------------------------------------------------------------------------------


async def test_request_id_is_generated_when_absent(client: httpx.AsyncClient) -> None:
    first = await echo(client)
    second = await echo(client)
    returned = first.response.headers["x-request-id"]
    assert GENERATED_ID.match(returned)
    assert first.one("x-request-id") == returned
    assert second.one("x-request-id") == second.response.headers["x-request-id"] != returned


@pytest.mark.parametrize(
    "request_id",
    ["abc-123", "2f1c9a7e-4b8e-4c8f-9d5e-1a2b3c4d5e6f", "svc.a:b@c/d+e=f_g", "x" * 128],
)
async def test_a_sane_client_request_id_is_propagated(
    client: httpx.AsyncClient, request_id: str
) -> None:
    seen = await echo(client, headers={"X-Request-ID": request_id})
    assert seen.one("x-request-id") == request_id
    assert seen.response.headers.get_list("x-request-id") == [request_id]


@pytest.mark.parametrize(
    "garbage",
    ["x" * 300, "has spaces in it", 'quote"d', "semi;colon", "<script>alert(1)</script>"],
    ids=["300-chars", "spaces", "quote", "semicolon", "markup"],
)
async def test_a_garbage_client_request_id_is_replaced(
    client: httpx.AsyncClient, garbage: str
) -> None:
    seen = await echo(client, headers={"X-Request-ID": garbage})
    returned = seen.response.headers["x-request-id"]
    assert returned != garbage
    assert GENERATED_ID.match(returned)
    assert seen.one("x-request-id") == returned


# --- response ------------------------------------------------------------------------------------


async def test_hop_by_hop_response_headers_stop_at_the_gateway(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/raw/anything")
    assert response.status_code == 200
    assert response.content == b"hello"
    assert response.headers["x-visible"] == "yes"
    for name in ("x-upstream-secret", "keep-alive", "proxy-authenticate"):
        assert name not in response.headers, name
    assert response.headers.get("connection") in (None, "keep-alive")


async def test_the_response_request_id_is_the_gateways_own(client: httpx.AsyncClient) -> None:
    response = await client.get("/raw/anything", headers={"X-Request-ID": "from-the-client"})
    assert response.headers.get_list("x-request-id") == ["from-the-client"]


async def test_a_relayed_response_keeps_its_single_date(client: httpx.AsyncClient) -> None:
    relayed = await client.get("/api/echo/date")  # the legacy stand-in sends a Date
    assert relayed.status_code == 200
    assert len(relayed.headers.get_list("date")) == 1

    own = await client.get("/nowhere")  # a problem document the gateway wrote itself
    assert own.status_code == 404
    assert len(own.headers.get_list("date")) == 1


async def test_a_relayed_response_without_date_gets_one(client: httpx.AsyncClient) -> None:
    undated = await client.get("/raw/date")  # the raw upstream sends no Date
    assert undated.status_code == 200
    assert len(undated.headers.get_list("date")) == 1
