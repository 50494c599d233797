"""Verifies the API keys of one configured issuer against its store."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from onegate.auth import apikey
from onegate.auth.config import ApiKeyIssuer
from onegate.auth.keystore import KeyRecord, KeyStore, KeyStoreError, open_store
from onegate.auth.principal import Principal
from onegate.auth.rejection import Rejected
from onegate.errors import ServiceUnavailable

logger = logging.getLogger("onegate.auth.apikey")


class ApiKeyVerifier:
    def __init__(self, config: ApiKeyIssuer, base_dir: Path) -> None:
        self.config = config
        self.name = config.name
        self.header = config.header.encode("latin-1")
        try:
            self.store: KeyStore = open_store(config.store, config.name, base_dir)
        except (KeyStoreError, ValueError) as exc:
            raise ValueError(f"store: {exc}") from None

    async def find(self, key_id: str) -> KeyRecord | None:
        """The stored record, or None if this issuer has no such key."""
        try:
            if self.store.blocking:
                return await asyncio.to_thread(self.store.get, key_id)
            return self.store.get(key_id)
        except KeyStoreError as exc:
            # The key id is public; the secret never gets near this message.
            logger.warning("API key store of issuer %s failed: %s", self.name, exc)
            raise ServiceUnavailable("the API key store is unavailable", retry_after=2) from None

    def principal(self, key: apikey.ApiKey, record: KeyRecord) -> Principal:
        """The caller a presented key with this record authenticates, or a rejection."""
        if not apikey.secret_matches(key.secret, record.secret_hash):
            raise Rejected("bad_secret", "API key is not valid")
        now = time.time()
        status = record.status(now)
        if status == "revoked":
            raise Rejected("revoked", "API key has been revoked")
        if status == "expired":
            raise Rejected("expired", "API key has expired")
        return Principal(
            subject=record.subject,
            issuer=self.name,
            method="api_key",
            scopes=frozenset(record.scopes),
            tenant=record.tenant,
            key_id=record.key_id,
            expires_at=record.expires_at,
        )

    def close(self) -> None:
        self.store.close()
