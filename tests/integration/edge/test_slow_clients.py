"""Slow and silent clients are cut off on time, and everyone else is served meanwhile
(issue 11, part 2).

The gateway here runs with short deadlines (``server.client_timeouts``) so each attack ends in
a second or two; every assertion allows generous slack for a shared, busy machine.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from helpers.gateway import GatewayProcess, run_gateway, wait_for
from helpers.legacy import free_port
from helpers.wire import (
    EOF_,
    OPEN,
    connect,
    metric,
    read_responses,
    read_until_closed,
    split_responses,
)

FIRST_BYTE = 1.0
HEAD = 1.5
KEEP_ALIVE = 2.0
BODY_IDLE = 1.5
SLACK = 1.5  # seconds past a deadline that still count as "on time" on a loaded machine
CLOSED = "onegate_client_connections_closed_total"
LORIS = 50
SILENT = 100
P99_LIMIT = 0.050

DEMO = {"demo": {"targets": ["asgi:onegate.dev.demo:app"]}}


class SlowReader:
    """An upstream that reads a request head, then waits ``stall`` seconds before reading
    the body: the gateway has to stop reading from its client meanwhile (backpressure)."""

    def __init__(self, stall: float) -> None:
        self.stall = stall
        self.port = free_port()
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.received = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            time.sleep(self.stall)
            received = len(body)
            while received < length:
                chunk = conn.recv(1 << 20)
                if not chunk:
                    break
                received += len(chunk)
            self.received = received
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    def close(self) -> None:
        self.listener.close()
        self._thread.join(5)


@pytest.fixture(scope="module")
def slow_reader() -> Iterator[SlowReader]:
    reader = SlowReader(stall=BODY_IDLE * 2)
    yield reader
    reader.close()


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, slow_reader: SlowReader
) -> Iterator[GatewayProcess]:
    upstreams = {**DEMO, "slow": {"targets": [f"http://127.0.0.1:{slow_reader.port}"]}}
    routes = [
        {"name": "slow", "match": {"prefix": "/slow-reader"}, "upstream": "slow"},
        {"name": "demo", "match": {"prefix": "/"}, "upstream": "demo"},
    ]
    with run_gateway(
        tmp_path_factory.mktemp("slow-clients"),
        upstreams,
        routes,
        drain_seconds=1,
        client_timeouts={
            "first_byte": FIRST_BYTE,
            "head": HEAD,
            "keep_alive": KEEP_ALIVE,
            "body_idle": BODY_IDLE,
        },
    ) as gw:
        yield gw


class Latencies:
    """Requests one after another on a kept-alive connection, in a thread, timing each."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.samples: list[float] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                connection.request("GET", "/normal", headers={"Host": "gw"})
                response = connection.getresponse()
                response.read()
                if response.status != 200:
                    self.errors.append(str(response.status))
            except (OSError, http.client.HTTPException) as error:
                self.errors.append(repr(error))
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                continue
            self.samples.append(time.perf_counter() - started)
            time.sleep(0.005)
        connection.close()

    def stop(self) -> float:
        """Stop, and return the 99th percentile."""
        self._stop.set()
        self._thread.join(10)
        ordered = sorted(self.samples)
        return ordered[int(len(ordered) * 0.99) - 1]


def closed_after(sock: socket.socket, started: float, within: float) -> tuple[float, bytes]:
    received, ended = read_until_closed(sock, within)
    assert ended == EOF_, f"ended: {ended}"
    return time.monotonic() - started, received


def test_slow_loris_and_silent_connections_are_closed_on_time_while_others_are_served(
    gateway: GatewayProcess,
) -> None:
    head_timeouts = metric(gateway.url, CLOSED, reason="head_timeout")
    silent_timeouts = metric(gateway.url, CLOSED, reason="first_byte_timeout")
    latencies = Latencies(gateway.port)
    time.sleep(0.3)  # a baseline before the attack

    started = time.monotonic()
    silent = [connect(gateway.port) for _ in range(SILENT)]
    loris = [connect(gateway.port) for _ in range(LORIS)]
    for sock in loris:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: gw\r\nX-Slow: ")
    # One byte a second on each, until the gateway gives up on them.
    answers: dict[int, bytes] = {}
    ended: dict[int, float] = {}
    while len(ended) < LORIS and time.monotonic() - started < HEAD + SLACK + 2:
        for index, sock in enumerate(loris):
            if index in ended:
                continue
            with contextlib.suppress(OSError):
                sock.sendall(b"a")
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and len(ended) < LORIS:
            for index, sock in enumerate(loris):
                if index in ended:
                    continue
                received, how = read_until_closed(sock, within=0.001)
                answers[index] = answers.get(index, b"") + received
                if how != OPEN:
                    ended[index] = time.monotonic() - started
            time.sleep(0.02)
    silent_closed = [closed_after(sock, started, FIRST_BYTE + SLACK)[0] for sock in silent]
    p99 = latencies.stop()
    for sock in silent + loris:
        sock.close()

    assert len(ended) == LORIS, f"{LORIS - len(ended)} slow-loris connections still open"
    assert max(ended.values()) < HEAD + SLACK
    for received in answers.values():
        responses, _ = split_responses(received)
        assert [r.status for r in responses] == [408]
    assert max(silent_closed) < FIRST_BYTE + SLACK
    assert not latencies.errors
    assert len(latencies.samples) >= 50
    assert p99 < P99_LIMIT, f"p99 {p99 * 1000:.1f} ms during the attack"
    wait_for(
        lambda: metric(gateway.url, CLOSED, reason="head_timeout") >= head_timeouts + LORIS,
        5,
        "head timeouts counted",
    )
    assert metric(gateway.url, CLOSED, reason="first_byte_timeout") >= silent_timeouts + SILENT


def test_a_stalled_body_gets_408_within_the_body_timeout(gateway: GatewayProcess) -> None:
    before = metric(gateway.url, CLOSED, reason="body_timeout")
    with connect(gateway.port) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: gw\r\nContent-Length: 1000\r\n\r\n12345")
        started = time.monotonic()
        took, received = closed_after(sock, started, BODY_IDLE + SLACK)
    assert took >= BODY_IDLE - 0.1
    assert [r.status for r in split_responses(received)[0]] == [408]
    wait_for(lambda: metric(gateway.url, CLOSED, reason="body_timeout") > before, 5, "counted")


def test_a_body_trickled_faster_than_the_body_timeout_is_not_cut(gateway: GatewayProcess) -> None:
    pieces = 3
    with connect(gateway.port) as sock:
        sock.sendall(
            b"POST /upload HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n" % pieces
        )
        for _ in range(pieces):
            time.sleep(BODY_IDLE * 0.6)  # the whole body takes longer than one timeout
            sock.sendall(b"x")
        received, _ = read_until_closed(sock, within=5)
    assert [r.status for r in split_responses(received)[0]] == [200]


def test_the_body_timeout_does_not_run_while_the_gateway_holds_back(
    gateway: GatewayProcess, slow_reader: SlowReader
) -> None:
    """The upstream stops reading for twice the body timeout; the client, blocked by
    backpressure, sends nothing meanwhile, and is not blamed for it."""
    size = 8 * 1024 * 1024  # under max_body_bytes, far over every socket buffer
    with connect(gateway.port, timeout=20) as sock:
        sock.sendall(b"POST /slow-reader HTTP/1.1\r\nHost: gw\r\nContent-Length: %d\r\n\r\n" % size)
        sock.sendall(b"b" * size)
        received, _ = read_until_closed(sock, within=10)
    assert [r.status for r in split_responses(received)[0]] == [200]
    assert slow_reader.received == size


def test_an_idle_kept_alive_connection_is_closed_after_the_keep_alive_timeout(
    gateway: GatewayProcess,
) -> None:
    with connect(gateway.port) as sock:
        sock.sendall(b"GET /once HTTP/1.1\r\nHost: gw\r\n\r\n")
        started = time.monotonic()
        received, ended = read_until_closed(sock, within=KEEP_ALIVE + SLACK)
    took = time.monotonic() - started
    assert [r.status for r in split_responses(received)[0]] == [200]
    assert ended == EOF_  # a FIN, not a reset
    assert KEEP_ALIVE - 0.2 <= took < KEEP_ALIVE + SLACK


# --- the connection cap ------------------------------------------------------------------

CAP = 20


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with run_gateway(
        tmp_path_factory.mktemp("capped"),
        DEMO,
        [{"name": "demo", "match": {"prefix": "/"}, "upstream": "demo"}],
        drain_seconds=1,
        max_client_connections=CAP,
        client_timeouts={"first_byte": 10, "keep_alive": 30},
    ) as gw:
        yield gw


def wait_until_served(gateway: GatewayProcess) -> None:
    """The lingering, refused connections are gone: a scrape gets through."""

    def served() -> bool:
        with connect(gateway.port) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
            received, _ = read_until_closed(sock, within=5)
        return [r.status for r in split_responses(received)[0]] == [200]

    wait_for(served, 10, "the gateway serves again")


def test_past_the_cap_a_newcomer_gets_a_503_problem_document(capped: GatewayProcess) -> None:
    wait_until_served(capped)
    before = metric(capped.url, CLOSED, reason="over_capacity")
    holders = [connect(capped.port) for _ in range(CAP)]
    try:
        time.sleep(0.2)
        with connect(capped.port) as newcomer:
            newcomer.sendall(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
            received, ended = read_until_closed(newcomer, within=5)
        [response], _ = split_responses(received)
        assert response.status == 503
        assert response.header(b"connection") == b"close"
        assert response.header(b"retry-after") is not None
        assert response.header(b"content-type") == b"application/problem+json"
        assert b"too-many-connections" in response.body
        assert ended == EOF_
    finally:
        for sock in holders:
            sock.close()
    wait_until_served(capped)
    wait_for(
        lambda: metric(capped.url, CLOSED, reason="over_capacity") > before, 5, "refusal counted"
    )


def test_at_the_cap_an_idle_kept_alive_connection_makes_room(capped: GatewayProcess) -> None:
    wait_until_served(capped)
    before = metric(capped.url, CLOSED, reason="reclaimed")
    idle = [connect(capped.port) for _ in range(CAP)]
    try:
        for sock in idle:
            sock.sendall(b"GET /first HTTP/1.1\r\nHost: gw\r\n\r\n")
        for sock in idle:
            assert [r.status for r in read_responses(sock, 1, within=5)] == [200]
        with connect(capped.port) as newcomer:
            newcomer.sendall(b"GET /new HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
            received, _ = read_until_closed(newcomer, within=5)
        assert [r.status for r in split_responses(received)[0]] == [200]
        endings = [read_until_closed(sock, within=0.2)[1] for sock in idle]
        assert endings.count(EOF_) == 1  # one idle connection was closed, cleanly
    finally:
        for sock in idle:
            sock.close()
    wait_until_served(capped)
    wait_for(lambda: metric(capped.url, CLOSED, reason="reclaimed") > before, 5, "counted")
    assert metric(capped.url, "onegate_client_connections_open") >= 1
