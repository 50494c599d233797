"""Which policies apply to each route, compiled once per configuration."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from onegate.errors import ConfigError
from onegate.ratelimit.config import LimitPolicy, RateLimitConfig
from onegate.ratelimit.keys import KEY_FUNCTIONS, KeyOf


class LimitedRoute(Protocol):
    """What this module reads of a configured route."""

    @property
    def name(self) -> str: ...
    @property
    def rate_limits(self) -> list[str] | None: ...


@dataclass(frozen=True, slots=True)
class Rule:
    """A policy ready for the hot path: its key function and its constant header values."""

    policy: LimitPolicy
    key_of: KeyOf
    limit_header: bytes
    policy_header: bytes
    """``RateLimit-Policy: <limit>;w=<window>`` (draft-ietf-httpapi-ratelimit-headers)."""

    @classmethod
    def of(cls, policy: LimitPolicy) -> Rule:
        return cls(
            policy,
            KEY_FUNCTIONS[policy.key],
            str(policy.limit).encode(),
            f"{policy.limit};w={policy.window_header}".encode(),
        )


def rules_by_route(
    limits: RateLimitConfig,
    routes: Sequence[LimitedRoute],
    locate: Callable[..., ConfigError] = lambda message, *loc: ConfigError(message),
) -> dict[str, tuple[Rule, ...]]:
    """Each route's rules, for routes that have any.

    A route naming an unknown policy is a :class:`ConfigError`, located by ``locate(message,
    "routes", index, "rate_limits")`` (the gateway points it at the line in its file).

    Rules keyed by the caller come before rules keyed by the route, whatever the configured
    order: a caller already over its own limit is refused before it can spend the budget the
    route shares with everyone else.
    """
    compiled = {policy.name: Rule.of(policy) for policy in limits.policies}
    plans: dict[str, tuple[Rule, ...]] = {}
    for index, route in enumerate(routes):
        names = limits.default if route.rate_limits is None else route.rate_limits
        for name in names:
            if name not in compiled:
                message = f"unknown rate limit policy {name!r}"
                raise locate(message, "routes", index, "rate_limits")
        rules = sorted((compiled[n] for n in dict.fromkeys(names)), key=_shared_last)
        if rules:
            plans[route.name] = tuple(rules)
    return plans


def _shared_last(rule: Rule) -> bool:
    return rule.policy.key == "route"
