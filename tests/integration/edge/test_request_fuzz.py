"""A seeded, socket-level request fuzzer against a real gateway (issue 11: "Done when").

Each case is a valid request mutated one to three times (request line, method, target,
version, headers, Host, framing, bodies, line ends, truncation, junk and control bytes), sent
on its own connection. Whatever the gateway makes of it, it must never answer 5xx (505 for a
request line naming another HTTP version is the one 5xx the spec asks for), must end every
connection, and must be alive with as many open file descriptors as before once all is done.

The seed is fixed so a failure can be replayed: the failing case's index and bytes are in
the assertion message.
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest

from helpers.gateway import GatewayProcess, run_gateway
from helpers.wire import OPEN, connect, read_until_closed, split_responses

SEED = 20260111
CASES = 520
CONCURRENCY = 32
TIMEOUT = 1.0  # every client deadline of the gateway under test, so every case ends fast

DEMO = {"demo": {"targets": ["asgi:onegate.dev.demo:app"]}}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with run_gateway(
        tmp_path_factory.mktemp("fuzz"),
        DEMO,
        [{"name": "demo", "match": {"prefix": "/"}, "upstream": "demo"}],
        drain_seconds=1,
        max_header_bytes=8192,
        max_request_line_bytes=2048,
        max_body_bytes=65536,
        client_timeouts={
            "first_byte": TIMEOUT,
            "head": TIMEOUT,
            "keep_alive": TIMEOUT,
            "body_idle": TIMEOUT,
        },
    ) as gw:
        yield gw


# --- the cases ---------------------------------------------------------------------------------

Lines = list[bytes]  # request line, then header lines; the body travels separately


def base_requests() -> list[tuple[Lines, bytes]]:
    return [
        ([b"GET /fuzz HTTP/1.1", b"Host: gw"], b""),
        ([b"GET /fuzz/a?b=c&d=%20 HTTP/1.1", b"Host: gw:8080", b"Accept: */*"], b""),
        ([b"HEAD /fuzz HTTP/1.1", b"Host: gw"], b""),
        ([b"DELETE /fuzz/1 HTTP/1.1", b"Host: gw"], b""),
        ([b"OPTIONS /fuzz HTTP/1.1", b"Host: gw", b"Origin: http://o.example"], b""),
        ([b"POST /fuzz HTTP/1.1", b"Host: gw", b"Content-Length: 11"], b"hello world"),
        (
            [b"POST /fuzz HTTP/1.1", b"Host: gw", b"Transfer-Encoding: chunked"],
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        ),
        ([b"PUT /fuzz HTTP/1.0", b"Content-Length: 3"], b"abc"),
        ([b"GET /fuzz HTTP/1.0"], b""),
        ([b"GET /fuzz HTTP/1.1", b"Host: gw", b"Connection: keep-alive"], b""),
    ]


JUNK = [b"\x00", b"\r", b"\n", b"\t", b"\x7f", b"\xff", b" ", b":", b"\x1b[0m", b'"', b"\xc3\xa9"]
METHODS = [b"get", b"FOO", b"", b"G ET", b"CONNECT", b"TRACE", b"PRI", b"GET\x00", b"M" * 40]
TARGETS = [
    b"",
    b"*",
    b"/a b",
    b"/%00",
    b"/%zz",
    b"//double//slash",
    b"/../../etc/passwd",
    b"http://other.example/x",
    b"gw:443",
    b"/\x01",
    b"/" + b"t" * 3000,
    b"/?" + b"q" * 500,
    b"/#frag",
]
VERSIONS = [
    b"HTTP/1.0",
    b"HTTP/1.2",
    b"HTTP/2.0",
    b"HTTP/3.0",
    b"HTTP/0.9",
    b"http/1.1",
    b"HTTP/1.1x",
    b"HTTP/11",
    b"HTTP/",
    b"",
    b"HTTP/1.1 extra",
]
HOSTS = [b"", b"a/b", b"a, for=6.6.6.6", b"a b", b"u@gw", b"gw:99999", b"[::1", b"gw:", b"\x00"]
HEADERS = [
    b"Host: other",
    b"Content-Length: 5",
    b"Content-Length: -1",
    b"Content-Length: 99999999999999999999",
    b"Content-Length: 1, 2",
    b"Transfer-Encoding: chunked",
    b"Transfer-Encoding: gzip, chunked",
    b"Transfer-Encoding: identity",
    b"Expect: 100-continue",
    b"Connection: close",
    b"Connection: upgrade",
    b"Upgrade: h2c",
    b"Upgrade: websocket",
    b"X-Long: " + b"l" * 9000,
    b" folded",
    b"NoColon",
    b"Space : before",
    b": empty-name",
    b"X-Forwarded-Host: evil/path",
    b"Forwarded: for=6.6.6.6;host=evil",
]


def mutate(rng: random.Random, lines: Lines, body: bytes) -> tuple[Lines, bytes, bytes]:
    """One mutation of the request; the third value is the line end to use."""
    lines = list(lines)
    eol = b"\r\n"
    kind = rng.randrange(14)
    method, _, rest = lines[0].partition(b" ")
    target, _, version = rest.rpartition(b" ")
    if kind == 0:
        lines[0] = rng.choice(METHODS) + b" " + target + b" " + version
    elif kind == 1:
        lines[0] = method + b" " + rng.choice(TARGETS) + b" " + version
    elif kind == 2:
        chosen = rng.choice(VERSIONS)
        lines[0] = method + b" " + target + (b" " + chosen if chosen else b"")
    elif kind == 3:
        lines = [line for line in lines if not line.lower().startswith(b"host:")]
        lines.insert(rng.randrange(1, len(lines) + 1), b"Host: " + rng.choice(HOSTS))
    elif kind == 4:
        lines.insert(rng.randrange(1, len(lines) + 1), rng.choice(HEADERS))
    elif kind == 5 and len(lines) > 1:
        del lines[rng.randrange(1, len(lines))]
    elif kind == 6:
        index = rng.randrange(len(lines))
        line = lines[index]
        at = rng.randrange(len(line) + 1)
        lines[index] = line[:at] + rng.choice(JUNK) + line[at:]
    elif kind == 7:
        eol = rng.choice([b"\n", b"\r", b"\r\r\n", b"\n\r"])
    elif kind == 8:
        body = body + rng.randbytes(rng.randrange(1, 40))  # longer than announced
    elif kind == 9 and body:
        body = body[: rng.randrange(len(body))]  # shorter than announced
    elif kind == 10:
        body = rng.choice([b"zz\r\nxx\r\n0\r\n\r\n", b"5\r\nabc\r\n", b"-1\r\n", b"0\r\n"])
        lines.append(b"Transfer-Encoding: chunked")
    elif kind == 11:
        index = rng.randrange(len(lines))
        lines[index] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 30)))
    elif kind == 12:
        lines.insert(1, b"X-Ctl: " + bytes([rng.randrange(0, 32)]) + b"v")
    else:
        lines[0] = lines[0].replace(b" ", rng.choice([b"  ", b"\t", b""]), 1)
    return lines, body, eol


class Case:
    def __init__(self, index: int, data: bytes, half_close: bool, lines: Lines) -> None:
        self.index = index
        self.data = data
        self.half_close = half_close
        self.request_line = lines[0]


def build_cases() -> list[Case]:
    rng = random.Random(SEED)
    bases = base_requests()
    cases = []
    for index in range(CASES):
        lines, body = rng.choice(bases)
        if rng.random() < 0.8:
            # So that an accepted request is answered and closed at once, not kept alive.
            lines = [*lines, b"Connection: close"]
        eol = b"\r\n"
        for _ in range(rng.randint(1, 3)):
            lines, body, new_eol = mutate(rng, lines, body)
            eol = new_eol if new_eol != b"\r\n" else eol
        data = eol.join(lines) + eol + eol + body
        if rng.random() < 0.15:
            data = data[: rng.randrange(len(data))]  # truncated anywhere
        if rng.random() < 0.1:
            data += data  # pipelined twice
        if rng.random() < 0.05:
            data = rng.randbytes(rng.randrange(1, 200))  # nothing like HTTP at all
        # Some cases half-close after sending (the gateway sees the end at once: a complete
        # request may then go unanswered, a partial head gets a 400); the others leave the
        # connection open and may wait for the gateway's deadlines.
        cases.append(Case(index, data, rng.random() < 0.3, lines))
    return cases


def run_case(port: int, case: Case) -> tuple[Case, list[int], str, bytes]:
    with connect(port) as sock:
        try:
            sock.sendall(case.data)
            if case.half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # answered and closed before everything was sent
        received, ended = read_until_closed(sock, within=4 * TIMEOUT + 4)
    responses, _ = split_responses(received)
    return case, [r.status for r in responses], ended, received


def settle(read: Callable[[], int], target: int, within: float) -> int:
    deadline = time.monotonic() + within
    value = read()
    while value > target and time.monotonic() < deadline:
        time.sleep(0.1)
        value = read()
    return value


def test_fuzzed_requests_never_get_a_5xx_and_leave_no_trace(gateway: GatewayProcess) -> None:
    worker = psutil.Process(gateway.process.pid)  # one worker: the server process
    cases = build_cases()
    assert len(cases) >= 500
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        # A first pass warms the worker up (metric files are opened on first use), so the
        # baseline counts only what a connection could leave behind.
        # Only half-closed cases: their connections are gone as soon as they are answered.
        warm_up = [case for case in cases[:80] if case.half_close]
        list(pool.map(lambda case: run_case(gateway.port, case), warm_up))
        time.sleep(0.5)
        baseline = worker.num_fds()
        results = list(pool.map(lambda case: run_case(gateway.port, case), cases))

    statuses: dict[int, int] = {}
    for case, codes, ended, received in results:
        context = f"case {case.index}: {case.data[:200]!r} -> {received[:300]!r}"
        assert ended != OPEN, f"connection left open; {context}"
        for code in codes:
            statuses[code] = statuses.get(code, 0) + 1
            if code == 505:
                assert not case.request_line.endswith((b" HTTP/1.1", b" HTTP/1.0")), context
            else:
                assert code < 500, context
    # The cases reach the app as well as every kind of refusal.
    assert statuses.get(200, 0) > 20 and statuses.get(400, 0) > 50, statuses

    assert gateway.process.poll() is None
    assert httpx.get(gateway.url + "/healthz", timeout=5).status_code == 200
    assert settle(worker.num_fds, baseline, within=10) <= baseline
    log = gateway.log()
    assert "Exception in ASGI application" not in log  # uvicorn's traceback for a crash
    assert "CancelledError" not in log
