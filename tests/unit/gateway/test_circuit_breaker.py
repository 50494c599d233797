"""The circuit breaker's state machine, driven by an explicit clock."""

from __future__ import annotations

from onegate.gateway.breaker import PASS, CircuitBreaker
from onegate.gateway.config import Breaker
from onegate.http import BreakerState


def breaker(threshold: int = 3, open_seconds: float = 10.0, probes: int = 1) -> CircuitBreaker:
    return CircuitBreaker(
        Breaker(failure_threshold=threshold, open_seconds=open_seconds, half_open_probes=probes)
    )


def fail(b: CircuitBreaker, times: int, now: float = 0.0) -> None:
    for _ in range(times):
        ticket = b.acquire(now)
        assert ticket is not None
        b.release(ticket, False)


def test_consecutive_failures_open_the_breaker_and_successes_reset_the_count() -> None:
    b = breaker(threshold=3)
    fail(b, 2)
    b.release(PASS, True)
    fail(b, 2)
    assert b.state is BreakerState.CLOSED
    fail(b, 1)
    assert b.state is BreakerState.OPEN


def test_open_breaker_rejects_until_the_period_ends_then_lets_one_probe_through() -> None:
    b = breaker(threshold=1, open_seconds=10.0)
    fail(b, 1)
    opened = b._opened_at
    assert b.acquire(opened + 5) is None
    assert b.retry_after(opened + 5) == 5
    probe = b.acquire(opened + 10)
    assert probe is not None and probe.probe
    assert b.state is BreakerState.HALF_OPEN
    assert b.acquire(opened + 10) is None  # only one probe at a time
    b.release(probe, True)
    assert b.state is BreakerState.CLOSED


def test_a_failed_probe_opens_the_breaker_again() -> None:
    b = breaker(threshold=1, open_seconds=1.0)
    fail(b, 1)
    probe = b.acquire(b._opened_at + 1)
    assert probe is not None
    b.release(probe, False)
    assert b.state is BreakerState.OPEN


def test_a_request_sent_before_the_breaker_opened_is_not_taken_for_a_probe() -> None:
    b = breaker(threshold=1, open_seconds=1.0)
    slow = b.acquire(0.0)  # in flight while the breaker opens and turns half-open
    assert slow is PASS
    fail(b, 1)
    probe = b.acquire(b._opened_at + 1)
    assert probe is not None
    b.release(slow, True)  # must neither close the breaker nor free the probe's slot
    assert b.state is BreakerState.HALF_OPEN
    assert b.acquire(b._opened_at + 1) is None
    b.release(probe, True)
    assert b.state is BreakerState.CLOSED


def test_outcomes_that_say_nothing_about_the_target_change_nothing() -> None:
    b = breaker(threshold=1, open_seconds=1.0)
    b.release(PASS, None)
    assert b.state is BreakerState.CLOSED
    fail(b, 1)
    probe = b.acquire(b._opened_at + 1)
    assert probe is not None
    b.release(probe, None)  # e.g. the client went away: the slot is free again
    assert b.acquire(b._opened_at + 1) is not None
