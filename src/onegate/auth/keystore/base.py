"""What every API key store offers; the conformance tests hold each backend to it.

A store belongs to one issuer: several issuers can share a database or a Redis without seeing
each other's keys. Methods are synchronous (the CLI calls them directly; the gateway calls them
in a worker thread on a cache miss, off the event loop).
"""

from __future__ import annotations

from typing import Protocol

from onegate.auth.keystore.record import KeyRecord


class KeyStoreError(Exception):
    """The store cannot be reached or used."""


class DuplicateKey(KeyStoreError):
    pass


class UnknownKey(KeyStoreError):
    pass


class KeyStore(Protocol):
    issuer: str
    blocking: bool
    """True when calls do I/O and belong in a worker thread."""

    def add(self, record: KeyRecord) -> None:
        """Store a new key. Raises :class:`DuplicateKey` if its id is taken."""

    def get(self, key_id: str) -> KeyRecord | None: ...

    def list(self) -> list[KeyRecord]:
        """Every key of the issuer, oldest first."""

    def revoke(self, key_id: str, at: float) -> KeyRecord:
        """Mark a key revoked (an earlier revocation stands). Raises :class:`UnknownKey`."""

    def expire(self, key_id: str, at: float) -> KeyRecord:
        """Make a key expire at ``at`` at the latest. Raises :class:`UnknownKey`."""

    def close(self) -> None: ...
