"""A circuit breaker per upstream target.

Closed: requests flow and consecutive failures are counted. At ``failure_threshold`` the
breaker opens: the balancer skips the target (this is also onegate's passive ejection) and,
when no other target is left, the client gets 503 with ``Retry-After``.

Open, it waits before letting a probe through (half-open): ``first_probe_seconds`` after it
first opened, then twice as long after each probe that failed, up to ``open_seconds``. Short
outages are thus noticed within a fraction of a second, while a long one costs one failed
request per ``open_seconds``. Half-open, up to ``half_open_probes`` requests go through; if
they all succeed it closes, if one fails it opens again with the next, longer wait. A
successful active health check closes an open or half-open breaker at once: the target
answers again, and there is no reason to make clients wait for the next probe.

Recovery time: after an outage of N seconds (from the moment the breaker opened until the
target answers again), requests succeed again within ``min(open_seconds, N +
first_probe_seconds)`` plus one request's round trip, as long as requests keep arriving (the
probe is a client request), and plus the connect or read timeout when a probe that left
during the outage hangs instead of being refused. Why: each wait is at most the time already
spent open plus ``first_probe_seconds``, since ``f * 2**k = f + f * (2**k - 1)`` and the first
k waits add up to ``f * (2**k - 1)``. With active health checks, a passing check also closes
the breaker, within ``health.interval + health.timeout`` of the return, whichever comes first
(a target the checks marked unhealthy needs ``healthy_threshold`` passing checks as well).
"""

from __future__ import annotations

import math
import time

from onegate.gateway.config import Breaker as BreakerConfig
from onegate.http import BreakerState


class Ticket:
    """The right to send one request, returned by :meth:`CircuitBreaker.acquire`.

    A request's outcome only counts in the period (closed or half-open) it was sent in: a
    request that started before the breaker opened and ends after it turned half-open (or
    closed again) must neither be taken for a probe nor count against the new period. The
    ticket says which period it belongs to.
    """

    __slots__ = ("epoch", "probe")

    def __init__(self, probe: bool, epoch: int) -> None:
        self.probe = probe
        self.epoch = epoch


class CircuitBreaker:
    __slots__ = (
        "_epoch",
        "_failures",
        "_opened_at",
        "_opens",
        "_pass",
        "_probes",
        "_successes",
        "_wait",
        "config",
        "state",
    )

    def __init__(self, config: BreakerConfig) -> None:
        self.config = config
        self.state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._wait = 0.0
        """Seconds the current open period lasts."""
        self._opens = 0
        """Periods opened since a request last succeeded: the exponent of the backoff."""
        self._probes = 0
        self._successes = 0
        self._epoch = 0  # bumped at every new closed or half-open period
        # The ticket of every request while closed: one per period, so the hot path
        # allocates nothing.
        self._pass = Ticket(False, self._epoch)

    def available(self, now: float | None = None) -> bool:
        """Could a request be let through now? (Does not reserve a probe slot.)"""
        if self.state is BreakerState.CLOSED:
            return True
        now = time.monotonic() if now is None else now
        if self.state is BreakerState.OPEN:
            return now - self._opened_at >= self._wait
        return self._probes < self.config.half_open_probes

    def acquire(self, now: float | None = None) -> Ticket | None:
        """Reserve the right to send one request, or None; pass the ticket to :meth:`release`."""
        if self.state is BreakerState.CLOSED:
            return self._pass
        now = time.monotonic() if now is None else now
        if self.state is BreakerState.OPEN:
            if now - self._opened_at < self._wait:
                return None
            self.state = BreakerState.HALF_OPEN
            self._probes = 0
            self._successes = 0
            self._epoch += 1
        if self._probes >= self.config.half_open_probes:
            return None
        self._probes += 1
        return Ticket(True, self._epoch)

    def release(self, ticket: Ticket, success: bool | None, now: float | None = None) -> None:
        """Record the outcome: True, False, or None when it says nothing about the target."""
        if ticket.epoch != self._epoch:
            return  # sent in an earlier period: its outcome is already accounted for
        if ticket.probe:
            if self.state is not BreakerState.HALF_OPEN:
                return
            self._probes -= 1
            if success is False:
                self._open(now)
            elif success:
                self._successes += 1
                if self._successes >= self.config.half_open_probes:
                    self._opens = 0
                    self._close()
            return
        if self.state is not BreakerState.CLOSED:
            return
        if success is False:
            self._failures += 1
            if self._failures >= self.config.failure_threshold:
                self._open(now)
        elif success:
            self._failures = 0
            self._opens = 0

    def health_check_passed(self) -> None:
        """An active health check reached the target: stop turning clients away."""
        if self.state is not BreakerState.CLOSED:
            # The backoff is kept: should real requests still fail (a health path that
            # answers while the rest does not), the next open period is longer, not reset.
            self._close()

    def retry_after(self, now: float | None = None) -> int:
        """Whole seconds until the breaker lets a probe through."""
        if self.state is not BreakerState.OPEN:
            return 1
        now = time.monotonic() if now is None else now
        return max(1, math.ceil(self._wait - (now - self._opened_at)))

    def _open(self, now: float | None) -> None:
        config = self.config
        self.state = BreakerState.OPEN
        self._opened_at = time.monotonic() if now is None else now
        # The exponent is capped: 2.0 ** 1024 overflows, and 64 doublings pass any cap anyway.
        doubled = config.first_probe_seconds * 2.0 ** min(self._opens, 64)
        self._wait = min(doubled, config.open_seconds)
        self._opens += 1
        # Probe slots and successes are counted afresh when the next half-open period starts.

    def _close(self) -> None:
        self.state = BreakerState.CLOSED
        self._failures = 0
        self._epoch += 1
        self._pass = Ticket(False, self._epoch)
