"""Finding the credential in a request, encoding identity headers, compiling route policies."""

from __future__ import annotations

import pytest

from onegate.auth.config import AuthConfig, RouteAuth
from onegate.auth.credentials import carries_api_key, find_credential
from onegate.auth.identity import encode_value, identity_headers
from onegate.auth.policy import PUBLIC, compile_policy
from onegate.auth.principal import Principal
from onegate.auth.rejection import Rejected

KEY_HEADERS = frozenset({b"x-api-key"})
API_KEY = "og_abcdefghijkl_" + "A" * 43


def test_a_bearer_token_is_a_jwt_unless_it_is_an_onegate_key() -> None:
    jwt = find_credential([(b"authorization", b"Bearer eyJ.x.y")], KEY_HEADERS)
    assert jwt is not None and (jwt.kind, jwt.value) == ("jwt", "eyJ.x.y")
    key = find_credential([(b"authorization", f"bearer  {API_KEY} ".encode())], KEY_HEADERS)
    assert key is not None and (key.kind, key.value) == ("api_key", API_KEY)


def test_an_api_key_header_is_used_when_there_is_no_bearer_token() -> None:
    headers = [(b"authorization", b"Basic dXNlcjpwYXNz"), (b"x-api-key", API_KEY.encode())]
    found = find_credential(headers, KEY_HEADERS)
    assert found is not None and (found.kind, found.header) == ("api_key", b"x-api-key")
    assert find_credential([(b"x-other", b"1")], KEY_HEADERS) is None
    assert find_credential([(b"authorization", b"Bearer ")], KEY_HEADERS) is None


def test_the_same_value_in_two_headers_has_two_cache_keys() -> None:
    one = find_credential([(b"authorization", f"Bearer {API_KEY}".encode())], KEY_HEADERS)
    two = find_credential([(b"x-api-key", API_KEY.encode())], KEY_HEADERS)
    assert one is not None and two is not None and one.digest != two.digest
    assert API_KEY.encode() not in one.digest


@pytest.mark.parametrize(
    "headers",
    [
        [(b"authorization", b"Bearer a"), (b"authorization", b"Bearer b")],
        [(b"x-api-key", b"a"), (b"x-api-key", b"b")],
    ],
)
def test_a_credential_header_sent_twice_is_refused(headers: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(Rejected) as caught:
        find_credential(headers, KEY_HEADERS)
    assert (caught.value.reason, caught.value.error) == ("ambiguous", "invalid_request")


def test_non_ascii_and_oversized_credentials_are_malformed() -> None:
    with pytest.raises(Rejected, match="too long"):
        find_credential([(b"authorization", b"Bearer " + b"a" * 20000)], KEY_HEADERS)
    found = find_credential([(b"authorization", b"Bearer \xff\xfe")], KEY_HEADERS)
    assert found is not None
    with pytest.raises(Rejected, match="not ASCII"):
        found.value  # noqa: B018  (only verification decodes)


def test_carries_api_key() -> None:
    assert carries_api_key([(b"authorization", f"Bearer {API_KEY}".encode())])
    assert not carries_api_key([(b"authorization", b"Bearer eyJ.x.y")])


def test_identity_values_cannot_break_out_of_their_header() -> None:
    assert encode_value("alice\r\nx-onegate-subject: admin") == (
        b"alice%0D%0Ax-onegate-subject: admin"
    )
    assert encode_value("zoë 100%") == b"zo%C3%AB 100%25"
    principal = Principal(
        subject="svc",
        issuer="keys",
        method="api_key",
        scopes=frozenset({"b", "a"}),
        roles=frozenset({"ops"}),
        tenant="acme",
        key_id="abcdefghijkl",
    )
    assert identity_headers(principal) == (
        (b"x-onegate-subject", b"svc"),
        (b"x-onegate-issuer", b"keys"),
        (b"x-onegate-auth-method", b"api_key"),
        (b"x-onegate-scopes", b"a b"),
        (b"x-onegate-roles", b"ops"),
        (b"x-onegate-tenant", b"acme"),
        (b"x-onegate-key-id", b"abcdefghijkl"),
    )


def auth(**settings: object) -> AuthConfig:
    return AuthConfig.model_validate(settings)


KEYS = {"type": "api_key", "name": "keys", "store": "memory"}


def test_the_default_policy_follows_the_issuers() -> None:
    assert compile_policy(None, auth()) is PUBLIC
    assert not compile_policy(None, auth(issuers=[KEYS])).public
    assert compile_policy(None, auth(issuers=[KEYS], default_policy="public")).public
    with pytest.raises(ValueError, match="issuers is empty"):
        compile_policy(None, auth(default_policy="authenticated"))


def test_route_policies() -> None:
    config = auth(issuers=[KEYS])
    policy = compile_policy(RouteAuth(scopes=["a", "b"], roles=["x", "y"]), config)
    alice = Principal("alice", "keys", "api_key", scopes=frozenset({"a"}), roles=frozenset({"y"}))
    assert policy.missing_scopes(alice) == {"b"}
    assert not policy.lacks_role(alice)
    assert policy.accepts_issuer(alice)
    with pytest.raises(ValueError, match="unknown issuer"):
        compile_policy(RouteAuth(issuers=["nope"]), config)
    with pytest.raises(ValueError, match="public route"):
        compile_policy(RouteAuth(policy="public", scopes=["a"]), config)
    with pytest.raises(ValueError, match="issuers is empty"):
        compile_policy(RouteAuth(), auth())
    assert not compile_policy(RouteAuth(), auth(), strict=False).public
