"""What ``onegate keys create | list | revoke | rotate`` does, apart from the command line.

A new key is shown once, when it is created; afterwards only its id, grants and status can be
listed. Rotation issues a new key with the same grants and lets the old one live on for an
overlap, so clients can switch over without an outage.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from onegate.auth import apikey
from onegate.auth.config import ApiKeyIssuer, AuthConfig
from onegate.auth.keystore import KeyRecord, KeyStore, KeyStoreError, UnknownKey, open_store

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class KeyAdminError(Exception):
    """A mistake the operator can fix; reported as one line."""


def parse_duration(text: str) -> float:
    """``90s``, ``15m``, ``24h``, ``30d`` or ``2w`` in seconds."""
    found = _DURATION.match(text.strip())
    if found is None or float(found.group(1)) <= 0:
        raise KeyAdminError(f"{text!r} is not a duration (e.g. 90s, 15m, 24h, 30d, 2w)")
    return float(found.group(1)) * _UNIT_SECONDS[found.group(2)]


def key_issuer(auth: AuthConfig, name: str | None) -> ApiKeyIssuer:
    """The API key issuer called ``name``, or the only one when no name is given."""
    issuers = [i for i in auth.issuers if isinstance(i, ApiKeyIssuer)]
    if name is None:
        if len(issuers) == 1:
            return issuers[0]
        if not issuers:
            raise KeyAdminError("the configuration has no api_key issuer")
        names = ", ".join(i.name for i in issuers)
        raise KeyAdminError(f"several api_key issuers ({names}): choose one with --issuer")
    for issuer in issuers:
        if issuer.name == name:
            return issuer
    names = ", ".join(i.name for i in issuers) or "none"
    raise KeyAdminError(f"no api_key issuer named {name!r} (api_key issuers: {names})")


@contextmanager
def issuer_store(auth: AuthConfig, config_dir: Path, issuer_name: str | None) -> Iterator[KeyStore]:
    """The store of an api_key issuer; store failures become one-line errors.

    A relative SQLite path means the same file to the gateway and to this command: both
    resolve it against the config file's directory, ``config_dir``.
    """
    issuer = key_issuer(auth, issuer_name)
    if issuer.store == "memory":
        raise KeyAdminError(
            f"issuer {issuer.name!r} keeps keys in memory, inside the gateway: "
            "use a sqlite, postgresql or redis store to manage keys"
        )
    try:
        store = open_store(issuer.store, issuer.name, config_dir)
    except (KeyStoreError, ValueError) as exc:
        raise KeyAdminError(f"issuer {issuer.name!r}: store: {exc}") from None
    try:
        yield store
    except UnknownKey as exc:
        raise KeyAdminError(f"issuer {issuer.name!r} has no key {exc}") from None
    except KeyStoreError as exc:
        raise KeyAdminError(f"issuer {issuer.name!r}: store: {exc}") from None
    finally:
        store.close()


@dataclass(frozen=True)
class Created:
    key: apikey.ApiKey
    record: KeyRecord


def create(
    store: KeyStore,
    *,
    subject: str,
    scopes: list[str],
    tenant: str | None = None,
    name: str | None = None,
    expires_in: float | None = None,
    now: float | None = None,
) -> Created:
    _check_grants(subject, scopes)
    now = time.time() if now is None else now
    key = apikey.generate()
    record = KeyRecord(
        key_id=key.key_id,
        secret_hash=key.secret_hash,
        subject=subject,
        name=name or subject,
        scopes=tuple(dict.fromkeys(scopes)),
        tenant=tenant,
        created_at=now,
        expires_at=now + expires_in if expires_in is not None else None,
    )
    store.add(record)
    return Created(key, record)


def rotate(
    store: KeyStore, key_id: str, *, overlap: float, now: float | None = None
) -> tuple[Created, KeyRecord]:
    """A new key with the old one's grants; the old one expires after ``overlap``."""
    now = time.time() if now is None else now
    old = store.get(key_id)
    if old is None:
        raise UnknownKey(key_id)
    if old.status(now) != "active":
        raise KeyAdminError(f"key {key_id} is {old.status(now)}; create a new key instead")
    lifetime = old.expires_at - old.created_at if old.expires_at is not None else None
    created = create(
        store,
        subject=old.subject,
        scopes=list(old.scopes),
        tenant=old.tenant,
        name=old.name,
        expires_in=lifetime,
        now=now,
    )
    return created, store.expire(key_id, now + overlap)


def _check_grants(subject: str, scopes: list[str]) -> None:
    if not subject.strip():
        raise KeyAdminError("--subject must not be empty")
    for scope in scopes:
        if not scope or any(c.isspace() for c in scope):
            raise KeyAdminError(f"scope {scope!r} must be one word")


def when(timestamp: float | None) -> str | None:
    """ISO 8601 in UTC (``2025-05-01T12:00:00Z``), what JSON readers parse; None for never."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def revoke(store: KeyStore, key_id: str, now: float | None = None) -> KeyRecord:
    return store.revoke(key_id, time.time() if now is None else now)


def describe(record: KeyRecord, now: float | None = None) -> dict[str, object]:
    """A listing row: everything but the hash."""
    now = time.time() if now is None else now
    return {
        "key_id": record.key_id,
        "name": record.name,
        "subject": record.subject,
        "scopes": list(record.scopes),
        "tenant": record.tenant,
        "created_at": when(record.created_at),
        "expires_at": when(record.expires_at),
        "revoked_at": when(record.revoked_at),
        "status": record.status(now),
    }


_COLUMNS = ("key_id", "name", "subject", "scopes", "tenant", "expires_at", "status")


def table(rows: list[dict[str, object]]) -> str:
    """Listing rows as aligned text columns."""
    lines = [list(_COLUMNS)]
    for row in rows:
        cells = [row[column] for column in _COLUMNS]
        lines.append([" ".join(c) if isinstance(c, list) else str(c or "-") for c in cells])
    widths = [max(len(line[i]) for line in lines) for i in range(len(_COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )
