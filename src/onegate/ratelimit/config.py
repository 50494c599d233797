"""Configuration of rate limits."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from onegate.model import Model, Seconds


class LimitPolicy(Model):
    name: str
    key: Literal["principal", "api_key", "client_ip", "route"] = "client_ip"
    """What one bucket counts: per caller, per API key, per client address, or per route."""
    limit: Annotated[int, Field(ge=1)]
    """Requests allowed per window (token bucket: the burst size)."""
    window_seconds: Seconds = 60.0
    algorithm: Literal["sliding_window", "token_bucket"] = "sliding_window"


class RateLimitConfig(Model):
    store: str = "memory"
    """``memory`` (one process) or ``redis://host:port/db`` (one limit across instances)."""
    on_store_error: Literal["open", "closed"] = "open"
    """While the store is unreachable: let requests through (open) or answer 503 (closed)."""
    store_timeout_seconds: Seconds = 0.05
    policies: list[LimitPolicy] = Field(default_factory=list)
    default: list[str] = Field(default_factory=list)
    """Policies applied to routes that don't name their own."""

    @model_validator(mode="after")
    def _known(self) -> RateLimitConfig:
        names = {p.name for p in self.policies}
        if len(names) != len(self.policies):
            raise ValueError("rate limit policy names must be unique")
        unknown = [n for n in self.default if n not in names]
        if unknown:
            raise ValueError(f"default: unknown rate limit policy {unknown[0]!r}")
        return self
