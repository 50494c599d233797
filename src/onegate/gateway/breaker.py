"""A circuit breaker per upstream target.

Closed: requests flow and consecutive failures are counted. At ``failure_threshold`` the
breaker opens: the balancer skips the target (this is also onegate's passive ejection) and,
when no other target is left, the client gets 503 with ``Retry-After``. After
``open_seconds`` the breaker is half-open: up to ``half_open_probes`` requests go through;
if they all succeed it closes, if one fails it opens again for another period.
"""

from __future__ import annotations

import math
import time

from onegate.gateway.config import Breaker as BreakerConfig
from onegate.http import BreakerState


class Ticket:
    """The right to send one request, returned by :meth:`CircuitBreaker.acquire`.

    A request that started while the breaker was closed and ends after it opened must not be
    taken for a half-open probe; the ticket says which one it was.
    """

    __slots__ = ("epoch", "probe")

    def __init__(self, probe: bool, epoch: int) -> None:
        self.probe = probe
        self.epoch = epoch


#: The ticket of every request while closed: shared, so the hot path allocates nothing.
PASS = Ticket(False, -1)


class CircuitBreaker:
    __slots__ = ("_epoch", "_failures", "_opened_at", "_probes", "_successes", "config", "state")

    def __init__(self, config: BreakerConfig) -> None:
        self.config = config
        self.state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probes = 0
        self._successes = 0
        self._epoch = 0  # bumped at every half-open period

    def available(self, now: float | None = None) -> bool:
        """Could a request be let through now? (Does not reserve a probe slot.)"""
        if self.state is BreakerState.CLOSED:
            return True
        now = time.monotonic() if now is None else now
        if self.state is BreakerState.OPEN:
            return now - self._opened_at >= self.config.open_seconds
        return self._probes < self.config.half_open_probes

    def acquire(self, now: float | None = None) -> Ticket | None:
        """Reserve the right to send one request, or None; pass the ticket to :meth:`release`."""
        if self.state is BreakerState.CLOSED:
            return PASS
        now = time.monotonic() if now is None else now
        if self.state is BreakerState.OPEN:
            if now - self._opened_at < self.config.open_seconds:
                return None
            self.state = BreakerState.HALF_OPEN
            self._probes = 0
            self._successes = 0
            self._epoch += 1
        if self._probes >= self.config.half_open_probes:
            return None
        self._probes += 1
        return Ticket(True, self._epoch)

    def release(self, ticket: Ticket, success: bool | None) -> None:
        """Record the outcome: True, False, or None when it says nothing about the target."""
        if ticket.probe:
            if ticket.epoch != self._epoch or self.state is not BreakerState.HALF_OPEN:
                return  # a probe of an earlier period
            self._probes -= 1
            if success is False:
                self._open()
            elif success:
                self._successes += 1
                if self._successes >= self.config.half_open_probes:
                    self.state = BreakerState.CLOSED
                    self._failures = 0
            return
        if self.state is not BreakerState.CLOSED:
            return  # sent before the breaker opened: its outcome is already accounted for
        if success is False:
            self._failures += 1
            if self._failures >= self.config.failure_threshold:
                self._open()
        elif success:
            self._failures = 0

    def retry_after(self, now: float | None = None) -> int:
        """Whole seconds until the breaker lets a probe through."""
        if self.state is not BreakerState.OPEN:
            return 1
        now = time.monotonic() if now is None else now
        return max(1, math.ceil(self.config.open_seconds - (now - self._opened_at)))

    def _open(self) -> None:
        self.state = BreakerState.OPEN
        self._opened_at = time.monotonic()
        self._probes = 0
        self._successes = 0
