"""The two counting algorithms, on one bucket's state, with time passed in.

Both are O(1) in time and memory per bucket, so a limit of 100,000 requests a day costs the
same as 10 a second. ``scripts.py`` holds the same arithmetic in Lua for Redis; a conformance
suite runs against both stores so the two cannot drift apart.

Sliding window (weighted two fixed windows). Time is cut into fixed windows aligned on
multiples of the window length; a bucket keeps the count of the current window and of the one
before. A request at fraction ``f`` into the current window sees the estimate
``previous * (1 - f) + current``, i.e. the previous window's requests are assumed to have been
spread evenly and fade out as the window slides over them. We chose it over an exact sliding
log because the log keeps one timestamp per request (``limit`` entries per bucket, a sorted set
per key in Redis), and over plain fixed windows because those let a client send ``2 * limit``
in an instant across a boundary. Properties:

* within one fixed window no more than ``limit`` are ever allowed (the estimate is at least
  ``current``), and ``remaining`` counts down to exactly 0: the request that makes it 0 is the
  last allowed one, the next is refused (Kong #11846 reported the opposite);
* remaining is ``floor(limit - estimate)``: that many requests would be allowed right now;
* it is approximate across the boundary: it under-admits after bursts at the start of a window
  and can over-admit after a burst at the very end of one (at worst ``2 * limit`` spread over
  one window, never in an instant). For very small limits (1 or 2 per window) the weighting
  is coarse; use the token bucket for those.

Token bucket (continuous refill). ``limit`` tokens at most (the burst), refilled at
``limit / window`` tokens per second, one token per request. A refused request takes nothing.
``remaining`` is the whole tokens left, ``reset`` the time until the bucket is full again.

Reset a client can trust. Whenever no request is left (the last one that fitted, or a
refusal), ``reset_seconds`` is instead the time until the next request *will* fit under the
algorithm in use: for the sliding window that is later than the end of the fixed window
whenever the previous window still weighs on the estimate (a client that waited only for the
window's end was refused again). A client that waits that long and retries is let through.
"""

from __future__ import annotations

import math

from onegate.ratelimit.decision import Decision

#: Tolerance on token counts: ``0.1 * 10`` is 0.9999999999999999 in binary floating point, and
#: a request must not be refused for that.
EPSILON = 1e-9

_NO_WINDOW = -(1 << 62)


class WindowCounts:
    """A sliding-window bucket: counts of the current and the previous fixed window."""

    __slots__ = ("current", "expires", "index", "previous")

    def __init__(self) -> None:
        self.index = _NO_WINDOW
        """Number of the current fixed window (``floor(now / window)``)."""
        self.current = 0
        self.previous = 0
        self.expires = 0.0
        """From this time on the counts no longer matter (both windows are over)."""


class Bucket:
    """A token bucket: tokens left as of ``stamp``."""

    __slots__ = ("expires", "stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp
        self.expires = stamp
        """From this time on the bucket is full again, the same as a new one."""


def sliding_window(counts: WindowCounts, limit: int, window: float, now: float) -> Decision:
    """Count one request against ``counts`` (mutated) and decide."""
    index = math.floor(now / window)
    if counts.index != index:
        # Windows are numbered, not stamped, so "the window just before" is an exact test.
        counts.previous = counts.current if counts.index == index - 1 else 0
        counts.current = 0
        counts.index = index
        counts.expires = (index + 2) * window
    elapsed = min(max(now - index * window, 0.0), window)
    previous = counts.previous
    current = counts.current
    estimate = previous * (1.0 - elapsed / window) + current
    if estimate + 1 > limit + EPSILON:
        retry = window_retry(previous, current, limit, window, elapsed)
        return Decision(False, limit, 0, retry, retry)
    counts.current = current + 1
    remaining = math.floor(limit - estimate - 1 + EPSILON)
    if remaining > 0:
        return Decision(True, limit, remaining, window - elapsed, 0.0)
    # The last request that fits: Reset says when the next one will (see Decision).
    return Decision(
        True, limit, 0, window_retry(previous, current + 1, limit, window, elapsed), 0.0
    )


def window_retry(previous: int, current: int, limit: int, window: float, elapsed: float) -> float:
    """Seconds until the estimate has fallen enough for one more request to fit."""
    room = limit - 1
    if current <= room:
        # Only the fading previous window is in the way (so ``previous`` > 0): wait until
        # ``previous * (1 - f) + current == room``, still within this window.
        return (1.0 - (room - current) / previous) * window - elapsed
    # This window is full: wait for it to end and then fade until ``current * (1 - g) == room``.
    return (window - elapsed) + window * (1.0 - room / current)


def token_bucket(bucket: Bucket, limit: int, window: float, now: float) -> Decision:
    """Take one token from ``bucket`` (mutated) if there is one."""
    rate = limit / window
    tokens = bucket.tokens
    stamp = bucket.stamp
    if now > stamp:
        # A clock that steps back refills nothing (and the stamp stays), rather than twice.
        tokens = min(limit, tokens + (now - stamp) * rate)
        stamp = now
    if tokens < 1 - EPSILON:
        retry = (1 - tokens) / rate
        return Decision(False, limit, 0, retry, retry)
    tokens = max(tokens - 1, 0.0)
    bucket.tokens = tokens
    bucket.stamp = stamp
    full = (limit - tokens) / rate
    bucket.expires = stamp + full
    remaining = math.floor(tokens + EPSILON)
    # With no whole token left, Reset says when the next one will be (see Decision).
    return Decision(True, limit, remaining, full if remaining > 0 else (1 - tokens) / rate, 0.0)
