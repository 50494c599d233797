"""TLS to upstreams: real TLS servers on loopback, certificates from a CA made in the test.

The gateway runs in process (its upstream transport is the same as in a served gateway); each
case is its own upstream and route. What is checked: verification is on by default (the
system trust store does not know the test CA), a configured CA bundle, the name checked (the
target's host or ``tls.server_name``, which is also what SNI carries), mutual TLS, pooled TLS
connections, health checks and breakers over TLS, and that every refusal is a 502 problem
document saying why, counted in ``onegate_upstream_tls_failures_total`` by reason.
"""

from __future__ import annotations

import datetime
import re
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers.inprocess import InProcessGateway, run_in_process
from helpers.problems import assert_problem
from helpers.tls import CertificateAuthority, Issued, TlsHttpServer
from helpers.upstreams import RawUpstream, Reply

NOW = datetime.datetime.now(datetime.UTC)
DAY = datetime.timedelta(days=1)
NO_RETRY = {"attempts": 0}
TLS_ERROR = "upstream-tls-error"


@dataclass
class Servers:
    """The TLS upstreams of this module, by case."""

    directory: Path
    ca: CertificateAuthority
    clients: CertificateAuthority
    upstreams: dict[str, RawUpstream] = field(default_factory=dict)
    sni: dict[str, list[str | None]] = field(default_factory=dict)
    mtls: TlsHttpServer | None = None
    """Requires a client certificate signed by ``clients``."""

    def start(self, name: str, issued: Issued) -> None:
        context = issued.server_context(self.directory)
        seen = self.sni.setdefault(name, [])
        context.sni_callback = lambda _socket, server_name, _context: seen.append(server_name)
        upstream = RawUpstream(default=Reply(200, f"hello from {name}".encode()), tls=context)
        self.upstreams[name] = upstream.start()

    def close(self) -> None:
        for upstream in self.upstreams.values():
            upstream.close()
        if self.mtls is not None:
            self.mtls.close()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    directory = tmp_path_factory.mktemp("tls-upstreams")
    ca, rogue, clients = (CertificateAuthority(n) for n in ("test CA", "rogue CA", "client CA"))
    servers = Servers(directory, ca, clients)
    try:
        servers.start("good", ca.issue("127.0.0.1"))
        servers.start("rogue", rogue.issue("127.0.0.1"))
        servers.start(
            "expired", ca.issue("127.0.0.1", not_before=NOW - 3 * DAY, not_after=NOW - DAY)
        )
        servers.start("early", ca.issue("127.0.0.1", not_before=NOW + DAY, not_after=NOW + 3 * DAY))
        servers.start("named", ca.issue("api.internal"))
        mtls = ca.issue("127.0.0.1").server_context(directory, client_ca=clients)
        servers.mtls = TlsHttpServer(mtls, b"hello from mtls")
        servers.start("probed", ca.issue("127.0.0.1"))
        yield servers
    finally:
        servers.close()


@pytest.fixture(scope="module")
def gateway(
    servers: Servers, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InProcessGateway]:
    directory = tmp_path_factory.mktemp("tls-gateway")
    servers.ca.write(directory, "ca.pem")
    client_cert, client_key = servers.clients.issue("gateway", client=True).write(
        directory, "client"
    )
    # A CA bundle given relative to the config file, as an operator would write it.
    trusted = {"ca_file": "ca.pem"}
    up = servers.upstreams
    assert servers.mtls is not None
    mtls_url = servers.mtls.url

    def upstream(url: str, **settings: Any) -> dict[str, Any]:
        return {"targets": [url], **settings}

    upstreams = {
        "good": upstream(up["good"].url, tls=trusted),
        "system": upstream(up["good"].url),  # no CA file: the system trust store
        "rogue": upstream(up["rogue"].url, tls=trusted),
        "expired": upstream(up["expired"].url, tls=trusted),
        "early": upstream(up["early"].url, tls=trusted),
        "mismatch": upstream(up["named"].url, tls=trusted),
        "named": upstream(up["named"].url, tls={**trusted, "server_name": "api.internal"}),
        "mtls-none": upstream(mtls_url, tls=trusted),
        "mtls": upstream(
            mtls_url,
            tls={**trusted, "client_cert": str(client_cert), "client_key": str(client_key)},
        ),
        "breaker": upstream(
            up["rogue"].url,
            tls=trusted,
            breaker={"failure_threshold": 2, "first_probe_seconds": 30, "open_seconds": 30},
        ),
        "probed-bad": upstream(
            up["rogue"].url,
            tls=trusted,
            health={"path": "/health", "interval": 0.1, "timeout": 1, "unhealthy_threshold": 1},
        ),
        "probed-good": upstream(
            up["probed"].url,
            tls=trusted,
            health={"path": "/health", "interval": 0.1, "timeout": 1, "unhealthy_threshold": 1},
        ),
    }
    retries = {"breaker": NO_RETRY, "mtls-none": NO_RETRY}
    routes = [
        {
            "name": name,
            "match": {"prefix": f"/{name}"},
            "upstream": name,
            "retries": retries.get(name, {"attempts": 1}),
        }
        for name in upstreams
    ]
    # The CA file is next to the config file: run_in_process writes the config there.
    with run_in_process(directory, upstreams, routes) as gateway:
        yield gateway


@pytest.fixture
def client(gateway: InProcessGateway) -> Iterator[httpx.Client]:
    with gateway.client(timeout=10.0) as client:
        yield client


def tls_failures(client: httpx.Client) -> dict[tuple[str, str], float]:
    """``(upstream, reason)``: count, as the gateway's /metrics shows them now."""
    scrape = client.get("/metrics").text
    found: dict[tuple[str, str], float] = {}
    for line in re.findall(r"^onegate_upstream_tls_failures_total\{.*$", scrape, re.MULTILINE):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
        found[(labels["upstream"], labels["reason"])] = float(line.rsplit(" ", 1)[1])
    return found


def test_a_certificate_signed_by_the_configured_ca_is_accepted(
    client: httpx.Client, servers: Servers
) -> None:
    response = client.get("/good/x")
    assert response.status_code == 200
    assert response.text == "hello from good"
    request = servers.upstreams["good"].requests[-1]
    assert request.path == "/good/x"
    # Host stays the target's address; SNI is not sent for an IP address (RFC 6066).
    assert request.header("host") == f"127.0.0.1:{servers.upstreams['good'].port}"


def test_verification_is_on_by_default_against_the_system_trust_store(client: httpx.Client) -> None:
    before = tls_failures(client).get(("system", "unknown-ca"), 0.0)
    document = assert_problem(client.get("/system"), 502, TLS_ERROR)
    assert "unknown CA" in document["detail"]
    assert "tls.ca_file" in document["detail"]
    assert tls_failures(client)[("system", "unknown-ca")] == before + 1


@pytest.mark.parametrize(
    ("name", "reason", "says"),
    [
        ("rogue", "unknown-ca", "unknown CA"),
        ("expired", "expired", "expired"),
        ("early", "not-yet-valid", "not valid yet"),
        ("mismatch", "name-mismatch", "name mismatch"),
    ],
)
def test_a_refused_certificate_is_a_502_that_says_why(
    client: httpx.Client, servers: Servers, name: str, reason: str, says: str
) -> None:
    before = tls_failures(client).get((name, reason), 0.0)
    # Health probes of the "probed" server are requests too: left out of the count.
    reached = [u for n, u in servers.upstreams.items() if n != "probed"]
    requests_before = sum(len(u.requests) for u in reached)
    document = assert_problem(client.get(f"/{name}/secret"), 502, TLS_ERROR)
    assert says in document["detail"]
    assert "127.0.0.1:" in document["detail"]
    if reason == "name-mismatch":
        assert "'127.0.0.1'" in document["detail"]
    counted = tls_failures(client)
    assert counted[(name, reason)] == before + 1
    # Every other reason label is absent for this upstream: the reason is exact.
    assert {r for (u, r) in counted if u == name} == {reason}
    # The request never reached any server: the handshake failed first.
    assert sum(len(u.requests) for u in reached) == requests_before


def test_a_configured_server_name_is_sent_in_sni_and_checked(
    client: httpx.Client, servers: Servers
) -> None:
    response = client.get("/named")
    assert response.status_code == 200
    assert response.text == "hello from named"
    assert servers.sni["named"][-1] == "api.internal"
    # Without it, the target's host is what is checked (and an IP address is not sent in SNI).
    assert_problem(client.get("/mismatch"), 502, TLS_ERROR)
    assert servers.sni["named"][-1] is None


def test_mutual_tls_needs_the_client_certificate(client: httpx.Client, servers: Servers) -> None:
    before = tls_failures(client).get(("mtls-none", "client-certificate-refused"), 0.0)
    document = assert_problem(client.get("/mtls-none"), 502, TLS_ERROR)
    assert "client certificate" in document["detail"]
    assert tls_failures(client)[("mtls-none", "client-certificate-refused")] == before + 1
    assert servers.mtls is not None and servers.mtls.requests == 0

    response = client.get("/mtls/in")
    assert response.status_code == 200
    assert response.text == "hello from mtls"
    assert servers.mtls.requests == 1


def test_the_pool_reuses_tls_connections(client: httpx.Client, servers: Servers) -> None:
    upstream = servers.upstreams["good"]
    for _ in range(3):  # the first may open a connection, if none is pooled yet
        assert client.get("/good/warm").status_code == 200
    connections = upstream.connections
    for _ in range(10):
        assert client.get("/good/again").status_code == 200
    assert upstream.count(path="/good/again") == 10
    assert upstream.connections == connections  # one handshake, then reuse


def test_the_breaker_opens_on_tls_failures(client: httpx.Client) -> None:
    for _ in range(2):
        assert_problem(client.get("/breaker"), 502, TLS_ERROR)
    assert_problem(client.get("/breaker"), 503, "circuit-open")


def test_health_checks_run_over_tls(client: httpx.Client, servers: Servers) -> None:
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        upstreams = client.get("/readyz").json()["upstreams"]
        if upstreams["probed-bad"]["available"] == 0 and servers.upstreams["probed"].count(
            path="/health"
        ):
            break
        time.sleep(0.05)
    assert upstreams["probed-bad"]["available"] == 0  # its certificate is refused
    assert upstreams["probed-good"]["available"] == 1
    assert servers.upstreams["probed"].count(path="/health") >= 1
    assert_problem(client.get("/probed-bad"), 503, "no-healthy-target")
    assert client.get("/probed-good").status_code == 200


def test_turning_verification_off_accepts_any_certificate(servers: Servers, tmp_path: Path) -> None:
    upstreams = {"any": {"targets": [servers.upstreams["rogue"].url], "tls": {"verify": False}}}
    routes = [{"name": "any", "match": {"prefix": "/"}, "upstream": "any"}]
    with run_in_process(tmp_path, upstreams, routes) as gateway, gateway.client() as client:
        response = client.get("/anything")
    assert response.status_code == 200
    assert response.text == "hello from rogue"


def test_an_unreadable_ca_file_is_a_config_error(tmp_path: Path) -> None:
    from onegate.errors import ConfigError
    from onegate.gateway.config import Config, GatewayConfig
    from onegate.gateway.runtime import Runtime

    config = GatewayConfig.model_validate(
        {
            "upstreams": {
                "a": {
                    "targets": ["https://127.0.0.1:1"],
                    "tls": {"ca_file": str(tmp_path / "no.pem")},
                }
            }
        }
    )
    with pytest.raises(ConfigError) as caught:
        Runtime(Config(config))
    assert "upstreams.a.tls.ca_file" in str(caught.value)
    assert "no.pem" in str(caught.value)
    # A plain http:// upstream ignores the settings (the file is never read).
    plain = GatewayConfig.model_validate(
        {"upstreams": {"a": {"targets": ["http://127.0.0.1:1"], "tls": {"ca_file": "no.pem"}}}}
    )
    Runtime(Config(plain))


def test_client_key_without_a_certificate_is_refused() -> None:
    from pydantic import ValidationError

    from onegate.gateway.config import UpstreamTls

    with pytest.raises(ValidationError, match="client_key needs client_cert"):
        UpstreamTls(client_key="k.pem")
    assert ssl.HAS_SNI
