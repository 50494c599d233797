"""After SIGTERM no worker takes a new connection, while work in flight still finishes.

With several workers the listening socket is shared by the supervisor and every worker, and
the kernel completes handshakes as long as any of them still holds it open. So "refused" is
checked at connect time, on raw sockets: a connection the kernel accepted and a draining
worker later dropped would count as a failure here.
"""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest

from helpers.gateway import GatewayProcess, run_gateway, wait_for, worker_pids
from helpers.inflight import InFlight
from helpers.legacy import LegacyBackends

EVENTS = 14
INTERVAL_MS = 150  # a stream of about two seconds: it outlasts the newcomers' attempts
# Between kill() returning and the supervisor's signal handler running: the kernel delivers
# the signal, Python runs the handler at its next bytecode.
SIGNAL_DELIVERY = 0.05
ATTEMPTS_FOR = 1.0


def connect_outcome(port: int) -> str:
    """ "refused", or "accepted" when the kernel completed the handshake."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=1.0)
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "hung"
    sock.close()
    return "accepted"


def newcomers(gateway: GatewayProcess, seconds: float) -> list[str]:
    outcomes = []
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        outcomes.append(connect_outcome(gateway.port))
        time.sleep(0.01)
    return outcomes


@pytest.mark.parametrize("workers", [1, 2])
def test_no_connection_is_accepted_after_sigterm_while_a_stream_drains(
    legacy_backends: LegacyBackends, tmp_path: Path, workers: int
) -> None:
    upstreams = {"ai": {"targets": [legacy_backends.ai_url]}}
    routes = [{"name": "ai", "match": {"prefix": "/api/ai"}, "upstream": "ai"}]
    with run_gateway(tmp_path, upstreams, routes, workers=workers, drain_seconds=10) as gateway:
        if workers > 1:  # one worker is the process itself: nothing to wait for
            wait_for(lambda: len(worker_pids(gateway)) == workers, 10.0, "every worker up")
        assert connect_outcome(gateway.port) == "accepted"
        stream = InFlight(f"{gateway.url}/api/ai/stream?events={EVENTS}&interval_ms={INTERVAL_MS}")
        wait_for(lambda: stream.events >= 1, 5.0, "stream flowing")

        gateway.signal(signal.SIGTERM)
        time.sleep(SIGNAL_DELIVERY)
        outcomes = newcomers(gateway, ATTEMPTS_FOR)
        # Still draining all along: the refusals are not those of a process that is gone.
        assert stream.ended == 0.0, "the stream ended before the newcomers stopped trying"
        assert gateway.process.poll() is None

        gateway.process.wait(timeout=15)
        stream.join()

    assert len(outcomes) >= 20
    assert set(outcomes) == {"refused"}, outcomes
    assert (stream.error, stream.status) == (None, 200)
    assert stream.events == EVENTS
    assert gateway.process.returncode == 0, gateway.log()
