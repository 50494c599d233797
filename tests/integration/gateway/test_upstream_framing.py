"""Malformed upstream responses, byte for byte, behind a real gateway.

An upstream that frames a response badly (or that an attacker controls) must never make the
gateway relay an ambiguous response, merge two responses into one, or hand bytes meant for one
response to the next request on the same pooled connection. Each shape here is one exact byte
sequence the upstream writes. The outcome is one of:

- ``Framed``: the response as its framing says (trailing bytes cut off), and the upstream
  connection is closed, never reused;
- ``Problem``: a 502 problem document, because nothing usable was sent yet;
- ``Cut``: the head was already relayed when the body went wrong: the client's connection is
  closed mid-body, so the truncation shows.

Whatever the outcome, the gateway log carries no traceback and the client's next request (on
the same connection unless it was cut) gets a correct answer on a fresh upstream connection.
Well-formed controls show that the same test does see reuse when reuse is right.

One gateway and one upstream serve the whole module; the path selects the shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httptools
import pytest

from helpers.gateway import GatewayProcess, run_gateway, wait_for

HOST = "127.0.0.1"
HEAD_LIMIT = 16 * 1024
"""The upstream's ``max_response_header_bytes`` in this module."""
PROBLEM = "application/problem+json"


# --- what the upstream sends, and what the client must see ------------------------------------


@dataclass(frozen=True)
class Framed:
    """The client gets exactly this response; ``reused`` for the well-formed controls."""

    status: int
    body: bytes
    reused: bool = False
    absent: tuple[str, ...] = ()
    """Header names that must not reach the client (from a second response, trailers...)."""


@dataclass(frozen=True)
class Problem:
    slug: str = "upstream-protocol-error"


@dataclass(frozen=True)
class Cut:
    status: int


Outcome = Framed | Problem | Cut


@dataclass(frozen=True)
class Shape:
    parts: tuple[bytes, ...]
    """Written in order, ``pause`` seconds apart; the connection then stays open (so the
    gateway could reuse it, were it wrong to) unless ``close``."""
    expect: Outcome
    pause: float = 0.0
    close: bool = False
    method: str = "GET"


def head(status: str, *fields: str, version: str = "HTTP/1.1") -> bytes:
    return (f"{version} {status}\r\n" + "".join(f"{f}\r\n" for f in fields) + "\r\n").encode()


OK = head("200 OK", "Content-Length: 2") + b"ok"
CHUNKED = head("200 OK", "Transfer-Encoding: chunked")
PROTOCOL = Problem()
BIG_VALUE = "v" * (HEAD_LIMIT + 100)
SMUGGLED = head("200 OK", "Content-Length: 4", "X-Smuggled: 1") + b"evil"

SHAPES: dict[str, Shape] = {
    # Bytes after a complete response: the response stands, the connection goes.
    "second-response-after-body": Shape(
        (head("200 OK", "Content-Length: 5") + b"first" + head("204 No Content", "X-Second: 1"),),
        Framed(200, b"first", absent=("x-second",)),
    ),
    "full-response-as-204-body": Shape(
        (head("204 No Content") + SMUGGLED,), Framed(204, b"", absent=("x-smuggled",))
    ),
    "204-with-content-length-and-body": Shape(
        (head("204 No Content", "Content-Length: 5") + b"hello",),
        Framed(204, b"", absent=("content-length",)),
    ),
    "304-with-body": Shape((head("304 Not Modified") + b"hello",), Framed(304, b"")),
    "304-with-response-as-body": Shape(
        (head("304 Not Modified", "ETag: \"a\"") + SMUGGLED,),
        Framed(304, b"", absent=("x-smuggled",)),
    ),
    "body-longer-than-content-length": Shape(
        (head("200 OK", "Content-Length: 2") + b"okEXTRA",), Framed(200, b"ok")
    ),
    "body-longer-by-binary-bytes": Shape(
        (head("200 OK", "Content-Length: 2") + b"ok\x00\xff\x01",), Framed(200, b"ok")
    ),
    "response-after-last-chunk": Shape(
        (CHUNKED + b"2\r\nok\r\n0\r\n\r\n" + SMUGGLED,), Framed(200, b"ok", absent=("x-smuggled",))
    ),
    "bytes-after-connection-close": Shape(
        (head("200 OK", "Connection: close", "Content-Length: 2") + b"okEXTRA",),
        Framed(200, b"ok"),
    ),
    "partial-status-line-after-body": Shape((OK + b"HTTP/1.1 2",), Framed(200, b"ok")),
    "response-arriving-while-idle": Shape(
        (OK, SMUGGLED), Framed(200, b"ok", absent=("x-smuggled",)), pause=0.2
    ),
    "head-with-body": Shape(
        (head("200 OK", "Content-Length: 5") + b"hello",), Framed(200, b""), method="HEAD"
    ),
    "head-with-chunked-body": Shape(
        (CHUNKED + b"2\r\nok\r\n0\r\n\r\n",), Framed(200, b""), method="HEAD"
    ),
    "head-with-response-after-head": Shape(
        (head("200 OK", "Content-Length: 0") + SMUGGLED,),
        Framed(200, b"", absent=("x-smuggled",)),
        method="HEAD",
    ),
    # Ambiguous framing that llhttp refuses: a 502 before anything reaches the client.
    "duplicate-content-length": Shape(
        (head("200 OK", "Content-Length: 2", "Content-Length: 2") + b"ok",), PROTOCOL
    ),
    "conflicting-content-lengths": Shape(
        (head("200 OK", "Content-Length: 2", "Content-Length: 7") + b"okEXTRA",), PROTOCOL
    ),
    "content-length-list": Shape((head("200 OK", "Content-Length: 2, 2") + b"ok",), PROTOCOL),
    "content-length-and-chunked": Shape(
        (head("200 OK", "Content-Length: 2", "Transfer-Encoding: chunked") + b"0\r\n\r\n",),
        PROTOCOL,
    ),
    "chunked-and-content-length": Shape(
        (head("200 OK", "Transfer-Encoding: chunked", "Content-Length: 2") + b"0\r\n\r\n",),
        PROTOCOL,
    ),
    "negative-content-length": Shape((head("200 OK", "Content-Length: -1"),), PROTOCOL),
    "signed-content-length": Shape((head("200 OK", "Content-Length: +2") + b"ok",), PROTOCOL),
    "hex-content-length": Shape((head("200 OK", "Content-Length: 0x2") + b"ok",), PROTOCOL),
    "empty-content-length": Shape((head("200 OK", "Content-Length: ") + b"ok",), PROTOCOL),
    "overflowing-content-length": Shape(
        (head("200 OK", "Content-Length: 99999999999999999999999") + b"ok",), PROTOCOL
    ),
    "invalid-chunk-size": Shape((CHUNKED + b"zz\r\nok\r\n0\r\n\r\n",), PROTOCOL),
    "negative-chunk-size": Shape((CHUNKED + b"-2\r\nok\r\n0\r\n\r\n",), PROTOCOL),
    "overflowing-chunk-size": Shape((CHUNKED + b"fffffffffffffffffff\r\nok\r\n",), PROTOCOL),
    "chunk-longer-than-its-size": Shape((CHUNKED + b"2\r\nokX\r\n0\r\n\r\n",), PROTOCOL),
    "content-length-in-trailers": Shape(
        (CHUNKED + b"2\r\nok\r\n0\r\nContent-Length: 99\r\n\r\n",), PROTOCOL
    ),
    # Framing llhttp lets through, refused by the gateway.
    "transfer-encoding-twice": Shape(
        (
            head("200 OK", "Transfer-Encoding: chunked", "Transfer-Encoding: chunked")
            + b"2\r\nok\r\n0\r\n\r\n",
        ),
        PROTOCOL,
    ),
    "chunked-listed-twice": Shape(
        (head("200 OK", "Transfer-Encoding: chunked, chunked") + b"0\r\n\r\n",), PROTOCOL
    ),
    "gzip-transfer-coding": Shape((head("200 OK", "Transfer-Encoding: gzip") + b"ok",), PROTOCOL),
    "identity-transfer-coding": Shape(
        (head("200 OK", "Transfer-Encoding: identity") + b"ok",), PROTOCOL
    ),
    "interim-with-content-length": Shape(
        (head("100 Continue", "Content-Length: 3") + b"abc" + OK,), PROTOCOL
    ),
    "unknown-interim-with-body": Shape(
        (head("150 Whatever", "Content-Length: 3") + b"abc" + OK,), PROTOCOL
    ),
    "interim-with-transfer-encoding": Shape(
        (head("103 Early Hints", "Transfer-Encoding: chunked") + b"0\r\n\r\n" + OK,), PROTOCOL
    ),
    "unrequested-upgrade": Shape(
        (head("101 Switching Protocols", "Upgrade: websocket", "Connection: upgrade"),), PROTOCOL
    ),
    # Heads that are not HTTP/1.x, or not valid.
    "http-2-status-line": Shape(
        (head("200 OK", "Content-Length: 2", version="HTTP/2.0") + b"ok",), PROTOCOL
    ),
    "http-0.9-status-line": Shape(
        (head("200 OK", "Content-Length: 2", version="HTTP/0.9") + b"ok",), PROTOCOL
    ),
    "http-1.2-status-line": Shape(
        (head("200 OK", "Content-Length: 2", version="HTTP/1.2") + b"ok",), PROTOCOL
    ),
    "no-status-line": Shape((b"ok\r\n\r\n",), PROTOCOL),
    "status-000": Shape((head("000 Zero", "Content-Length: 2") + b"ok",), PROTOCOL),
    "status-999": Shape((head("999 Big", "Content-Length: 2") + b"ok",), PROTOCOL),
    "two-digit-status": Shape((head("20 OK", "Content-Length: 2") + b"ok",), PROTOCOL),
    "obs-fold": Shape((head("200 OK", "X-A: one", " two", "Content-Length: 2") + b"ok",), PROTOCOL),
    "nul-in-header-value": Shape(
        (head("200 OK", "X-A: o\x00ne", "Content-Length: 2") + b"ok",), PROTOCOL
    ),
    "cr-in-header-value": Shape(
        (head("200 OK", "X-A: o\rne", "Content-Length: 2") + b"ok",), PROTOCOL
    ),
    "bare-lf-line-endings": Shape((b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",), PROTOCOL),
    "bare-lf-after-one-field": Shape(
        (b"HTTP/1.1 200 OK\r\nX-A: 1\nContent-Length: 2\r\n\r\nok",), PROTOCOL
    ),
    "space-before-colon": Shape((head("200 OK", "Content-Length : 2") + b"ok",), PROTOCOL),
    "field-without-colon": Shape((head("200 OK", "X-A", "Content-Length: 2") + b"ok",), PROTOCOL),
    # Heads too large: counted whether they come in one write or trickle in.
    "head-over-limit-in-one-write": Shape(
        (head("200 OK", f"X-Big: {BIG_VALUE}", "Content-Length: 2") + b"ok",),
        Problem("upstream-headers-too-large"),
    ),
    "head-over-limit-trickled": Shape(
        (b"HTTP/1.1 200 OK\r\n", *(f"X-F{i}: {'v' * 1000}\r\n".encode() for i in range(20))),
        Problem("upstream-headers-too-large"),
        pause=0.01,
    ),
    "head-never-ending": Shape(
        (b"HTTP/1.1 200 OK\r\nX-Endless: " + b"v" * (256 * 1024),),
        Problem("upstream-headers-too-large"),
    ),
    "interim-heads-over-limit": Shape(
        (*(head("103 Early Hints", f"Link: <{'l' * 1000}>") for _ in range(20)), OK),
        Problem("upstream-headers-too-large"),
    ),
    # The head is relayed before the body goes wrong: too late for a 502.
    "invalid-chunk-after-head-was-sent": Shape(
        (CHUNKED + b"2\r\nok\r\n", b"zz\r\n"), Cut(200), pause=0.2
    ),
    "body-shorter-than-content-length": Shape(
        (head("200 OK", "Content-Length: 10") + b"short", b""), Cut(200), pause=0.2, close=True
    ),
    # Well-formed controls: reuse must happen, or the assertions above prove nothing.
    "control-content-length": Shape((OK,), Framed(200, b"ok", reused=True)),
    "control-chunked-with-extension": Shape(
        (CHUNKED + b"2;name=value\r\nok\r\n0\r\n\r\n",), Framed(200, b"ok", reused=True)
    ),
    "control-trailers-are-dropped": Shape(
        (CHUNKED + b"2\r\nok\r\n0\r\nX-Checksum: 1\r\nX-Trailer: 1\r\n\r\n",),
        Framed(200, b"ok", reused=True, absent=("x-checksum", "x-trailer")),
    ),
    "control-interim-responses-dropped": Shape(
        (head("100 Continue") + head("103 Early Hints", "Link: </a>") + OK,),
        Framed(200, b"ok", reused=True, absent=("link",)),
    ),
    "control-304-with-content-length": Shape(
        (head("304 Not Modified", "Content-Length: 1234"),),
        Framed(304, b"", reused=True, absent=("content-length",)),
    ),
    "control-head-with-content-length": Shape(
        (head("200 OK", "Content-Length: 5"),), Framed(200, b"", reused=True), method="HEAD"
    ),
    "control-head-just-under-limit": Shape(
        (head("200 OK", f"X-Big: {'v' * (HEAD_LIMIT - 200)}", "Content-Length: 2") + b"ok",),
        Framed(200, b"ok", reused=True),
    ),
    "control-http-1.0-keep-alive": Shape(
        (head("200 OK", "Content-Length: 2", "Connection: keep-alive", version="HTTP/1.0")
         + b"ok",),
        Framed(200, b"ok", reused=True),
    ),
    "control-close-delimited-body": Shape(
        (head("200 OK") + b"until the end",), Framed(200, b"until the end"), close=True
    ),
}  # fmt: skip


# --- the upstream: exact bytes, and a record of which connection carried which request -------


@dataclass
class _Record:
    by_connection: dict[int, list[str]] = field(default_factory=dict)
    finished: set[str] = field(default_factory=set)
    """Paths whose shape was written in full (or could not be, the gateway having left)."""


class ShapeUpstream:
    """Answers ``/shape/NAME`` with SHAPES[NAME] and anything else with a correct 200 whose
    body, ``ok:ID``, names the upstream connection that carried it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._record = _Record()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="shape-upstream", daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def connection_of(self, path: str) -> int:
        with self._lock:
            found = [c for c, paths in self._record.by_connection.items() if path in paths]
        assert len(found) == 1, f"{path} was requested on connections {found}"
        return found[0]

    def requests_on(self, connection: int) -> list[str]:
        with self._lock:
            return list(self._record.by_connection[connection])

    def finished(self, path: str) -> bool:
        with self._lock:
            return path in self._record.finished

    def __enter__(self) -> ShapeUpstream:
        self._thread.start()
        assert self._ready.wait(5), "shape upstream did not start"
        return self

    def __exit__(self, *exc_info: object) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            loop.call_soon_threadsafe(stop.set)
        self._thread.join(5)

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        tasks: set[asyncio.Task[None]] = set()
        transports: set[asyncio.WriteTransport] = set()
        ids = iter(range(1, 1_000_000))

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)
            transports.add(writer.transport)
            try:
                await self._handle(next(ids), reader, writer)
            except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
                pass
            finally:
                tasks.discard(task)
                writer.close()

        server = await asyncio.start_server(on_connect, HOST, 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # A close waits for unsent bytes the gateway may never read: abort what is left, or
            # the transport outlives the loop and is reported as leaked in some later test.
            for transport in transports:
                transport.abort()
            await asyncio.sleep(0)

    async def _handle(
        self, connection: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        with self._lock:
            self._record.by_connection[connection] = []
        while True:
            try:
                request = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            path = request.split(b" ", 2)[1].decode()
            with self._lock:
                self._record.by_connection[connection].append(path)
            name = path.split("?", 1)[0].removeprefix("/shape/")
            shape = SHAPES.get(name) if name != path else None
            if shape is None:
                body = f"ok:{connection}".encode()
                writer.write(head("200 OK", f"Content-Length: {len(body)}") + body)
                await writer.drain()
                continue
            try:
                for index, part in enumerate(shape.parts):
                    if index and shape.pause:
                        await asyncio.sleep(shape.pause)
                    writer.write(part)
                    await writer.drain()
            finally:
                with self._lock:
                    self._record.finished.add(path)
            if shape.close:
                return


# --- a strict client on one raw connection -----------------------------------------------------


@dataclass
class Answer:
    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    complete: bool = False
    extra: bool = False
    """Bytes of a second response followed this one."""

    def values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]


class Client:
    """One keep-alive connection to the gateway, read with llhttp (strict): two
    Content-Lengths or a malformed head from the gateway fail the test."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=10)
        self.closed = False

    def close(self) -> None:
        self.sock.close()

    def request(self, method: str, path: str) -> Answer:
        self.sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: gateway\r\n\r\n".encode())
        answer = Answer()
        head_only = method == "HEAD"

        class Events:
            def on_message_begin(self) -> None:
                if answer.status:
                    answer.extra = True

            def on_header(self, name: bytes, value: bytes) -> None:
                answer.headers.append((name.decode().lower(), value.decode("latin-1")))

            def on_headers_complete(self) -> None:
                answer.status = parser.get_status_code()
                if head_only:
                    answer.complete = True

            def on_body(self, body: bytes) -> None:
                answer.body += body

            def on_message_complete(self) -> None:
                answer.complete = True

        parser = httptools.HttpResponseParser(Events())
        while not answer.complete:
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                self.closed = True
                return answer
            parser.feed_data(data)
        return answer


# --- fixtures and the test ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def upstream() -> Iterator[ShapeUpstream]:
    with ShapeUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: ShapeUpstream
) -> Iterator[GatewayProcess]:
    upstreams = {
        "shapes": {
            "targets": [upstream.url],
            "max_response_header_bytes": HEAD_LIMIT,
            # Every malformed shape is a failure: the breaker must not start answering 503.
            "breaker": {"failure_threshold": 1_000_000},
        }
    }
    routes = [
        {
            "name": "shapes",
            "match": {"prefix": "/"},
            "upstream": "shapes",
            "retries": {"attempts": 0},
            "timeouts": {"read": 3},
        }
    ]
    with run_gateway(tmp_path_factory.mktemp("upstream-framing"), upstreams, routes) as gw:
        yield gw


def test_the_suite_covers_enough_shapes() -> None:
    assert len(SHAPES) >= 40
    assert sum(1 for s in SHAPES.values() if isinstance(s.expect, Framed) and s.expect.reused) >= 5


@pytest.mark.parametrize("name", SHAPES)
def test_malformed_upstream_response(
    gateway: GatewayProcess, upstream: ShapeUpstream, name: str
) -> None:
    shape = SHAPES[name]
    path = f"/shape/{name}"
    log_start = len(gateway.log())
    client = Client(gateway.port)
    try:
        answer = client.request(shape.method, path)
        _assert_outcome(answer, client, shape.expect)
        assert not answer.extra, "the gateway sent more than one response"
        assert len(answer.values("content-length")) <= 1
        if answer.values("content-length") and answer.complete and shape.method != "HEAD":
            assert answer.values("content-length") == [str(len(answer.body))]

        # Let the upstream finish (late bytes included) before the next request.
        wait_for(lambda: upstream.finished(path), 5, f"upstream wrote {name}")
        time.sleep(0.05)
        if client.closed:
            client.close()
            client = Client(gateway.port)
        following = client.request("GET", "/after")
        assert following.complete and following.status == 200, following
        assert following.body.startswith(b"ok:") and not following.extra
        assert following.values("content-length") == [str(len(following.body))]

        shape_connection = upstream.connection_of(path)
        next_connection = int(following.body.removeprefix(b"ok:"))
        if isinstance(shape.expect, Framed) and shape.expect.reused:
            assert next_connection == shape_connection, "a good connection was not reused"
        else:
            assert next_connection != shape_connection, "a poisoned connection was reused"
            assert upstream.requests_on(shape_connection)[-1] == path, "nothing came after it"
    finally:
        client.close()
    log = gateway.log()[log_start:]
    assert "Traceback" not in log
    assert "RuntimeError" not in log


def _assert_outcome(answer: Answer, client: Client, expect: Outcome) -> None:
    if isinstance(expect, Framed):
        assert answer.complete, answer
        assert answer.status == expect.status
        assert answer.body == expect.body
        for name in expect.absent:
            assert not answer.values(name), f"{name} reached the client"
    elif isinstance(expect, Problem):
        assert answer.complete, answer
        assert answer.status == 502
        assert answer.values("content-type") == [PROBLEM]
        document = json.loads(answer.body)
        assert document["type"] == f"https://onegate.dev/problems/{expect.slug}"
        assert document["status"] == 502
    else:
        assert answer.status == expect.status
        assert not answer.complete and client.closed, "a broken body was not cut"


def test_poisoned_connection_count_is_visible_in_the_log(gateway: GatewayProcess) -> None:
    with contextlib.closing(Client(gateway.port)) as client:
        client.request("GET", "/shape/body-longer-than-content-length?again")
    wait_for(
        lambda: "after a complete response; connection closed" in gateway.log(),
        5,
        "the poisoned connection was logged",
    )
