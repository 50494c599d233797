"""``onegate keys create | list | revoke | rotate`` as an operator runs them, against the store a
running gateway reads: a created key works at once, a revoked one stops working within the
issuer's ``cache_seconds``, a rotated one keeps working for the overlap only."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from helpers.auth_setup import key_issuer
from helpers.cli import onegate
from helpers.gateway import GatewayProcess, run_gateway
from helpers.legacy import LegacyBackends
from onegate.cli import app

CACHE_SECONDS = 0.5


@dataclass
class Keys:
    gateway: GatewayProcess
    config: Path
    client: httpx.Client

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = onegate("keys", *args, "--config", str(self.config))
        assert done.returncode == 0, done.stderr
        return done

    def invoke(self, *args: str) -> str:
        """The same command in this process: quicker, for steps that are not under test."""
        result = CliRunner().invoke(app, ["keys", *args, "--config", str(self.config)])
        assert result.exit_code == 0, result.output
        return result.stdout

    def status(self, key: str) -> int:
        return self.client.get("/api/echo/x", headers={"x-api-key": key}).status_code

    def reason(self, key: str) -> str:
        response = self.client.get("/api/echo/x", headers={"x-api-key": key})
        assert response.status_code == 401
        detail: str = response.json()["detail"]
        return detail


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory, backends: LegacyBackends) -> Iterator[Keys]:
    directory = tmp_path_factory.mktemp("keys")
    auth = {"issuers": [key_issuer("partners", cache_seconds=CACHE_SECONDS)]}
    with (
        run_gateway(
            directory,
            {"main": {"targets": [backends.main_url]}},
            [{"name": "main", "match": {"prefix": "/api"}, "upstream": "main"}],
            extra={"auth": auth},
        ) as gateway,
        httpx.Client(base_url=gateway.url, timeout=10) as client,
    ):
        yield Keys(gateway, gateway.config_path, client)


def created(done: subprocess.CompletedProcess[str]) -> tuple[str, str]:
    """(key id, key) from the human-readable output of create or rotate."""
    lines = dict(line.split(":", 1) for line in done.stdout.splitlines() if ":" in line)
    return lines["key id"].strip(), lines["key"].strip()


def test_create_list_and_revoke(keys: Keys) -> None:
    done = keys.run("create", "--subject", "partner-a", "--scope", "orders:read",
                    "--scope", "orders:write", "--tenant", "t1", "--expires-in", "30d")  # fmt: skip
    key_id, key = created(done)
    assert key.startswith(f"og_{key_id}_")
    assert "cannot be shown again" in done.stderr
    assert keys.status(key) == 200

    listing = keys.run("list").stdout
    assert key_id in listing and "partner-a" in listing and "orders:read orders:write" in listing
    assert "active" in listing
    secret = key.rsplit("_", 1)[1]
    assert secret not in listing
    rows = json.loads(keys.invoke("list", "--json"))
    row = next(r for r in rows if r["key_id"] == key_id)
    assert row["status"] == "active" and row["tenant"] == "t1"
    assert not any(secret in json.dumps(r) for r in rows)
    assert "secret_hash" not in row

    keys.run("revoke", key_id)
    revoked_at = time.monotonic()
    while keys.status(key) == 200:
        # Revocation takes effect once the cached verification runs out, never later.
        assert time.monotonic() - revoked_at < CACHE_SECONDS + 1.0
        time.sleep(0.05)
    assert keys.reason(key) == "API key has been revoked"


def test_rotate_keeps_the_old_key_for_the_overlap_only(keys: Keys) -> None:
    old = json.loads(
        keys.invoke("create", "--subject", "partner-b", "--scope", "orders:read", "--json")
    )
    rotated = json.loads(keys.run("rotate", old["key_id"], "--overlap", "3s", "--json").stdout)
    new = rotated["new"]
    assert new["key_id"] != old["key_id"]
    assert (new["subject"], new["scopes"]) == ("partner-b", ["orders:read"])
    assert rotated["old"]["expires_at"] != "-"
    assert keys.status(new["key"]) == 200
    assert keys.status(old["key"]) == 200  # still inside the overlap
    deadline = time.monotonic() + 3 + CACHE_SECONDS + 1.5
    while keys.status(old["key"]) == 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert keys.reason(old["key"]) == "API key has expired"
    assert keys.status(new["key"]) == 200


def test_operator_mistakes_are_one_line_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "onegate.yaml"
    two = {"auth": {"issuers": [key_issuer("a"), key_issuer("b"), key_issuer("m", store="memory")]}}
    config.write_text(yaml.safe_dump(two))
    runner = CliRunner()
    cases = {
        ("keys", "create", "--subject", "s"): "several api_key issuers (a, b, m)",
        ("keys", "create", "--subject", "s", "-i", "nope"): "no api_key issuer named 'nope'",
        ("keys", "create", "--subject", "s", "-i", "a", "--expires-in", "soon"): "not a duration",
        ("keys", "create", "--subject", "s", "-i", "a", "--scope", "a b"): "must be one word",
        ("keys", "revoke", "abcdefghijkl", "-i", "a"): "has no key abcdefghijkl",
        ("keys", "rotate", "abcdefghijkl", "-i", "b"): "has no key abcdefghijkl",
        ("keys", "list", "-i", "m"): "keeps keys in memory",
    }
    for args, message in cases.items():
        result = runner.invoke(app, [*args, "--config", str(config)])
        assert result.exit_code == 2, (args, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, result.stderr)
