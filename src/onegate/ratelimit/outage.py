"""Whether the store is failing, as one gateway process sees it.

After a failure, requests skip the store for ``retry_seconds`` and are decided at once (open
or closed), so an unreachable Redis costs neither a timeout per request nor a pile of
connection attempts. The first failure of an outage and the recovery are logged, once each,
never per request.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("onegate.ratelimit")


class Outage:
    def __init__(self, retry_seconds: float, fail_open: bool) -> None:
        self.retry_seconds = retry_seconds
        self.fail_open = fail_open
        self.since: float | None = None
        """When the current outage began; None while the store answers."""
        self.until = 0.0
        """Until then, don't ask the store."""

    def failed(self, now: float, error: Exception) -> None:
        self.until = now + self.retry_seconds
        if self.since is None:
            self.since = now
            cause = error.__cause__ or error
            logger.warning(
                "rate limit store unavailable (%s); %s requests until it answers again",
                str(cause) or type(cause).__name__,  # a timeout's message is empty
                "allowing" if self.fail_open else "refusing",
            )

    def recovered(self, now: float) -> None:
        if self.since is not None:
            logger.info("rate limit store answers again after %.1f s", now - self.since)
            self.since = None
