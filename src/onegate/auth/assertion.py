"""The gateway's signed statement of who is calling, for upstreams that want proof.

Identity headers are only as trustworthy as the network path between gateway and upstream. A
backend that wants more verifies the assertion instead: a short-lived JWT (ES256 or EdDSA)
signed by the gateway, whose public key the gateway publishes as a JWKS document
(``GET /_onegate/jwks.json``, see :meth:`SigningKeys.jwks`). The backend needs nothing but that
URL, the issuer and the audience.

The signing key comes from ``auth.assertion.key_file``, or is generated once and kept in
``<config dir>/<state_dir>/assertion-key.pem`` (mode 0600). Several workers starting at the
same time all end up with the one key that won the race to create the file.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import threading
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from onegate.auth.config import AssertionConfig, AuthConfig
from onegate.auth.principal import Principal

SigningKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

KEY_FILE_NAME = "assertion-key.pem"
JWKS_PATH = "/_onegate/jwks.json"


class AssertionKeyError(ValueError):
    """The signing key cannot be read, created or used."""


class AssertionSigner:
    def __init__(self, config: AssertionConfig, key: SigningKey) -> None:
        self.config = config
        self.key = key
        self.algorithm = algorithm_of(key)
        self.public_jwk = public_jwk(key)
        self.kid: str = self.public_jwk["kid"]
        self.ttl = config.ttl_seconds

    def sign(self, principal: Principal, now: float) -> tuple[bytes, float]:
        """The assertion for ``principal`` and the time until which it may be reused.

        It never outlives the credential it vouches for. Reuse for half its life keeps
        signing off the hot path while every upstream still gets at least ``ttl / 2``.
        """
        issued = int(now)
        expires = issued + self.ttl
        if principal.expires_at is not None:
            expires = min(expires, int(principal.expires_at))
        claims: dict[str, Any] = {
            "iss": self.config.issuer,
            "aud": self.config.audience,
            "sub": principal.subject,
            "scope": " ".join(sorted(principal.scopes)),
            "auth_method": principal.method,
            "idp": principal.issuer,
            "iat": issued,
            "exp": expires,
            "jti": uuid.uuid4().hex,
        }
        if principal.roles:
            claims["roles"] = sorted(principal.roles)
        if principal.tenant is not None:
            claims["tenant"] = principal.tenant
        if principal.method == "api_key" and principal.key_id is not None:
            claims["key_id"] = principal.key_id
        token = jwt.encode(claims, self.key, algorithm=self.algorithm, headers={"kid": self.kid})
        return token.encode("ascii"), min(now + self.ttl / 2, float(expires))

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.public_jwk]}


# --- the key ------------------------------------------------------------------------------


def algorithm_of(key: SigningKey) -> str:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    if isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    raise AssertionKeyError(f"unsupported curve {key.curve.name} (use P-256 or Ed25519)")


def public_jwk(key: SigningKey) -> dict[str, Any]:
    """The public half as a JWK, with its RFC 7638 thumbprint as ``kid``."""
    public = key.public_key()
    if isinstance(public, ed25519.Ed25519PublicKey):
        jwk: dict[str, Any] = jwt.algorithms.OKPAlgorithm.to_jwk(public, as_dict=True)
        required: tuple[str, ...] = ("crv", "kty", "x")
    else:
        jwk = jwt.algorithms.ECAlgorithm.to_jwk(public, as_dict=True)
        required = ("crv", "kty", "x", "y")
    canonical = json.dumps({k: jwk[k] for k in required}, separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode()).digest()
    kid = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    return {**{k: jwk[k] for k in required}, "kid": kid, "alg": algorithm_of(key), "use": "sig"}


def generate_key(algorithm: str) -> SigningKey:
    if algorithm == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


def read_key(path: Path) -> SigningKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AssertionKeyError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise AssertionKeyError(f"{path} is not an unencrypted PEM private key") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise AssertionKeyError(f"{path}: use an EC P-256 or Ed25519 key")
    algorithm_of(key)
    return key


def read_or_create_key(path: Path, algorithm: str) -> SigningKey:
    """The key in ``path``, generating it first if there is none yet.

    The new key is written to a private temporary file and hard-linked into place: linking
    fails if the name exists, so exactly one process wins and nobody ever reads a half-written
    key. Losers throw their key away and read the winner's.
    """
    if path.exists():
        return read_key(path)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        pem = generate_key(algorithm).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another worker won; its key is the one
        finally:
            os.unlink(temporary)
    except OSError as exc:
        raise AssertionKeyError(f"cannot create {path}: {exc.strerror}") from exc
    return read_key(path)


class SigningKeys:
    """The assertion keys this process has read or made, each read once per file version.

    One per process (owned by the gateway's process state), so every reload and every stage
    signs with the same key, and tests get a fresh set by making a new one.
    """

    def __init__(self) -> None:
        self._keys: dict[tuple[str, int], SigningKey] = {}
        self._lock = threading.Lock()

    def key(self, auth: AuthConfig, config_dir: Path | None) -> SigningKey:
        """The configured or generated key (read again if the file changes).

        Without a config file and without ``key_file`` the key is made up for this process
        only: fine for tests and the built-in demo, useless for several workers.
        """
        assertion = auth.assertion
        if assertion.key_file is not None:
            path = (config_dir or Path.cwd()) / assertion.key_file
            create = False
        elif config_dir is not None:
            path = config_dir / auth.state_dir / KEY_FILE_NAME
            create = True
        else:
            with self._lock:
                cache_key = (f"ephemeral:{assertion.algorithm}", 0)
                if cache_key not in self._keys:
                    self._keys[cache_key] = generate_key(assertion.algorithm)
                return self._keys[cache_key]
        with self._lock:
            if create and not path.exists():
                read_or_create_key(path, assertion.algorithm)
            try:
                version = path.stat().st_mtime_ns
            except OSError:
                version = -1  # read_key below reports why
            cache_key = (str(path), version)
            key = self._keys.get(cache_key)
            if key is None:
                key = self._keys[cache_key] = read_key(path)
            return key

    def signer(self, auth: AuthConfig, config_dir: Path | None) -> AssertionSigner | None:
        """The signer the auth stage uses, or None when there is nothing to sign."""
        if not auth.assertion.enabled or not auth.issuers:
            return None
        return AssertionSigner(auth.assertion, self.key(auth, config_dir))

    def jwks(self, auth: AuthConfig, config_dir: Path | None) -> dict[str, Any]:
        """The public JWKS upstreams verify assertions with (served at :data:`JWKS_PATH`)."""
        signer = self.signer(auth, config_dir)
        return signer.jwks() if signer is not None else {"keys": []}
