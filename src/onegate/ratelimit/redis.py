"""Buckets in Redis: one limit shared by every gateway instance.

Each hit is one EVALSHA of the algorithm's script (``scripts.py``): read, decide and write
happen atomically inside Redis, in one round trip. Keys are ``onegate:rl:<policy>:<key>`` and
expire once their state no longer matters, so Redis holds only live buckets.

Every call has a deadline (``store_timeout_seconds``, connecting included) and redis-py's own
retries are off: a retry with back-off would only spend the deadline, and the stage decides
what an unreachable store means (fail open or closed). Any failure is raised as
:class:`RateLimitStoreUnavailable`.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from onegate.errors import RateLimitStoreUnavailable
from onegate.ratelimit.config import LimitPolicy
from onegate.ratelimit.decision import Decision
from onegate.ratelimit.scripts import SLIDING_WINDOW, TOKEN_BUCKET

KEY_PREFIX = "onegate:rl:"
#: Connections per gateway process. A hit holds one for a round trip (~0.1 ms on a LAN), so
#: this carries tens of thousands of hits a second; past it, hits wait for a free connection
#: (within the deadline) instead of failing, as redis-py's default pool would.
POOL_SIZE = 64


class RedisStore:
    def __init__(
        self,
        url: str,
        *,
        timeout: float = 0.05,
        clock: Literal["server", "caller"] = "server",
        prefix: str = KEY_PREFIX,
    ) -> None:
        """``clock="caller"`` uses the ``now`` passed to :meth:`hit` instead of the server's
        clock: only for tests that drive time, since each instance's clock differs."""
        self.url = url
        self.timeout = timeout
        self.prefix = prefix
        self._server_clock = clock == "server"
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=POOL_SIZE,
            timeout=timeout,
            # The deadline in hit() covers reads; a socket timeout as well would wrap every read
            # in a second timer, which costs measurable CPU per hit for nothing.
            socket_timeout=None,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self._client = Redis.from_pool(pool)
        self._scripts = {
            "sliding_window": self._client.register_script(SLIDING_WINDOW),
            "token_bucket": self._client.register_script(TOKEN_BUCKET),
        }

    async def hit(self, key: str, policy: LimitPolicy, now: float) -> Decision:
        script = self._scripts[policy.algorithm]
        args = (policy.limit, repr(policy.window_seconds), "" if self._server_clock else repr(now))
        try:
            # One deadline for everything: waiting for a pooled connection, connecting, and the
            # round trip. On expiry redis-py drops the connection rather than reuse it half-read.
            async with asyncio.timeout(self.timeout):
                reply = await script(keys=[f"{self.prefix}{policy.name}:{key}"], args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            raise RateLimitStoreUnavailable(
                f"rate limit store unavailable ({type(exc).__name__})",
                retry_after=1,
            ) from exc
        allowed, remaining, reset, retry = reply
        return Decision(bool(allowed), policy.limit, int(remaining), float(reset), float(retry))

    async def aclose(self) -> None:
        await self._client.aclose()
