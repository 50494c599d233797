"""Verification keys for JWTs, and which algorithm each kind of key may verify.

The pairing of algorithm and key type is the defence against algorithm confusion: an HMAC
secret only ever verifies HS*, an RSA key RS*/PS*, an EC key ES* on its own curve, and an
Ed25519/Ed448 key EdDSA. A token naming ``HS256`` can then never be checked against an RSA
public key used as an HMAC secret, whatever the token says.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from onegate.auth.config import StaticKey

PublicKey = (
    bytes
    | rsa.RSAPublicKey
    | ec.EllipticCurvePublicKey
    | ed25519.Ed25519PublicKey
    | ed448.Ed448PublicKey
)

_EC_CURVES: dict[str, type[ec.EllipticCurve]] = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1}


class UnusableKey(ValueError):
    """A key that cannot be used (unreadable, wrong type, too short)."""


def compatible(key: PublicKey, alg: str) -> bool:
    """Whether ``key``'s type may verify a signature made with ``alg``."""
    if alg.startswith("HS"):
        return isinstance(key, bytes)
    if alg.startswith(("RS", "PS")):
        return isinstance(key, rsa.RSAPublicKey)
    curve = _EC_CURVES.get(alg)
    if curve is not None:
        return isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, curve)
    if alg == "EdDSA":
        return isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)
    return False


@dataclass(frozen=True, slots=True)
class VerificationKey:
    kid: str | None
    key: PublicKey
    algorithm: str | None = None
    """The ``alg`` a JWK pins itself to, if it names one."""

    def accepts(self, alg: str) -> bool:
        if self.algorithm is not None and self.algorithm != alg:
            return False
        return compatible(self.key, alg)


def from_jwk(data: Mapping[str, Any]) -> VerificationKey:
    """A verification key from a public JWK. Raises :class:`UnusableKey` if it is unusable."""
    if data.get("use", "sig") != "sig":
        raise UnusableKey("not a signature key")
    alg = data.get("alg")
    kid = data.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise UnusableKey("kid must be a string")
    try:
        parsed = jwt.PyJWK(dict(data))
    except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError) as exc:
        raise UnusableKey(f"unusable JWK: {type(exc).__name__}") from None
    key: Any = parsed.key
    # A JWKS that (wrongly) publishes private keys still only yields public ones here.
    if hasattr(key, "public_key") and not isinstance(key, bytes):
        key = key.public_key()
    return VerificationKey(kid, key, alg if isinstance(alg, str) else None)


def from_pem(pem: bytes, kid: str | None = None) -> VerificationKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise UnusableKey(f"not a PEM public key ({exc})") from None
    if not isinstance(
        key,
        rsa.RSAPublicKey
        | ec.EllipticCurvePublicKey
        | ed25519.Ed25519PublicKey
        | ed448.Ed448PublicKey,
    ):
        raise UnusableKey(f"unsupported public key type {type(key).__name__}")
    return VerificationKey(kid, key)


def load_static(
    spec: StaticKey,
    algorithms: Sequence[str],
    base_dir: Path,
    environ: Mapping[str, str] | None = None,
) -> VerificationKey:
    """Load one configured key and check that it suits at least one allowed algorithm."""
    environ = os.environ if environ is None else environ
    if spec.secret_env is not None:
        secret = environ.get(spec.secret_env)
        if not secret:
            raise UnusableKey(f"environment variable {spec.secret_env} is not set")
        key = VerificationKey(spec.kid, secret.encode("utf-8"))
    elif spec.public_key_file is not None:
        path = base_dir / spec.public_key_file
        try:
            pem = path.read_bytes()
        except OSError as exc:
            raise UnusableKey(f"cannot read {path}: {exc.strerror}") from None
        key = from_pem(pem, spec.kid)
    else:
        assert spec.jwk is not None
        jwk_key = from_jwk(spec.jwk)
        key = VerificationKey(spec.kid or jwk_key.kid, jwk_key.key, jwk_key.algorithm)
    usable = [alg for alg in algorithms if key.accepts(alg)]
    if not usable:
        raise UnusableKey(f"a {_kind(key.key)} key cannot verify any of {', '.join(algorithms)}")
    for alg in usable:
        weakness = jwt.get_algorithm_by_name(alg).check_key_length(key.key)
        if weakness:
            raise UnusableKey(weakness)
    return key


def _kind(key: PublicKey) -> str:
    if isinstance(key, bytes):
        return "HMAC"
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    return "EdDSA"
