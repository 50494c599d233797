"""Request framing and size limits, on raw sockets (HTTP clients refuse to send bad framing).

Ambiguous framing is how request smuggling starts, so every doubtful request must get a 400,
never reach an upstream, and cost the client its connection. uvicorn's own parser rejects some
of these before the gateway sees them (a plain-text 400); the gateway's guard stage rejects the
rest with a problem document. Either is fine, as long as the status is 400 and the upstream
sees nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from helpers.gateway import GatewayProcess, run_gateway
from helpers.problems import PROBLEM, assert_problem
from helpers.upstreams import RawUpstream, raw_request

MAX_HEADER_BYTES = 4096
MAX_BODY_BYTES = 1000
ROOMY_BODY_BYTES = 5000
TIGHT_BODY_BYTES = 10


@pytest.fixture(scope="module")
def untouched() -> Iterator[RawUpstream]:
    """Behind every route whose requests must all be refused: it must never see a connection."""
    with RawUpstream() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def streamed() -> Iterator[RawUpstream]:
    """Behind the route for chunked uploads: it sees the start of a body that is then refused."""
    with RawUpstream() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def accepting() -> Iterator[RawUpstream]:
    with RawUpstream() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
    untouched: RawUpstream,
    streamed: RawUpstream,
    accepting: RawUpstream,
) -> Iterator[GatewayProcess]:
    upstreams = {
        "untouched": {"targets": [untouched.url]},
        "streamed": {"targets": [streamed.url]},
        "accepting": {"targets": [accepting.url]},
    }
    routes: list[dict[str, Any]] = [
        {"name": "guarded", "match": {"prefix": "/guarded"}, "upstream": "untouched"},
        {"name": "streamed", "match": {"prefix": "/streamed"}, "upstream": "streamed"},
        {
            "name": "roomy",
            "match": {"prefix": "/roomy"},
            "upstream": "accepting",
            "max_body_bytes": ROOMY_BODY_BYTES,
        },
        {
            "name": "tight",
            "match": {"prefix": "/tight"},
            "upstream": "untouched",
            "max_body_bytes": TIGHT_BODY_BYTES,
        },
    ]
    with run_gateway(
        tmp_path_factory.mktemp("framing"),
        upstreams,
        routes,
        drain_seconds=1,
        max_header_bytes=MAX_HEADER_BYTES,
        max_body_bytes=MAX_BODY_BYTES,
    ) as gw:
        yield gw


def request(method: str, path: str, *headers: str, body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{h}\r\n" for h in headers) + "\r\n"
    return head.encode("latin-1") + body


AMBIGUOUS = {
    "content-length-and-chunked": request(
        "POST", "/guarded/x", "Host: gw", "Content-Length: 5", "Transfer-Encoding: chunked",
        body=b"0\r\n\r\n",
    ),
    "two-content-lengths-same": request(
        "POST", "/guarded/x", "Host: gw", "Content-Length: 5", "Content-Length: 5", body=b"hello"
    ),
    "two-content-lengths-different": request(
        "POST", "/guarded/x", "Host: gw", "Content-Length: 5", "Content-Length: 6", body=b"hello!"
    ),
    "content-length-list": request(
        "POST", "/guarded/x", "Host: gw", "Content-Length: 5, 5", body=b"hello"
    ),
    "two-hosts": request("GET", "/guarded/x", "Host: gw", "Host: other"),
    "gzip-then-chunked": request(
        "POST", "/guarded/x", "Host: gw", "Transfer-Encoding: gzip, chunked", body=b"0\r\n\r\n"
    ),
    "two-transfer-encodings": request(
        "POST", "/guarded/x", "Host: gw", "Transfer-Encoding: chunked",
        "Transfer-Encoding: chunked", body=b"0\r\n\r\n",
    ),
    "identity-coding": request(
        "POST", "/guarded/x", "Host: gw", "Transfer-Encoding: identity", body=b"hello"
    ),
    "non-numeric-content-length": request(
        "POST", "/guarded/x", "Host: gw", "Content-Length: abc", body=b"hello"
    ),
    "signed-content-length": request(
        "POST", "/guarded/x", "Host: gw", "Content-Length: +5", body=b"hello"
    ),
    "negative-content-length": request("POST", "/guarded/x", "Host: gw", "Content-Length: -1"),
}  # fmt: skip


@pytest.mark.parametrize("raw", AMBIGUOUS.values(), ids=AMBIGUOUS.keys())
def test_ambiguous_framing_is_refused_and_the_connection_closed(
    gateway: GatewayProcess, untouched: RawUpstream, raw: bytes
) -> None:
    response = raw_request(gateway.port, raw)
    assert response.status == 400
    if response.header("content-type") == PROBLEM:  # the guard's answer, or the parser's
        document = assert_problem(response, 400)
        assert document["type"] in (
            "https://onegate.dev/problems/ambiguous-framing",
            "https://onegate.dev/problems/bad-request",
            "https://onegate.dev/problems/malformed-request",
        )
    assert response.closed
    assert untouched.connections == 0


def test_a_request_behind_a_refused_one_is_never_read(
    gateway: GatewayProcess, untouched: RawUpstream
) -> None:
    """The classic smuggling shape: a second request hidden in the first one's body."""
    smuggled = request("GET", "/guarded/smuggled", "Host: gw")
    first = request(
        "POST", "/guarded/x", "Host: gw", "Content-Length: 4", "Transfer-Encoding: chunked",
        body=b"0\r\n\r\n" + smuggled,
    )  # fmt: skip
    response = raw_request(gateway.port, first)
    assert response.status == 400
    assert response.closed
    assert untouched.connections == 0


# --- header limit --------------------------------------------------------------------------------


def test_a_request_head_over_the_limit_gets_431(
    gateway: GatewayProcess, untouched: RawUpstream
) -> None:
    response = raw_request(
        gateway.port, request("GET", "/guarded/x", "Host: gw", "X-Big: " + "a" * MAX_HEADER_BYTES)
    )
    assert_problem(response, 431, "headers-too-large")
    assert response.closed
    assert untouched.connections == 0


def test_a_long_query_string_counts_towards_the_limit(
    gateway: GatewayProcess, untouched: RawUpstream
) -> None:
    response = raw_request(
        gateway.port, request("GET", "/guarded/x?q=" + "c" * MAX_HEADER_BYTES, "Host: gw")
    )
    assert_problem(response, 431, "headers-too-large")
    assert untouched.connections == 0


def test_many_small_headers_add_up_to_the_limit(
    gateway: GatewayProcess, untouched: RawUpstream
) -> None:
    headers = [f"X-Part-{i}: {'b' * 40}" for i in range(MAX_HEADER_BYTES // 40)]
    response = raw_request(gateway.port, request("GET", "/guarded/x", "Host: gw", *headers))
    assert_problem(response, 431, "headers-too-large")
    assert untouched.connections == 0


def test_a_request_head_under_the_limit_passes(
    gateway: GatewayProcess, accepting: RawUpstream
) -> None:
    response = raw_request(
        gateway.port,
        request("GET", "/roomy/x", "Host: gw", "Connection: close", "X-Big: " + "a" * 3000),
    )
    assert response.status == 200
    assert accepting.requests[-1].header("x-big") == "a" * 3000


# --- body limits ---------------------------------------------------------------------------------


def test_a_declared_body_over_the_limit_gets_413_before_reaching_the_upstream(
    gateway: GatewayProcess, untouched: RawUpstream
) -> None:
    body = b"x" * (MAX_BODY_BYTES + 1)
    response = raw_request(
        gateway.port,
        request("POST", "/guarded/x", "Host: gw", f"Content-Length: {len(body)}", body=body),
    )
    assert_problem(response, 413, "payload-too-large")
    assert response.closed
    assert untouched.connections == 0


def test_a_body_announced_over_the_limit_is_refused_before_it_is_sent(
    gateway: GatewayProcess, untouched: RawUpstream
) -> None:
    """A client that asks first (``Expect: 100-continue``) hears 413, not 100 Continue."""
    response = raw_request(
        gateway.port,
        request(
            "PUT", "/guarded/big", "Host: gw", "Content-Length: 1000000000", "Expect: 100-continue"
        ),
    )
    assert_problem(response, 413, "payload-too-large")
    assert response.closed
    assert untouched.connections == 0


def test_a_body_at_the_limit_is_accepted(gateway: GatewayProcess, accepting: RawUpstream) -> None:
    body = b"y" * MAX_BODY_BYTES
    response = raw_request(
        gateway.port,
        request(
            "POST",
            "/roomy/x",
            "Host: gw",
            "Connection: close",
            f"Content-Length: {len(body)}",
            body=body,
        ),
    )
    assert response.status == 200
    assert accepting.requests[-1].body == body


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def test_a_chunked_upload_over_the_limit_gets_413_while_streaming(
    gateway: GatewayProcess, streamed: RawUpstream
) -> None:
    piece = b"z" * (MAX_BODY_BYTES // 2 + 100)
    response = raw_request(
        gateway.port,
        request("POST", "/streamed/upload", "Host: gw", "Transfer-Encoding: chunked"),
        chunk(piece),
        chunk(piece),  # now over the limit
        chunk(piece),
        b"0\r\n\r\n",
        pause=0.1,
    )
    assert_problem(response, 413, "payload-too-large")
    assert response.closed
    assert streamed.requests == []  # it may have seen the start, never a whole request


def test_a_chunked_upload_sent_at_once_over_the_limit_gets_413(
    gateway: GatewayProcess, streamed: RawUpstream
) -> None:
    body = chunk(b"w" * (MAX_BODY_BYTES + 1)) + b"0\r\n\r\n"
    response = raw_request(
        gateway.port,
        request("POST", "/streamed/upload", "Host: gw", "Transfer-Encoding: chunked", body=body),
    )
    assert_problem(response, 413, "payload-too-large")
    assert streamed.requests == []


def test_a_chunked_upload_under_the_limit_arrives_whole(
    gateway: GatewayProcess, accepting: RawUpstream
) -> None:
    pieces = [b"a" * 300, b"b" * 300, b"c" * 300]
    response = raw_request(
        gateway.port,
        request(
            "POST", "/roomy/chunked", "Host: gw", "Connection: close", "Transfer-Encoding: chunked"
        ),
        *(chunk(p) for p in pieces),
        b"0\r\n\r\n",
        pause=0.05,
    )
    assert response.status == 200
    assert accepting.requests[-1].body == b"".join(pieces)


def test_a_route_limit_overrides_the_servers(
    gateway: GatewayProcess, accepting: RawUpstream, untouched: RawUpstream
) -> None:
    allowed = b"r" * (MAX_BODY_BYTES * 2)  # over the server's limit, under the route's
    response = raw_request(
        gateway.port,
        request(
            "POST",
            "/roomy/x",
            "Host: gw",
            "Connection: close",
            f"Content-Length: {len(allowed)}",
            body=allowed,
        ),
    )
    assert response.status == 200
    assert accepting.requests[-1].body == allowed

    too_big = b"r" * (ROOMY_BODY_BYTES + 1)
    response = raw_request(
        gateway.port,
        request(
            "POST",
            "/roomy/x",
            "Host: gw",
            "Connection: close",
            f"Content-Length: {len(too_big)}",
            body=too_big,
        ),
    )
    assert_problem(response, 413, "payload-too-large")

    small = b"s" * (TIGHT_BODY_BYTES + 1)  # under the server's limit, over the route's
    response = raw_request(
        gateway.port,
        request("POST", "/tight/x", "Host: gw", f"Content-Length: {len(small)}", body=small),
    )
    document = assert_problem(response, 413, "payload-too-large")
    assert str(TIGHT_BODY_BYTES) in str(document["detail"])
    assert untouched.connections == 0


# --- Host ----------------------------------------------------------------------------------------


def test_an_http11_request_without_host_is_refused(
    gateway: GatewayProcess, accepting: RawUpstream
) -> None:
    before = accepting.count(path="/roomy/no-host")
    response = raw_request(gateway.port, request("GET", "/roomy/no-host", "Connection: close"))
    assert response.status == 400
    assert accepting.count(path="/roomy/no-host") == before
