"""Configuration snippets and readers shared by the auth integration tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from helpers.idp import AUDIENCE, IdentityProvider
from onegate.auth import keyadmin
from onegate.auth.keystore import open_store

KEY_STORE = "sqlite:///keys.db"


def jwt_issuer(idp: IdentityProvider, name: str = "main-app", **overrides: Any) -> dict[str, Any]:
    return {
        "type": "jwt",
        "name": name,
        "issuer": idp.issuer,
        "audiences": [AUDIENCE],
        "algorithms": ["ES256", "RS256", "EdDSA"],
        "jwks_url": idp.jwks_url,
        "jwks_min_refetch_seconds": 0.2,
        **overrides,
    }


def key_issuer(name: str = "ai-keys", **overrides: Any) -> dict[str, Any]:
    return {"type": "api_key", "name": name, "store": KEY_STORE, "cache_seconds": 0.5, **overrides}


def create_key(config_dir: Path, issuer: str = "ai-keys", **grants: Any) -> str:
    """A new API key in the store the gateway reads (as ``onegate keys create`` would)."""
    store = open_store(KEY_STORE, issuer, config_dir)
    try:
        settings: dict[str, Any] = {"subject": "ai-backend", "scopes": ["agents:run"], **grants}
        return keyadmin.create(store, **settings).key.token
    finally:
        store.close()


def received(response: httpx.Response) -> dict[str, list[str]]:
    """The headers the legacy echo endpoint says reached it, by lower-case name."""
    assert response.status_code == 200, response.text
    headers: dict[str, list[str]] = {}
    for name, value in response.json()["headers"]:
        headers.setdefault(name, []).append(value)
    return headers
