"""Configuration of edge authentication."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from onegate.model import Model, Seconds

JwtAlgorithm = Literal[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"
]

_ISSUER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


class StaticKey(Model):
    """A verification key given in the configuration instead of a JWKS URL."""

    kid: str | None = None
    """Key id; a token whose header names another kid is not verified with this key."""
    secret_env: str | None = None
    """Environment variable holding an HMAC secret (HS* algorithms). Never put it in the file."""
    public_key_file: str | None = None
    """PEM file with an RSA, EC or Ed25519 public key (RS*/PS*, ES*, EdDSA). A relative path
    is relative to the config file's directory."""
    jwk: dict[str, str] | None = None
    """A public JWK, as it would appear in a JWKS document."""

    @model_validator(mode="after")
    def _one_source(self) -> StaticKey:
        given = [x for x in (self.secret_env, self.public_key_file, self.jwk) if x is not None]
        if len(given) != 1:
            raise ValueError("set exactly one of 'secret_env', 'public_key_file' or 'jwk'")
        return self


class ClaimNames(Model):
    """Where the identity is read from in a token; ``a.b`` reads a nested claim."""

    subject: str = "sub"
    scopes: str = "scope"
    """Space-separated string or list (OAuth 2 ``scope``; ``scp`` is also read if absent)."""
    roles: str = "roles"
    tenant: str = "tenant"


class JwtIssuer(Model):
    type: Literal["jwt"] = "jwt"
    name: str
    issuer: str
    """The exact ``iss`` claim tokens of this issuer carry."""
    audiences: list[str] = Field(min_length=1)
    """Accepted ``aud`` values; a token must name at least one."""
    algorithms: list[JwtAlgorithm] = Field(min_length=1)
    """Explicit allow-list. ``none`` can never be listed; HS and asymmetric keys never mix."""
    jwks_url: str | None = None
    keys: list[StaticKey] = Field(default_factory=list)
    leeway_seconds: Annotated[float, Field(ge=0, le=300)] = 30.0
    jwks_refresh_seconds: Seconds = 300.0
    """Background refresh interval of the JWKS document."""
    jwks_min_refetch_seconds: Seconds = 30.0
    """An unknown ``kid`` triggers a refetch at most this often."""
    jwks_timeout_seconds: Seconds = 5.0
    """Deadline of one JWKS fetch."""
    cache_seconds: Seconds = 300.0
    """A verified token is trusted without checking its signature again for at most this
    long, and never past its ``exp``. A key removed from the JWKS stops working within it."""
    claims: ClaimNames = ClaimNames()
    forward_token: bool = True
    """Pass the client's Authorization header on (legacy backends may still check it)."""

    @model_validator(mode="after")
    def _key_source(self) -> JwtIssuer:
        if (self.jwks_url is None) == (not self.keys):
            raise ValueError("set exactly one of 'jwks_url' or 'keys'")
        hmac = {a for a in self.algorithms if a.startswith("HS")}
        if hmac and len(hmac) != len(set(self.algorithms)):
            # One issuer verifying both ways is how HS/RS key confusion starts.
            raise ValueError("HS* algorithms cannot be allowed together with asymmetric ones")
        if hmac and self.jwks_url is not None:
            raise ValueError("HS* secrets cannot come from a JWKS URL; use 'keys' with secret_env")
        return self


class ApiKeyIssuer(Model):
    type: Literal["api_key"] = "api_key"
    name: str
    header: str = "x-api-key"
    """Header carrying the key; ``Authorization: Bearer og_...`` is accepted as well."""
    store: str = "sqlite:///onegate-keys.db"
    """Where hashed keys live: ``sqlite:///path``, ``postgresql://...``, ``redis://...``
    or ``memory``. A relative SQLite path is relative to the config file's directory."""
    cache_seconds: Seconds = 5.0
    """How long a verified key is trusted without asking the store (revocation delay)."""
    forward_key: bool = False
    """Pass the key itself on to the upstream (off: upstreams get the identity instead)."""

    @field_validator("header")
    @classmethod
    def _lower_header(cls, header: str) -> str:
        if not re.match(r"^[A-Za-z0-9-]+$", header):
            raise ValueError(f"{header!r} is not a header name")
        if header.lower() == "authorization" or header.lower().startswith("x-onegate-"):
            raise ValueError(f"{header!r} is reserved")
        return header.lower()


Issuer = Annotated[JwtIssuer | ApiKeyIssuer, Field(discriminator="type")]


class AssertionConfig(Model):
    """The short-lived JWT the gateway signs so an upstream can verify who is calling."""

    enabled: bool = True
    header: str = "x-onegate-assertion"
    issuer: str = "onegate"
    audience: str = "onegate-upstreams"
    ttl_seconds: Annotated[int, Field(ge=5, le=3600)] = 60
    algorithm: Literal["ES256", "EdDSA"] = "ES256"
    """Signature algorithm of a generated key (a ``key_file`` decides by its own type)."""
    key_file: str | None = None
    """PEM private key (Ed25519 or EC P-256). None: generated once and kept in ``state_dir``."""

    @field_validator("header")
    @classmethod
    def _identity_header(cls, header: str) -> str:
        # Only x-onegate-* headers are stripped from clients, so only those can be trusted.
        if not header.lower().startswith("x-onegate-"):
            raise ValueError("must start with 'x-onegate-' (the prefix clients cannot send)")
        return header.lower()


class AuthConfig(Model):
    issuers: list[Issuer] = Field(default_factory=list)
    default_policy: Literal["public", "authenticated"] | None = None
    """Policy of routes without ``auth``. None: ``authenticated`` once any issuer is
    configured, else ``public``."""
    admin_scope: str = "onegate:admin"
    """Scope (or role) a principal needs for ``/_onegate/`` and non-loopback ``/metrics``."""
    assertion: AssertionConfig = AssertionConfig()
    state_dir: str = ".onegate"
    """Where generated keys are kept, relative to the config file's directory."""
    realm: str = "onegate"
    """Realm named in ``WWW-Authenticate`` challenges."""
    cache_entries: Annotated[int, Field(ge=100)] = 10_000
    """Verified credentials remembered at once (per worker); the oldest are forgotten first."""

    @model_validator(mode="after")
    def _unique_names(self) -> AuthConfig:
        names = [i.name for i in self.issuers]
        if len(names) != len(set(names)):
            raise ValueError("issuer names must be unique")
        for name in names:
            if not _ISSUER_NAME.match(name):
                raise ValueError(f"issuer {name!r}: use letters, digits, '-' and '_'")
        iss = [i.issuer for i in self.issuers if isinstance(i, JwtIssuer)]
        if len(iss) != len(set(iss)):
            # The unverified ``iss`` picks the verifier, so it must name exactly one.
            raise ValueError("two JWT issuers cannot share the same 'issuer'")
        return self


class RouteAuth(Model):
    policy: Literal["public", "authenticated"] = "authenticated"
    scopes: list[str] = Field(default_factory=list)
    """Every one of these scopes is required."""
    roles: list[str] = Field(default_factory=list)
    """At least one of these roles is required (if any are listed)."""
    issuers: list[str] | None = None
    """Only these issuers (by name) are accepted on this route; None accepts all."""
