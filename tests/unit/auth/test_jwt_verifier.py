"""JWT verification: every algorithm we accept, and every classic attack refused.

Tokens are minted with real keys (helpers.idp) and checked by a real Authenticator.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from helpers.auth_harness import ISSUER, Harness
from helpers.idp import claims_for, forged_with_public_key, mint, signing_key, unsigned
from onegate.auth.config import JwtIssuer, StaticKey
from onegate.auth.jwt_keys import UnusableKey, compatible, from_jwk, load_static


@pytest.mark.parametrize("alg", ["HS256", "RS256", "ES256", "EdDSA"])
async def test_each_algorithm_verifies_and_yields_the_principal(harness: Harness, alg: str) -> None:
    key = signing_key(alg)
    harness.static(key)
    claims = claims_for(ISSUER, "alice", scope="read write", tenant="acme", roles=["admin"])
    entry = await harness.verify(mint(key, claims))
    principal = entry.principal
    assert (principal.subject, principal.issuer, principal.method) == ("alice", "idp", "jwt")
    assert principal.scopes == {"read", "write"}
    assert principal.roles == {"admin"}
    assert principal.tenant == "acme"
    assert principal.key_id == key.kid
    assert principal.expires_at == claims["exp"]


async def test_alg_none_is_refused_in_every_spelling(harness: Harness) -> None:
    harness.static(signing_key("RS256"))
    for spelling in ("none", "None", "NONE", "nOnE"):
        token = unsigned(claims_for(ISSUER), {"alg": spelling})
        assert await harness.reason(token) == "alg_not_allowed"


async def test_hs256_signed_with_the_rsa_public_key_is_refused(harness: Harness) -> None:
    """The HS/RS confusion: the attacker knows the public key and uses it as an HMAC secret."""
    key = signing_key("RS256")
    harness.static(key)
    token = forged_with_public_key(key.public_pem(), claims_for(ISSUER), key.kid)
    assert await harness.reason(token) == "alg_not_allowed"


def test_an_rsa_key_never_verifies_hmac_whatever_the_allow_list() -> None:
    """The second line of defence: key type and algorithm must belong together."""
    rsa_key, ec_key, ed_key = (signing_key(a) for a in ("RS256", "ES256", "EdDSA"))
    assert not compatible(rsa_key.public, "HS256")
    assert not compatible(ec_key.public, "HS256")
    assert not compatible(ed_key.public, "HS256")
    assert not compatible(rsa_key.public, "ES256")
    assert not compatible(ec_key.public, "ES384")  # a P-256 key is not a P-384 key
    assert not compatible(b"secret", "RS256")
    assert compatible(rsa_key.public, "PS256") and compatible(ed_key.public, "EdDSA")


def test_an_issuer_cannot_mix_hmac_and_asymmetric_algorithms() -> None:
    with pytest.raises(ValidationError, match="HS"):
        JwtIssuer(
            name="x",
            issuer="i",
            audiences=["a"],
            algorithms=["HS256", "RS256"],
            keys=[StaticKey(secret_env="S")],
        )
    with pytest.raises(ValidationError, match="JWKS"):
        JwtIssuer(name="x", issuer="i", audiences=["a"], algorithms=["HS256"], jwks_url="http://x")
    with pytest.raises(ValidationError):
        JwtIssuer.model_validate(
            {"name": "x", "issuer": "i", "audiences": ["a"], "algorithms": ["none"], "keys": []}
        )


async def test_an_algorithm_outside_the_allow_list_is_refused(harness: Harness) -> None:
    key = signing_key("RS256")
    harness.static(key)  # allows RS256 only
    token = mint(key, claims_for(ISSUER), alg="RS512")
    assert await harness.reason(token) == "alg_not_allowed"


async def test_unknown_issuer_is_refused_before_any_key_is_tried(harness: Harness) -> None:
    key = signing_key("ES256")
    harness.static(key)
    assert await harness.reason(mint(key, claims_for("https://evil.example"))) == "unknown_issuer"
    assert await harness.reason(mint(key, claims_for(ISSUER) | {"iss": 7})) == "unknown_issuer"
    no_iss = claims_for(ISSUER)
    del no_iss["iss"]
    assert await harness.reason(mint(key, no_iss)) == "unknown_issuer"


async def test_wrong_audience_is_refused(harness: Harness) -> None:
    key = signing_key("ES256")
    harness.static(key)
    token = mint(key, claims_for(ISSUER, audience="someone-else"))
    assert await harness.reason(token) == "wrong_audience"
    # One accepted audience in a list is enough.
    accepted = await harness.verify(mint(key, claims_for(ISSUER, audience=["x", "mobile-app"])))
    assert accepted.principal.subject == "alice"


async def test_expiry_and_not_before_honour_the_leeway(harness: Harness) -> None:
    key = signing_key("ES256")
    harness.static(key, leeway_seconds=10)
    now = int(time.time())
    expired = mint(key, claims_for(ISSUER) | {"exp": now - 60})
    assert await harness.reason(expired) == "expired"
    just_expired = mint(key, claims_for(ISSUER) | {"exp": now - 3})
    assert (await harness.verify(just_expired)).principal.subject == "alice"
    future = mint(key, claims_for(ISSUER) | {"nbf": now + 60})
    assert await harness.reason(future) == "not_yet_valid"
    almost = mint(key, claims_for(ISSUER) | {"nbf": now + 3})
    assert (await harness.verify(almost)).principal.subject == "alice"


async def test_required_claims(harness: Harness) -> None:
    key = signing_key("ES256")
    harness.static(key)
    for claim in ("exp", "aud", "sub"):
        claims = claims_for(ISSUER)
        del claims[claim]
        assert await harness.reason(mint(key, claims)) == "missing_claim", claim


async def test_unknown_kid_is_refused(harness: Harness) -> None:
    key = signing_key("ES256")
    harness.static(key)
    token = mint(key, claims_for(ISSUER), headers={"kid": "somebody-else"})
    assert await harness.reason(token) == "unknown_kid"


async def test_a_signature_by_another_key_is_refused(harness: Harness) -> None:
    key = signing_key("ES256", kid="k1")
    impostor = signing_key("ES256", kid="k1")
    harness.static(key)
    assert await harness.reason(mint(impostor, claims_for(ISSUER))) == "bad_signature"


async def test_a_tampered_payload_is_refused(harness: Harness) -> None:
    key = signing_key("RS256")
    harness.static(key)
    header, _, signature = mint(key, claims_for(ISSUER, scope="read")).split(".")
    forged = claims_for(ISSUER, scope="read admin")
    payload = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    assert await harness.reason(f"{header}.{payload}.{signature}") == "bad_signature"


async def test_garbage_is_malformed(harness: Harness) -> None:
    harness.static(signing_key("ES256"))
    for token in ("abc", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.e30", "...."):
        assert await harness.reason(token) == "malformed"


async def test_several_keys_without_kid_are_each_tried(harness: Harness, tmp_path: Path) -> None:
    old, new = signing_key("ES256"), signing_key("ES256")
    for key in (old, new):
        (tmp_path / f"{key.kid}.pem").write_bytes(key.public_pem())
    harness.build(
        {
            "type": "jwt",
            "name": "idp",
            "issuer": ISSUER,
            "audiences": ["mobile-app"],
            "algorithms": ["ES256"],
            "keys": [{"public_key_file": f"{k.kid}.pem"} for k in (old, new)],
        }
    )
    for key in (old, new):
        entry = await harness.verify(mint(key, claims_for(ISSUER), with_kid=False))
        assert entry.principal.subject == "alice"


async def test_claim_names_are_configurable_and_nested(harness: Harness) -> None:
    key = signing_key("ES256")
    harness.static(
        key,
        claims={"subject": "email", "roles": "realm_access.roles", "tenant": "org"},
    )
    claims = claims_for(ISSUER, scope=None) | {
        "email": "bob@example.com",
        "scp": ["payments:read", "payments:write"],
        "realm_access": {"roles": ["ops"]},
        "org": "acme",
    }
    principal = (await harness.verify(mint(key, claims))).principal
    assert principal.subject == "bob@example.com"
    assert principal.scopes == {"payments:read", "payments:write"}
    assert principal.roles == {"ops"} and principal.tenant == "acme"


def test_static_keys_are_checked_when_loaded(tmp_path: Path) -> None:
    rsa_key = signing_key("RS256")
    (tmp_path / "rsa.pem").write_bytes(rsa_key.public_pem())
    with pytest.raises(UnusableKey, match="cannot verify"):
        load_static(StaticKey(public_key_file="rsa.pem"), ["ES256"], tmp_path, {})
    with pytest.raises(UnusableKey, match="not set"):
        load_static(StaticKey(secret_env="NOPE"), ["HS256"], tmp_path, {})
    with pytest.raises(UnusableKey, match="below the minimum"):
        load_static(StaticKey(secret_env="S"), ["HS256"], tmp_path, {"S": "short"})
    with pytest.raises(UnusableKey, match="cannot read"):
        load_static(StaticKey(public_key_file="missing.pem"), ["RS256"], tmp_path, {})


def test_a_jwk_pinned_to_an_algorithm_verifies_only_that_one() -> None:
    key = signing_key("RS256")
    pinned = from_jwk(key.public_jwk())
    assert pinned.accepts("RS256")
    assert not pinned.accepts("PS256")
    assert not pinned.accepts("HS256")
    with pytest.raises(UnusableKey):
        from_jwk({**key.public_jwk(), "use": "enc"})
