"""WebSockets through a real gateway: frames, sub-protocols, close codes and failures.

The AI stand-in's echo answers over a socket and in process. A small WebSocket server in this
test process stands in where the stand-ins cannot help: it records the close code it received
and can close with a code of its own.
"""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.server import Server, ServerConnection, serve
from websockets.typing import Subprotocol

from helpers.gateway import GatewayProcess, run_gateway
from helpers.legacy import LegacyBackends, free_port

IN_PROCESS_AI = "asgi:onegate.dev.legacy:ai_app"
#: Where the AI echo is reachable through the gateway: over a socket, and in process.
ECHO_PATHS = [pytest.param("/api/ai/ws", id="remote"), pytest.param("/inproc/api/ai/ws", id="asgi")]


class CloseRecorder:
    """A WebSocket server: ``/close/{code}`` says "bye" and closes with that code; any other
    path echoes and records the close code and reason it received in ``closes``."""

    def __init__(self) -> None:
        self.closes: queue.Queue[tuple[int | None, str | None]] = queue.Queue()
        self.server: Server = serve(self._handle, "127.0.0.1", 0)
        self.port: int = self.server.socket.getsockname()[1]

    def _handle(self, connection: ServerConnection) -> None:
        path = connection.request.path if connection.request is not None else "/"
        if path.startswith("/close/"):
            connection.send("bye")
            connection.close(int(path.removeprefix("/close/")), "upstream is done")
            return
        try:
            for message in connection:
                connection.send(message)
        except ConnectionClosed:
            pass
        self.closes.put((connection.close_code, connection.close_reason))


@pytest.fixture(scope="module")
def recorder() -> Iterator[CloseRecorder]:
    recorder = CloseRecorder()
    thread = threading.Thread(target=recorder.server.serve_forever, daemon=True)
    thread.start()
    yield recorder
    recorder.server.shutdown()
    thread.join()


@pytest.fixture(scope="module")
def black_hole() -> Iterator[int]:
    """A port that accepts TCP connections (the kernel does) but never answers a byte."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


@pytest.fixture(scope="module")
def gateway(
    legacy_backends: LegacyBackends,
    recorder: CloseRecorder,
    black_hole: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GatewayProcess]:
    upstreams = {
        "ai": {"targets": [legacy_backends.ai_url]},
        "ai-inproc": {"targets": [IN_PROCESS_AI]},
        "recorder": {"targets": [f"http://127.0.0.1:{recorder.port}"]},
        "down": {"targets": [f"http://127.0.0.1:{free_port()}"]},
        "black-hole": {"targets": [f"http://127.0.0.1:{black_hole}"]},
    }
    routes = [
        {"name": "ai", "match": {"prefix": "/api/ai"}, "upstream": "ai"},
        {
            "name": "ai-inproc",
            "match": {"prefix": "/inproc"},
            "upstream": "ai-inproc",
            "strip_prefix": "/inproc",
        },
        {
            "name": "recorder",
            "match": {"prefix": "/recorder"},
            "upstream": "recorder",
            "strip_prefix": "/recorder",
        },
        {"name": "down", "match": {"prefix": "/down"}, "upstream": "down"},
        {
            "name": "black-hole",
            "match": {"prefix": "/black-hole"},
            "upstream": "black-hole",
            "timeouts": {"connect": 0.5},
        },
    ]
    with run_gateway(tmp_path_factory.mktemp("websocket"), upstreams, routes) as gateway:
        yield gateway


def ws_url(gateway: GatewayProcess, path: str) -> str:
    return gateway.url.replace("http://", "ws://", 1) + path


@pytest.fixture
async def echo(gateway: GatewayProcess) -> AsyncIterator[ClientConnection]:
    async with connect(ws_url(gateway, "/api/ai/ws"), open_timeout=5) as websocket:
        yield websocket


# --- frames and sub-protocols ----------------------------------------------------------------


@pytest.mark.parametrize("path", ECHO_PATHS)
async def test_text_and_binary_messages_echo_through_the_gateway(
    gateway: GatewayProcess, path: str
) -> None:
    big = os.urandom(512 * 1024)
    async with connect(ws_url(gateway, path), open_timeout=5) as websocket:
        await websocket.send("hello, agent")
        assert await websocket.recv() == "hello, agent"
        await websocket.send(b"\x00\x01\xfe\xff")
        assert await websocket.recv() == b"\x00\x01\xfe\xff"
        await websocket.send(big)
        assert await websocket.recv() == big
        # Text stays text and bytes stay bytes, in order.
        for index in range(20):
            await websocket.send(str(index) if index % 2 else str(index).encode())
        replies = [await websocket.recv() for _ in range(20)]
        assert replies == [str(i) if i % 2 else str(i).encode() for i in range(20)]
        assert websocket.response is not None
        assert websocket.response.headers["x-request-id"]


@pytest.mark.parametrize("path", ECHO_PATHS)
async def test_subprotocol_is_negotiated_with_the_upstream(
    gateway: GatewayProcess, path: str
) -> None:
    offered = [Subprotocol("chat.v2"), Subprotocol("chat.v1")]
    async with connect(ws_url(gateway, path), subprotocols=offered, open_timeout=5) as websocket:
        assert websocket.subprotocol == "chat.v1"
        await websocket.send("ping")
        assert await websocket.recv() == "ping"
    # Offering none, none is chosen: the gateway does not invent one.
    async with connect(ws_url(gateway, path), open_timeout=5) as websocket:
        assert websocket.subprotocol is None


@pytest.mark.parametrize("path", ECHO_PATHS)
async def test_upstream_handshake_headers_reach_the_client(
    gateway: GatewayProcess, path: str
) -> None:
    async with connect(ws_url(gateway, path), open_timeout=5) as websocket:
        assert websocket.response is not None
        headers = websocket.response.headers
        assert headers.get("x-backend") == "ai"
        assert len(headers.get_all("x-request-id")) == 1


# --- closing ---------------------------------------------------------------------------------


async def test_client_close_code_reaches_the_upstream(
    gateway: GatewayProcess, recorder: CloseRecorder
) -> None:
    websocket = await connect(ws_url(gateway, "/recorder/echo"), open_timeout=5)
    await websocket.send("hi")
    assert await websocket.recv() == "hi"
    await websocket.close(code=4001, reason="client is done")
    assert websocket.close_code == 4001

    code, reason = recorder.closes.get(timeout=5)
    assert (code, reason) == (4001, "client is done")


async def test_upstream_close_code_reaches_the_client(gateway: GatewayProcess) -> None:
    async with connect(ws_url(gateway, "/recorder/close/4002"), open_timeout=5) as websocket:
        assert await websocket.recv() == "bye"
        with pytest.raises(ConnectionClosed) as closed:
            await websocket.recv()
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4002, "upstream is done")


async def test_normal_close_after_a_conversation(echo: ClientConnection) -> None:
    await echo.send("last words")
    assert await echo.recv() == "last words"
    await echo.close()
    assert echo.close_code == 1000


# --- failures --------------------------------------------------------------------------------


async def test_upstream_down_answers_502_instead_of_hanging(gateway: GatewayProcess) -> None:
    started = time.monotonic()
    with pytest.raises(InvalidStatus) as refused:
        await connect(ws_url(gateway, "/down/ws"), open_timeout=5)
    assert time.monotonic() - started < 2
    response = refused.value.response
    assert response.status_code == 502
    assert response.headers["content-type"] == "application/problem+json"
    assert b'"status":502' in response.body


async def test_upstream_not_answering_the_handshake_times_out_with_504(
    gateway: GatewayProcess,
) -> None:
    started = time.monotonic()
    with pytest.raises(InvalidStatus) as refused:
        await connect(ws_url(gateway, "/black-hole/ws"), open_timeout=5)
    elapsed = time.monotonic() - started
    assert refused.value.response.status_code == 504
    assert 0.4 < elapsed < 2.5  # the route's 0.5 s connect timeout, not the client's 5 s


@pytest.mark.parametrize(
    ("path", "status"),
    [
        pytest.param("/api/ai/no-such-socket", 403, id="upstream-refuses"),
        pytest.param("/nowhere", 404, id="no-route"),
    ],
)
async def test_refused_handshakes_are_answered_with_a_status(
    gateway: GatewayProcess, path: str, status: int
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await connect(ws_url(gateway, path), open_timeout=5)
    assert refused.value.response.status_code == status
    assert refused.value.response.headers["content-type"] == "application/problem+json"


async def test_gateway_keeps_serving_websockets_after_failures(
    gateway: GatewayProcess, echo: ClientConnection
) -> None:
    for path in ("/down/ws", "/nowhere"):
        with pytest.raises(InvalidStatus):
            await connect(ws_url(gateway, path), open_timeout=5)
    await echo.send("still here")
    assert await echo.recv() == "still here"
