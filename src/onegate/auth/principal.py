"""Who is calling: the outcome of authentication, read by every later stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

AuthMethod = Literal["jwt", "api_key"]


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    """Who: the token's ``sub``, or the API key's owner."""
    issuer: str
    """Name of the configured issuer that vouched for the caller."""
    method: AuthMethod
    scopes: frozenset[str] = field(default_factory=frozenset)
    roles: frozenset[str] = field(default_factory=frozenset)
    tenant: str | None = None
    key_id: str | None = None
    """The API key's public id (never the key itself), or the JWT's ``kid``."""
    expires_at: float | None = None
    """Unix time after which this identity must be established again."""

    @property
    def id(self) -> str:
        """Stable identifier for logs, metrics and rate limits."""
        return f"{self.issuer}:{self.subject}"
