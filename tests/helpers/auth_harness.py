"""Building blocks for the auth unit tests: issuers configured around real keys."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from helpers.idp import AUDIENCE, SigningKey
from onegate.auth.authenticator import Authenticator
from onegate.auth.cache import Verified
from onegate.auth.config import AuthConfig, JwtIssuer
from onegate.auth.credentials import Credential, find_credential
from onegate.auth.rejection import Rejected

ISSUER = "https://idp.example.com"


def bearer(token: str) -> Credential:
    found = find_credential([(b"authorization", f"Bearer {token}".encode())], frozenset())
    assert found is not None
    return found


def static_issuer(
    key: SigningKey, directory: Path, environ: dict[str, str], **overrides: Any
) -> JwtIssuer:
    """A JWT issuer trusting ``key`` statically: a secret in the environment, or a PEM file."""
    if isinstance(key.private, bytes):
        variable = f"SECRET_{key.kid.upper().replace('-', '_')}"
        environ[variable] = key.private.decode()
        spec: dict[str, Any] = {"kid": key.kid, "secret_env": variable}
    else:
        path = directory / f"{key.kid}.pem"
        path.write_bytes(key.public_pem())
        spec = {"kid": key.kid, "public_key_file": path.name}
    settings: dict[str, Any] = {
        "name": "idp",
        "issuer": ISSUER,
        "audiences": [AUDIENCE],
        "algorithms": [key.alg],
        "keys": [spec],
        **overrides,
    }
    return JwtIssuer.model_validate(settings)


class Harness:
    """An Authenticator over some issuers, and a way to ask it about a token."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.environ: dict[str, str] = {}
        self.authenticator: Authenticator | None = None

    def build(self, *issuers: Any, **auth: Any) -> Authenticator:
        config = AuthConfig.model_validate({"issuers": list(issuers), **auth})
        self.authenticator = Authenticator(config, self.directory, self.environ)
        return self.authenticator

    def static(self, key: SigningKey, **overrides: Any) -> Authenticator:
        return self.build(static_issuer(key, self.directory, self.environ, **overrides))

    async def verify(self, token: str, now: float | None = None) -> Verified:
        assert self.authenticator is not None
        return await self.authenticator.verify(bearer(token), time.time() if now is None else now)

    async def reason(self, token: str) -> str:
        """Why ``token`` is rejected (fails the test if it is accepted)."""
        with pytest.raises(Rejected) as caught:
            await self.verify(token)
        return caught.value.reason
