"""Keys in a dict: for tests and single-process experiments (nothing survives a restart)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from onegate.auth.keystore.base import DuplicateKey, UnknownKey
from onegate.auth.keystore.record import KeyRecord


class MemoryKeyStore:
    blocking = False

    def __init__(self, issuer: str) -> None:
        self.issuer = issuer
        self._records: dict[str, KeyRecord] = {}
        self._lock = threading.Lock()

    def add(self, record: KeyRecord) -> None:
        with self._lock:
            if record.key_id in self._records:
                raise DuplicateKey(record.key_id)
            self._records[record.key_id] = record

    def get(self, key_id: str) -> KeyRecord | None:
        return self._records.get(key_id)

    def list(self) -> list[KeyRecord]:
        return sorted(self._records.values(), key=lambda r: (r.created_at, r.key_id))

    def revoke(self, key_id: str, at: float) -> KeyRecord:
        return self._update(key_id, lambda r: r.revoked(at))

    def expire(self, key_id: str, at: float) -> KeyRecord:
        return self._update(key_id, lambda r: r.expiring(at))

    def _update(self, key_id: str, change: Callable[[KeyRecord], KeyRecord]) -> KeyRecord:
        with self._lock:
            record = self._records.get(key_id)
            if record is None:
                raise UnknownKey(key_id)
            self._records[key_id] = updated = change(record)
            return updated

    def close(self) -> None:
        pass
