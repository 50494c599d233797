"""The pure parts of the client edge (:mod:`onegate.gateway.protocol`): request-line and
version verdicts, the settings derived from ``ServerConfig``, and the raw problem answers.

The protocol's behaviour on the wire (byte counting, deadlines, the cap, lingering close) is
tested against a real gateway in ``tests/integration/edge``.
"""

from __future__ import annotations

import json

import httptools
import pytest

from onegate.errors import (
    HeadersTooLarge,
    HttpVersionNotSupported,
    MalformedRequest,
    TooManyConnections,
)
from onegate.gateway.config import ClientTimeouts, ServerConfig
from onegate.gateway.headers import RequestIds
from onegate.gateway.protocol import (
    HEAD_SLACK,
    EdgeSettings,
    absolute_form_refusal,
    problem_response,
    request_line_refusal,
    version_refusal,
)


@pytest.mark.parametrize(
    "line",
    [b"GET / HTTP/1.1", b"POST /a?b=c HTTP/1.0", b"GET http://x.example/p HTTP/1.1"],
)
def test_http_1x_request_lines_pass(line: bytes) -> None:
    assert request_line_refusal(line) is None


@pytest.mark.parametrize("line", [b"GET /path", b"GET", b"GET /path HTTPS/1.1", b"GET /a /b"])
def test_a_request_line_without_an_http_version_is_a_400(line: bytes) -> None:
    refusal = request_line_refusal(line)
    assert refusal is not None
    error, reason = refusal
    assert isinstance(error, MalformedRequest)
    assert (error.status, reason) == (400, "malformed")


@pytest.mark.parametrize(
    "line", [b"GET / HTTP/2.0", b"GET / HTTP/1.2", b"GET / HTTP/3.0", b"GET / HTTP/0.9"]
)
def test_other_versions_are_refused(line: bytes) -> None:
    refusal = request_line_refusal(line)
    assert refusal is not None
    assert refusal[0].status in (400, 505)


@pytest.mark.parametrize("version", ["2.0", "1.2", "3.0", "0.0", "9.9"])
def test_unsupported_versions_are_a_505(version: str) -> None:
    error, reason = version_refusal(version)
    assert isinstance(error, HttpVersionNotSupported)
    assert (error.status, reason) == (505, "unsupported_version")
    assert version in error.detail


def test_the_http09_form_is_a_400_not_a_505() -> None:
    error, reason = version_refusal("0.9")
    assert isinstance(error, MalformedRequest)
    assert (error.status, reason) == (400, "malformed")


def test_settings_follow_the_server_config() -> None:
    server = ServerConfig(
        max_header_bytes=4096,
        max_request_line_bytes=1000,
        max_client_connections=50,
        client_timeouts=ClientTimeouts(first_byte=3, head=4, keep_alive=60, body_idle=2),
    )
    settings = EdgeSettings(server, fd_limit=10_000)
    assert settings.max_head == 4096 + HEAD_SLACK
    assert settings.max_line == 1000
    assert settings.max_connections == 50
    assert (settings.first_byte, settings.head, settings.keep_alive, settings.body_idle) == (
        3,
        4,
        60,
        2,
    )


@pytest.mark.parametrize(
    ("timeouts", "tick"),
    [
        (ClientTimeouts(first_byte=1, head=2, keep_alive=3, body_idle=4), 1),
        (ClientTimeouts(first_byte=2, head=1, keep_alive=3, body_idle=4), 1),
        (ClientTimeouts(first_byte=2, head=3, keep_alive=1, body_idle=4), 1),
        (ClientTimeouts(first_byte=2, head=3, keep_alive=4, body_idle=1), 1),
    ],
)
def test_the_timer_tick_is_the_shortest_timeout(timeouts: ClientTimeouts, tick: float) -> None:
    """Any deadline is at least a tick away when set, so a pending timer never fires late."""
    settings = EdgeSettings(ServerConfig(client_timeouts=timeouts), fd_limit=None)
    assert settings.tick == tick


def test_the_connection_cap_fits_the_descriptor_budget() -> None:
    server = ServerConfig(max_client_connections=1024)
    assert EdgeSettings(server, fd_limit=100).max_connections == 100
    assert EdgeSettings(server, fd_limit=1024).max_connections == 1024
    assert EdgeSettings(server, fd_limit=5000).max_connections == 1024


def parse(raw: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return status_line, headers, body


def test_a_raw_answer_is_a_problem_document_that_closes_the_connection() -> None:
    status_line, headers, body = parse(problem_response(HeadersTooLarge("too big"), "req-431"))
    assert status_line.startswith("HTTP/1.1 431 ")
    assert headers["content-type"] == "application/problem+json"
    assert headers["connection"] == "close"
    assert headers["cache-control"] == "no-store"
    assert int(headers["content-length"]) == len(body)
    document = json.loads(body)
    assert document["status"] == 431
    assert document["type"] == "https://onegate.dev/problems/headers-too-large"
    assert document["detail"] == "too big"
    assert document["request_id"] == headers["x-request-id"] == "req-431"


def test_a_raw_answer_carries_the_errors_headers() -> None:
    _, headers, _ = parse(problem_response(TooManyConnections("full", retry_after=2), "req-503"))
    assert headers["retry-after"] == "2"


def test_raw_answers_get_distinct_request_ids() -> None:
    ids = RequestIds()
    first = parse(problem_response(MalformedRequest("x"), ids.new()))[1]["x-request-id"]
    second = parse(problem_response(MalformedRequest("x"), ids.new()))[1]["x-request-id"]
    assert first != second


@pytest.mark.parametrize(
    ("target", "host"),
    [
        (b"http://gw/p", b"gw"),
        (b"http://GW/p", b"gw"),  # host names are case-insensitive
        (b"http://gw:80/p", b"gw"),  # the default port, written or not
        (b"http://gw/p", b"gw:80"),
        (b"https://gw/p", b"gw:443"),
        (b"http://gw:8080/p", b"gw:8080"),
        (b"http://[::1]:8080/p", b"[::1]:8080"),
    ],
)
def test_an_absolute_target_naming_the_host_passes(target: bytes, host: bytes) -> None:
    assert absolute_form_refusal(httptools.parse_url(target), [(b"host", host)]) is None


@pytest.mark.parametrize(
    ("target", "host"),
    [
        (b"http://evil.example/p", b"gw"),  # another host
        (b"http://gw:8080/p", b"gw"),  # another port
        (b"http://gw/p", b"gw:8080"),
        (b"http://[::1]/p", b"[::2]"),
        (b"ftp://gw/p", b"gw"),  # not an HTTP URL
    ],
)
def test_an_absolute_target_naming_another_host_is_a_400(target: bytes, host: bytes) -> None:
    refusal = absolute_form_refusal(httptools.parse_url(target), [(b"host", host)])
    assert isinstance(refusal, MalformedRequest)
    assert refusal.status == 400


def test_a_missing_host_is_left_to_the_guard() -> None:
    assert absolute_form_refusal(httptools.parse_url(b"http://gw/p"), []) is None
