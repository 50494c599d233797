"""The two algorithms' exact arithmetic, with time passed in."""

from __future__ import annotations

import copy
import random

import pytest

from onegate.ratelimit.algorithms import Bucket, WindowCounts, sliding_window, token_bucket
from onegate.ratelimit.decision import Decision


def window_hits(counts: WindowCounts, times: list[float], limit: int = 3) -> list[Decision]:
    return [sliding_window(counts, limit, 10.0, t) for t in times]


# --- sliding window ------------------------------------------------------------------------


def test_window_counts_down_to_zero_and_refuses_the_next() -> None:
    decisions = window_hits(WindowCounts(), [1000.0] * 4)
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert decisions[3].retry_after > 0
    assert all(d.limit == 3 for d in decisions)
    # While some is left, Reset is the end of the fixed window; once none is, the time the next
    # request fits: the window's end (10 s) and then 3 * (1 - g) <= 2 (3.33 s more).
    assert [d.reset_seconds for d in decisions[:2]] == [10.0, 10.0]
    assert decisions[2].reset_seconds == pytest.approx(10 + 10 / 3)
    assert decisions[3].reset_seconds == decisions[3].retry_after == pytest.approx(10 + 10 / 3)


def test_window_refusals_are_not_counted() -> None:
    counts = WindowCounts()
    window_hits(counts, [1000.0] * 10)
    assert counts.current == 3


def test_window_reset_is_the_end_of_the_fixed_window() -> None:
    (decision,) = window_hits(WindowCounts(), [1002.5])
    assert decision.reset_seconds == pytest.approx(7.5)


def test_previous_window_fades_out_as_the_window_slides() -> None:
    counts = WindowCounts()
    window_hits(counts, [1000.0, 1000.0, 1000.0])
    # Halfway into the next window the previous 3 weigh 1.5: one more fits (estimate 2.5).
    first, second = window_hits(counts, [1015.0, 1015.0])
    assert first.allowed and first.remaining == 0
    assert not second.allowed
    # At 80 % the previous weigh 0.6 and the current 1: 1.6, so one more again (2.6).
    assert window_hits(counts, [1018.0, 1018.0])[0].remaining == 0
    # Two windows later nothing is left of either.
    assert [d.remaining for d in window_hits(counts, [1040.0] * 3)] == [2, 1, 0]


def test_window_retry_after_is_exact() -> None:
    counts = WindowCounts()
    window_hits(counts, [1000.0] * 3)
    refused = window_hits(counts, [1004.0])[0]
    # Full window: wait for its end (6 s), then until 3 * (1 - g) <= 2, i.e. g = 1/3 (3.33 s).
    assert refused.retry_after == pytest.approx(6 + 10 / 3)
    assert not window_hits(counts, [1004.0 + refused.retry_after - 0.001])[0].allowed
    assert window_hits(counts, [1004.0 + refused.retry_after + 0.001])[0].allowed


def test_window_retry_after_while_the_previous_window_fades() -> None:
    counts = WindowCounts()
    window_hits(counts, [1009.0] * 3)
    window_hits(counts, [1010.0])  # 3 * 1.0 + 0: refused; the next window has just begun
    refused = window_hits(counts, [1011.0])[0]  # 3 * 0.9 = 2.7: refused
    assert not refused.allowed
    # 3 * (1 - f) <= 2 at f = 1/3: 3.33 s into the window, 2.33 s from now.
    assert refused.retry_after == pytest.approx(10 / 3 - 1)
    assert window_hits(counts, [1011.0 + refused.retry_after + 0.001])[0].allowed


def test_a_window_skipped_entirely_forgets_everything() -> None:
    counts = WindowCounts()
    window_hits(counts, [1000.0] * 3)
    assert [d.remaining for d in window_hits(counts, [1025.0] * 3)] == [2, 1, 0]


def test_window_of_one() -> None:
    counts = WindowCounts()
    assert [d.allowed for d in window_hits(counts, [1000.0, 1000.0], limit=1)] == [True, False]


def hit(state: WindowCounts | Bucket, limit: int, window: float, now: float) -> Decision:
    if isinstance(state, WindowCounts):
        return sliding_window(state, limit, window, now)
    return token_bucket(state, limit, window, now)


def random_history(
    rng: random.Random, algorithm: str
) -> tuple[WindowCounts | Bucket, int, float, float]:
    """A state after a random burst of hits, with its limit, window and the time after it."""
    limit = rng.randint(1, 12)
    window = rng.choice([0.5, 1.0, 7.0, 60.0])
    now = rng.uniform(0, 1000)
    state: WindowCounts | Bucket = (
        WindowCounts() if algorithm == "sliding_window" else Bucket(limit, now)
    )
    for _ in range(rng.randint(0, 30)):
        now += rng.expovariate(limit / window)
        hit(state, limit, window, now)
    return state, limit, window, now + rng.uniform(0, window)


@pytest.mark.parametrize("algorithm", ["sliding_window", "token_bucket"])
def test_remaining_is_exactly_what_is_allowed_right_now(algorithm: str) -> None:
    """Whatever the history, after a decision with remaining r, exactly r more fit at once."""
    rng = random.Random(7)
    checked = 0
    for _ in range(300):
        state, limit, window, now = random_history(rng, algorithm)
        decision = hit(state, limit, window, now)
        if not decision.allowed:
            continue
        following = [hit(state, limit, window, now) for _ in range(decision.remaining + 1)]
        assert [d.allowed for d in following] == [True] * decision.remaining + [False]
        assert [d.remaining for d in following[:-1]] == list(range(decision.remaining - 1, -1, -1))
        checked += 1
    assert checked > 100


@pytest.mark.parametrize("algorithm", ["sliding_window", "token_bucket"])
def test_waiting_reset_when_nothing_is_left_is_enough_and_needed(algorithm: str) -> None:
    """Whatever the history, once remaining is 0 (allowed or refused), a request after
    ``reset_seconds`` is allowed and one just before it is refused."""
    rng = random.Random(11)
    checked = 0
    for _ in range(400):
        state, limit, window, now = random_history(rng, algorithm)
        decision = hit(state, limit, window, now)
        while decision.remaining > 0:
            decision = hit(state, limit, window, now)
        if not decision.allowed:
            assert decision.retry_after == decision.reset_seconds
        assert decision.reset_seconds > 0
        # Copies, so probing "just before" does not count against "just after".
        before, after = copy.deepcopy(state), copy.deepcopy(state)
        margin = window * 1e-6
        if decision.reset_seconds > margin:
            assert not hit(before, limit, window, now + decision.reset_seconds - margin).allowed
        assert hit(after, limit, window, now + decision.reset_seconds + margin).allowed
        checked += 1
    assert checked == 400


# --- token bucket --------------------------------------------------------------------------


def bucket_hits(bucket: Bucket, times: list[float], limit: int = 3) -> list[Decision]:
    return [token_bucket(bucket, limit, 3.0, t) for t in times]


def test_bucket_counts_down_to_zero_and_refuses_the_next() -> None:
    decisions = bucket_hits(Bucket(3, 1000.0), [1000.0] * 4)
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    # One token a second: the next one in 1 s; full again 3 s after the last was taken.
    assert decisions[3].retry_after == pytest.approx(1.0)
    assert decisions[1].reset_seconds == pytest.approx(2.0)  # full again in 2 s
    # No token left: Reset is when the next one is there, not when the bucket is full.
    assert decisions[2].reset_seconds == pytest.approx(1.0)
    assert decisions[3].reset_seconds == pytest.approx(1.0)


def test_bucket_refills_continuously_up_to_the_burst() -> None:
    bucket = Bucket(3, 1000.0)
    bucket_hits(bucket, [1000.0] * 3)
    assert not bucket_hits(bucket, [1000.5])[0].allowed
    half = bucket_hits(bucket, [1000.5])[0]
    assert half.retry_after == pytest.approx(0.5)
    assert bucket_hits(bucket, [1001.0])[0].allowed
    # An hour later the bucket holds 3, not 3,600.
    assert [d.allowed for d in bucket_hits(bucket, [4600.0] * 4)] == [True] * 3 + [False]


def test_bucket_is_not_refused_for_rounding() -> None:
    # 0.1 * 10 is 0.9999999999999999 in floating point; that is one whole token.
    bucket = Bucket(10, 0.0)
    assert all(d.allowed for d in [token_bucket(bucket, 10, 1.0, 0.0) for _ in range(10)])
    assert token_bucket(bucket, 10, 1.0, 0.1).allowed


def test_bucket_ignores_a_clock_stepping_back() -> None:
    bucket = Bucket(3, 1000.0)
    bucket_hits(bucket, [1000.0] * 3)
    assert not bucket_hits(bucket, [990.0])[0].allowed
    assert bucket_hits(bucket, [1001.0])[0].allowed


def test_expiry_marks_when_state_no_longer_matters() -> None:
    counts = WindowCounts()
    window_hits(counts, [1004.0])
    assert counts.expires == 1020.0
    bucket = Bucket(3, 1000.0)
    bucket_hits(bucket, [1000.0, 1000.0])
    assert bucket.expires == pytest.approx(1002.0)
