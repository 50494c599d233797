"""Keys in Redis: one hash per key plus a set of the issuer's key ids (for listing).

Key names are ``onegate:api-keys:<issuer>:<key id>`` and ``onegate:api-keys:<issuer>:ids``,
so issuers sharing a Redis never see each other's keys.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import redis
from redis.typing import EncodableT

from onegate.auth.keystore.base import DuplicateKey, KeyStoreError, UnknownKey
from onegate.auth.keystore.record import KeyRecord

NAMESPACE = "onegate:api-keys"
_T = TypeVar("_T")


class RedisKeyStore:
    blocking = True

    def __init__(self, url: str, issuer: str) -> None:
        self.issuer = issuer
        self.client: redis.Redis = redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=2.0, socket_connect_timeout=2.0
        )
        self._prefix = f"{NAMESPACE}:{issuer}:"
        self._ids = self._prefix + "ids"

    def add(self, record: KeyRecord) -> None:
        def work() -> None:
            name = self._prefix + record.key_id
            # HSETNX claims the id atomically; the other fields follow in one round trip.
            if not self.client.hsetnx(name, "key_id", record.key_id):
                raise DuplicateKey(record.key_id)
            pipe = self.client.pipeline()
            pipe.hset(name, mapping=_fields(record))
            pipe.sadd(self._ids, record.key_id)
            pipe.execute()

        self._run(work)

    def get(self, key_id: str) -> KeyRecord | None:
        fields = self._run(lambda: self.client.hgetall(self._prefix + key_id))
        return _record(fields) if fields else None

    def list(self) -> list[KeyRecord]:
        def work() -> list[KeyRecord]:
            ids = sorted(str(i) for i in self.client.smembers(self._ids))
            pipe = self.client.pipeline()
            for key_id in ids:
                pipe.hgetall(self._prefix + key_id)
            return [_record(fields) for fields in pipe.execute() if fields]

        records = self._run(work)
        return sorted(records, key=lambda r: (r.created_at, r.key_id))

    def revoke(self, key_id: str, at: float) -> KeyRecord:
        return self._update(key_id, lambda r: r.revoked(at))

    def expire(self, key_id: str, at: float) -> KeyRecord:
        return self._update(key_id, lambda r: r.expiring(at))

    def close(self) -> None:
        self.client.close()

    def _update(self, key_id: str, change: Callable[[KeyRecord], KeyRecord]) -> KeyRecord:
        def work() -> KeyRecord:
            name = self._prefix + key_id
            fields = self.client.hgetall(name)
            if not fields:
                raise UnknownKey(key_id)
            updated = change(_record(fields))
            self.client.hset(
                name,
                mapping=_times(updated),
            )
            return updated

        return self._run(work)

    def _run(self, work: Callable[[], _T]) -> _T:
        try:
            return work()
        except redis.RedisError as exc:
            raise KeyStoreError(f"{type(exc).__name__}: {exc}") from None


def _number(value: float | None) -> str:
    return "" if value is None else repr(value)


def _times(record: KeyRecord) -> dict[EncodableT, EncodableT]:
    return {"expires_at": _number(record.expires_at), "revoked_at": _number(record.revoked_at)}


def _fields(record: KeyRecord) -> dict[EncodableT, EncodableT]:
    return {
        "key_id": record.key_id,
        "secret_hash": record.secret_hash,
        "subject": record.subject,
        "name": record.name,
        "scopes": " ".join(record.scopes),
        "tenant": record.tenant or "",
        "created_at": repr(record.created_at),
        "expires_at": _number(record.expires_at),
        "revoked_at": _number(record.revoked_at),
    }


def _record(raw: Mapping[Any, Any]) -> KeyRecord:
    # decode_responses=True: every name and value arrives as str.
    fields: dict[str, str] = {str(k): str(v) for k, v in raw.items()}

    def number(name: str) -> float | None:
        value = fields.get(name, "")
        return float(value) if value else None

    return KeyRecord(
        key_id=fields["key_id"],
        secret_hash=fields["secret_hash"],
        subject=fields["subject"],
        name=fields["name"],
        scopes=tuple(fields.get("scopes", "").split()),
        tenant=fields.get("tenant") or None,
        created_at=number("created_at") or 0.0,
        expires_at=number("expires_at"),
        revoked_at=number("revoked_at"),
    )
