"""How soon clients are served again once a target that was down comes back, over real sockets.

The documented bound (``onegate.gateway.breaker``): after an outage of N seconds, requests
succeed again within ``min(open_seconds, N + first_probe_seconds)`` plus a request's round
trip while clients keep asking, and within ``health.interval + health.timeout`` when a passing
active health check closes the breaker. Each target here is a real HTTP server that is shut
(connections refused) for the outage and started again on the same port. ``open_seconds`` is
long in both cases, so a breaker that waited a fixed ``open_seconds`` fails the test.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from helpers.gateway import GatewayProcess, run_gateway

OPEN_SECONDS = 8.0
FIRST_PROBE_SECONDS = 0.25
# Never marked unhealthy in a short outage: the open breaker alone turns clients away, and
# what ends that is the first health check that passes.
HEALTH_INTERVAL = 0.3
HEALTH_TIMEOUT = 0.5
HEALTH = {
    "path": "/health",
    "interval": HEALTH_INTERVAL,
    "timeout": HEALTH_TIMEOUT,
    "unhealthy_threshold": 100,
}
# Scheduling on a busy two-core machine, and the 50 ms between a client's requests.
SLACK = 1.0
CIRCUIT_OPEN = "https://onegate.dev/problems/circuit-open"


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: every response closes its connection, so none outlives the server's shutdown
    # in the gateway's pool and the outage is complete.
    def do_GET(self) -> None:
        body = b"up"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class RestartableUpstream:
    """An HTTP server on a fixed loopback port that can go down and come back."""

    def __init__(self) -> None:
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Close the listening socket: from now on connections are refused."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None


@pytest.fixture(scope="module")
def probed() -> Iterator[RestartableUpstream]:
    upstream = RestartableUpstream()
    upstream.start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def checked() -> Iterator[RestartableUpstream]:
    upstream = RestartableUpstream()
    upstream.start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
    probed: RestartableUpstream,
    checked: RestartableUpstream,
) -> Iterator[GatewayProcess]:
    breaker = {
        "failure_threshold": 2,
        "first_probe_seconds": FIRST_PROBE_SECONDS,
        "open_seconds": OPEN_SECONDS,
    }
    upstreams = {
        "probed": {"targets": [probed.url], "breaker": breaker},
        # Probes so far apart that only a health check can close this breaker in time.
        "checked": {
            "targets": [checked.url],
            "breaker": {**breaker, "first_probe_seconds": 30, "open_seconds": 30},
            "health": HEALTH,
        },
    }
    routes = [
        {
            "name": name,
            "match": {"prefix": f"/{name}"},
            "upstream": name,
            "retries": {"attempts": 0},
        }
        for name in upstreams
    ]
    directory = tmp_path_factory.mktemp("recovery")
    with run_gateway(directory, upstreams, routes, drain_seconds=1) as gateway:
        yield gateway


@dataclass
class Outcome:
    at: float
    status: int
    problem: str | None


@dataclass
class Client:
    """Asks every 50 ms, as clients of a busy service do, and remembers every answer."""

    http: httpx.Client
    path: str
    outcomes: list[Outcome] = field(default_factory=list)

    def ask(self) -> Outcome:
        response = self.http.get(self.path)
        problem = None
        if response.headers.get("content-type") == "application/problem+json":
            problem = response.json()["type"]
        outcome = Outcome(time.monotonic(), response.status_code, problem)
        self.outcomes.append(outcome)
        time.sleep(0.05)
        return outcome

    def ask_for(self, seconds: float) -> None:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            self.ask()

    def first_success(self, within: float) -> float:
        """When the first 200 came; fails the test if none came ``within`` seconds."""
        started = time.monotonic()
        while time.monotonic() - started < within:
            outcome = self.ask()
            if outcome.status == 200:
                return outcome.at
        raise AssertionError(f"{self.path}: still failing after {within} s: {self.outcomes[-5:]}")


def outage(client: Client, upstream: RestartableUpstream, seconds: float) -> tuple[float, float]:
    """Take the target down for ``seconds`` while the client keeps asking; (down, up) times."""
    assert client.ask().status == 200
    upstream.stop()
    down = time.monotonic()
    client.ask_for(seconds)
    upstream.start()
    up = time.monotonic()
    turned_away = [o for o in client.outcomes if down <= o.at and o.problem == CIRCUIT_OPEN]
    assert turned_away, f"the breaker never opened: {client.outcomes}"
    return down, up


def test_clients_are_served_again_within_the_documented_bound_after_an_outage(
    gateway: GatewayProcess, probed: RestartableUpstream
) -> None:
    with httpx.Client(base_url=gateway.url, timeout=5.0) as http:
        client = Client(http, "/probed/x")
        down, up = outage(client, probed, 1.5)
        served = client.first_success(within=OPEN_SECONDS + SLACK)
    bound = min(OPEN_SECONDS, (up - down) + FIRST_PROBE_SECONDS)
    assert served - up <= bound + SLACK, f"served {served - up:.2f} s after the return"


def test_a_passing_health_check_closes_the_breaker_without_waiting_for_a_probe(
    gateway: GatewayProcess, checked: RestartableUpstream
) -> None:
    with httpx.Client(base_url=gateway.url, timeout=5.0) as http:
        client = Client(http, "/checked/x")
        _, up = outage(client, checked, 1.0)
        served = client.first_success(within=10.0)
    assert served - up <= HEALTH_INTERVAL + HEALTH_TIMEOUT + SLACK
