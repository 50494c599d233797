"""Remembers verified credentials so the hot path does not check signatures or stores again.

Entries are keyed by a hash of the credential (see :mod:`onegate.auth.credentials`), so the
cache holds no credential a memory dump could reveal. A success is trusted until the
credential expires or its issuer's cache time runs out, whichever comes first; a failure is
remembered for at most a second, which spares the verifier a flood of identical bad tokens
without delaying a fix (a new JWKS key, a re-issued API key) noticeably.
"""

from __future__ import annotations

from dataclasses import dataclass

from onegate.auth.principal import Principal
from onegate.auth.rejection import Rejected

Headers = tuple[tuple[bytes, bytes], ...]

FAILURE_SECONDS = 1.0


@dataclass(slots=True, eq=False)
class Verified:
    """A principal together with everything the stage adds for it on each request."""

    principal: Principal
    valid_until: float
    """Unix time after which the credential must be verified again."""
    headers: Headers
    """Identity headers for the upstream, encoded once."""
    drop: frozenset[bytes]
    """Client headers not to forward (a consumed API key, a token not to pass on)."""
    assertion: tuple[bytes, bytes] | None = None
    """The signed assertion header, re-signed once ``assertion_fresh_until`` has passed."""
    assertion_fresh_until: float = 0.0


class VerificationCache:
    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._ok: dict[bytes, Verified] = {}
        self._failed: dict[bytes, tuple[float, str, str, str]] = {}

    def __len__(self) -> int:
        return len(self._ok)

    def get(self, digest: bytes, now: float) -> Verified | None:
        entry = self._ok.get(digest)
        if entry is None:
            return None
        if now >= entry.valid_until:
            del self._ok[digest]
            return None
        return entry

    def put(self, digest: bytes, entry: Verified) -> None:
        ok = self._ok
        if len(ok) >= self.max_entries and digest not in ok:
            # Dicts keep insertion order, so the first key is the oldest entry: FIFO eviction
            # costs nothing on the hit path (no LRU bookkeeping per request).
            del ok[next(iter(ok))]
        ok[digest] = entry

    def forget(self, digest: bytes) -> None:
        self._ok.pop(digest, None)

    def failure(self, digest: bytes, now: float) -> Rejected | None:
        """The rejection remembered for this credential, as a fresh exception, if any."""
        found = self._failed.get(digest)
        if found is None:
            return None
        until, reason, detail, error = found
        if now >= until:
            del self._failed[digest]
            return None
        return Rejected(reason, detail, error=error)

    def put_failure(self, digest: bytes, rejected: Rejected, now: float) -> None:
        failed = self._failed
        if len(failed) >= self.max_entries and digest not in failed:
            # Random garbage tokens would otherwise grow this without bound.
            failed.clear()
        failed[digest] = (now + FAILURE_SECONDS, rejected.reason, rejected.detail, rejected.error)
