"""The circuit breaker's state machine, driven by an explicit clock.

Every condition in ``onegate.gateway.breaker`` has a test here that fails when it is flipped:
thresholds and wait boundaries are probed on both sides, and stale tickets (a request sent in
an earlier period) are released at every point where they could do harm.
"""

from __future__ import annotations

import pytest

from onegate.gateway.breaker import CircuitBreaker, Ticket
from onegate.gateway.config import Breaker
from onegate.http import BreakerState

FIRST = 0.5
CAP = 10.0


def breaker(
    threshold: int = 3, first: float = FIRST, cap: float = CAP, probes: int = 1
) -> CircuitBreaker:
    return CircuitBreaker(
        Breaker(
            failure_threshold=threshold,
            first_probe_seconds=first,
            open_seconds=cap,
            half_open_probes=probes,
        )
    )


def state(b: CircuitBreaker) -> BreakerState:
    return b.state  # read through a call: mypy would keep the type narrowed by an assert


def take(b: CircuitBreaker, now: float) -> Ticket:
    ticket = b.acquire(now)
    assert ticket is not None, f"no ticket at {now} ({state(b)})"
    return ticket


def fail(b: CircuitBreaker, times: int, now: float = 0.0) -> None:
    for _ in range(times):
        b.release(take(b, now), False, now)


def open_breaker(
    threshold: int = 1, first: float = FIRST, cap: float = CAP, probes: int = 1
) -> CircuitBreaker:
    """A breaker opened at t=0 by its first period's failures."""
    b = breaker(threshold, first, cap, probes)
    fail(b, threshold, now=0.0)
    assert state(b) is BreakerState.OPEN
    return b


# --- closed ----------------------------------------------------------------------------------


def test_a_closed_breaker_lets_everything_through_with_a_shared_non_probe_ticket() -> None:
    b = breaker()
    assert b.available(0.0)
    first, second = take(b, 0.0), take(b, 0.0)
    assert first is second and not first.probe
    assert b.retry_after(0.0) == 1


def test_it_opens_at_exactly_the_threshold_of_consecutive_failures() -> None:
    b = breaker(threshold=3)
    fail(b, 2)
    assert state(b) is BreakerState.CLOSED
    fail(b, 1)
    assert state(b) is BreakerState.OPEN
    assert not b.available(0.0)
    assert b.acquire(0.0) is None


def test_a_success_resets_the_failure_count_but_an_unknown_outcome_does_not() -> None:
    b = breaker(threshold=3)
    fail(b, 2)
    b.release(take(b, 0.0), True, 0.0)
    fail(b, 2)
    assert state(b) is BreakerState.CLOSED
    b.release(take(b, 0.0), None, 0.0)  # e.g. the client left: says nothing
    fail(b, 1)
    assert state(b) is BreakerState.OPEN


# --- open: the wait and its backoff --------------------------------------------------------------


def test_the_first_probe_comes_after_first_probe_seconds_to_the_instant() -> None:
    b = open_breaker()
    assert b.acquire(FIRST - 0.01) is None
    assert not b.available(FIRST - 0.01)
    assert b.available(FIRST)
    assert state(b) is BreakerState.OPEN  # available() reserves nothing
    probe = take(b, FIRST)
    assert probe.probe
    assert state(b) is BreakerState.HALF_OPEN


def test_each_failed_probe_doubles_the_wait_up_to_open_seconds() -> None:
    b = open_breaker(first=0.5, cap=5.0)
    opened, expected = 0.0, [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    for wait in expected:
        assert b.acquire(opened + wait - 0.01) is None, wait
        probe = take(b, opened + wait)
        opened += wait
        b.release(probe, False, opened)
        assert state(b) is BreakerState.OPEN
    assert b.retry_after(opened) == 5


def test_a_first_wait_longer_than_open_seconds_is_capped() -> None:
    b = open_breaker(first=30.0, cap=2.0)
    assert b.acquire(1.99) is None
    assert take(b, 2.0).probe


def test_retry_after_counts_whole_seconds_left_in_the_current_wait() -> None:
    b = open_breaker(first=2.5, cap=10.0)
    assert b.retry_after(0.0) == 3
    assert b.retry_after(1.6) == 1
    assert b.retry_after(2.4) == 1  # never 0: the client is told to come back later
    assert b.retry_after(3.0) == 1  # the wait is over but nobody asked for a probe yet
    take(b, 2.5)
    assert b.retry_after(2.5) == 1  # half-open


def test_a_success_after_closing_resets_the_backoff() -> None:
    b = open_breaker(first=1.0, cap=10.0)
    b.release(take(b, 1.0), False, 1.0)  # next wait: 2 s
    probe = take(b, 3.0)
    b.release(probe, True, 3.0)
    assert state(b) is BreakerState.CLOSED
    fail(b, 1, now=4.0)
    assert take(b, 5.0).probe  # back to the first, short wait


def test_a_request_sent_before_the_breaker_opened_does_not_open_it_again() -> None:
    b = breaker(threshold=1)
    slow = take(b, 0.0)  # in flight while another request opens the breaker
    fail(b, 1, now=0.0)
    b.release(slow, False, 0.4)  # would restart (and double) the wait if it counted
    assert take(b, FIRST).probe


# --- half-open ---------------------------------------------------------------------------------


def test_only_half_open_probes_requests_go_through_at_once() -> None:
    b = open_breaker(probes=2)
    first = take(b, FIRST)
    assert b.available(FIRST)
    second = take(b, FIRST)
    assert first.probe and second.probe
    assert not b.available(FIRST)
    assert b.acquire(FIRST) is None


def test_all_probes_must_succeed_to_close() -> None:
    b = open_breaker(probes=2)
    first, second = take(b, FIRST), take(b, FIRST)
    b.release(first, True, FIRST)
    assert state(b) is BreakerState.HALF_OPEN
    b.release(second, True, FIRST)
    assert state(b) is BreakerState.CLOSED
    assert not take(b, FIRST).probe


def test_closing_counts_failures_afresh() -> None:
    b = open_breaker(threshold=3)
    b.release(take(b, FIRST), True, FIRST)
    fail(b, 2, now=FIRST)
    assert state(b) is BreakerState.CLOSED
    fail(b, 1, now=FIRST)
    assert state(b) is BreakerState.OPEN
    b.health_check_passed()
    fail(b, 2, now=FIRST)
    assert state(b) is BreakerState.CLOSED


def test_a_failed_probe_opens_the_breaker_again() -> None:
    b = open_breaker()
    b.release(take(b, FIRST), False, FIRST)
    assert state(b) is BreakerState.OPEN
    assert b.acquire(FIRST) is None


def test_a_probe_that_says_nothing_frees_its_slot() -> None:
    b = open_breaker()
    b.release(take(b, FIRST), None, FIRST)  # e.g. the client went away
    assert state(b) is BreakerState.HALF_OPEN
    assert take(b, FIRST).probe


def test_the_second_probe_of_a_period_that_already_failed_changes_nothing() -> None:
    b = open_breaker(probes=2)
    first, second = take(b, FIRST), take(b, FIRST)
    b.release(first, False, FIRST)  # opened again, for 1 s
    b.release(second, True, FIRST + 0.1)
    assert state(b) is BreakerState.OPEN
    b.release(second, False, FIRST + 0.2)  # nor does a failure restart the wait
    assert b.acquire(FIRST + 0.99) is None
    assert take(b, FIRST + 1.0).probe


def test_a_request_sent_while_closed_is_not_taken_for_a_probe() -> None:
    b = breaker(threshold=1)
    slow = take(b, 0.0)  # in flight while the breaker opens and turns half-open
    fail(b, 1)
    probe = take(b, FIRST)
    b.release(slow, True, FIRST)  # must neither close the breaker nor free the probe's slot
    assert state(b) is BreakerState.HALF_OPEN
    assert b.acquire(FIRST) is None
    b.release(probe, True, FIRST)
    assert state(b) is BreakerState.CLOSED


def test_a_probe_of_an_earlier_period_is_ignored() -> None:
    b = open_breaker(probes=2)
    old = take(b, FIRST)
    b.release(take(b, FIRST), False, FIRST)  # period over: open for 1 s
    probe = take(b, FIRST + 1.0)  # a new half-open period
    b.release(old, False, FIRST + 1.0)
    assert state(b) is BreakerState.HALF_OPEN
    b.release(old, True, FIRST + 1.0)
    b.release(probe, True, FIRST + 1.0)
    assert state(b) is BreakerState.HALF_OPEN  # one success of two: the old one did not count


# --- active health checks ----------------------------------------------------------------------


def test_a_passing_health_check_closes_an_open_breaker_at_once() -> None:
    b = open_breaker(first=5.0)
    b.health_check_passed()
    assert state(b) is BreakerState.CLOSED
    assert b.available(0.1)
    assert not take(b, 0.1).probe


def test_a_passing_health_check_closes_a_half_open_breaker_and_voids_its_probe() -> None:
    b = open_breaker()
    probe = take(b, FIRST)
    b.health_check_passed()
    assert state(b) is BreakerState.CLOSED
    b.release(probe, False, FIRST)  # sent in the half-open period: does not open it again
    assert state(b) is BreakerState.CLOSED


def test_a_passing_health_check_leaves_a_closed_breaker_counting() -> None:
    b = breaker(threshold=3)
    fail(b, 2)
    b.health_check_passed()
    fail(b, 1)
    assert state(b) is BreakerState.OPEN


def test_a_request_from_before_the_outage_does_not_count_after_a_health_check() -> None:
    b = breaker(threshold=1)
    stale = take(b, 0.0)
    fail(b, 1)
    b.health_check_passed()
    b.release(stale, False, 0.2)  # it failed in the outage, which is over
    assert state(b) is BreakerState.CLOSED


def test_closing_by_health_check_keeps_the_backoff_until_a_request_succeeds() -> None:
    # A health path that answers while real requests fail must not reset the backoff.
    b = open_breaker(first=1.0)
    b.health_check_passed()
    fail(b, 1, now=0.0)
    assert b.acquire(1.99) is None  # the second period is twice as long
    b.health_check_passed()
    b.release(take(b, 2.5), True, 2.5)  # a real request succeeds
    fail(b, 1, now=3.0)
    assert take(b, 4.0).probe  # back to the first wait


# --- the documented recovery time ----------------------------------------------------------------


@pytest.mark.parametrize(("first", "cap"), [(0.5, 10.0), (0.25, 2.0), (1.0, 30.0)])
def test_clients_succeed_again_within_the_documented_bound(first: float, cap: float) -> None:
    """Outage ends at r (seconds after the breaker opened); a client asks every 10 ms; probes
    fail at once while the target is down. Served again by r + min(cap, r + first)."""
    tick = 0.01
    for back in [i * 0.13 for i in range(1, 300)]:  # every 0.13 s up to ~39 s
        b = open_breaker(first=first, cap=cap)
        step = 0
        while True:
            step += 1
            now = step * tick
            ticket = b.acquire(now)
            if ticket is None:
                continue
            up = now >= back
            b.release(ticket, up, now)
            if up:
                break
        bound = min(cap, back + first)
        assert now - back <= bound + 2 * tick, (back, now)
