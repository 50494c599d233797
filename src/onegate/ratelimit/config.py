"""Configuration of rate limits."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from onegate.model import Model, Name, Seconds

# Policy names become part of store keys (``onegate:rl:<policy>:<key>``), so no ':' or spaces.
_STORE_SCHEMES = ("redis://", "rediss://", "unix://")

KeyKind = Literal["principal", "api_key", "client_ip", "route"]
Algorithm = Literal["sliding_window", "token_bucket"]


class LimitPolicy(Model):
    name: Name
    key: KeyKind = "client_ip"
    """What one bucket counts: per caller, per API key, per client address, or per route.
    A policy is global: ``client_ip`` counts an address across every route the policy is
    attached to. To limit one route on its own, give it a policy of its own."""
    limit: Annotated[int, Field(ge=1)]
    """Requests allowed per window (token bucket: the burst size)."""
    window_seconds: Seconds = 60.0
    algorithm: Algorithm = "sliding_window"

    @property
    def window_header(self) -> int:
        """The window in whole seconds, as ``RateLimit-Policy``'s ``w`` parameter wants it."""
        return max(1, math.ceil(self.window_seconds))


class RateLimitConfig(Model):
    store: str = "memory"
    """``memory`` (one process) or ``redis://host:port/db`` (one limit across instances)."""
    on_store_error: Literal["open", "closed"] = "open"
    """While the store is unreachable: let requests through (open) or answer 503 (closed)."""
    store_timeout_seconds: Seconds = 0.05
    """Longest wait for the store on one request, connecting included."""
    store_retry_seconds: Seconds = 1.0
    """After a store error, requests don't wait for the store again for this long: they are
    let through or refused at once, so an outage costs no latency (and no pile of timeouts)."""
    memory_max_keys: Annotated[int, Field(ge=1)] = 100_000
    """Most buckets the memory store keeps per policy. Expired buckets are dropped as they age;
    beyond this the least recently used go first (bounds memory under a scan of random IPs)."""
    policies: list[LimitPolicy] = Field(default_factory=list)
    default: list[str] = Field(default_factory=list)
    """Policies applied to routes that don't name their own."""

    @field_validator("store")
    @classmethod
    def _valid_store(cls, store: str) -> str:
        if store != "memory" and not store.startswith(_STORE_SCHEMES):
            raise ValueError("expected 'memory' or a redis://, rediss:// or unix:// URL")
        return store

    @model_validator(mode="after")
    def _known(self) -> RateLimitConfig:
        names = {p.name for p in self.policies}
        if len(names) != len(self.policies):
            raise ValueError("rate limit policy names must be unique")
        unknown = [n for n in self.default if n not in names]
        if unknown:
            raise ValueError(f"default: unknown rate limit policy {unknown[0]!r}")
        return self
