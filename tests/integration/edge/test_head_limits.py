"""Request heads are bounded while they arrive (issue 11, part 3).

The limits are counted in the protocol as bytes come in, not once the head is complete: a
client streaming an endless head is refused after ``max_header_bytes`` (431), a request line
after ``max_request_line_bytes`` (414), and the worker's memory does not grow with what the
client keeps sending.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import psutil
import pytest

from helpers.gateway import GatewayProcess, run_gateway
from helpers.wire import EOF_, RESET, connect, nothing_within, read_until_closed, split_responses
from onegate.gateway.protocol import HEAD_SLACK

MAX_HEADER_BYTES = 4096
MAX_LINE = 1024
HEAD_LIMIT = MAX_HEADER_BYTES + HEAD_SLACK  # raw bytes of a head the protocol lets through
MIB = 1024 * 1024
ENDLESS_BYTES = 200 * MIB
RSS_GROWTH_LIMIT = 16 * MIB


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    upstreams = {"demo": {"targets": ["asgi:onegate.dev.demo:app"]}}
    routes = [{"name": "demo", "match": {"prefix": "/"}, "upstream": "demo"}]
    with run_gateway(
        tmp_path_factory.mktemp("head-limits"),
        upstreams,
        routes,
        drain_seconds=1,
        max_header_bytes=MAX_HEADER_BYTES,
        max_request_line_bytes=MAX_LINE,
    ) as gw:
        yield gw


def only_response(data: bytes) -> int:
    responses, rest = split_responses(data)
    assert len(responses) == 1 and rest == b"", data[:300]
    return responses[0].status


class EndlessHead:
    """Sends a request head that never ends (one header value growing forever), up to
    ``limit`` bytes, while another thread reads; records how much was sent when the answer came."""

    def __init__(self, port: int, limit: int) -> None:
        self.sock = connect(port, timeout=10)
        self.limit = limit
        self.sent = 0
        self.sent_at_answer: int | None = None
        self.received = b""
        self.ended = ""
        self._sender = threading.Thread(target=self._send, daemon=True)
        self._reader = threading.Thread(target=self._read, daemon=True)

    def run(self) -> EndlessHead:
        self._reader.start()
        self._sender.start()
        self._reader.join(30)
        self._sender.join(30)
        self.sock.close()
        return self

    def _send(self) -> None:
        piece = b"a" * 65536
        try:
            self.sock.sendall(b"GET / HTTP/1.1\r\nHost: gw\r\nX-Endless: ")
            while self.sent < self.limit:
                self.sock.sendall(piece)
                self.sent += len(piece)
        except OSError:
            pass  # the gateway closed: that is the point

    def _read(self) -> None:
        self.sock.settimeout(20)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    self.ended = EOF_
                    return
                if not self.received:
                    self.sent_at_answer = self.sent
                self.received += data
        except ConnectionResetError:
            self.ended = RESET
        except OSError as error:
            self.ended = repr(error)


def test_a_never_ending_head_is_refused_early_and_memory_stays_flat(
    gateway: GatewayProcess,
) -> None:
    worker = psutil.Process(gateway.process.pid)  # one worker: the server process itself
    before = worker.memory_info().rss
    peak = before
    sampling = True

    def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, worker.memory_info().rss)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        endless = EndlessHead(gateway.port, ENDLESS_BYTES).run()
    finally:
        sampling = False
        sampler.join()

    assert only_response(endless.received) == 431
    assert endless.ended in (EOF_, RESET)
    # Refused as the limit was crossed: the answer came before the client had sent a tenth
    # of it (what it sent meanwhile sat in socket buffers, or was read and dropped).
    assert endless.sent_at_answer is not None
    assert endless.sent_at_answer < ENDLESS_BYTES // 10
    assert peak - before < RSS_GROWTH_LIMIT, f"RSS grew by {(peak - before) / MIB:.1f} MiB"


def test_the_head_limit_is_crossed_at_the_first_byte_over_it(gateway: GatewayProcess) -> None:
    head = b"GET / HTTP/1.1\r\nHost: gw\r\nX-Fill: "
    with connect(gateway.port) as sock:
        sock.sendall(head + b"f" * (HEAD_LIMIT - len(head)))
        assert nothing_within(sock, 0.5), "refused at the limit, not over it"
        sock.sendall(b"f")
        received, ended = read_until_closed(sock, within=5)
    assert only_response(received) == 431
    assert ended == EOF_


def test_many_small_headers_that_never_end_are_refused(gateway: GatewayProcess) -> None:
    with connect(gateway.port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: gw\r\n")
        try:
            for index in range(HEAD_LIMIT // 4):  # well past the limit
                sock.sendall(b"X-%d: v\r\n" % index)
        except OSError:
            pass
        received, _ = read_until_closed(sock, within=5)
    assert only_response(received) == 431


def test_the_request_line_limit_is_crossed_at_the_first_byte_over_it(
    gateway: GatewayProcess,
) -> None:
    with connect(gateway.port) as sock:
        sock.sendall(b"GET /" + b"u" * (MAX_LINE - 1))  # a target of exactly the limit
        assert nothing_within(sock, 0.5), "refused at the limit, not over it"
        sock.sendall(b"u")
        received, ended = read_until_closed(sock, within=5)
    assert only_response(received) == 414
    assert ended == EOF_


def test_a_target_at_the_limit_is_served(gateway: GatewayProcess) -> None:
    target = b"/" + b"v" * (MAX_LINE - 1)
    with connect(gateway.port) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
        received, _ = read_until_closed(sock, within=5)
    assert only_response(received) == 200


def test_a_long_url_in_a_complete_request_is_a_414(gateway: GatewayProcess) -> None:
    with connect(gateway.port) as sock:
        sock.sendall(b"GET /" + b"w" * 100_000 + b" HTTP/1.1\r\nHost: gw\r\n\r\n")
        received, _ = read_until_closed(sock, within=5)
    assert only_response(received) == 414


def test_other_clients_are_served_while_a_head_streams(gateway: GatewayProcess) -> None:
    endless = EndlessHead(gateway.port, 64 * MIB)
    thread = threading.Thread(target=endless.run, daemon=True)
    thread.start()
    try:
        with connect(gateway.port) as sock:
            sock.sendall(b"GET /ok HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
            received, _ = read_until_closed(sock, within=5)
        assert only_response(received) == 200
    finally:
        thread.join(30)
    assert only_response(endless.received) == 431


def test_a_refused_head_leaves_the_connection_count_where_it_was(
    gateway: GatewayProcess,
) -> None:
    worker = psutil.Process(gateway.process.pid)
    before = worker.num_fds()
    for _ in range(20):
        with connect(gateway.port) as sock:
            with contextlib.suppress(OSError):
                sock.sendall(b"GET / HTTP/1.1\r\nHost: gw\r\nX: " + b"z" * (2 * HEAD_LIMIT))
            sock.shutdown(socket.SHUT_WR)
            read_until_closed(sock, within=5)
    deadline = time.monotonic() + 5
    while worker.num_fds() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert worker.num_fds() <= before
