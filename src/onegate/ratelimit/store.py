"""What every rate-limit store does: count one request in one bucket, atomically."""

from __future__ import annotations

from typing import Protocol

from onegate.ratelimit.config import LimitPolicy
from onegate.ratelimit.decision import Decision


class Store(Protocol):
    async def hit(self, key: str, policy: LimitPolicy, now: float) -> Decision:
        """Count one request for ``key`` under ``policy`` and decide, as one atomic step.

        ``key`` identifies the caller within the policy (``ip:203.0.113.7``); the store adds
        the policy's name. ``now`` is a monotonic time in seconds; a shared store may use its
        own clock instead, so that every gateway instance agrees on the windows. Raises
        :class:`onegate.errors.RateLimitStoreUnavailable` when the store can't answer in time.
        """
        ...

    async def aclose(self) -> None: ...
