"""Limits per authenticated caller and per API key, with the auth stage in front of them.

Three API keys: two belong to the same caller (alice), one to another (bob). A per-key limit
counts each key on its own; a per-caller limit counts alice's two keys together.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from helpers.gateway import run_gateway
from onegate.auth import keyadmin
from onegate.auth.keystore import open_store

KEY_STORE = "sqlite:///keys.db"
ISSUER = "partners"


def create_key(config_dir: Path, subject: str) -> str:
    store = open_store(KEY_STORE, ISSUER, config_dir)
    try:
        return keyadmin.create(store, subject=subject, scopes=[]).key.token
    finally:
        store.close()


@dataclass
class Setup:
    client: httpx.Client
    alice_1: str
    alice_2: str
    bob: str

    def get(self, path: str, key: str | None = None) -> httpx.Response:
        return self.client.get(path, headers={"x-api-key": key} if key else {})


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    config_dir = tmp_path_factory.mktemp("callers")
    keys = [create_key(config_dir, subject) for subject in ("alice", "alice", "bob")]
    hour = 3600
    rate_limits = {
        "policies": [
            {"name": "per-key", "key": "api_key", "limit": 2, "window_seconds": hour},
            {"name": "per-caller", "key": "principal", "limit": 3, "window_seconds": hour},
            {"name": "anyone", "key": "principal", "limit": 1, "window_seconds": hour},
        ],
    }
    routes = [
        {"name": "keyed", "match": {"prefix": "/keyed"}, "upstream": "demo",
         "rate_limits": ["per-key", "per-caller"]},
        {"name": "public", "match": {"prefix": "/public"}, "upstream": "demo",
         "auth": {"policy": "public"}, "rate_limits": ["anyone", "per-key"]},
    ]  # fmt: skip
    auth = {"issuers": [{"type": "api_key", "name": ISSUER, "store": KEY_STORE}]}
    with (
        run_gateway(
            config_dir,
            {"demo": {"targets": ["asgi:onegate.dev.demo:app"]}},
            routes,
            drain_seconds=1,
            extra={"auth": auth, "rate_limits": rate_limits},
        ) as gateway,
        httpx.Client(base_url=gateway.url, timeout=5) as client,
    ):
        yield Setup(client, *keys)


def state(response: httpx.Response) -> tuple[int, str, str]:
    return (
        response.status_code,
        response.headers["ratelimit-limit"],
        response.headers["ratelimit-remaining"],
    )


def test_per_key_and_per_caller_limits(setup: Setup) -> None:
    # alice's first key: the per-key limit (2) is the tighter one.
    assert state(setup.get("/keyed/x", setup.alice_1)) == (200, "2", "1")
    assert state(setup.get("/keyed/x", setup.alice_1)) == (200, "2", "0")
    assert state(setup.get("/keyed/x", setup.alice_1)) == (429, "2", "0")
    # Her second key has its own per-key bucket, but shares her per-caller one (3).
    assert state(setup.get("/keyed/x", setup.alice_2)) == (200, "3", "0")
    assert state(setup.get("/keyed/x", setup.alice_2)) == (429, "3", "0")
    # bob is someone else entirely.
    assert state(setup.get("/keyed/x", setup.bob)) == (200, "2", "1")


def test_anonymous_callers_are_counted_by_address_and_skip_key_limits(setup: Setup) -> None:
    # No credential on a public route: "principal" falls back to the client address, and the
    # per-key policy does not apply at all.
    assert state(setup.get("/public/x")) == (200, "1", "0")
    assert state(setup.get("/public/x")) == (429, "1", "0")
