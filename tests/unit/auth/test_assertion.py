"""The gateway's signed assertion: claims, key handling, and the JWKS that verifies it."""

from __future__ import annotations

import stat
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from onegate.auth.assertion import (
    AssertionKeyError,
    AssertionSigner,
    SigningKeys,
    public_jwk,
    read_key,
    read_or_create_key,
)
from onegate.auth.config import AssertionConfig, AuthConfig
from onegate.auth.principal import Principal
from onegate.gateway.config import load_config

ALICE = Principal(
    subject="alice",
    issuer="main-app",
    method="jwt",
    scopes=frozenset({"read", "write"}),
    tenant="acme",
    expires_at=time.time() + 3600,
)


def verify(
    token: bytes, jwks: dict[str, object], audience: str = "onegate-upstreams"
) -> dict[str, Any]:
    """What an upstream does: pick the key by kid from the JWKS and check everything."""
    key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(token)["kid"]]
    claims: dict[str, Any] = jwt.decode(
        token, key, algorithms=[key.algorithm_name], audience=audience, issuer="onegate"
    )
    return claims


@pytest.mark.parametrize("algorithm", ["ES256", "EdDSA"])
def test_an_assertion_verifies_against_the_published_jwks(algorithm: str, tmp_path: Path) -> None:
    key = read_or_create_key(tmp_path / "k.pem", algorithm)
    signer = AssertionSigner(AssertionConfig(ttl_seconds=60), key)
    now = time.time()
    token, fresh_until = signer.sign(ALICE, now)
    claims = verify(token, signer.jwks())
    assert claims["sub"] == "alice" and claims["idp"] == "main-app"
    assert claims["scope"] == "read write" and claims["tenant"] == "acme"
    assert claims["auth_method"] == "jwt"
    assert claims["exp"] - claims["iat"] == 60
    assert fresh_until == pytest.approx(now + 30)
    assert jwt.get_unverified_header(token)["alg"] == algorithm
    with pytest.raises(jwt.InvalidAudienceError):
        verify(token, signer.jwks(), audience="someone-else")


def test_an_assertion_never_outlives_the_credential(tmp_path: Path) -> None:
    signer = AssertionSigner(
        AssertionConfig(ttl_seconds=600), read_or_create_key(tmp_path / "k", "ES256")
    )
    now = time.time()
    short = Principal("svc", "keys", "api_key", key_id="abcdefghijkl", expires_at=now + 20)
    token, fresh_until = signer.sign(short, now)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] <= now + 20 and fresh_until <= now + 20
    assert claims["key_id"] == "abcdefghijkl"


def test_the_kid_is_the_rfc7638_thumbprint(tmp_path: Path) -> None:
    signer = AssertionSigner(AssertionConfig(), read_or_create_key(tmp_path / "k", "ES256"))
    jwk = jwt.PyJWK.from_dict(signer.public_jwk)
    assert signer.kid == signer.public_jwk["kid"]
    assert "d" not in signer.public_jwk  # nothing private is published
    assert isinstance(jwk.key, ec.EllipticCurvePublicKey)


def test_a_generated_key_is_private_and_created_once_by_concurrent_workers(tmp_path: Path) -> None:
    path = tmp_path / "state" / "assertion-key.pem"
    with ThreadPoolExecutor(8) as pool:
        keys = list(pool.map(lambda _: read_or_create_key(path, "ES256"), range(16)))
    publics = {
        k.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        for k in keys
    }
    assert len(publics) == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["assertion-key.pem"]


def test_key_files_must_be_p256_or_ed25519(tmp_path: Path) -> None:
    def write(name: str, key: object) -> Path:
        path = tmp_path / name
        path.write_bytes(
            key.private_bytes(  # type: ignore[attr-defined]
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return path

    assert isinstance(
        read_key(write("ed.pem", ed25519.Ed25519PrivateKey.generate())), ed25519.Ed25519PrivateKey
    )
    with pytest.raises(AssertionKeyError, match="EC P-256 or Ed25519"):
        read_key(write("rsa.pem", rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    with pytest.raises(AssertionKeyError, match="curve"):
        read_key(write("p384.pem", ec.generate_private_key(ec.SECP384R1())))
    with pytest.raises(AssertionKeyError, match="cannot read"):
        read_key(tmp_path / "missing.pem")


def test_the_key_lives_in_the_state_dir_next_to_the_config(tmp_path: Path) -> None:
    config = AuthConfig.model_validate(
        {"issuers": [{"type": "api_key", "name": "k", "store": "memory"}], "state_dir": "state"}
    )
    keys = SigningKeys()
    first = keys.key(config, tmp_path)
    assert (tmp_path / "state" / "assertion-key.pem").exists()
    assert keys.key(config, tmp_path) is first  # read once per process
    assert SigningKeys().key(config, tmp_path) is not first  # each process state reads its own
    assert public_jwk(SigningKeys().key(config, tmp_path)) == public_jwk(first)  # same file


def test_jwks_document_of_a_configuration(tmp_path: Path) -> None:
    path = tmp_path / "onegate.yaml"
    path.write_text(
        """
upstreams: {demo: {targets: ["asgi:onegate.dev.demo:app"]}}
routes: [{name: demo, match: {prefix: /api}, upstream: demo}]
auth:
  issuers: [{type: api_key, name: keys, store: memory}]
  assertion: {algorithm: EdDSA}
"""
    )
    config = load_config(path)
    document = SigningKeys().jwks(config.gateway.auth, config.directory)
    assert [k["alg"] for k in document["keys"]] == ["EdDSA"]
    assert (tmp_path / ".onegate" / "assertion-key.pem").exists()
    # Without issuers there is nothing to sign, and no key is made.
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "onegate.yaml").write_text(path.read_text().split("auth:")[0])
    bare_config = load_config(bare / "onegate.yaml")
    assert SigningKeys().jwks(bare_config.gateway.auth, bare_config.directory) == {"keys": []}
    assert not (bare / ".onegate").exists()
