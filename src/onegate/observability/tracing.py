"""OpenTelemetry tracing: a SERVER span per request, whose context the upstream receives.

With tracing on, the gateway continues the client's W3C trace (``traceparent`` and
``tracestate``), starts its own span, and sends the upstream a ``traceparent`` naming that span
as the parent; the client's own trace headers are not forwarded. With the exporter ``none``
nothing here runs at all, and the client's headers reach the upstream untouched.

Spans are exported in batches from a background thread (``BatchSpanProcessor``; the
``OTEL_BSP_*`` variables tune it), and flushed when the worker shuts down.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from onegate.observability.config import TracingConfig
from onegate.observability.observed import ObservedExchange

if TYPE_CHECKING:
    from onegate.types import Scope

#: The client's trace headers, replaced by the gateway's when tracing is on.
TRACE_HEADERS = frozenset({b"traceparent", b"tracestate"})

Headers = Sequence[tuple[bytes, bytes]]


class _AsgiHeaders(Getter[Headers]):
    """Reads propagation fields from ASGI headers (lower-case byte pairs)."""

    def get(self, carrier: Headers, key: str) -> list[str] | None:
        name = key.lower().encode("latin-1")
        values = [value.decode("latin-1") for header, value in carrier if header == name]
        return values or None

    def keys(self, carrier: Headers) -> list[str]:
        return [header.decode("latin-1") for header, _ in carrier]


_GETTER = _AsgiHeaders()


def _one_line(span: ReadableSpan) -> str:
    # One line per span: the console exporter shares stderr with the server's own logs.
    line: str = span.to_json(indent=None)
    return line + os.linesep


def _exporter(config: TracingConfig) -> SpanExporter:
    if config.exporter == "console":
        return ConsoleSpanExporter(out=sys.stderr, formatter=_one_line)
    # Imported only when used: it brings in requests and protobuf.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=config.endpoint)


class Tracing:
    """A tracer provider for one tracing configuration, in one worker process."""

    def __init__(self, config: TracingConfig, exporter: SpanExporter | None = None) -> None:
        """``exporter`` replaces the one ``config`` names (tests read spans from memory)."""
        self.config = config
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": config.service_name}),
            sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)),
        )
        self.provider.add_span_processor(BatchSpanProcessor(exporter or _exporter(config)))
        self.tracer = self.provider.get_tracer("onegate")
        self.propagator = TraceContextTextMapPropagator()

    def start(self, scope: Scope, exchange: ObservedExchange, method: str) -> Span:
        """Start the request's span and have the proxy send its context upstream."""
        parent = self.propagator.extract(scope["headers"], getter=_GETTER)
        span = self.tracer.start_span(
            method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": method,
                "url.scheme": scope.get("scheme", "http"),
                "onegate.request_id": exchange.request_id,
            },
        )
        carrier: dict[str, str] = {}
        self.propagator.inject(carrier, context=trace.set_span_in_context(span))
        for name, value in carrier.items():
            exchange.add_upstream_header(name.encode("latin-1"), value.encode("latin-1"))
        exchange.drop_upstream_headers = exchange.drop_upstream_headers | TRACE_HEADERS
        return span

    def finish(self, span: Span, exchange: ObservedExchange, method: str, path: str) -> None:
        """Describe the outcome and end the span (it is exported later, in a batch)."""
        status = exchange.status
        span.set_attribute("url.path", path)
        if status:
            span.set_attribute("http.response.status_code", status)
        route = exchange.route_name
        if route is not None:
            template = exchange.route_template or ""
            span.set_attribute("http.route", template)
            span.set_attribute("onegate.route", route)
            span.update_name(f"{method} {template}")
        upstream = exchange.upstream_name
        if upstream is not None:
            span.set_attribute("onegate.upstream", upstream)
        target = exchange.target_url
        if target is not None:
            span.set_attribute("onegate.target", target)
        principal = exchange.principal_id
        if principal is not None:
            span.set_attribute("enduser.id", principal)
        error = exchange.error
        if error is not None:
            span.set_attribute("error.type", error.slug)
        # Server spans are errors for 5xx only: a 4xx is the client's mistake, not ours.
        if status >= 500 or status == 0:
            span.set_status(Status(StatusCode.ERROR, error.slug if error is not None else None))
        span.end()

    def shutdown(self) -> None:
        """Export what is still queued, then stop the exporter's thread."""
        self.provider.shutdown()
