"""Spans and W3C propagation, read back from the SDK's in-memory exporter."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from onegate.errors import UpstreamConnectError
from onegate.gateway.config import Match, RouteConfig, UpstreamConfig
from onegate.gateway.exchange import Exchange
from onegate.gateway.routing import Route, RouteMatch
from onegate.gateway.upstreams import Upstream
from onegate.observability.config import TracingConfig
from onegate.observability.tracing import TRACE_HEADERS, Tracing

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracing(exporter: InMemorySpanExporter) -> Iterator[Tracing]:
    tracing = Tracing(TracingConfig(exporter="console", service_name="edge"), exporter)
    yield tracing
    tracing.shutdown()


def scope(*headers: tuple[bytes, bytes]) -> dict[str, object]:
    return {"type": "http", "scheme": "http", "headers": list(headers)}


def routed(exchange: Exchange) -> Exchange:
    upstream = Upstream("main", UpstreamConfig(targets=["http://127.0.0.1:3000"]))
    config = RouteConfig(name="users", match=Match(path="/users/{id}"), upstream="main")
    exchange.match = RouteMatch(Route(config, 0), {"id": "1"}, "/users/1")
    exchange.upstream = upstream
    exchange.target = upstream.targets[0]
    return exchange


def test_the_client_trace_continues_through_the_gateway_span(
    tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    exchange = Exchange("req-1")
    incoming = scope(
        (b"traceparent", f"00-{TRACE_ID}-{CLIENT_SPAN}-01".encode()),
        (b"tracestate", b"vendor=abc"),
    )
    span = tracing.start(incoming, exchange, "GET")
    sent = dict(exchange.upstream_headers or [])
    version, trace_id, parent_id, flags = sent[b"traceparent"].decode().split("-")
    assert (version, trace_id) == ("00", TRACE_ID)
    assert int(flags, 16) & 1  # sampled, as the client's was
    assert parent_id == format(span.get_span_context().span_id, "016x") != CLIENT_SPAN
    assert sent[b"tracestate"] == b"vendor=abc"
    assert exchange.drop_upstream_headers >= TRACE_HEADERS  # the client's copies stay behind

    routed(exchange).status = 200
    tracing.finish(span, exchange, "GET", "/users/1")
    tracing.provider.force_flush()
    (finished,) = exporter.get_finished_spans()
    assert finished.kind is SpanKind.SERVER
    assert finished.name == "GET /users/{id}"
    assert finished.parent is not None and format(finished.parent.span_id, "016x") == CLIENT_SPAN
    assert finished.resource.attributes["service.name"] == "edge"
    assert dict(finished.attributes or {}) == {
        "http.request.method": "GET",
        "url.scheme": "http",
        "url.path": "/users/1",
        "onegate.request_id": "req-1",
        "http.response.status_code": 200,
        "http.route": "/users/{id}",
        "onegate.route": "users",
        "onegate.upstream": "main",
        "onegate.target": "http://127.0.0.1:3000",
    }
    assert finished.status.status_code is StatusCode.UNSET


def test_without_a_client_trace_a_new_one_starts(
    tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    exchange = Exchange("req-2")
    span = tracing.start(scope((b"traceparent", b"not-a-traceparent")), exchange, "POST")
    sent = dict(exchange.upstream_headers or [])
    trace_id = sent[b"traceparent"].decode().split("-")[1]
    assert trace_id == format(span.get_span_context().trace_id, "032x") != "0" * 32
    assert b"tracestate" not in sent

    exchange.status = 502
    exchange.error = UpstreamConnectError("refused")
    tracing.finish(span, exchange, "POST", "/nowhere")
    tracing.provider.force_flush()
    (finished,) = exporter.get_finished_spans()
    assert finished.parent is None
    assert finished.status.status_code is StatusCode.ERROR
    assert (finished.attributes or {})["error.type"] == "upstream-unreachable"


def test_a_sampled_out_request_still_propagates(exporter: InMemorySpanExporter) -> None:
    tracing = Tracing(TracingConfig(exporter="console", sample_ratio=0), exporter)
    try:
        exchange = Exchange("req-3")
        span = tracing.start(scope(), exchange, "GET")
        flags = dict(exchange.upstream_headers or [])[b"traceparent"].decode().split("-")[3]
        assert int(flags, 16) & 1 == 0  # not sampled (bit 2 may flag a random trace id)
        tracing.finish(span, exchange, "GET", "/")
        tracing.provider.force_flush()
        assert exporter.get_finished_spans() == ()
    finally:
        tracing.shutdown()
