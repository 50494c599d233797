"""Edge auth through the gateway app (in process, :mod:`helpers.inprocess`): two issuers at once
(the main app's JWTs from a JWKS and the AI backend's API keys), per-route policies, problem
documents, the identity the upstream receives, and the signed assertion checked by an upstream
that knows nothing but the gateway's JWKS document (``GET /_onegate/jwks.json``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from helpers.auth_setup import create_key, jwt_issuer, key_issuer, received
from helpers.idp import (
    IdentityProvider,
    ServedApp,
    claims_for,
    forged_with_public_key,
    mint,
    signing_key,
    unsigned,
)
from helpers.inprocess import run_in_process
from helpers.legacy import LegacyBackends
from helpers.problems import assert_problem


class AssertionVerifier:
    """An upstream that trusts nothing but the assertion, checked against the gateway's JWKS.

    It knows nothing of the gateway but how to GET its ``/_onegate/jwks.json``: set
    ``fetch_jwks`` once the gateway runs.
    """

    def __init__(self) -> None:
        self.fetch_jwks: Callable[[], dict[str, Any]] | None = None
        self.server = ServedApp(Starlette(routes=[Route("/{path:path}", self._check)]))

    def _check(self, request: Request) -> Response:  # sync: the JWKS is fetched blocking
        token = request.headers.get("x-onegate-assertion")
        if token is None:
            return JSONResponse({"verified": False, "why": "no assertion"}, status_code=401)
        assert self.fetch_jwks is not None
        try:
            # What jwt.PyJWKClient.get_signing_key_from_jwt does, from a document we fetch.
            key = jwt.PyJWKSet.from_dict(self.fetch_jwks())[jwt.get_unverified_header(token)["kid"]]
            claims = jwt.decode(
                token,
                key,
                algorithms=["ES256", "EdDSA"],
                audience="onegate-upstreams",
                issuer="onegate",
            )
        except (jwt.PyJWTError, KeyError) as exc:
            return JSONResponse({"verified": False, "why": str(exc)}, status_code=401)
        return JSONResponse({"verified": True, "claims": claims})


@dataclass
class Setup:
    idp: IdentityProvider
    config_dir: Path
    api_key: str
    client: httpx.Client

    def get(self, path: str, token: str | None = None, **headers: str) -> httpx.Response:
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        return self.client.get(path, headers=headers)


def route(
    name: str, prefix: str, upstream: str, auth: Mapping[str, object] | None = None
) -> dict[str, object]:
    settings: dict[str, object] = {"name": name, "match": {"prefix": prefix}, "upstream": upstream}
    if auth is not None:
        settings["auth"] = auth
    return settings


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, backends: LegacyBackends) -> Iterator[Setup]:
    config_dir = tmp_path_factory.mktemp("auth")
    verifier = AssertionVerifier()
    with IdentityProvider(signing_key("ES256")) as idp, verifier.server:
        upstreams = {
            "main": {"targets": [backends.main_url]},
            "ai": {"targets": [backends.ai_url]},
            "verifier": {"targets": [verifier.server.url]},
        }
        public = {"policy": "public"}
        routes = [
            route("public", "/api/echo/public", "main", public),
            route("payments", "/api/echo/payments", "main", {"scopes": ["payments:write"]}),
            route("admin", "/api/echo/admin", "main", {"roles": ["admin", "ops"]}),
            route("ai", "/api/ai", "ai", {"issuers": ["ai-keys"]}),
            route("verified-public", "/verified/public", "verifier", public),
            route("verified", "/verified", "verifier"),
            route("main", "/api", "main"),  # no auth: the default, authenticated
        ]
        auth = {"issuers": [jwt_issuer(idp), key_issuer()]}
        api_key = create_key(config_dir, tenant="acme")
        with (
            run_in_process(config_dir, upstreams, routes, extra={"auth": auth}) as gateway,
            gateway.client() as client,
            gateway.client() as verifiers_client,  # used from the verifier's thread
        ):
            verifier.fetch_jwks = lambda: verifiers_client.get("/_onegate/jwks.json").json()
            yield Setup(idp, config_dir, api_key, client)


# --- 401 and 403 ------------------------------------------------------------------------------


def test_no_credential_is_a_401_with_a_challenge(setup: Setup) -> None:
    response = setup.get("/api/echo/x")
    document = assert_problem(response, 401)
    assert document["type"] == "https://onegate.dev/problems/unauthorized"
    assert response.headers["www-authenticate"] == 'Bearer realm="onegate"'


def test_a_bad_token_is_a_401_invalid_token(setup: Setup) -> None:
    idp = setup.idp
    claims = claims_for(idp.issuer, scope="read payments:write")
    forged = mint(signing_key("ES256", kid=idp.signing.kid), claims)
    cases = {
        forged: "token signature is invalid",
        idp.token(expires_in=-120): "token has expired",
        idp.token(audience="another-app"): "another audience",
        mint(signing_key("ES256"), claims_for("https://evil.example")): "issuer is not accepted",
        unsigned(claims, {"kid": idp.signing.kid}): "algorithm is not accepted",
        # HS256 "signed" with the provider's public key, which anyone can download.
        forged_with_public_key(idp.signing.public_pem(), claims, idp.signing.kid): "algorithm",
        "x.y.z": "not a well-formed JWT",
    }
    for token, description in cases.items():
        response = setup.get("/api/echo/x", token)
        assert_problem(response, 401)
        challenge = response.headers["www-authenticate"]
        assert challenge.startswith('Bearer realm="onegate", error="invalid_token"')
        assert description in challenge


def test_an_unknown_api_key_is_a_401(setup: Setup) -> None:
    response = setup.get("/api/echo/x", **{"x-api-key": "og_aaaaaaaaaaaa_" + "A" * 43})
    assert assert_problem(response, 401)["detail"] == "API key is not valid"


def test_a_missing_scope_is_a_403_naming_it(setup: Setup) -> None:
    response = setup.get("/api/echo/payments", setup.idp.token(scope="payments:read"))
    document = assert_problem(response, 403)
    assert document["type"] == "https://onegate.dev/problems/forbidden"
    assert response.headers["www-authenticate"] == (
        'Bearer realm="onegate", error="insufficient_scope", scope="payments:write"'
    )
    allowed = setup.get("/api/echo/payments", setup.idp.token(scope="payments:read payments:write"))
    assert allowed.status_code == 200


def test_roles_need_any_one_of_the_listed(setup: Setup) -> None:
    assert setup.get("/api/echo/admin", setup.idp.token(roles=["viewer"])).status_code == 403
    assert setup.get("/api/echo/admin", setup.idp.token(roles=["ops"])).status_code == 200


def test_a_route_can_accept_only_some_issuers(setup: Setup) -> None:
    response = setup.get("/api/ai/echo/x", setup.idp.token())
    assert_problem(response, 401)
    assert "not accepted here" in response.headers["www-authenticate"]
    assert setup.get("/api/ai/echo/x", **{"x-api-key": setup.api_key}).status_code == 200


# --- two issuers, and what the upstream receives ----------------------------------------------


def test_a_jwt_and_an_api_key_are_both_accepted(setup: Setup) -> None:
    by_token = received(setup.get("/api/echo/x", setup.idp.token("alice", scope="read write")))
    assert by_token["x-onegate-subject"] == ["alice"]
    assert by_token["x-onegate-issuer"] == ["main-app"]
    assert by_token["x-onegate-auth-method"] == ["jwt"]
    assert by_token["x-onegate-scopes"] == ["read write"]
    assert "x-onegate-tenant" not in by_token
    assert by_token["authorization"][0].startswith("Bearer ")  # forward_token: true (default)

    by_key = received(setup.get("/api/echo/x", **{"x-api-key": setup.api_key}))
    assert by_key["x-onegate-subject"] == ["ai-backend"]
    assert by_key["x-onegate-auth-method"] == ["api_key"]
    assert by_key["x-onegate-scopes"] == ["agents:run"]
    assert by_key["x-onegate-tenant"] == ["acme"]
    assert "x-api-key" not in by_key  # forward_key: false (default)
    assert len(by_key["x-onegate-assertion"]) == 1


def test_an_api_key_as_a_bearer_token_is_not_forwarded_either(setup: Setup) -> None:
    headers = received(setup.get("/api/echo/x", setup.api_key))
    assert headers["x-onegate-auth-method"] == ["api_key"]
    assert "authorization" not in headers


SPOOFED = {
    "x-onegate-subject": "admin",
    "x-onegate-scopes": "payments:write admin",
    "x-onegate-auth-method": "jwt",
    "x-onegate-tenant": "victim",
    "x-onegate-issuer": "main-app",
    "x-onegate-assertion": "eyJhbGciOiJub25lIn0.e30.",
}


@pytest.mark.parametrize("hide", [False, True])
def test_spoofed_identity_headers_never_reach_the_upstream(setup: Setup, hide: bool) -> None:
    headers = dict(SPOOFED)
    if hide:
        # Asking the gateway to treat them as hop-by-hop must not smuggle them through either.
        headers["connection"] = ", ".join(SPOOFED)
    # Mixed case: header names are case-insensitive, and so must the stripping be.
    spoofed = {name.replace("x-onegate", "X-Onegate"): value for name, value in headers.items()}
    seen = received(setup.get("/api/echo/x", setup.idp.token("alice"), **spoofed))
    assert seen["x-onegate-subject"] == ["alice"]
    assert seen["x-onegate-scopes"] == ["read"]
    assert "x-onegate-tenant" not in seen
    assert len(seen["x-onegate-assertion"]) == 1
    assert seen["x-onegate-assertion"] != [SPOOFED["x-onegate-assertion"]]

    public = received(setup.get("/api/echo/public/x", **spoofed))
    assert not [name for name in public if name.startswith("x-onegate-")]


def test_public_routes_need_nothing_and_never_see_an_api_key(setup: Setup) -> None:
    seen = received(setup.get("/api/echo/public/x", **{"x-api-key": setup.api_key}))
    assert "x-api-key" not in seen
    seen = received(setup.get("/api/echo/public/x", setup.api_key))
    assert "authorization" not in seen


# --- the signed assertion ----------------------------------------------------------------------


def test_an_upstream_verifies_the_assertion_with_the_gateway_jwks_only(setup: Setup) -> None:
    response = setup.get("/verified/x", setup.idp.token("alice", scope="read", tenant="acme"))
    assert response.status_code == 200, response.text
    claims = response.json()["claims"]
    assert claims["sub"] == "alice" and claims["idp"] == "main-app"
    assert claims["scope"] == "read" and claims["tenant"] == "acme"
    assert claims["auth_method"] == "jwt"
    assert claims["exp"] - claims["iat"] <= 60

    by_key = setup.get("/verified/x", **{"x-api-key": setup.api_key}).json()["claims"]
    assert by_key["sub"] == "ai-backend" and by_key["auth_method"] == "api_key"


def test_a_client_cannot_bring_its_own_assertion(setup: Setup) -> None:
    own = jwt.encode(
        {"sub": "admin", "aud": "onegate-upstreams", "iss": "onegate"},
        signing_key("ES256").private,
        algorithm="ES256",
    )
    response = setup.get("/verified/public/x", **{"x-onegate-assertion": own})
    assert response.status_code == 401
    assert response.json() == {"verified": False, "why": "no assertion"}


def test_the_jwks_is_public_and_holds_only_public_keys(setup: Setup) -> None:
    document = setup.client.get("/_onegate/jwks.json").json()
    assert [key["kty"] for key in document["keys"]] == ["EC"]
    assert not any("d" in key for key in document["keys"])
