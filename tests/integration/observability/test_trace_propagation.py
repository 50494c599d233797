"""W3C trace context through a real gateway, spans exported over OTLP/HTTP to a real listener.

The collector is an HTTP server on loopback that keeps every POSTed export request; the
protobuf payload is decoded with opentelemetry-proto. The upstream is the legacy echo, which
reports the headers it received.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from helpers.gateway import GatewayProcess, run_gateway
from helpers.legacy import LegacyBackends, legacy_backends

__all__ = ["legacy_backends"]  # the fixture, imported so pytest finds it here

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"
TRACESTATE = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"


class Collector:
    """An OTLP/HTTP traces endpoint that records what it is sent."""

    def __init__(self) -> None:
        self.exports: list[tuple[str, str, bytes]] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                collector.exports.append((self.path, self.headers["content-type"], body))
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def spans(self) -> list[tuple[dict[str, Any], Span]]:
        """Every span received so far, with its resource's attributes."""
        found = []
        for _, _, body in self.exports:
            request = ExportTraceServiceRequest.FromString(body)
            for resource_spans in request.resource_spans:
                resource = attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    found += [(resource, span) for span in scope_spans.spans]
        return found


def attributes(pairs: Any) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        kind = pair.value.WhichOneof("value")
        out[pair.key] = getattr(pair.value, kind) if kind else None
    return out


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    collector = Collector()
    collector.thread.start()
    yield collector
    collector.server.shutdown()
    collector.server.server_close()


ROUTES = [{"name": "main", "match": {"prefix": "/api"}, "upstream": "main"}]


@pytest.fixture(scope="module")
def traced(
    legacy_backends: LegacyBackends,
    collector: Collector,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GatewayProcess]:
    tracing = {"exporter": "otlp", "endpoint": collector.url, "service_name": "edge-test"}
    with run_gateway(
        tmp_path_factory.mktemp("traced"),
        {"main": {"targets": [legacy_backends.main_url]}},
        ROUTES,
        extra={"observability": {"tracing": tracing}},
        env={"OTEL_BSP_SCHEDULE_DELAY": "50"},  # export within 50 ms, not 5 s
        drain_seconds=1,
    ) as gateway:
        yield gateway


def echoed(
    gateway: GatewayProcess, headers: dict[str, str]
) -> tuple[httpx.Response, dict[str, list[str]]]:
    response = httpx.get(gateway.url + "/api/echo/traced?api_key=zzz", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    received: dict[str, list[str]] = {}
    for name, value in response.json()["headers"]:
        received.setdefault(name, []).append(value)
    return response, received


def test_the_upstream_continues_the_clients_trace_under_the_gateways_span(
    traced: GatewayProcess, collector: Collector
) -> None:
    response, received = echoed(traced, {"traceparent": TRACEPARENT, "tracestate": TRACESTATE})
    (traceparent,) = received["traceparent"]
    version, trace_id, parent_id, flags = traceparent.split("-")
    assert (version, trace_id, flags) == ("00", TRACE_ID, "01")
    assert parent_id != CLIENT_SPAN  # the gateway's span, not the client's
    assert received["tracestate"] == [TRACESTATE]

    deadline = time.monotonic() + 10
    while not (spans := [s for s in collector.spans() if s[1].span_id.hex() == parent_id]):
        assert time.monotonic() < deadline, f"span {parent_id} never exported"
        time.sleep(0.05)
    (resource, span), *others = spans
    assert others == []
    assert collector.exports[0][0] == "/v1/traces"
    assert collector.exports[0][1] == "application/x-protobuf"
    assert resource["service.name"] == "edge-test"
    assert span.trace_id.hex() == TRACE_ID
    assert span.parent_span_id.hex() == CLIENT_SPAN
    assert span.kind == Span.SpanKind.SPAN_KIND_SERVER
    assert span.name == "GET /api"
    assert attributes(span.attributes) == {
        "http.request.method": "GET",
        "url.scheme": "http",
        "url.path": "/api/echo/traced",  # never the query string
        "onegate.request_id": response.headers["x-request-id"],
        "http.response.status_code": 200,
        "http.route": "/api",
        "onegate.route": "main",
        "onegate.upstream": "main",
        "onegate.target": traced_target(traced),
    }


def traced_target(gateway: GatewayProcess) -> str:
    readiness = httpx.get(gateway.url + "/readyz", timeout=5).json()
    url: str = readiness["upstreams"]["main"]["targets"][0]["url"]
    return url


def test_a_request_without_a_trace_starts_one(traced: GatewayProcess, collector: Collector) -> None:
    _, received = echoed(traced, {})
    (traceparent,) = received["traceparent"]
    _, trace_id, parent_id, _ = traceparent.split("-")
    deadline = time.monotonic() + 10
    while not (spans := [s for _, s in collector.spans() if s.span_id.hex() == parent_id]):
        assert time.monotonic() < deadline, f"span {parent_id} never exported"
        time.sleep(0.05)
    assert spans[0].trace_id.hex() == trace_id
    assert spans[0].parent_span_id == b""


def test_with_tracing_off_the_clients_headers_pass_untouched(
    legacy_backends: LegacyBackends, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with run_gateway(
        tmp_path_factory.mktemp("untraced"),
        {"main": {"targets": [legacy_backends.main_url]}},
        ROUTES,
        drain_seconds=1,
    ) as gateway:
        _, received = echoed(gateway, {"traceparent": TRACEPARENT, "tracestate": TRACESTATE})
        assert received["traceparent"] == [TRACEPARENT]
        assert received["tracestate"] == [TRACESTATE]
        _, received = echoed(gateway, {})
        assert "traceparent" not in received
