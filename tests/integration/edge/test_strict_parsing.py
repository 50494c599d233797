"""Strict request parsing (issue 11, part 4): HTTP/1.0 and HTTP/1.1 only, a valid Host, and
forwarding headers that name only a validated host.

Every refusal is a problem document, and the connection is closed after it.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from helpers.gateway import GatewayProcess, run_gateway
from helpers.wire import EOF_, Response, connect, read_until_closed, split_responses

DEMO = {"demo": {"targets": ["asgi:onegate.dev.demo:app"]}}
ROUTES = [{"name": "demo", "match": {"prefix": "/"}, "upstream": "demo"}]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with run_gateway(tmp_path_factory.mktemp("strict"), DEMO, ROUTES, drain_seconds=1) as gw:
        yield gw


@pytest.fixture(scope="module")
def behind_a_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway that trusts its peer (the test) as a proxy in front of it."""
    with run_gateway(
        tmp_path_factory.mktemp("strict-proxied"),
        DEMO,
        ROUTES,
        drain_seconds=1,
        trusted_proxies=["127.0.0.1/32"],
    ) as gw:
        yield gw


def exchange(port: int, data: bytes, half_close: bool = False) -> tuple[list[Response], str]:
    with connect(port) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        received, ended = read_until_closed(sock, within=5)
    responses, rest = split_responses(received)
    assert rest == b"", received[:300]
    return responses, ended


def refused(port: int, data: bytes, status: int, slug: str, half_close: bool = False) -> None:
    responses, ended = exchange(port, data, half_close)
    assert [r.status for r in responses] == [status]
    [response] = responses
    assert response.header(b"content-type") == b"application/problem+json"
    assert response.header(b"connection") == b"close"
    document = json.loads(response.body)
    assert document["status"] == status
    assert document["type"] == f"https://onegate.dev/problems/{slug}"
    assert ended == EOF_


def echoed(port: int, *headers: str, target: str = "/echo") -> dict[str, str]:
    head = f"GET {target} HTTP/1.1\r\n" + "".join(f"{h}\r\n" for h in headers)
    responses, _ = exchange(port, (head + "Connection: close\r\n\r\n").encode("latin-1"))
    assert [r.status for r in responses] == [200], responses
    headers_seen: dict[str, str] = json.loads(responses[0].body)["headers"]
    return headers_seen


# --- versions ------------------------------------------------------------------------------------


@pytest.mark.parametrize("half_close", [False, True])
@pytest.mark.parametrize("request_line", [b"GET /path\r\n", b"GET /path\r\n\r\n"])
def test_the_http09_form_is_a_400(
    gateway: GatewayProcess, request_line: bytes, half_close: bool
) -> None:
    refused(gateway.port, request_line, 400, "malformed-request", half_close)


@pytest.mark.parametrize("version", ["HTTP/2.0", "HTTP/1.2", "HTTP/3.0", "HTTP/9.9", "HTTP/0.9"])
def test_unsupported_versions_are_refused(gateway: GatewayProcess, version: str) -> None:
    data = f"GET /path {version}\r\nHost: gw\r\n\r\n".encode()
    status, slug = (
        (400, "malformed-request") if version == "HTTP/0.9" else (505, "http-version-not-supported")
    )
    refused(gateway.port, data, status, slug)


def test_an_unsupported_version_is_refused_before_the_headers_end(gateway: GatewayProcess) -> None:
    with connect(gateway.port) as sock:
        sock.sendall(b"GET /path HTTP/2.0\r\nHost: gw\r\n")  # no end of head
        received, ended = read_until_closed(sock, within=3)
    assert [r.status for r in split_responses(received)[0]] == [505]
    assert ended == EOF_


def test_the_http2_preface_is_a_505(gateway: GatewayProcess) -> None:
    refused(gateway.port, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, "http-version-not-supported")


def test_http10_without_host_is_served(gateway: GatewayProcess) -> None:
    responses, ended = exchange(gateway.port, b"GET /ten HTTP/1.0\r\n\r\n")
    assert [r.status for r in responses] == [200]
    assert ended == EOF_


# --- Host ----------------------------------------------------------------------------------------


INVALID_HOSTS = [
    b"a/b",
    b"",
    b"a, for=6.6.6.6",
    b"a b",
    b"user@a",
    b"a:port",
    b"a:99999",
    b"a:",
    b"[::1",
    b'a";for=6.6.6.6',
    b"a%2fb",
]


@pytest.mark.parametrize("host", INVALID_HOSTS)
def test_an_invalid_host_is_a_400(gateway: GatewayProcess, host: bytes) -> None:
    data = b"GET /x HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"
    responses, _ = exchange(gateway.port, data)
    assert [r.status for r in responses] == [400]
    assert json.loads(responses[0].body)["status"] == 400


def test_a_missing_host_is_a_400(gateway: GatewayProcess) -> None:
    refused(gateway.port, b"GET /x HTTP/1.1\r\n\r\n", 400, "invalid-host")


def test_an_invalid_host_on_http10_is_a_400_too(gateway: GatewayProcess) -> None:
    refused(gateway.port, b"GET /x HTTP/1.0\r\nHost: a/b\r\n\r\n", 400, "invalid-host")


@pytest.mark.parametrize("host", ["gw", "gw:8080", "10.1.2.3:80", "[::1]:8080", "api.example.com."])
def test_a_valid_host_is_passed_on(gateway: GatewayProcess, host: str) -> None:
    seen = echoed(gateway.port, f"Host: {host}")
    assert seen["x-forwarded-host"] == host
    assert f'host="{host}"' in seen["forwarded"]


def test_an_absolute_form_target_is_served(gateway: GatewayProcess) -> None:
    seen = echoed(gateway.port, "Host: gw", target="http://gw/echo?q=1")
    assert seen["x-forwarded-host"] == "gw"


def test_an_absolute_form_target_naming_another_host_is_a_400(gateway: GatewayProcess) -> None:
    # Routed by Host "gw" but addressed to evil.example: the two must agree (RFC 9112 3.2.2).
    data = b"GET http://evil.example/echo HTTP/1.1\r\nHost: gw\r\n\r\n"
    refused(gateway.port, data, 400, "malformed-request")


def test_http10_without_host_forwards_no_empty_host_header(gateway: GatewayProcess) -> None:
    responses, _ = exchange(gateway.port, b"GET /echo HTTP/1.0\r\n\r\n")
    seen = json.loads(responses[0].body)["headers"]
    assert "x-forwarded-host" not in seen
    assert "host=" not in seen["forwarded"]


@pytest.mark.parametrize(
    "data",
    [
        b"CONNECT gw:443 HTTP/1.1\r\nHost: gw:443\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: gw\r\n\r\n",
    ],
)
def test_targets_the_gateway_does_not_serve_are_a_400(gateway: GatewayProcess, data: bytes) -> None:
    responses, _ = exchange(gateway.port, data)
    assert [r.status for r in responses] == [400]


# --- forwarding headers behind a trusted proxy ---------------------------------------------


def test_a_trusted_proxys_valid_forwarded_host_is_passed_on(behind_a_proxy: GatewayProcess) -> None:
    seen = echoed(behind_a_proxy.port, "Host: internal", "X-Forwarded-Host: app.example.com")
    assert seen["x-forwarded-host"] == "app.example.com"
    assert 'host="app.example.com"' in seen["forwarded"]


def test_only_the_first_forwarded_host_counts(behind_a_proxy: GatewayProcess) -> None:
    seen = echoed(
        behind_a_proxy.port, "Host: internal", "X-Forwarded-Host: app.example.com, other.example"
    )
    assert seen["x-forwarded-host"] == "app.example.com"


@pytest.mark.parametrize(
    "claimed", ["a/b", "for=6.6.6.6, a", 'x", for=6.6.6.6;host="y', "a b", "user@a", ""]
)
def test_an_invalid_forwarded_host_falls_back_to_the_host(
    behind_a_proxy: GatewayProcess, claimed: str
) -> None:
    seen = echoed(behind_a_proxy.port, "Host: internal", f"X-Forwarded-Host: {claimed}")
    assert seen["x-forwarded-host"] == "internal"
    assert seen["forwarded"].endswith(';host="internal";proto=http')
