"""Every configured issuer at once: who a credential belongs to, verified once and remembered.

During a migration several issuers are live together (the main app's session JWTs and the AI
backend's API keys, say). A JWT is handed to the issuer its unverified ``iss`` names (an
unknown ``iss`` is refused before any key is touched); an API key to the issuer whose header
carried it, or, for ``Authorization: Bearer og_...``, to whichever API key issuer knows its id.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jwt

from onegate.auth import apikey
from onegate.auth.apikey_verifier import ApiKeyVerifier
from onegate.auth.assertion import AssertionSigner, SigningKeys
from onegate.auth.cache import VerificationCache, Verified
from onegate.auth.config import AuthConfig, JwtIssuer
from onegate.auth.credentials import AUTHORIZATION, Credential
from onegate.auth.identity import identity_headers
from onegate.auth.jwt_verifier import JwtVerifier
from onegate.auth.principal import Principal
from onegate.auth.rejection import Rejected


class IssuerError(ValueError):
    """An issuer that cannot be set up (a key that cannot be read, a store URL...)."""

    def __init__(self, message: str, index: int) -> None:
        super().__init__(message)
        self.index = index
        """Position of the issuer in ``auth.issuers``."""


class Authenticator:
    def __init__(
        self,
        config: AuthConfig,
        config_dir: Path | None,
        environ: Mapping[str, str] | None = None,
        *,
        keys: SigningKeys | None = None,
    ) -> None:
        """``keys``: the process's assertion keys (a fresh set when None, as in tests)."""
        keys = keys if keys is not None else SigningKeys()
        base_dir = config_dir or Path.cwd()
        self.config = config
        self.jwt_issuers: dict[str, JwtVerifier] = {}
        self.key_issuers: list[ApiKeyVerifier] = []
        for index, issuer in enumerate(config.issuers):
            try:
                if isinstance(issuer, JwtIssuer):
                    self.jwt_issuers[issuer.issuer] = JwtVerifier(issuer, base_dir, environ)
                else:
                    self.key_issuers.append(ApiKeyVerifier(issuer, base_dir))
            except ValueError as exc:
                raise IssuerError(f"issuer {issuer.name!r}: {exc}", index) from None
        self.key_headers = frozenset(v.header for v in self.key_issuers)
        self.never_forward = frozenset(
            v.header for v in self.key_issuers if not v.config.forward_key
        )
        """API key headers no upstream ever sees, on any route."""
        self.cache = VerificationCache(config.cache_entries)
        self.signer: AssertionSigner | None = keys.signer(config, config_dir)
        self.assertion_header = config.assertion.header.encode("latin-1")
        self._started = False

    # --- verification ----------------------------------------------------------------------

    async def verify(self, credential: Credential, now: float) -> Verified:
        """Verify a credential the cache did not know, and remember the outcome."""
        failure = self.cache.failure(credential.digest, now)
        if failure is not None:
            raise failure
        try:
            if credential.kind == "jwt":
                entry = await self._verify_jwt(credential, now)
            else:
                entry = await self._verify_key(credential, now)
        except Rejected as rejected:
            self.cache.put_failure(credential.digest, rejected, now)
            raise
        self.cache.put(credential.digest, entry)
        return entry

    async def _verify_jwt(self, credential: Credential, now: float) -> Verified:
        token = credential.value
        try:
            unverified: dict[str, Any] = jwt.decode_complete(
                token, options={"verify_signature": False}
            )
        except jwt.InvalidTokenError:
            raise Rejected("malformed", "token is not a well-formed JWT") from None
        header, payload = unverified["header"], unverified["payload"]
        issuer = payload.get("iss") if isinstance(payload, dict) else None
        verifier = self.jwt_issuers.get(issuer) if isinstance(issuer, str) else None
        if verifier is None:
            raise Rejected("unknown_issuer", "token issuer is not accepted")
        principal = await verifier.verify(token, header)
        limit = now + verifier.config.cache_seconds
        drop = frozenset() if verifier.config.forward_token else frozenset({AUTHORIZATION})
        return self._entry(principal, limit, drop)

    async def _verify_key(self, credential: Credential, now: float) -> Verified:
        key = apikey.parse(credential.value)
        if key is None:
            raise Rejected("malformed", "API key is malformed")
        for verifier in self.key_issuers:
            if credential.header not in (verifier.header, AUTHORIZATION):
                continue
            record = await verifier.find(key.key_id)
            if record is None:
                continue
            principal = verifier.principal(key, record)
            limit = now + verifier.config.cache_seconds
            drop = frozenset() if verifier.config.forward_key else frozenset({credential.header})
            return self._entry(principal, limit, drop)
        if not self.key_issuers:
            raise Rejected("unknown_issuer", "API keys are not accepted")
        raise Rejected("unknown_key", "API key is not valid")

    @staticmethod
    def _entry(principal: Principal, limit: float, drop: frozenset[bytes]) -> Verified:
        expires = principal.expires_at if principal.expires_at is not None else math.inf
        return Verified(principal, min(expires, limit), identity_headers(principal), drop)

    def assertion(self, entry: Verified, now: float) -> tuple[bytes, bytes]:
        """The signed assertion header for this principal, signing anew only when stale."""
        if entry.assertion is None or now >= entry.assertion_fresh_until:
            assert self.signer is not None
            token, fresh_until = self.signer.sign(entry.principal, now)
            entry.assertion = (self.assertion_header, token)
            entry.assertion_fresh_until = fresh_until
        return entry.assertion

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the JWKS refreshes (idempotent; needs a running event loop)."""
        self._started = True
        for verifier in self.jwt_issuers.values():
            if verifier.jwks is not None:
                verifier.jwks.start()

    @property
    def started(self) -> bool:
        return self._started

    async def aclose(self) -> None:
        for verifier in self.jwt_issuers.values():
            if verifier.jwks is not None:
                await verifier.jwks.aclose()
        for key_verifier in self.key_issuers:
            # Best effort: a store that cannot even close cleanly has nothing left to lose.
            with contextlib.suppress(Exception):
                key_verifier.close()
        self._started = False
