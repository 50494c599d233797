"""JWKS keys from a real identity provider on loopback: rotation, unknown kids, outages."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import Iterator
from typing import Any

import pytest

from helpers.auth_harness import Harness
from helpers.idp import AUDIENCE, IdentityProvider, signing_key
from onegate.auth.jwks import JwksError, JwksSource, parse_jwks


@pytest.fixture
def idp() -> Iterator[IdentityProvider]:
    with IdentityProvider(signing_key("ES256"), signing_key("RS256")) as provider:
        yield provider


def source(idp: IdentityProvider, **overrides: Any) -> JwksSource:
    settings: dict[str, Any] = {"refresh_seconds": 300.0, "min_refetch_seconds": 30.0}
    settings.update(overrides)
    return JwksSource(idp.jwks_url, **settings)


def jwks_issuer(idp: IdentityProvider, **overrides: Any) -> dict[str, Any]:
    return {
        "type": "jwt",
        "name": "idp",
        "issuer": idp.issuer,
        "audiences": [AUDIENCE],
        "algorithms": ["ES256", "RS256", "EdDSA"],
        "jwks_url": idp.jwks_url,
        **overrides,
    }


async def test_keys_are_fetched_on_first_use_and_then_known(idp: IdentityProvider) -> None:
    jwks = source(idp)
    kid = idp.published[1].kid
    assert [k.kid for k in await jwks.lookup(kid)] == [kid]
    assert len(jwks.known(None)) == 2
    await jwks.lookup(kid)
    assert idp.fetches == 1


async def test_a_rotated_key_is_found_by_refetching_once(
    harness: Harness, idp: IdentityProvider
) -> None:
    authenticator = harness.build(jwks_issuer(idp, jwks_min_refetch_seconds=0.2))
    assert (await harness.verify(idp.token("alice"))).principal.subject == "alice"
    assert idp.fetches == 1
    await asyncio.sleep(0.25)  # past the refetch limit
    idp.rotate("EdDSA")
    entry = await harness.verify(idp.token("bob"))
    assert entry.principal.subject == "bob" and entry.principal.key_id == idp.signing.kid
    assert idp.fetches == 2
    await authenticator.aclose()


async def test_a_published_key_without_kid_serves_tokens_naming_one(idp: IdentityProvider) -> None:
    idp.without_kids = True
    jwks = source(idp)
    assert len(await jwks.lookup("any-kid")) == 2
    assert idp.fetches == 1


async def test_unknown_kids_refetch_at_most_once_per_interval(idp: IdentityProvider) -> None:
    jwks = source(idp, min_refetch_seconds=30.0)
    await jwks.lookup(None)
    assert idp.fetches == 1
    # An attacker inventing kids must not turn the gateway into a hammer on the provider.
    for n in range(20):
        assert await jwks.lookup(f"invented-{n}") == ()
    assert idp.fetches == 1


async def test_the_very_first_fetch_is_not_rate_limited_after_a_failure(
    idp: IdentityProvider,
) -> None:
    jwks = source(idp, min_refetch_seconds=0.1)
    idp.status = 503
    assert await jwks.lookup(None) == ()
    idp.status = 200
    await asyncio.sleep(0.15)
    assert len(await jwks.lookup(None)) == 2


async def test_concurrent_requests_share_one_fetch(idp: IdentityProvider) -> None:
    jwks = source(idp, min_refetch_seconds=0.01)
    idp.delay = 0.2
    found = await asyncio.gather(*(jwks.lookup(idp.published[0].kid) for _ in range(25)))
    assert all(len(keys) == 1 for keys in found)
    assert idp.fetches == 1


async def test_an_outage_keeps_the_last_good_keys(harness: Harness, idp: IdentityProvider) -> None:
    authenticator = harness.build(
        jwks_issuer(idp, jwks_min_refetch_seconds=0.05, jwks_refresh_seconds=0.05)
    )
    await harness.verify(idp.token("alice"))
    verifier = authenticator.jwt_issuers[idp.issuer]
    assert verifier.jwks is not None
    jwks = verifier.jwks
    authenticator.start()  # background refresh every 50 ms

    idp.status = 503  # the provider answers, badly
    before = idp.fetches
    await asyncio.sleep(0.3)
    assert idp.fetches > before and jwks.last_error == "HTTP 503"
    assert (await harness.verify(idp.token("bob"))).principal.subject == "bob"

    idp.stop()  # the provider is gone: connection refused
    await asyncio.sleep(0.3)
    assert jwks.last_error is not None and "Connect" in jwks.last_error
    assert (await harness.verify(idp.token("carol"))).principal.subject == "carol"
    assert len(jwks.keys) == 2
    await authenticator.aclose()


@pytest.mark.parametrize(
    "document",
    [
        b"not json",
        b"[]",
        b'{"keys": "x"}',
        b'{"keys": []}',
        b'{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}',
    ],
)
def test_documents_without_usable_keys_are_failures(document: bytes) -> None:
    with pytest.raises(JwksError):
        parse_jwks(document)


def test_unusable_entries_are_skipped() -> None:
    good = signing_key("ES256").public_jwk()
    document = {
        "keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "shared-secret"},  # never from a public doc
            {**signing_key("ES256").public_jwk(), "use": "enc"},
            {"kty": "RSA", "kid": "broken"},
            good,
        ]
    }
    assert [k.kid for k in parse_jwks(json.dumps(document).encode())] == [good["kid"]]


async def test_the_background_refresh_stops_when_its_source_is_dropped(
    idp: IdentityProvider,
) -> None:
    jwks = source(idp, refresh_seconds=0.05)
    jwks.start()
    await asyncio.sleep(0.2)
    task = jwks._refresher
    assert task is not None and not task.done() and idp.fetches >= 2
    del jwks  # a reload dropped the runtime that held it
    gc.collect()
    await asyncio.wait_for(task, timeout=1.0)
    assert task.done() and not task.cancelled()
