"""No token, key, secret or password ever reaches the gateway's log.

A real ``onegate serve`` with three issuers (JWKS, a static HMAC secret, API keys) is sent
good and bad credentials of every kind, in headers and in the query string, while its
identity provider fails; then its whole captured output is searched for each of them.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

import httpx

from helpers.auth_setup import create_key, jwt_issuer, key_issuer
from helpers.gateway import run_gateway
from helpers.idp import AUDIENCE, IdentityProvider, claims_for, mint, signing_key
from helpers.legacy import LegacyBackends
from onegate.auth.keystore import open_store

HMAC_ISSUER = "https://sessions.example.com"
OPEN = {"policy": "public"}


def test_captured_logs_contain_no_credential(tmp_path: Path, backends: LegacyBackends) -> None:
    hmac_key = signing_key("HS256")
    hmac_secret = hmac_key.private.decode()
    good_key = create_key(tmp_path, subject="svc")
    revoked_key = create_key(tmp_path, subject="old-svc")
    store = open_store("sqlite:///keys.db", "ai-keys", tmp_path)
    store.revoke(revoked_key.split("_")[1], at=0.0)
    store.close()
    password = "correct horse battery staple"
    sessions = {
        "type": "jwt",
        "name": "sessions",
        "issuer": HMAC_ISSUER,
        "audiences": [AUDIENCE],
        "algorithms": ["HS256"],
        "keys": [{"kid": hmac_key.kid, "secret_env": "SESSION_SECRET"}],
    }
    with IdentityProvider(signing_key("ES256")) as idp:
        credentials = {
            "jwt": idp.token("alice"),
            "expired jwt": idp.token("alice", expires_in=-600),
            "unknown kid": idp.token("alice", key=signing_key("ES256")),
            "hmac jwt": mint(hmac_key, claims_for(HMAC_ISSUER)),
            "forged hmac": mint(signing_key("HS256", kid=hmac_key.kid), claims_for(HMAC_ISSUER)),
            "unknown issuer": mint(signing_key("ES256"), claims_for("https://evil.example")),
            "garbage": "not-a-jwt-but-secret-garbage-0123456789",
            "api key": good_key,
            "revoked key": revoked_key,
            "unknown key": "og_aaaaaaaaaaaa_" + "Z" * 43,
            "malformed key": "og_short_secretsecretsecret",
        }
        auth = {"issuers": [jwt_issuer(idp), sessions, key_issuer()]}
        with run_gateway(
            tmp_path,
            {"main": {"targets": [backends.main_url]}},
            [
                {
                    "name": "open",
                    "match": {"prefix": "/api/echo/open"},
                    "upstream": "main",
                    "auth": OPEN,
                },
                {"name": "main", "match": {"prefix": "/api"}, "upstream": "main"},
            ],
            env={"SESSION_SECRET": hmac_secret},
            extra={"auth": auth},
        ) as gateway:
            statuses: dict[str, set[int]] = {}
            with httpx.Client(base_url=gateway.url, timeout=10) as client:
                first = client.get(
                    "/api/echo/x", headers={"authorization": "Bearer " + idp.token()}
                )
                assert first.status_code == 200  # the gateway has the provider's keys
                idp.status = 503  # from now on the provider fails too: its errors get logged
                time.sleep(0.3)  # past jwks_min_refetch_seconds: the unknown kid will refetch
                for name, credential in credentials.items():
                    for headers, query in (
                        ({"authorization": f"Bearer {credential}"}, ""),
                        ({"x-api-key": credential}, ""),
                        ({}, f"?access_token={credential}"),
                    ):
                        for path in ("/api/echo/x", "/api/echo/open"):
                            response = client.get(path + query, headers=headers)
                            statuses.setdefault(name, set()).add(response.status_code)
                basic = base64.b64encode(f"alice:{password}".encode()).decode()
                client.get("/api/echo/x", headers={"authorization": f"Basic {basic}"})
            log_path = gateway.log_path
        log = log_path.read_text(errors="replace")

    # Public routes answer anything; on the others only the good credentials get through.
    assert statuses["jwt"] == statuses["hmac jwt"] == statuses["api key"] == {200, 401}
    assert statuses["garbage"] == statuses["revoked key"] == {200, 401}
    assert 401 in statuses["revoked key"] and 401 in statuses["forged hmac"]
    assert "JWKS fetch" in log and "/api/echo/x" in log  # the log is really being written
    secrets = {name: value for name, value in credentials.items()}
    secrets |= {
        f"{name} (signature)": value.rsplit(".", 1)[-1]
        for name, value in credentials.items()
        if value.count(".") == 2
    }
    secrets |= {
        # og_<key id>_<secret>: the secret itself may contain "_", so split off the prefix.
        f"{name} (secret)": value.split("_", 2)[2]
        for name, value in credentials.items()
        if value.startswith("og_")
    }
    secrets |= {"hmac secret": hmac_secret, "password": password, "basic": basic}
    leaked = [name for name, value in secrets.items() if value in log]
    assert leaked == [], f"credentials in the log: {leaked}"
