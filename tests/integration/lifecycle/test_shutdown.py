"""Graceful shutdown: SIGTERM stops new work, lets work in flight finish, then exits.

``server.drain_seconds`` bounds the wait: a stream that would never end is cut when it runs
out, and the process exits anyway.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx

from helpers.gateway import GatewayProcess, run_gateway, wait_for
from helpers.inflight import InFlight
from helpers.legacy import LegacyBackends, upstreams_and_routes


def outstanding(gateway: GatewayProcess, upstream: str) -> int:
    ready = httpx.get(f"{gateway.url}/readyz", timeout=5).json()
    return sum(t["outstanding"] for t in ready["upstreams"][upstream]["targets"])


def try_new_connection(gateway: GatewayProcess) -> str:
    """What a newcomer experiences: "answered", "refused" or "hung"."""
    try:
        httpx.get(f"{gateway.url}/healthz", timeout=1.0)
    except httpx.ConnectError:
        return "refused"
    except httpx.TimeoutException:
        return "hung"
    except httpx.TransportError:
        return "reset"
    return "answered"


def exit_within(gateway: GatewayProcess, seconds: float) -> float:
    """Wait for the process to end; return when it did (monotonic)."""
    gateway.process.wait(timeout=seconds)
    return time.monotonic()


def test_sigterm_lets_requests_and_streams_in_flight_finish(
    legacy_backends: LegacyBackends, tmp_path: Path
) -> None:
    upstreams, routes = upstreams_and_routes(legacy_backends)
    with run_gateway(tmp_path, upstreams, routes) as gateway:
        slow = InFlight(f"{gateway.url}/api/slow?ms=1500")
        stream = InFlight(f"{gateway.url}/api/ai/stream?events=6&interval_ms=300")
        wait_for(
            lambda: outstanding(gateway, "main") == 1 and outstanding(gateway, "ai") == 1,
            3.0,
            "both requests in flight",
        )

        signalled = time.monotonic()
        gateway.signal(signal.SIGTERM)
        time.sleep(0.3)
        assert try_new_connection(gateway) == "refused"

        exited = exit_within(gateway, 10)
        slow.join()
        stream.join()

    assert (slow.error, slow.status) == (None, 200)
    assert b'"slept_ms":1500' in slow.body
    assert (stream.error, stream.status) == (None, 200)
    assert stream.body.count(b"data: ") == 6
    # An orderly shutdown the operator asked for is a success.
    assert gateway.process.returncode == 0, gateway.log()
    # The process waited for both, then left promptly: well inside the 30 s drain.
    assert exited >= max(slow.ended, stream.ended) - 0.1
    assert exited - signalled < 5


def test_sigterm_with_workers_drains_refuses_newcomers_and_exits_0(
    legacy_backends: LegacyBackends, tmp_path: Path
) -> None:
    upstreams, routes = upstreams_and_routes(legacy_backends)
    with run_gateway(tmp_path, upstreams, routes, workers=2) as gateway:
        slow = InFlight(f"{gateway.url}/api/slow?ms=3000")
        wait_for(lambda: outstanding(gateway, "main") == 1, 3.0, "request in flight")
        gateway.signal(signal.SIGTERM)
        time.sleep(1.0)  # the supervisor passes signals on every 0.5 s
        newcomer = try_new_connection(gateway)
        exit_within(gateway, 15)
        slow.join()
    assert (slow.error, slow.status) == (None, 200)
    assert newcomer == "refused"
    assert gateway.process.returncode == 0, gateway.log()


def test_drain_seconds_cuts_a_never_ending_stream(
    legacy_backends: LegacyBackends, tmp_path: Path
) -> None:
    upstreams, routes = upstreams_and_routes(legacy_backends)
    with run_gateway(tmp_path, upstreams, routes, drain_seconds=1) as gateway:
        endless = InFlight(f"{gateway.url}/api/ai/stream?events=100000&interval_ms=100")
        wait_for(lambda: endless.body.count(b"data: ") >= 3, 3.0, "stream flowing")

        signalled = time.monotonic()
        gateway.signal(signal.SIGTERM)
        exited = exit_within(gateway, 10)
        endless.join()

    # The stream ran on through the drain, then was cut: the client sees a truncated body.
    assert endless.status == 200
    assert isinstance(endless.error, httpx.RemoteProtocolError)
    assert 0.8 < endless.ended - signalled < 3
    assert endless.body.count(b"data: ") >= 10
    # ...and the process still exits, soon after the drain ran out.
    assert exited - signalled < 4
    assert gateway.process.returncode == 0, gateway.log()


def test_fractional_drain_seconds_still_let_short_requests_finish(
    legacy_backends: LegacyBackends, tmp_path: Path
) -> None:
    upstreams, routes = upstreams_and_routes(legacy_backends)
    with run_gateway(tmp_path, upstreams, routes, drain_seconds=0.9) as gateway:
        slow = InFlight(f"{gateway.url}/api/slow?ms=500")
        wait_for(lambda: outstanding(gateway, "main") == 1, 3.0, "request in flight")
        gateway.signal(signal.SIGTERM)  # about 0.4 s of work left, inside the 0.9 s drain
        exit_within(gateway, 10)
        slow.join()
    assert (slow.error, slow.status) == (None, 200)
    assert b'"slept_ms":500' in slow.body
