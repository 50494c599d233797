"""A served gateway (two workers) with TLS on both sides: its own HTTPS listener, whose
certificate is reloaded without a restart, and TLS upstreams for a stream (SSE) and ``wss``.

Certificates come from a CA made in the test; clients trust only that CA. Which certificate a
new connection is shown is read from its serial number.
"""

from __future__ import annotations

import signal
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect as ws_connect
from websockets.sync.server import Server, ServerConnection
from websockets.sync.server import serve as ws_serve

from helpers.gateway import GatewayProcess, run_gateway, wait_for
from helpers.tls import CertificateAuthority, Issued, peer_serial
from helpers.upstreams import Hang, RawUpstream

FIRST_EVENT = b"data: first\n\n"
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"%x\r\n%s\r\n" % (len(FIRST_EVENT), FIRST_EVENT)
)


@dataclass
class Setup:
    gateway: GatewayProcess
    ca: CertificateAuthority
    cert_file: Path
    key_file: Path
    first: Issued
    events: RawUpstream

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.gateway.port}"

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.ca.cert_pem.decode())

    def serial(self) -> int:
        return peer_serial("127.0.0.1", self.gateway.port, self.ca)

    def install(self, issued: Issued) -> None:
        """Write a new pair over the listener's files (the key first, as a renewal might)."""
        self.key_file.write_bytes(issued.key_pem)
        self.cert_file.write_bytes(issued.cert_pem)


def _echo(connection: ServerConnection) -> None:
    for message in connection:
        connection.send(message)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    directory = tmp_path_factory.mktemp("tls-listener")
    ca = CertificateAuthority()
    ca.write(directory, "upstream-ca.pem")
    first = ca.issue("127.0.0.1", "localhost")
    cert_file, key_file = first.write(directory, "listener")
    events = RawUpstream(
        default=Hang(SSE_HEAD), tls=ca.issue("127.0.0.1").server_context(directory)
    ).start()
    echo: Server = ws_serve(
        _echo, "127.0.0.1", 0, ssl=ca.issue("127.0.0.1").server_context(directory)
    )
    threading.Thread(target=echo.serve_forever, name="wss-echo", daemon=True).start()
    echo_port = echo.socket.getsockname()[1]
    trusted = {"ca_file": "upstream-ca.pem"}
    upstreams = {
        "events": {"targets": [events.url], "tls": trusted},
        "echo": {"targets": [f"https://127.0.0.1:{echo_port}"], "tls": trusted},
    }
    routes = [
        {"name": "events", "match": {"prefix": "/events"}, "upstream": "events"},
        {"name": "echo", "match": {"prefix": "/ws"}, "upstream": "echo"},
    ]
    try:
        with run_gateway(
            directory,
            upstreams,
            routes,
            workers=2,
            wait=False,
            # Relative to the config file, which run_gateway writes into the same directory.
            tls={"cert_file": "listener.crt", "key_file": "listener.key"},
        ) as gateway:
            setup = Setup(gateway, ca, cert_file, key_file, first, events)
            context = setup.client_context()

            def ready() -> bool:
                assert gateway.process.poll() is None, gateway.log()
                try:
                    return httpx.get(f"{setup.url}/healthz", verify=context).status_code == 200
                except httpx.HTTPError:
                    return False

            wait_for(ready, 20.0, "the TLS listener answers")
            yield setup
    finally:
        events.close()
        echo.shutdown()


def test_clients_connect_with_tls(setup: Setup) -> None:
    response = httpx.get(f"{setup.url}/healthz", verify=setup.client_context())
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    # Only TLS is served on that port: a plain HTTP request gets no HTTP answer.
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{setup.gateway.port}/healthz", timeout=3.0)
    # And a client that does not trust the CA refuses the listener's certificate.
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{setup.url}/healthz")


def test_a_stream_is_relayed_over_tls_on_both_sides_as_it_arrives(setup: Setup) -> None:
    with (
        httpx.Client(verify=setup.client_context(), timeout=10.0) as client,
        client.stream("GET", f"{setup.url}/events") as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        # The upstream sent one event and holds the stream open: the event arrives anyway.
        first = next(response.iter_raw())
        assert first == FIRST_EVENT
    request = setup.events.requests[-1]
    assert request.header("x-forwarded-proto") == "https"


def test_wss_upstreams_relay_frames(setup: Setup) -> None:
    with ws_connect(
        f"wss://127.0.0.1:{setup.gateway.port}/ws", ssl=setup.client_context(), open_timeout=10
    ) as websocket:
        websocket.send("over tls, twice")
        assert websocket.recv(timeout=10) == "over tls, twice"
        websocket.send(b"\x00\x01")
        assert websocket.recv(timeout=10) == b"\x00\x01"


def test_a_new_certificate_is_served_after_sighup_and_after_a_file_change(setup: Setup) -> None:
    assert setup.serial() == setup.first.serial
    open_connection = httpx.Client(verify=setup.client_context())
    assert open_connection.get(f"{setup.url}/healthz").status_code == 200
    workers = setup.gateway.process.pid

    # SIGHUP: each worker loads the new pair into the context it listens with.
    second = setup.ca.issue("127.0.0.1")
    setup.install(second)
    setup.gateway.signal(signal.SIGHUP)
    wait_for(lambda: all(setup.serial() == second.serial for _ in range(6)), 10.0, "SIGHUP")

    # No signal at all: the files changing is enough (checked every second).
    third = setup.ca.issue("127.0.0.1")
    setup.install(third)
    wait_for(lambda: all(setup.serial() == third.serial for _ in range(6)), 10.0, "file change")

    # A broken pair (a certificate with another key) is refused; the last good one stays.
    fourth = setup.ca.issue("127.0.0.1")
    setup.key_file.write_bytes(setup.first.key_pem)
    setup.cert_file.write_bytes(fourth.cert_pem)
    wait_for(lambda: "listener certificate not reloaded" in setup.gateway.log(), 10.0, "refusal")
    time.sleep(0.5)
    assert all(setup.serial() == third.serial for _ in range(6))

    # Nothing restarted: same process, and the connection opened first still works.
    assert setup.gateway.process.pid == workers and setup.gateway.process.poll() is None
    assert open_connection.get(f"{setup.url}/healthz").status_code == 200
    open_connection.close()
