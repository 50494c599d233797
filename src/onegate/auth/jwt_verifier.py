"""Verifies the JWTs of one configured issuer and turns their claims into a Principal.

Order of checks: the algorithm must be on the issuer's allow-list (``none`` never is), the key
must be of a type that algorithm belongs to (see :mod:`onegate.auth.jwt_keys`), and only then
does PyJWT check the signature, with exactly that one algorithm, followed by ``iss``, ``aud``,
``exp`` and ``nbf`` (with the issuer's leeway).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jwt

from onegate.auth.config import JwtIssuer
from onegate.auth.jwks import JwksSource
from onegate.auth.jwt_keys import VerificationKey, load_static
from onegate.auth.principal import Principal
from onegate.auth.rejection import Rejected

#: PyJWT's failures, most specific first, as (reason, detail shown to the client).
_FAILURES: tuple[tuple[type[Exception], str, str], ...] = (
    (jwt.ExpiredSignatureError, "expired", "token has expired"),
    (jwt.ImmatureSignatureError, "not_yet_valid", "token is not valid yet"),
    (jwt.InvalidAudienceError, "wrong_audience", "token is meant for another audience"),
    (jwt.InvalidIssuerError, "wrong_issuer", "token issuer does not match"),
    (jwt.MissingRequiredClaimError, "missing_claim", "token lacks a required claim"),
    (jwt.InvalidIssuedAtError, "malformed", "token has an invalid iat claim"),
    (jwt.InvalidAlgorithmError, "alg_not_allowed", "token algorithm is not accepted"),
    (jwt.InvalidKeyError, "bad_key", "token cannot be verified with the issuer's keys"),
)


class JwtVerifier:
    def __init__(
        self, config: JwtIssuer, base_dir: Path, environ: Mapping[str, str] | None = None
    ) -> None:
        self.config = config
        self.name = config.name
        self.algorithms = frozenset(config.algorithms)
        self.jwks: JwksSource | None = None
        self.static: tuple[VerificationKey, ...] = ()
        if config.jwks_url is not None:
            self.jwks = JwksSource(
                config.jwks_url,
                refresh_seconds=config.jwks_refresh_seconds,
                min_refetch_seconds=config.jwks_min_refetch_seconds,
                timeout_seconds=config.jwks_timeout_seconds,
            )
        else:
            environ = os.environ if environ is None else environ
            allowed = list(config.algorithms)
            self.static = tuple(load_static(k, allowed, base_dir, environ) for k in config.keys)
        claims = config.claims
        self._required = ["exp", "iss", "aud"] + (["sub"] if claims.subject == "sub" else [])
        self._subject = claims.subject.split(".")
        self._scopes = claims.scopes.split(".")
        self._roles = claims.roles.split(".")
        self._tenant = claims.tenant.split(".")

    async def verify(self, token: str, header: Mapping[str, Any]) -> Principal:
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise Rejected("alg_not_allowed", "token algorithm is not accepted")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise Rejected("malformed", "token kid is not a string")
        candidates = [key for key in await self._keys(kid) if key.accepts(alg)]
        if not candidates:
            raise Rejected("unknown_kid", "token is signed with an unknown key")
        for key in candidates:
            try:
                claims = jwt.decode(
                    token,
                    key.key,
                    algorithms=[alg],
                    audience=self.config.audiences,
                    issuer=self.config.issuer,
                    leeway=self.config.leeway_seconds,
                    options={"require": self._required, "enforce_minimum_key_length": True},
                )
            except jwt.InvalidSignatureError:
                continue  # several keys without a kid: try the next one
            except jwt.InvalidTokenError as exc:
                raise _rejection(exc) from None
            return self._principal(claims, kid)
        raise Rejected("bad_signature", "token signature is invalid")

    async def _keys(self, kid: str | None) -> Sequence[VerificationKey]:
        if self.jwks is None:
            if kid is None:
                return self.static
            # A key configured without a kid verifies tokens with any kid.
            return [k for k in self.static if k.kid is None or k.kid == kid]
        return await self.jwks.lookup(kid)

    def _principal(self, claims: Mapping[str, Any], kid: str | None) -> Principal:
        subject = _claim(claims, self._subject)
        if not isinstance(subject, str | int) or isinstance(subject, bool) or subject == "":
            raise Rejected("missing_claim", "token has no usable subject")
        scopes = _claim(claims, self._scopes)
        if scopes is None and self._scopes == ["scope"]:
            scopes = claims.get("scp")  # Azure AD and Okta spell it this way
        tenant = _claim(claims, self._tenant)
        exp = claims["exp"]
        return Principal(
            subject=str(subject),
            issuer=self.name,
            method="jwt",
            scopes=_names(scopes),
            roles=_names(_claim(claims, self._roles)),
            tenant=str(tenant) if isinstance(tenant, str | int) and tenant != "" else None,
            key_id=kid,
            expires_at=float(exp),
        )


def _claim(claims: Mapping[str, Any], path: list[str]) -> Any:
    value: Any = claims
    for part in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _names(value: Any) -> frozenset[str]:
    """Scopes or roles from a space-separated string or a list of strings."""
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):
        return frozenset(name for v in value if isinstance(v, str) for name in v.split())
    return frozenset()


def _rejection(exc: jwt.InvalidTokenError) -> Rejected:
    for kind, reason, detail in _FAILURES:
        if isinstance(exc, kind):
            return Rejected(reason, detail)
    return Rejected("malformed", "token is malformed")
