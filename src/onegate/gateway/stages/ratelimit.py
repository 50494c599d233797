"""Rate limits: counts each request against the route's policies and refuses it (429) once
one is used up.

Runs after auth, so a policy can count per principal or per API key. A route's policies are
looked up once per request in a dict built with the configuration; a route without any costs
that lookup and nothing else. Every allowed response carries the ``RateLimit-*`` headers of
the tightest policy (the fewest requests left); a refusal carries those of the policy that
refused, plus ``Retry-After``. Once nothing is left, ``RateLimit-Reset`` and ``Retry-After``
are both the time at which the next request will be allowed (see ``ratelimit.decision``).

When the store can't be reached the configuration decides: ``open`` lets the request through
(without RateLimit headers, since nothing was counted), ``closed`` answers 503 with
``Retry-After``. Either way the outage is logged once, not per request.
"""

from __future__ import annotations

import math
import time
from typing import ClassVar

from onegate.errors import RateLimitStoreUnavailable, TooManyRequests
from onegate.gateway.config import GatewayConfig
from onegate.gateway.context import StageContext
from onegate.gateway.exchange import Exchange, exchange_of
from onegate.gateway.pipeline import Stage
from onegate.ratelimit.decision import Decision
from onegate.ratelimit.outage import Outage
from onegate.ratelimit.rules import Rule, rules_by_route
from onegate.ratelimit.store import Store
from onegate.types import ASGIApp, Receive, Scope, Send

LIMIT = b"ratelimit-limit"
REMAINING = b"ratelimit-remaining"
RESET = b"ratelimit-reset"
POLICY = b"ratelimit-policy"


class RateLimitStage(Stage):
    name: ClassVar[str] = "rate-limit"

    @classmethod
    def enabled(cls, config: GatewayConfig) -> bool:
        limits = config.rate_limits
        return bool(limits.default) or any(route.rate_limits for route in config.routes)

    def __init__(self, app: ASGIApp, context: StageContext) -> None:
        super().__init__(app, context)
        self.config = config = context.config.rate_limits
        self.rules = rules_by_route(config, context.config.routes, context.source.error)
        # Without a single limit the store is never opened (no Redis pool for nothing).
        self.stores = context.process.rate_limit_stores
        self.store: Store | None = self.stores.acquire(config) if self.rules else None
        self.outage = Outage(config.store_retry_seconds, config.on_store_error == "open")
        self.clock = time.monotonic
        self._released = False

    async def aclose(self) -> None:
        # Called once the pipeline is retired (after the drain period, or at shutdown). The
        # store closes only if no newer pipeline shares it, so a reload keeps the counts.
        if self.store is not None and not self._released:
            self._released = True
            await self.stores.release(self.config)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        exchange = exchange_of(scope)
        match = exchange.match
        rules = self.rules.get(match.route.name) if match is not None else None
        if rules is not None:
            await self._count(exchange, rules)
        await self.app(scope, receive, send)

    async def _count(self, exchange: Exchange, rules: tuple[Rule, ...]) -> None:
        """Count the request under every rule; raise if one refuses it."""
        store = self.store
        assert store is not None  # there are rules
        outage = self.outage
        now = self.clock()
        if now < outage.until:
            self._store_down(exchange)
            return
        tightest: tuple[Rule, Decision] | None = None
        for rule in rules:
            key = rule.key_of(exchange)
            if key is None:
                continue
            try:
                decision = await store.hit(key, rule.policy, now)
            except RateLimitStoreUnavailable as error:
                outage.failed(now, error)
                self._store_down(exchange)
                return
            if outage.since is not None:
                outage.recovered(now)
            if not decision.allowed:
                # Rules after this one are not counted: a refused request spends nothing more.
                add_headers(exchange, rule, decision)
                policy = rule.policy
                raise TooManyRequests(
                    f"Rate limit {policy.name!r} exceeded: {policy.limit} requests per "
                    f"{policy.window_seconds:g} s",
                    # The same whole seconds as RateLimit-Reset, rounded up: a client that
                    # waits either one and retries is let through (unless it spent it elsewhere).
                    retry_after=whole_seconds(decision.retry_after),
                )
            if tightest is None or decision.remaining < tightest[1].remaining:
                tightest = (rule, decision)
        if tightest is not None:
            add_headers(exchange, *tightest)

    def _store_down(self, exchange: Exchange) -> None:
        """Decide without the store: let the request through (open) or refuse it (closed)."""
        if not self.outage.fail_open:
            raise RateLimitStoreUnavailable(
                "Rate limits can't be checked right now",
                retry_after=math.ceil(self.outage.retry_seconds),
            )
        exchange.rate_limit_skipped = True  # counted by the metrics, so an outage shows


def add_headers(exchange: Exchange, rule: Rule, decision: Decision) -> None:
    """RateLimit-* headers (draft-ietf-httpapi-ratelimit-headers) on whatever is answered."""
    exchange.add_response_header(LIMIT, rule.limit_header)
    exchange.add_response_header(REMAINING, str(decision.remaining).encode())
    exchange.add_response_header(RESET, str(whole_seconds(decision.reset_seconds)).encode())
    exchange.add_response_header(POLICY, rule.policy_header)


def whole_seconds(seconds: float) -> int:
    """Seconds for a header: rounded up, never 0, so that waiting this long is always enough."""
    return max(1, math.ceil(seconds))
