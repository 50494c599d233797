"""Bodies and streams cross the gateway as they are produced, never buffered whole.

A real ``onegate serve`` process sits in front of the stand-in backends. Memory is watched
from outside, on the gateway process's resident set size: a gibibyte goes through in both
directions, and a client that stops reading must not make the gateway read ahead for it.
Server-Sent Events must reach the client at the upstream's pace, and a client that leaves a
stream must free the upstream at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import queue
import select
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import psutil
import pytest

from helpers.gateway import GatewayProcess, run_gateway
from helpers.legacy import LegacyBackends
from onegate.dev.legacy import pattern_chunks

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
#: How much the gateway's resident memory may grow while a stream crosses it.
RSS_BUDGET = 64 * MiB
IN_PROCESS_AI = "asgi:onegate.dev.legacy:ai_app"
#: The two ways to reach the AI stand-in, over a socket and in process: path prefix, upstream.
AI_ROUTES = [pytest.param("", "ai", id="remote"), pytest.param("/inproc", "ai-inproc", id="asgi")]
AI_PREFIXES = [pytest.param("", id="remote"), pytest.param("/inproc", id="asgi")]


class SilentStreamServer(ThreadingHTTPServer):
    """An SSE endpoint that sends its head, then nothing, like an agent still thinking.

    Each connection is held until the gateway hangs up, ``release`` is set or 10 s pass; the
    moment of each hang-up goes into ``hangups``.
    """

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SilentStream)
        self.hangups: queue.Queue[float] = queue.Queue()
        self.release = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _SilentStream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: SilentStreamServer

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not self.server.release.is_set():
            readable, _, _ = select.select([self.connection], [], [], 0.05)
            if readable:  # the gateway closed its end (nothing else would be sent)
                self.server.hangups.put(time.monotonic())
                break
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def silent_stream() -> Iterator[SilentStreamServer]:
    server = SilentStreamServer()
    thread = threading.Thread(target=server.serve_forever, name="silent-stream", daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture(scope="module")
def gateway(
    legacy_backends: LegacyBackends,
    silent_stream: SilentStreamServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GatewayProcess]:
    upstreams = {
        "main": {"targets": [legacy_backends.main_url]},
        "ai": {"targets": [legacy_backends.ai_url]},
        "ai-inproc": {"targets": [IN_PROCESS_AI]},
        "silent": {"targets": [silent_stream.url]},
    }
    routes = [
        {"name": "silent", "match": {"prefix": "/silent"}, "upstream": "silent"},
        {
            "name": "ai-inproc",
            "match": {"prefix": "/inproc"},
            "upstream": "ai-inproc",
            "strip_prefix": "/inproc",
        },
        {"name": "ai", "match": {"prefix": "/api/ai"}, "upstream": "ai"},
        {"name": "main", "match": {"prefix": "/api"}, "upstream": "main"},
    ]
    directory = tmp_path_factory.mktemp("streaming")
    with run_gateway(directory, upstreams, routes, max_body_bytes=None) as gateway:
        yield gateway


class PeakRss:
    """Samples a process's resident set size every ``interval`` seconds, keeping the peak."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self.baseline = self.process.memory_info().rss
        self.peak = self.baseline
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def sample(self) -> None:
        self.peak = max(self.peak, self.process.memory_info().rss)
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    @property
    def growth(self) -> int:
        return self.peak - self.baseline

    def __str__(self) -> str:
        return (
            f"RSS grew {self.growth / MiB:.1f} MiB over a baseline of "
            f"{self.baseline / MiB:.1f} MiB ({self.samples} samples)"
        )


def warm_up(gateway: GatewayProcess) -> None:
    """One small transfer each way, so first-use allocations are part of the baseline."""
    with httpx.Client(timeout=10) as client:
        assert client.get(f"{gateway.url}/api/bytes/{4 * MiB}").status_code == 200
        assert client.post(f"{gateway.url}/api/upload", content=b"x" * MiB).status_code == 200


def target_state(gateway: GatewayProcess, upstream: str) -> dict[str, Any]:
    """The single target of ``upstream`` as ``/readyz`` describes it."""
    ready = httpx.get(f"{gateway.url}/readyz", timeout=5).json()
    targets: list[dict[str, Any]] = ready["upstreams"][upstream]["targets"]
    assert len(targets) == 1
    return targets[0]


def wait_until_idle(gateway: GatewayProcess, upstream: str, within: float) -> None:
    """Wait until the target has no outstanding request; fail after ``within`` seconds."""
    started = time.monotonic()
    while True:
        state = target_state(gateway, upstream)
        if state["outstanding"] == 0:
            return
        waited = time.monotonic() - started
        assert waited < within, f"{upstream} still busy after {waited:.2f}s: {state}"
        time.sleep(0.05)


def read_events(url: str) -> tuple[float, list[tuple[float, dict[str, Any]]]]:
    """GET an SSE stream; return when the request was sent and each event with its arrival."""
    events: list[tuple[float, dict[str, Any]]] = []
    pending = b""
    with httpx.Client(timeout=10) as client:
        sent = time.time()
        with client.stream("GET", url) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            for piece in response.iter_raw():
                arrived = time.time()
                pending += piece
                while b"\n\n" in pending:
                    event, pending = pending.split(b"\n\n", 1)
                    fields = dict(line.split(": ", 1) for line in event.decode().splitlines())
                    events.append((arrived, {"id": fields["id"], **json.loads(fields["data"])}))
    assert pending == b""
    return sent, events


# --- a gibibyte each way ---------------------------------------------------------------------


@pytest.mark.slow
def test_gibibyte_download_streams_through_in_bounded_memory(gateway: GatewayProcess) -> None:
    warm_up(gateway)
    digest = hashlib.sha256()
    size = 0
    started = time.monotonic()
    with (
        PeakRss(gateway.process.pid) as rss,
        httpx.Client(timeout=30) as client,
        client.stream("GET", f"{gateway.url}/api/bytes/{GiB}") as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-length"] == str(GiB)
        for chunk in response.iter_raw(MiB):
            digest.update(chunk)
            size += len(chunk)
    elapsed = time.monotonic() - started

    expected = hashlib.sha256()
    for chunk in pattern_chunks(GiB):
        expected.update(chunk)
    assert size == GiB
    assert digest.hexdigest() == expected.hexdigest()
    assert rss.growth < RSS_BUDGET, str(rss)
    print(f"1 GiB download in {elapsed:.1f}s; {rss}")


@pytest.mark.slow
def test_gibibyte_chunked_upload_streams_through_in_bounded_memory(
    gateway: GatewayProcess,
) -> None:
    warm_up(gateway)
    block = os.urandom(MiB)
    sent = hashlib.sha256()

    def body() -> Iterator[bytes]:
        # Each mebibyte starts with its index, so a dropped or repeated piece changes the hash.
        for index in range(GiB // MiB):
            chunk = index.to_bytes(8, "big") + block[8:]
            sent.update(chunk)
            yield chunk

    started = time.monotonic()
    with PeakRss(gateway.process.pid) as rss, httpx.Client(timeout=30) as client:
        # A generator body has no length: httpx sends it with Transfer-Encoding: chunked.
        response = client.post(f"{gateway.url}/api/upload", content=body())
    elapsed = time.monotonic() - started

    assert response.status_code == 200, response.text
    assert response.json() == {"bytes": GiB, "sha256": sent.hexdigest()}
    assert rss.growth < RSS_BUDGET, str(rss)
    print(f"1 GiB upload in {elapsed:.1f}s; {rss}")


# --- backpressure ----------------------------------------------------------------------------


def test_slow_reader_does_not_make_the_gateway_buffer(gateway: GatewayProcess) -> None:
    warm_up(gateway)
    with (
        httpx.Client(timeout=30) as client,
        client.stream("GET", f"{gateway.url}/api/bytes/{GiB}") as response,
    ):
        pieces = response.iter_raw(64 * KiB)
        received = sum(len(next(pieces)) for _ in range(16))
        # The client stops reading. The upstream could push hundreds of mebibytes into the
        # gateway in this time; with backpressure it waits on full socket buffers instead.
        with PeakRss(gateway.process.pid) as rss:
            time.sleep(4)
        assert target_state(gateway, "main")["outstanding"] == 1
        # Reading again, the stream picks up where it stopped.
        received += sum(len(next(pieces)) for _ in range(160))
    # Left mid-download: the gateway stops reading the rest from the upstream.
    assert received >= 11 * MiB
    assert rss.growth < RSS_BUDGET, str(rss)
    wait_until_idle(gateway, "main", within=2.0)
    assert httpx.get(f"{gateway.url}/api/users/1", timeout=5).status_code == 200


# --- Server-Sent Events ----------------------------------------------------------------------


@pytest.mark.parametrize("prefix", AI_PREFIXES)
def test_sse_events_arrive_at_the_upstreams_pace(gateway: GatewayProcess, prefix: str) -> None:
    sent, events = read_events(f"{gateway.url}{prefix}/api/ai/stream?events=5&interval_ms=300")

    assert [event["id"] for _, event in events] == ["0", "1", "2", "3", "4"]
    arrivals = [arrived for arrived, _ in events]
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert all(gap >= 0.2 for gap in gaps), f"events bunched together: gaps {gaps}"
    # The stream takes 1.2 s; the first event is there long before it ends.
    assert arrivals[0] - sent < 0.5
    assert arrivals[-1] - arrivals[0] > 1.0
    # Each event reaches the client promptly after the upstream stamped it.
    lateness = [arrived - event["t"] for arrived, event in events]
    assert max(lateness) < 0.35, f"events held back: {lateness}"


@pytest.mark.parametrize(("prefix", "upstream"), AI_ROUTES)
def test_client_leaving_an_sse_stream_frees_the_upstream(
    gateway: GatewayProcess, prefix: str, upstream: str
) -> None:
    # An endless stream with 3 s between events: only noticing the client leaving can end it
    # sooner than the next event.
    url = f"{gateway.url}{prefix}/api/ai/stream?events=1000&interval_ms=3000"
    with httpx.Client(timeout=10) as client, client.stream("GET", url) as response:
        # Keep the iterator: dropping it would close the response before we mean to leave.
        pieces = response.iter_raw()
        assert next(pieces).startswith(b"id: 0\n")
        assert target_state(gateway, upstream)["outstanding"] == 1

    wait_until_idle(gateway, upstream, within=1.5)
    state = target_state(gateway, upstream)
    if "connections" in state:
        # The upstream connection was closed, not put back in the pool mid-stream.
        assert state["connections"]["open"] == state["connections"]["idle"]
    # The gateway carries on serving streams.
    _, events = read_events(f"{gateway.url}{prefix}/api/ai/stream?events=3&interval_ms=10")
    assert len(events) == 3


def test_client_leaving_before_the_first_event_frees_the_upstream(
    gateway: GatewayProcess, silent_stream: SilentStreamServer
) -> None:
    # An agent may think for a long while before its first token: the head is out, no event
    # yet. A client leaving then must free the upstream too, not only once events flow.
    try:
        with (
            httpx.Client(timeout=10) as client,
            client.stream("GET", f"{gateway.url}/silent") as response,
        ):
            assert response.status_code == 200
            assert target_state(gateway, "silent")["outstanding"] == 1
        left = time.monotonic()

        hung_up = None
        with contextlib.suppress(queue.Empty):
            hung_up = silent_stream.hangups.get(timeout=2)
        assert hung_up is not None, "the gateway kept the upstream stream open for nobody"
        assert hung_up - left < 1.5
        wait_until_idle(gateway, "silent", within=1.0)
    finally:
        silent_stream.release.set()
