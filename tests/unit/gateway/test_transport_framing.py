"""Where an upstream response ends, condition by condition (``gateway/transport.py``).

Each test drives a real :class:`ConnectionPool` against a loopback server that writes exact
bytes, and would fail if the one condition it names were flipped. The end-to-end view (a real
gateway, 40+ shapes) is ``tests/integration/gateway/test_upstream_framing.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import pytest

from onegate.errors import UpstreamHeadersTooLarge, UpstreamProtocolError, UpstreamTimeout
from onegate.gateway.transport import ConnectionPool, Exchange, encode_head

LIMIT = 4096
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
EVIL = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nX-Evil: 1\r\n\r\nevil"

Answer = Sequence[bytes]
"""The parts of one answer, written 50 ms apart; an empty part closes the connection."""


@dataclass
class Server:
    """Answers the n-th request (on any connection) with ``answers[n]``, then with OK."""

    answers: list[Answer]
    connections: int = 0
    served: int = 0
    port: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                answer = self.answers[self.served] if self.served < len(self.answers) else [OK]
                self.served += 1
                for index, part in enumerate(answer):
                    if index:
                        await asyncio.sleep(0.05)
                    if not part:
                        return
                    writer.write(part)
                    await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@dataclass
class Result:
    status: int
    headers: dict[bytes, bytes]
    body: bytes
    exchange: Exchange


@pytest.fixture
async def serve() -> AsyncIterator[list[asyncio.Server]]:
    servers: list[asyncio.Server] = []
    yield servers
    for server in servers:
        server.close()


async def start(servers: list[asyncio.Server], *answers: Answer) -> tuple[Server, ConnectionPool]:
    script = Server(list(answers))
    server = await asyncio.start_server(script.handle, "127.0.0.1", 0)
    servers.append(server)
    script.port = server.sockets[0].getsockname()[1]
    return script, ConnectionPool("127.0.0.1", script.port, max_head_bytes=LIMIT)


async def fetch(pool: ConnectionPool, method: str = "GET", close: bool = True) -> Result:
    exchange = await pool.exchange(connect_timeout=2, read_timeout=2, head_only=method == "HEAD")
    try:
        exchange.write(encode_head(method, b"/", [(b"host", b"x")]))
        await exchange.read_head()
        body = b""
        while (chunk := await exchange.read_chunk()) is not None:
            body += chunk
    except BaseException:
        exchange.close(reusable=False)
        raise
    if close:
        exchange.close(reusable=True)
    return Result(exchange.status, dict(exchange.headers), body, exchange)


def head(status: str, *fields: str, version: str = "HTTP/1.1") -> bytes:
    return (f"{version} {status}\r\n" + "".join(f"{f}\r\n" for f in fields) + "\r\n").encode()


async def test_a_good_response_leaves_the_connection_for_reuse(serve: list[asyncio.Server]) -> None:
    script, pool = await start(serve, [OK])
    assert (await fetch(pool)).body == b"ok"
    assert (await fetch(pool)).body == b"ok"
    assert script.connections == 1


@pytest.mark.parametrize(
    "answer",
    [
        [OK + EVIL],  # a second response in the same read
        [OK + b"EXTRA"],  # a body longer than its Content-Length
        [OK + b"HTTP/1.1 2"],  # the start of a status line
        [CHUNKED + b"2\r\nok\r\n0\r\n\r\n" + EVIL],  # a response after the last chunk
        [head("204 No Content") + EVIL],
    ],
    ids=["second-response", "longer-body", "partial-line", "after-last-chunk", "204-body"],
)
async def test_bytes_after_the_end_poison_the_connection_but_the_response_stands(
    serve: list[asyncio.Server], answer: Answer
) -> None:
    script, pool = await start(serve, answer)
    result = await fetch(pool)
    assert result.status in (200, 204)
    assert result.body == (b"ok" if result.status == 200 else b"")
    assert b"x-evil" not in result.headers
    assert result.exchange.connection.closed
    assert (await fetch(pool)).body == b"ok"
    assert script.connections == 2


async def test_garbage_llhttp_refuses_after_a_complete_response_keeps_the_response(
    serve: list[asyncio.Server],
) -> None:
    _, pool = await start(
        serve, [head("200 OK", "Connection: close", "Content-Length: 2") + b"okX"]
    )
    result = await fetch(pool)
    assert (result.status, result.body) == (200, b"ok")


async def test_bytes_in_a_later_read_poison_an_exchange_still_open(
    serve: list[asyncio.Server],
) -> None:
    _, pool = await start(serve, [OK, EVIL])
    result = await fetch(pool, close=False)
    await asyncio.sleep(0.2)  # EVIL arrives while the exchange is still relaying
    assert result.exchange.connection.closed
    assert await result.exchange.read_chunk() is None
    assert result.exchange.connection._headers == [(b"content-length", b"2")]
    result.exchange.close()


async def test_even_a_blank_line_in_a_later_read_poisons(serve: list[asyncio.Server]) -> None:
    # llhttp skips blank lines between responses; the gateway does not reuse such a socket.
    _, pool = await start(serve, [OK, b"\r\n"])
    result = await fetch(pool, close=False)
    await asyncio.sleep(0.2)
    assert result.exchange.connection.closed
    result.exchange.close()


async def test_bytes_on_an_idle_connection_close_it(serve: list[asyncio.Server]) -> None:
    script, pool = await start(serve, [OK, EVIL])
    first = await fetch(pool)
    await asyncio.sleep(0.2)
    assert first.exchange.connection.closed
    assert (await fetch(pool)).body == b"ok"
    assert script.connections == 2


async def test_interim_responses_are_dropped(serve: list[asyncio.Server]) -> None:
    script, pool = await start(serve, [head("100 Continue") + head("103 Hints", "Link: <a>") + OK])
    result = await fetch(pool)
    assert (result.status, result.body) == (200, b"ok")
    assert result.headers == {b"content-length": b"2"}
    await fetch(pool)
    assert script.connections == 1


@pytest.mark.parametrize(
    "interim",
    [
        head("100 Continue", "Content-Length: 0"),
        head("103 Early Hints", "Transfer-Encoding: chunked") + b"0\r\n\r\n",
    ],
    ids=["content-length", "transfer-encoding"],
)
async def test_a_framed_interim_response_is_refused(
    serve: list[asyncio.Server], interim: bytes
) -> None:
    _, pool = await start(serve, [interim + OK])
    with pytest.raises(UpstreamProtocolError, match="framed"):
        await fetch(pool)


@pytest.mark.parametrize(
    ("fields", "accepted"),
    [
        (["Transfer-Encoding: chunked"], True),
        (["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"], False),
        (["Transfer-Encoding: gzip"], False),
        (["Transfer-Encoding: chunked, chunked"], False),
    ],
    ids=["chunked", "twice", "gzip", "listed-twice"],
)
async def test_only_one_chunked_coding_is_accepted(
    serve: list[asyncio.Server], fields: list[str], accepted: bool
) -> None:
    _, pool = await start(serve, [head("200 OK", *fields) + b"2\r\nok\r\n0\r\n\r\n"])
    if accepted:
        assert (await fetch(pool)).body == b"ok"
    else:
        with pytest.raises(UpstreamProtocolError):
            await fetch(pool)


@pytest.mark.parametrize(
    ("status", "accepted"),
    [("200", True), ("599", True), ("600", False), ("000", False), ("099", False)],
)
async def test_final_status_range(serve: list[asyncio.Server], status: str, accepted: bool) -> None:
    _, pool = await start(serve, [head(f"{status} X", "Content-Length: 2") + b"ok"])
    if accepted:
        assert (await fetch(pool)).status == int(status)
    else:
        with pytest.raises(UpstreamProtocolError, match="invalid status"):
            await fetch(pool)


@pytest.mark.parametrize(
    ("version", "accepted"),
    [("HTTP/1.1", True), ("HTTP/1.0", True), ("HTTP/2.0", False), ("HTTP/0.9", False)],
)
async def test_only_http_1_responses(
    serve: list[asyncio.Server], version: str, accepted: bool
) -> None:
    _, pool = await start(serve, [head("200 OK", "Content-Length: 2", version=version) + b"ok"])
    if accepted:
        assert (await fetch(pool)).body == b"ok"
    else:
        with pytest.raises(UpstreamProtocolError, match="HTTP/"):
            await fetch(pool)


def fields_of_size(size: int) -> str:
    """A field that makes the header fields cost ``size`` bytes with ``Content-Length: 2``
    (each field costs its name, its value, ": " and CRLF)."""
    return "X-Pad: " + "v" * (size - (14 + 1 + 4) - (5 + 4))


@pytest.mark.parametrize(("size", "accepted"), [(LIMIT, True), (LIMIT + 1, False)])
async def test_head_limit_when_the_head_arrives_in_one_read(
    serve: list[asyncio.Server], size: int, accepted: bool
) -> None:
    _, pool = await start(
        serve, [head("200 OK", fields_of_size(size), "Content-Length: 2") + b"ok"]
    )
    if accepted:
        assert (await fetch(pool)).body == b"ok"
    else:
        with pytest.raises(UpstreamHeadersTooLarge):
            await fetch(pool)


async def test_head_limit_while_the_head_trickles_in(serve: list[asyncio.Server]) -> None:
    pieces = [b"HTTP/1.1 200 OK\r\n"] + [b"X-A: " + b"v" * 1000 + b"\r\n"] * 8
    _, pool = await start(serve, pieces)  # never ends: without the limit, a read timeout
    with pytest.raises(UpstreamHeadersTooLarge):
        await fetch(pool)


async def test_interim_heads_count_towards_the_limit(serve: list[asyncio.Server]) -> None:
    hints = head("103 Early Hints", "Link: <" + "l" * 1000 + ">") * 5
    _, pool = await start(serve, [hints + OK])
    with pytest.raises(UpstreamHeadersTooLarge):
        await fetch(pool)


async def test_body_bytes_do_not_count_as_head(serve: list[asyncio.Server]) -> None:
    body = b"b" * (LIMIT * 3)
    _, pool = await start(serve, [head("200 OK", f"Content-Length: {len(body)}"), body])
    assert (await fetch(pool)).body == body


async def test_a_body_in_the_read_that_ends_the_head_is_not_head(
    serve: list[asyncio.Server],
) -> None:
    body = b"b" * (LIMIT * 3)
    _, pool = await start(serve, [head("200 OK", f"Content-Length: {len(body)}") + body])
    assert (await fetch(pool)).body == body


async def test_head_response_ends_with_its_head(serve: list[asyncio.Server]) -> None:
    script, pool = await start(serve, [head("200 OK", "Content-Length: 5")])
    result = await fetch(pool, "HEAD")
    assert (result.status, result.body) == (200, b"")
    assert result.headers[b"content-length"] == b"5"  # what a GET would get: kept for HEAD
    assert (await fetch(pool)).body == b"ok"  # the parser no longer waits for 5 bytes
    assert script.connections == 1


async def test_a_body_after_a_head_response_poisons_the_connection(
    serve: list[asyncio.Server],
) -> None:
    script, pool = await start(serve, [head("200 OK", "Content-Length: 5") + b"hello"])
    result = await fetch(pool, "HEAD")
    assert (result.status, result.body) == (200, b"")
    assert result.exchange.connection.closed
    await fetch(pool)
    assert script.connections == 2


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
async def test_no_content_responses_lose_their_content_length(
    serve: list[asyncio.Server], status: str
) -> None:
    script, pool = await start(serve, [head(status, "Content-Length: 5", "ETag: x")])
    result = await fetch(pool)
    assert result.body == b""
    assert result.headers == {b"etag": b"x"}
    await fetch(pool)
    assert script.connections == 1


async def test_trailer_fields_are_not_merged_into_the_head(serve: list[asyncio.Server]) -> None:
    _, pool = await start(serve, [CHUNKED + b"2\r\nok\r\n0\r\nX-Trailer: 1\r\n\r\n"])
    result = await fetch(pool)
    assert result.body == b"ok"
    assert b"x-trailer" not in result.headers


async def test_an_unframed_body_ends_with_the_connection(serve: list[asyncio.Server]) -> None:
    script, pool = await start(serve, [head("200 OK", "Connection: close") + b"all of it", b""])
    assert (await fetch(pool)).body == b"all of it"
    await fetch(pool)
    assert script.connections == 2


async def test_an_unfinished_head_is_a_timeout_not_a_size_error(
    serve: list[asyncio.Server],
) -> None:
    _, pool = await start(serve, [b"HTTP/1.1 200 OK\r\nX-A: 1\r\n"])
    exchange = await pool.exchange(connect_timeout=2, read_timeout=0.3)
    exchange.write(encode_head("GET", b"/", [(b"host", b"x")]))
    with pytest.raises(UpstreamTimeout):
        await exchange.read_head()
    exchange.close(reusable=False)
