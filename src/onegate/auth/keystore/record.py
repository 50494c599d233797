"""One stored API key: its public id, the hash of its secret and what it grants."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

KeyStatus = Literal["active", "expired", "revoked"]


@dataclass(frozen=True, slots=True)
class KeyRecord:
    key_id: str
    secret_hash: str
    """SHA-256 of the secret, hex. The secret itself is never stored."""
    subject: str
    """Who the key authenticates (a service or partner)."""
    name: str
    scopes: tuple[str, ...] = ()
    tenant: str | None = None
    created_at: float = 0.0
    """Unix time; so are the two below."""
    expires_at: float | None = None
    revoked_at: float | None = None

    def status(self, now: float) -> KeyStatus:
        if self.revoked_at is not None and self.revoked_at <= now:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def revoked(self, at: float) -> KeyRecord:
        """This record revoked at ``at`` (an earlier revocation stands)."""
        if self.revoked_at is not None and self.revoked_at <= at:
            return self
        return replace(self, revoked_at=at)

    def expiring(self, at: float) -> KeyRecord:
        """This record expiring at ``at`` at the latest (an earlier expiry stands)."""
        if self.expires_at is not None and self.expires_at <= at:
            return self
        return replace(self, expires_at=at)
