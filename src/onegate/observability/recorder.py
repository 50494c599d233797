"""Request metrics on the hot path: counted in plain Python, handed to prometheus in batches.

In multiprocess mode every prometheus_client value write takes a lock and packs two doubles
into a memory-mapped file. One request's worth (a counter, a histogram observation, the
in-flight gauge up and down) measured ~7 us of CPU on the project's VM, most of the budget
of 10 us for metrics and the access log together. So a request only adds to a few integers
in a dict keyed by its labels (~1 us), and :meth:`MetricsRecorder.flush` hands the sums to
prometheus_client every 100 ms and before every scrape. The price: a scrape may miss another
worker's last 100 ms, and a worker that is killed loses them.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from onegate.errors import (
    TLS_FAILURE_REASONS,
    CircuitOpen,
    NoHealthyTarget,
    UpstreamError,
    UpstreamTlsError,
)
from onegate.http import KNOWN_METHODS, BreakerState
from onegate.observability.families import DURATION_BUCKETS, Families
from onegate.observability.observed import ObservedExchange, ObservedUpstream

if TYPE_CHECKING:
    from prometheus_client import Counter, Histogram

    from onegate.errors import OnegateError

NO_ROUTE = "none"
"""Route (and upstream) label of requests that matched no route: 404s, 405s, bad requests."""

WEBSOCKET = "WEBSOCKET"
"""Method label of WebSocket sessions, so their lifetimes stay out of GET latencies."""

_METHODS = KNOWN_METHODS | {WEBSOCKET}
_STATUS_CLASSES = ("none", "1xx", "2xx", "3xx", "4xx", "5xx")
#: The gateway's errors that are about an upstream (502/503/504). Other 5xx the gateway
#: answers (shutting down, rate-limit store unavailable) are its own, not the upstream's.
_UPSTREAM_ERRORS = (UpstreamError, CircuitOpen, NoHealthyTarget)
_AUTH_FAILURES = frozenset({401, 403})
_REFUSALS = _AUTH_FAILURES | {429}
_BREAKER_VALUES = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}

#: Distinct label sets one counter of rare events may grow to; beyond, the free-form label
#: (an auth failure's reason, which another package chooses) becomes "other".
TALLY_LIMIT = 1000


def status_class(status: int) -> str:
    index = status // 100
    return _STATUS_CLASSES[index] if 0 < index < len(_STATUS_CLASSES) else "none"


def add_observations(child: Histogram, buckets: list[int], total: float) -> None:
    """Add many observations to a histogram child at once: ``buckets[i]`` fell in bucket i.

    prometheus_client only observes one value at a time, and each observation costs two
    value writes; its per-bucket values are the only way to add a batch. Their layout (one
    non-cumulative value per bucket, plus a sum) is pinned by a unit test that compares this
    with one ``observe`` per value.
    """
    values: Any = child
    for index, count in enumerate(buckets):
        if count:
            values._buckets[index].inc(count)
    values._sum.inc(total)


class _Series:
    """What one label set of the request metrics has gathered since the last flush."""

    __slots__ = ("buckets", "count", "counter", "histogram", "total")

    def __init__(self, counter: Counter, histogram: Histogram, size: int) -> None:
        self.counter = counter
        self.histogram = histogram
        self.count = 0
        self.total = 0.0
        self.buckets = [0] * size


class _Tally:
    """Pending increments of a labelled counter of rare events."""

    def __init__(self, family: Counter, overflow: tuple[str, ...] | None = None) -> None:
        self.family = family
        self.overflow = overflow
        self.children: dict[tuple[str, ...], Counter] = {}
        self.pending: dict[tuple[str, ...], int] = {}

    def add(self, labels: tuple[str, ...]) -> None:
        if (
            self.overflow is not None
            and labels not in self.children
            and labels not in self.pending
            and len(self.children) + len(self.pending) >= TALLY_LIMIT
        ):
            labels = self.overflow
        self.pending[labels] = self.pending.get(labels, 0) + 1

    def flush(self) -> None:
        for labels, count in self.pending.items():
            child = self.children.get(labels)
            if child is None:
                child = self.children[labels] = self.family.labels(*labels)
            child.inc(count)
        self.pending.clear()


class MetricsRecorder:
    """The metrics of one worker process: :meth:`record` per request, :meth:`flush` often."""

    def __init__(self, families: Families) -> None:
        self.families = families
        self.in_flight = 0
        """Requests of this worker between the start and the end of the observe stage."""
        self._in_flight_written: int | None = None
        self._bounds = (*DURATION_BUCKETS, math.inf)
        self._series: dict[tuple[str, str, str, int], _Series] = {}
        self._dirty: list[_Series] = []
        self._upstream_errors = _Tally(families.upstream_errors)
        self._tls_failures = _Tally(families.upstream_tls_failures)
        self._auth_failures = _Tally(families.auth_failures, overflow=(NO_ROUTE, "other"))
        self._rate_limited = _Tally(families.rate_limited)
        self._rate_limit_skipped = _Tally(families.rate_limit_skipped)
        self._targets: dict[tuple[str, str], tuple[bool, BreakerState]] = {}

    def record(self, exchange: ObservedExchange, method: str, duration: float) -> None:
        """Count one finished request (``duration`` in seconds)."""
        status = exchange.status
        route = exchange.route_name or NO_ROUTE
        key = (
            route,
            exchange.upstream_name or NO_ROUTE,
            method if method in _METHODS else "OTHER",
            status // 100,
        )
        series = self._series.get(key)
        if series is None:
            series = self._add_series(key)
        if not series.count:
            self._dirty.append(series)
        series.count += 1
        series.total += duration
        series.buckets[bisect_left(self._bounds, duration)] += 1
        if exchange.rate_limit_skipped:
            self._rate_limit_skipped.add((route,))
        error = exchange.error
        # A refusal nothing upstream took part in was the gateway's, even if the stage that
        # answered it did not leave its error on the exchange.
        if error is not None or (exchange.target_url is None and status in _REFUSALS):
            self._count_refusal(route, key[1], status, error)

    def _add_series(self, key: tuple[str, str, str, int]) -> _Series:
        route, upstream, method, hundreds = key
        labels = (route, upstream, method, status_class(hundreds * 100))
        series = _Series(
            self.families.requests.labels(*labels),
            self.families.duration.labels(*labels),
            len(self._bounds),
        )
        self._series[key] = series
        return series

    def _count_refusal(
        self, route: str, upstream: str, status: int, error: OnegateError | None
    ) -> None:
        if error is not None:
            if isinstance(error, _UPSTREAM_ERRORS):
                self._upstream_errors.add((upstream, error.slug))
                if isinstance(error, UpstreamTlsError):
                    # The reason comes from a fixed set; anything else would be a bug, and
                    # must still not grow the label set.
                    known = error.reason in TLS_FAILURE_REASONS
                    self._tls_failures.add((upstream, error.reason if known else "handshake"))
                return
            status = error.status  # not what was sent if the response had already started
        if status in _AUTH_FAILURES:
            # The auth stage's errors carry a reason slug; read it by name, so this works
            # with whichever class raised it.
            reason = getattr(error, "reason", None)
            if not isinstance(reason, str) or not reason:
                reason = error.slug if error is not None else "unknown"
            self._auth_failures.add((route, reason))
        elif status == 429:
            self._rate_limited.add((route,))

    def flush(self) -> None:
        """Hand everything counted since the last flush to prometheus_client."""
        for series in self._dirty:
            series.counter.inc(series.count)
            add_observations(series.histogram, series.buckets, series.total)
            series.count = 0
            series.total = 0.0
            series.buckets = [0] * len(series.buckets)
        self._dirty.clear()
        if self.in_flight != self._in_flight_written:
            self.families.in_flight.set(self.in_flight)
            self._in_flight_written = self.in_flight
        self._upstream_errors.flush()
        self._tls_failures.flush()
        self._auth_failures.flush()
        self._rate_limited.flush()
        self._rate_limit_skipped.flush()

    def refresh_targets(self, upstreams: Iterable[ObservedUpstream]) -> None:
        """Write the health and breaker gauges of every target whose state changed."""
        for upstream in upstreams:
            for target in upstream.targets:
                key = (upstream.name, target.url)
                state = (target.healthy, target.breaker.state)
                if self._targets.get(key) == state:
                    continue
                self._targets[key] = state
                self.families.target_healthy.labels(*key).set(1 if state[0] else 0)
                self.families.breaker_state.labels(*key).set(_BREAKER_VALUES[state[1]])
