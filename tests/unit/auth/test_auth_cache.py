"""The verification cache: hits skip verification, entries end with the credential, failures
are remembered for a second at most, and the cache stays bounded."""

from __future__ import annotations

import time

import pytest

from helpers.auth_harness import ISSUER, Harness, bearer
from helpers.idp import claims_for, mint, signing_key
from onegate.auth.cache import FAILURE_SECONDS, VerificationCache, Verified
from onegate.auth.principal import Principal
from onegate.auth.rejection import Rejected

ALICE = Principal(subject="alice", issuer="idp", method="jwt")


def entry(valid_until: float) -> Verified:
    return Verified(ALICE, valid_until, (), frozenset())


def test_an_entry_is_served_until_it_expires() -> None:
    cache = VerificationCache(100)
    cache.put(b"d", entry(valid_until=110.0))
    assert cache.get(b"d", now=100.0) is not None
    assert cache.get(b"d", now=110.0) is None
    assert len(cache) == 0  # expired entries are dropped when met


def test_the_oldest_entries_go_first_when_full() -> None:
    cache = VerificationCache(100)
    for n in range(150):
        cache.put(str(n).encode(), entry(valid_until=1e12))
    assert len(cache) == 100
    assert cache.get(b"0", now=0) is None and cache.get(b"49", now=0) is None
    assert cache.get(b"50", now=0) is not None and cache.get(b"149", now=0) is not None


def test_failures_are_remembered_for_a_second_at_most() -> None:
    cache = VerificationCache(100)
    cache.put_failure(b"d", Rejected("bad_signature", "token signature is invalid"), now=100.0)
    again = cache.failure(b"d", now=100.5)
    assert again is not None and again.reason == "bad_signature"
    assert cache.failure(b"d", now=100.0 + FAILURE_SECONDS) is None
    assert FAILURE_SECONDS <= 1.0


def test_a_flood_of_distinct_failures_stays_bounded() -> None:
    cache = VerificationCache(100)
    for n in range(1000):
        cache.put_failure(str(n).encode(), Rejected("malformed", "x"), now=0.0)
    assert len(cache._failed) <= 100


async def test_a_verified_token_is_cached_until_its_exp(harness: Harness) -> None:
    key = signing_key("ES256")
    authenticator = harness.static(key, cache_seconds=3600)
    claims = claims_for(ISSUER, expires_in=120)
    token = mint(key, claims)
    now = time.time()
    verified = await harness.verify(token, now)
    cached = authenticator.cache.get(bearer(token).digest, now + 60)
    assert cached is verified
    assert verified.valid_until == claims["exp"]
    assert authenticator.cache.get(bearer(token).digest, claims["exp"] + 1) is None


async def test_cache_seconds_bounds_a_long_lived_token(harness: Harness) -> None:
    key = signing_key("ES256")
    harness.static(key, cache_seconds=30)
    now = time.time()
    verified = await harness.verify(mint(key, claims_for(ISSUER, expires_in=3600)), now)
    assert verified.valid_until == pytest.approx(now + 30)


async def test_a_cache_hit_does_not_verify_again(harness: Harness, tmp_path: object) -> None:
    """Once verified, the key file could vanish and the token would still be served."""
    key = signing_key("ES256")
    authenticator = harness.static(key)
    token = mint(key, claims_for(ISSUER))
    first = await harness.verify(token)
    # Break the verifier: any real verification would now fail.
    authenticator.jwt_issuers.clear()
    assert authenticator.cache.get(bearer(token).digest, time.time()) is first
    # ...and a new token, which does need verifying, is refused.
    other = mint(key, claims_for(ISSUER, subject="bob"))
    assert await harness.reason(other) == "unknown_issuer"


async def test_a_rejection_is_replayed_from_the_cache(harness: Harness) -> None:
    key = signing_key("ES256")
    authenticator = harness.static(key)
    token = mint(key, claims_for(ISSUER, audience="elsewhere"))
    assert await harness.reason(token) == "wrong_audience"
    assert authenticator.cache.failure(bearer(token).digest, time.time()) is not None
    assert await harness.reason(token) == "wrong_audience"


async def test_identity_headers_are_encoded_once_per_entry(harness: Harness) -> None:
    key = signing_key("ES256")
    harness.static(key)
    verified = await harness.verify(mint(key, claims_for(ISSUER, "alice", scope="b a")))
    assert dict(verified.headers) == {
        b"x-onegate-subject": b"alice",
        b"x-onegate-issuer": b"idp",
        b"x-onegate-auth-method": b"jwt",
        b"x-onegate-scopes": b"a b",
    }
