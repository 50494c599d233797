"""What a store answers for one request against one policy."""

from __future__ import annotations

from typing import NamedTuple


class Decision(NamedTuple):
    # A NamedTuple rather than a dataclass: one is built per policy per request, and a tuple
    # is the cheapest immutable record Python can make.
    allowed: bool
    limit: int
    remaining: int
    """Requests that would still be allowed right now: exactly 0 after the last one that fits,
    so the next one is refused."""
    reset_seconds: float
    """When nothing is left (``remaining`` 0, allowed or refused): seconds until the next request
    will be allowed, the time a client can wait and retry. Otherwise: seconds until the quota
    resets, the end of the current window (sliding window) or until the bucket is full again
    (token bucket)."""
    retry_after: float
    """Seconds until a refused request would be allowed; 0 when this one was allowed."""
