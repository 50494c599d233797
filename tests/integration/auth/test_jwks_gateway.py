"""The gateway and a live identity provider: key rotation, unknown kids and outages, end to
end (the provider is a real server the gateway process fetches from)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from helpers.auth_setup import jwt_issuer
from helpers.gateway import GatewayProcess, run_gateway
from helpers.idp import IdentityProvider, signing_key
from helpers.legacy import LegacyBackends


@dataclass
class Live:
    gateway: GatewayProcess
    idp: IdentityProvider
    client: httpx.Client

    def status(self, token: str) -> int:
        return self.client.get(
            "/api/echo/x", headers={"authorization": f"Bearer {token}"}
        ).status_code

    def challenge(self, token: str) -> str:
        response = self.client.get("/api/echo/x", headers={"authorization": f"Bearer {token}"})
        challenge: str = response.headers.get("www-authenticate", "")
        return challenge


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, backends: LegacyBackends) -> Iterator[Live]:
    with IdentityProvider(signing_key("ES256")) as idp:
        issuer = jwt_issuer(idp, jwks_refresh_seconds=0.3, jwks_min_refetch_seconds=0.2)
        with (
            run_gateway(
                tmp_path_factory.mktemp("jwks"),
                {"main": {"targets": [backends.main_url]}},
                [{"name": "main", "match": {"prefix": "/api"}, "upstream": "main"}],
                extra={"auth": {"issuers": [issuer]}},
            ) as gateway,
            httpx.Client(base_url=gateway.url, timeout=10) as client,
        ):
            yield Live(gateway, idp, client)


@pytest.fixture
def live(running: Live) -> Live:
    """The shared gateway and provider, with the provider up and answering; tests rotate keys
    freely, so each starts from whatever key the provider signs with now."""
    if not running.idp.running:
        running.idp.start()
    running.idp.status = 200
    eventually(lambda: running.status(running.idp.token("warm-up")) == 200)
    return running


def eventually(check: object, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_a_rotated_key_is_picked_up_by_refetching_on_its_unknown_kid(live: Live) -> None:
    assert live.status(live.idp.token("alice")) == 200
    old = live.idp.signing
    new = live.idp.rotate("RS256")
    # The gateway has not seen the new kid: the first token naming it triggers one refetch.
    time.sleep(0.25)  # past jwks_min_refetch_seconds since the start-up fetch
    assert live.status(live.idp.token("bob", key=new)) == 200
    # The old key is gone from the document; a token signed with it, never seen, is refused.
    eventually(lambda: "unknown key" in live.challenge(live.idp.token("carol", key=old)))


def test_unknown_kids_do_not_hammer_the_provider(live: Live) -> None:
    assert live.status(live.idp.token("alice")) == 200
    fetches = live.idp.fetches
    stranger = signing_key("ES256")
    for n in range(30):
        assert live.status(live.idp.token(f"user{n}", key=stranger)) == 401
    # One refetch per 0.2 s at most, plus the background refresh every 0.3 s.
    assert live.idp.fetches - fetches <= 6


def test_an_outage_of_the_provider_keeps_the_last_good_keys(live: Live) -> None:
    assert live.status(live.idp.token("alice")) == 200

    live.idp.status = 503  # the provider answers, with errors
    fetches = live.idp.fetches
    eventually(lambda: live.idp.fetches > fetches)  # the background refresh has failed
    assert live.status(live.idp.token("bob")) == 200  # a new token, verified with kept keys

    live.idp.stop()  # the provider is gone: connections refused
    time.sleep(0.4)
    assert live.status(live.idp.token("carol")) == 200
    started = time.monotonic()
    assert live.status(live.idp.token("dave", key=signing_key("ES256"))) == 401
    assert time.monotonic() - started < 1.0  # an unknown kid fails fast, it does not hang

    live.idp.start()  # back, with a new key
    live.idp.status = 200
    new = live.idp.rotate()
    eventually(lambda: live.status(live.idp.token("erin", key=new)) == 200)
    assert "last good keys" in live.gateway.log()
