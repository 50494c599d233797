"""``onegate check`` on protected routes, and the key commands an operator uses around it.

One real gateway process with an ``api_key`` issuer (SQLite store in the test's directory) in
front of the built-in demo app; the key is made with ``onegate keys create``, as an operator
would, and every command runs as a subprocess so its exit status and output are tested.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers.cli import clean_environment, onegate
from helpers.gateway import GatewayProcess, run_gateway

ISO_8601 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@dataclass
class Protected:
    gateway: GatewayProcess
    config: Path
    key: str
    key_id: str
    created: dict[str, object]

    def check(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        command = ("check", "--config", str(self.config), "--json", *args)
        return onegate(*command, env=clean_environment(**env))


@pytest.fixture(scope="module")
def protected(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Protected]:
    directory = tmp_path_factory.mktemp("protected")
    issuer = {"type": "api_key", "name": "partners", "store": "sqlite:///keys.db",
              "cache_seconds": 0.2}  # fmt: skip
    routes = [
        {"name": "demo", "match": {"prefix": "/demo"}, "upstream": "demo"},
        {"name": "open", "match": {"prefix": "/open"}, "upstream": "demo",
         "auth": {"policy": "public"}},
    ]  # fmt: skip
    with run_gateway(
        directory,
        {"demo": {"targets": ["asgi:onegate.dev.demo:app"]}},
        routes,
        extra={"auth": {"issuers": [issuer]}},
    ) as gateway:
        config = gateway.config_path
        done = onegate("keys", "create", "--subject", "ci", "--config", str(config), "--json")
        assert done.returncode == 0, done.stderr
        created = json.loads(done.stdout)
        yield Protected(gateway, config, created["key"], created["key_id"], created)


def results(done: subprocess.CompletedProcess[str]) -> dict[str, dict[str, object]]:
    report = json.loads(done.stdout)
    return {result["route"]: result for result in report["results"]}


def test_without_credentials_the_protected_route_fails(protected: Protected) -> None:
    done = protected.check()
    assert done.returncode == 1, done.stderr
    by_route = results(done)
    assert by_route["open"]["ok"] is True
    assert by_route["demo"]["ok"] is False
    assert by_route["demo"]["gateway"]["status"] == 401  # type: ignore[index]


def test_bearer_env_passes_the_gateways_auth(protected: Protected) -> None:
    done = protected.check("--bearer-env", "CHECK_TOKEN", CHECK_TOKEN=protected.key)
    assert done.returncode == 0, done.stdout + done.stderr
    assert all(result["ok"] for result in results(done).values())
    # The credential is used, never printed.
    assert protected.key not in done.stdout + done.stderr


def test_header_passes_the_gateways_auth(protected: Protected) -> None:
    done = protected.check("--header", f"X-Api-Key: {protected.key}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert results(done)["demo"]["gateway"]["status"] == 200  # type: ignore[index]
    assert protected.key not in done.stdout + done.stderr


def test_a_wrong_credential_still_fails(protected: Protected) -> None:
    wrong = protected.key[:-4] + ("AAAA" if not protected.key.endswith("AAAA") else "BBBB")
    done = protected.check("--header", f"X-Api-Key:{wrong}")
    assert done.returncode == 1
    assert results(done)["demo"]["gateway"]["status"] == 401  # type: ignore[index]


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["--bearer-env", "NOT_SET_ANYWHERE"], {}, "--bearer-env NOT_SET_ANYWHERE: the variable"),
        (["--bearer-env", "EMPTY"], {"EMPTY": " "}, "--bearer-env EMPTY: the variable"),
        (["--header", "og_secretvalue"], {}, "--header 'og_secretvalue'...: expected NAME:VALUE"),
        (["--header", "Bad Name:x"], {}, "--header 'Bad Name'...: expected NAME:VALUE"),
        (["--bearer-env", "T", "--header", "authorization:Bearer x"], {"T": "y"},
         "--bearer-env and --header Authorization"),
        (["--gateway", "http://127.0.0.1:1", "--port", "2"], {}, "--gateway and --port"),
    ],
)  # fmt: skip
def test_credential_mistakes_are_one_line_and_exit_2(
    protected: Protected, args: list[str], env: dict[str, str], says: str
) -> None:
    done = protected.check(*args, **env)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"onegate: {says}"), done.stderr
    assert done.stdout == ""


def test_port_follows_serve_port(protected: Protected, tmp_path: Path) -> None:
    """The file says port 1 (nothing there); the gateway was served with --port: check
    reaches it with the same --port, or with --gateway."""
    text = protected.config.read_text()
    moved = tmp_path / "moved.yaml"
    moved.write_text(re.sub(r"port: \d+", "port: 1", text).replace("sqlite:///keys.db",
                     f"sqlite:///{protected.config.parent / 'keys.db'}"))  # fmt: skip
    common = ["check", "--config", str(moved), "--json", "--bearer-env", "T"]
    port = str(protected.gateway.port)
    for extra in (["--port", port], ["--gateway", protected.gateway.url]):
        done = onegate(*common, *extra, T=protected.key)
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout)["gateway_url"].endswith(f":{port}")
    unreachable = onegate(*common, T=protected.key)
    assert unreachable.returncode == 1


def test_keys_json_uses_null_and_iso_8601(protected: Protected) -> None:
    created = protected.created
    assert created["expires_at"] is None and created["revoked_at"] is None
    assert ISO_8601.match(str(created["created_at"])), created
    listed = onegate("keys", "list", "--json", "--config", str(protected.config))
    assert listed.returncode == 0, listed.stderr
    row = next(r for r in json.loads(listed.stdout) if r["key_id"] == protected.key_id)
    assert row["expires_at"] is None and ISO_8601.match(row["created_at"])


def test_revoke_accepts_the_whole_key(protected: Protected) -> None:
    config = str(protected.config)
    done = onegate("keys", "create", "--subject", "leaked", "--config", config, "--json")
    leaked = json.loads(done.stdout)
    env = {"T": leaked["key"]}
    assert protected.check("--bearer-env", "T", **env).returncode == 0

    revoked = onegate("keys", "revoke", leaked["key"], "--config", config)
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.strip() == f"revoked {leaked['key_id']} (leaked)"
    assert leaked["key"] not in revoked.stdout + revoked.stderr
    listed = onegate("keys", "list", "--json", "--config", config)
    row = next(r for r in json.loads(listed.stdout) if r["key_id"] == leaked["key_id"])
    assert row["status"] == "revoked" and ISO_8601.match(row["revoked_at"])
    time.sleep(0.3)  # the issuer's cache_seconds
    assert protected.check("--bearer-env", "T", **env).returncode == 1
    # The other key is untouched.
    assert protected.check("--bearer-env", "T", T=protected.key).returncode == 0
