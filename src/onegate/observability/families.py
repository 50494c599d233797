"""The metric families onegate exports: names, labels, buckets, and how workers combine.

Every label value comes from the configuration or from a fixed set (route and upstream names,
methods, status classes, error slugs), never from a raw path or header, so the number of
series stays bounded whatever clients send.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from onegate.observability.multiprocess import ensure_multiprocess_values

REQUEST_LABELS = ("route", "upstream", "method", "status_class")
TARGET_LABELS = ("upstream", "target")

#: Seconds. Dense below 100 ms, where the gateway's own cost and fast upstreams live; sparse up
#: to a minute for slow upstreams. Longer exchanges (streams, WebSockets) land in +Inf.
DURATION_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


class Families:
    """One set of metric objects per process.

    ``registry`` is None in multiprocess mode: values then live in the shared files, and a
    scrape reads them through a ``MultiProcessCollector`` instead of a registry.
    """

    def __init__(self, registry: CollectorRegistry | None) -> None:
        ensure_multiprocess_values()
        self.requests = Counter(
            "onegate_requests_total",
            "Requests answered, by route, upstream, method and status class.",
            REQUEST_LABELS,
            registry=registry,
        )
        self.duration = Histogram(
            "onegate_request_duration_seconds",
            "Time from the request's arrival to the end of its response.",
            REQUEST_LABELS,
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        # Summed over live workers: a dead worker's requests are no longer in flight.
        self.in_flight = Gauge(
            "onegate_requests_in_flight",
            "Requests being handled now.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.upstream_errors = Counter(
            "onegate_upstream_errors_total",
            "Errors the gateway answered because of an upstream (502, 503, 504), by kind.",
            ("upstream", "kind"),
            registry=registry,
        )
        # Each worker probes and breaks on its own. The worst view among live workers is the
        # one that matters: a target one worker has ejected is already losing that worker's
        # traffic. So healthy is the minimum, and the breaker state the maximum.
        self.target_healthy = Gauge(
            "onegate_upstream_target_healthy",
            "1 if the target passes its health checks (in every worker), 0 otherwise.",
            TARGET_LABELS,
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.breaker_state = Gauge(
            "onegate_breaker_state",
            "Circuit breaker of the target: 0 closed, 1 half-open, 2 open (worst worker).",
            TARGET_LABELS,
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.upstream_tls_failures = Counter(
            "onegate_upstream_tls_failures_total",
            "Requests answered 502 because TLS with the upstream failed, by reason (expired, "
            "not-yet-valid, unknown-ca, name-mismatch, revoked, invalid-certificate, "
            "client-certificate-refused, handshake).",
            ("upstream", "reason"),
            registry=registry,
        )
        self.auth_failures = Counter(
            "onegate_auth_failures_total",
            "Requests refused by the gateway's authentication (401, 403), by reason.",
            ("route", "reason"),
            registry=registry,
        )
        self.rate_limit_skipped = Counter(
            "onegate_rate_limit_skipped_total",
            "Requests let through unchecked while the rate-limit store was unreachable "
            "(on_store_error: open).",
            ("route",),
            registry=registry,
        )
        self.rate_limited = Counter(
            "onegate_rate_limited_total",
            "Requests refused by the gateway's rate limits (429).",
            ("route",),
            registry=registry,
        )
        self.connections_closed = Counter(
            "onegate_client_connections_closed_total",
            "Client connections the gateway closed or refused itself (timeouts, limits, "
            "capacity, drain), by reason.",
            ("reason",),
            registry=registry,
        )
        self.connections_open = Gauge(
            "onegate_client_connections_open",
            "Client connections open now, HTTP and WebSocket (summed over live workers).",
            registry=registry,
            multiprocess_mode="livesum",
        )
