"""A clean drain, connection by connection (issue 11, part 6).

After SIGTERM an idle kept-alive connection gets a FIN (never a reset, even if the client
sends one more request on it), a request already arriving is answered with ``Connection:
close``, a stream still running at the drain deadline is cut with one log line and no
traceback, and a stream that fails upstream is logged once.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.gateway import GatewayProcess, run_gateway
from helpers.upstreams import Hang, RawUpstream, Reset
from helpers.wire import EOF_, RESET, connect, read_responses, read_until_closed, split_responses

DRAIN = 2.0
DEMO = {"demo": {"targets": ["asgi:onegate.dev.demo:app"]}}
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)


@pytest.fixture
def upstream() -> Iterator[RawUpstream]:
    with RawUpstream(default=Hang(STREAM_HEAD + b"7\r\ndata: 1\r\n")) as raw:
        yield raw


@pytest.fixture
def gateway(tmp_path: Path, upstream: RawUpstream) -> Iterator[GatewayProcess]:
    upstreams = {**DEMO, "raw": {"targets": [upstream.url]}}
    routes = [
        {"name": "raw", "match": {"prefix": "/raw"}, "upstream": "raw"},
        {"name": "demo", "match": {"prefix": "/"}, "upstream": "demo"},
    ]
    with run_gateway(tmp_path, upstreams, routes, drain_seconds=DRAIN) as gw:
        yield gw


GET = b"GET /demo HTTP/1.1\r\nHost: gw\r\n\r\n"


def test_idle_kept_alive_connections_get_a_fin_not_a_reset(gateway: GatewayProcess) -> None:
    with connect(gateway.port) as quiet, connect(gateway.port) as reused:
        drain_idle(gateway, quiet, reused)
    gateway.process.wait(timeout=10)
    assert gateway.process.returncode == 0


def drain_idle(gateway: GatewayProcess, quiet: socket.socket, reused: socket.socket) -> None:
    for sock in (quiet, reused):
        sock.sendall(GET)
        assert [r.status for r in read_responses(sock, 1, within=5)] == [200]

    gateway.signal(signal.SIGTERM)
    time.sleep(0.3)
    # A client that had not noticed yet sends one more request on its idle connection (if
    # the gateway already closed it, the send fails: how it closed is checked below).
    with contextlib.suppress(OSError):
        reused.sendall(GET)
    received, ended = read_until_closed(quiet, within=5)
    assert (received, ended) == (b"", EOF_)
    received, ended = read_until_closed(reused, within=5)
    assert ended == EOF_, "reset instead of a clean close"
    for response in split_responses(received)[0]:  # if it was answered, it says close
        assert response.header(b"connection") == b"close"


def test_a_request_arriving_during_the_drain_is_answered_with_connection_close(
    gateway: GatewayProcess,
) -> None:
    with connect(gateway.port) as stream, connect(gateway.port) as arriving:
        drain_while_busy(gateway, stream, arriving)


def drain_while_busy(
    gateway: GatewayProcess, stream: socket.socket, arriving: socket.socket
) -> None:
    # The stream keeps the drain going until its deadline.
    stream.sendall(b"GET /raw/events HTTP/1.1\r\nHost: gw\r\n\r\n")
    stream.settimeout(5)
    assert stream.recv(65536).startswith(b"HTTP/1.1 200")
    arriving.sendall(b"GET /demo HTTP/1.1\r\nHost: gw\r\n")  # the head is not complete yet

    signalled = time.monotonic()
    gateway.signal(signal.SIGTERM)
    time.sleep(0.3)
    arriving.sendall(b"X-Late: 1\r\n\r\n")
    received, ended = read_until_closed(arriving, within=5)
    [response], rest = split_responses(received)
    assert response.status == 200
    assert response.header(b"connection") == b"close"
    assert (rest, ended) == (b"", EOF_)

    # The stream runs to the drain deadline, then is cut: one line, no traceback.
    _, ended = read_until_closed(stream, within=DRAIN + 5)
    assert ended in (EOF_, RESET)
    gateway.process.wait(timeout=10)
    assert time.monotonic() - signalled >= DRAIN - 0.5
    log = gateway.log()
    assert "Traceback" not in log
    assert "CancelledError" not in log
    cut = [line for line in log.splitlines() if "cut at the drain deadline" in line]
    assert len(cut) == 1, log
    assert "/raw/events" in cut[0]


def test_a_stream_failing_upstream_is_logged_once(
    gateway: GatewayProcess, upstream: RawUpstream
) -> None:
    upstream.script(Reset(STREAM_HEAD + b"7\r\ndata: 1\r\n"))
    with connect(gateway.port) as sock:
        sock.sendall(b"GET /raw/broken HTTP/1.1\r\nHost: gw\r\n\r\n")
        received, ended = read_until_closed(sock, within=5)
    assert received.startswith(b"HTTP/1.1 200")
    assert not received.endswith(b"0\r\n\r\n")  # cut, so the client knows it is incomplete
    assert ended in (EOF_, RESET)
    time.sleep(0.3)
    log = gateway.log()
    assert "ASGI callable returned without completing response" not in log
    assert log.count("failed after the response started") == 1, log
