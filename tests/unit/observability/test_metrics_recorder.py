"""The metrics recorder: what a scrape shows after known requests, in one process.

Real prometheus_client objects in a private registry; the exposition is parsed with
prometheus_client's own parser, as Prometheus would read it.
"""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from onegate.errors import (
    CircuitOpen,
    Forbidden,
    OnegateError,
    RouteNotFound,
    ShuttingDown,
    TooManyRequests,
    Unauthorized,
    UpstreamConnectError,
    UpstreamTimeout,
)
from onegate.gateway.config import Match, RouteConfig, UpstreamConfig
from onegate.gateway.exchange import Exchange
from onegate.gateway.routing import Route, RouteMatch
from onegate.gateway.upstreams import Upstream
from onegate.http import BreakerState
from onegate.observability.families import DURATION_BUCKETS, Families
from onegate.observability.recorder import (
    TALLY_LIMIT,
    MetricsRecorder,
    add_observations,
    status_class,
)

Labels = tuple[tuple[str, str], ...]


def refused(reason: str) -> Unauthorized:
    return Unauthorized("refused", reason=reason, www_authenticate="Bearer")


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def recorder(registry: CollectorRegistry) -> MetricsRecorder:
    return MetricsRecorder(Families(registry))


UPSTREAM = Upstream(
    "backend", UpstreamConfig(targets=["http://127.0.0.1:9", "http://127.0.0.1:10"])
)


def exchange(
    status: int,
    *,
    route: str | None = "users",
    error: OnegateError | None = None,
    reached_upstream: bool = True,
) -> Exchange:
    exchange = Exchange("request-1")
    exchange.status = status
    exchange.error = error
    if route is not None:
        config = RouteConfig(name=route, match=Match(prefix="/users"), upstream="backend")
        exchange.match = RouteMatch(Route(config, 0), {}, "/users/1")
        exchange.upstream = UPSTREAM
        if reached_upstream:
            exchange.target = UPSTREAM.targets[0]
    return exchange


def samples(registry: CollectorRegistry) -> dict[tuple[str, Labels], float]:
    """Every sample of the exposition, keyed by name and sorted labels."""
    text = generate_latest(registry).decode()
    found: dict[tuple[str, Labels], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def request_labels(route: str, upstream: str, method: str, status_class: str) -> Labels:
    labels = {"route": route, "upstream": upstream, "method": method, "status_class": status_class}
    return tuple(sorted(labels.items()))


def test_requests_and_latency_after_known_traffic(
    recorder: MetricsRecorder, registry: CollectorRegistry
) -> None:
    for duration in (0.0005, 0.003, 0.003, 0.2, 75.0):
        recorder.record(exchange(200), "GET", duration)
    recorder.record(exchange(503, error=CircuitOpen("open")), "GET", 0.001)
    recorder.record(exchange(201), "POST", 0.01)
    recorder.flush()

    found = samples(registry)
    ok = request_labels("users", "backend", "GET", "2xx")
    assert found[("onegate_requests_total", ok)] == 5
    assert found[("onegate_requests_total", request_labels("users", "backend", "GET", "5xx"))] == 1
    assert found[("onegate_requests_total", request_labels("users", "backend", "POST", "2xx"))] == 1
    assert found[("onegate_request_duration_seconds_count", ok)] == 5
    assert found[("onegate_request_duration_seconds_sum", ok)] == pytest.approx(75.2065)
    cumulative = {
        le: found[("onegate_request_duration_seconds_bucket", tuple(sorted((*ok, ("le", le)))))]
        for le in ("0.001", "0.005", "0.1", "0.25", "60.0", "+Inf")
    }
    assert cumulative == {"0.001": 1, "0.005": 3, "0.1": 3, "0.25": 4, "60.0": 4, "+Inf": 5}


def test_counts_accumulate_until_flushed_then_carry_on(
    recorder: MetricsRecorder, registry: CollectorRegistry
) -> None:
    ok = ("onegate_requests_total", request_labels("users", "backend", "GET", "2xx"))
    recorder.record(exchange(200), "GET", 0.001)
    assert samples(registry)[ok] == 0  # counted, not handed over yet
    recorder.flush()
    assert samples(registry)[ok] == 1
    recorder.record(exchange(200), "GET", 0.001)
    recorder.record(exchange(200), "GET", 0.001)
    recorder.flush()
    recorder.flush()  # nothing new: nothing added twice
    assert samples(registry)[ok] == 3


def test_unrouted_requests_and_odd_methods_have_bounded_labels(
    recorder: MetricsRecorder, registry: CollectorRegistry
) -> None:
    recorder.record(exchange(404, route=None, error=RouteNotFound()), "GET", 0.001)
    recorder.record(exchange(404, route=None, error=RouteNotFound()), "BREW", 0.001)
    recorder.record(exchange(101), "WEBSOCKET", 12.0)
    recorder.flush()
    found = samples(registry)
    assert found[("onegate_requests_total", request_labels("none", "none", "GET", "4xx"))] == 1
    assert found[("onegate_requests_total", request_labels("none", "none", "OTHER", "4xx"))] == 1
    websocket = request_labels("users", "backend", "WEBSOCKET", "1xx")
    assert found[("onegate_requests_total", websocket)] == 1


@pytest.mark.parametrize(
    ("status", "label"),
    [
        (0, "none"),
        (101, "1xx"),
        (200, "2xx"),
        (304, "3xx"),
        (499, "4xx"),
        (504, "5xx"),
        (600, "none"),
    ],
)
def test_status_classes(status: int, label: str) -> None:
    assert status_class(status) == label


def test_upstream_errors_by_kind(recorder: MetricsRecorder, registry: CollectorRegistry) -> None:
    recorder.record(exchange(502, error=UpstreamConnectError("refused")), "GET", 0.001)
    recorder.record(exchange(502, error=UpstreamConnectError("refused")), "GET", 0.001)
    recorder.record(exchange(503, error=CircuitOpen("open")), "GET", 0.001)
    # A stream cut by the upstream after its 200 went out: the error's status counts.
    recorder.record(exchange(200, error=UpstreamTimeout("stalled")), "GET", 0.001)
    recorder.record(exchange(502), "GET", 0.001)  # the upstream's own 502: not the gateway's
    # The gateway's own 503s are not about the upstream.
    recorder.record(exchange(503, error=ShuttingDown("draining")), "GET", 0.001)
    recorder.flush()
    found = samples(registry)
    errors = {
        dict(labels)["kind"]: value
        for (name, labels), value in found.items()
        if name == "onegate_upstream_errors_total"
    }
    assert errors == {"upstream-unreachable": 2, "circuit-open": 1, "upstream-timeout": 1}


def test_auth_failures_by_reason_and_rate_limits(
    recorder: MetricsRecorder, registry: CollectorRegistry
) -> None:
    recorder.record(exchange(401, error=refused("expired"), reached_upstream=False), "GET", 0)
    recorder.record(exchange(401, error=refused("expired"), reached_upstream=False), "GET", 0)
    recorder.record(
        exchange(403, error=Forbidden("no", reason="insufficient_scope"), reached_upstream=False),
        "GET",
        0,
    )
    # Answered by a stage that left no error behind: nothing reached an upstream, so it
    # was still the gateway's refusal.
    recorder.record(exchange(401, reached_upstream=False), "GET", 0)
    recorder.record(exchange(401), "GET", 0)  # the upstream's own 401: not counted
    recorder.record(
        exchange(429, error=TooManyRequests("slow down", retry_after=1), reached_upstream=False),
        "GET",
        0,
    )
    recorder.record(exchange(429, reached_upstream=False), "GET", 0)
    recorder.record(exchange(429), "GET", 0)  # the upstream's own 429
    recorder.flush()
    found = samples(registry)
    reasons = {
        dict(labels)["reason"]: value
        for (name, labels), value in found.items()
        if name == "onegate_auth_failures_total"
    }
    assert reasons == {"expired": 2, "insufficient_scope": 1, "unknown": 1}
    assert found[("onegate_rate_limited_total", (("route", "users"),))] == 2


def test_free_form_reasons_cannot_grow_series_without_bound(
    recorder: MetricsRecorder, registry: CollectorRegistry
) -> None:
    for index in range(TALLY_LIMIT + 50):
        error = refused(f"reason-{index}")
        recorder.record(exchange(401, error=error, reached_upstream=False), "GET", 0)
    recorder.flush()
    found = samples(registry)
    series = [labels for name, labels in found if name == "onegate_auth_failures_total"]
    assert len(series) == TALLY_LIMIT + 1
    assert found[("onegate_auth_failures_total", (("reason", "other"), ("route", "none")))] == 50


def test_in_flight_is_written_on_flush(
    recorder: MetricsRecorder, registry: CollectorRegistry
) -> None:
    recorder.in_flight = 3
    recorder.flush()
    assert samples(registry)[("onegate_requests_in_flight", ())] == 3
    recorder.in_flight = 0
    recorder.flush()
    assert samples(registry)[("onegate_requests_in_flight", ())] == 0


def test_target_gauges_follow_health_and_breakers(
    recorder: MetricsRecorder, registry: CollectorRegistry
) -> None:
    upstream = Upstream(
        "api", UpstreamConfig(targets=["http://127.0.0.1:9", "http://127.0.0.1:10"])
    )
    first, second = upstream.targets
    recorder.refresh_targets([upstream])

    def state() -> dict[str, tuple[float, float]]:
        found = samples(registry)
        out = {}
        for target in (first, second):
            labels = (("target", target.url), ("upstream", "api"))
            out[target.url] = (
                found[("onegate_upstream_target_healthy", labels)],
                found[("onegate_breaker_state", labels)],
            )
        return out

    assert state() == {first.url: (1, 0), second.url: (1, 0)}
    first.healthy = False
    for _ in range(upstream.config.breaker.failure_threshold):
        ticket = second.breaker.acquire()
        assert ticket is not None
        second.breaker.release(ticket, False)
    assert second.breaker.state is BreakerState.OPEN
    recorder.refresh_targets([upstream])
    assert state() == {first.url: (0, 0), second.url: (1, 2)}
    second.breaker.state = BreakerState.HALF_OPEN
    recorder.refresh_targets([upstream])
    assert state()[second.url] == (1, 1)


def test_batched_observations_equal_one_observe_per_value() -> None:
    # Pins the prometheus_client internals add_observations writes to.
    values = [0.0001, 0.001, 0.0011, 0.04, 0.04, 0.7, 59.0, 60.0, 61.0, 1e6]
    one_by_one = CollectorRegistry()
    batched = CollectorRegistry()
    reference = Histogram("h", "h", buckets=DURATION_BUCKETS, registry=one_by_one)
    for value in values:
        reference.observe(value)
    histogram = Histogram("h", "h", buckets=DURATION_BUCKETS, registry=batched)
    bounds = [*DURATION_BUCKETS, float("inf")]
    counts = [
        sum(1 for v in values if v <= b and (i == 0 or v > bounds[i - 1]))
        for i, b in enumerate(bounds)
    ]
    add_observations(histogram, counts, sum(values))

    def without_created(registry: CollectorRegistry) -> list[str]:
        text = generate_latest(registry).decode()
        return [line for line in text.splitlines() if "_created" not in line]

    assert without_created(batched) == without_created(one_by_one)
