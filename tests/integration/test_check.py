"""``onegate check`` against real gateway processes: the three stand-ins, then tiny apps.

The CLI runs as a subprocess, so that its exit status is part of what is tested.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers.gateway import GatewayProcess, run_gateway
from helpers.legacy import LegacyBackends, free_port
from onegate.check import probe_path, run_check
from onegate.gateway.config import Config, GatewayConfig, RouteConfig
from onegate.types import ASGIApp, Receive, Scope, Send

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "three-backends.yaml"
ROUTES = ["ai", "payments", "ml", "main"]


# --- the example configuration, in front of the stand-ins ------------------------------------


def _example() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    return data


def _targets(backends: LegacyBackends, **overrides: str) -> dict[str, str]:
    """Point the example's upstreams at the running stand-ins, as an operator would."""
    env = {
        "ONEGATE_UPSTREAM_MAIN_URL": backends.main_url,
        "ONEGATE_UPSTREAM_FASTAPI_URL": backends.fastapi_url,
        "ONEGATE_UPSTREAM_AI_URL": backends.ai_url,
    }
    return {**env, **overrides}


def onegate_check(
    gateway: GatewayProcess, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "onegate", "check", "--config", str(EXAMPLE)]
    # COLUMNS would change how the table wraps; the default for a pipe is what is tested.
    base = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    return subprocess.run(
        [*command, "--gateway", gateway.url, *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.fixture(scope="module")
def all_up(
    legacy_backends: LegacyBackends, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayProcess, dict[str, str]]]:
    env = _targets(legacy_backends)
    example = _example()
    tmp_path = tmp_path_factory.mktemp("all-up")
    with run_gateway(tmp_path, example["upstreams"], example["routes"], env=env) as gateway:
        yield gateway, env


@pytest.fixture(scope="module")
def fastapi_down(
    legacy_backends: LegacyBackends, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayProcess, dict[str, str]]]:
    # Nothing listens on a free port: connections to it are refused, like a crashed backend's.
    env = _targets(legacy_backends, ONEGATE_UPSTREAM_FASTAPI_URL=f"http://127.0.0.1:{free_port()}")
    example = _example()
    tmp_path = tmp_path_factory.mktemp("fastapi-down")
    with run_gateway(tmp_path, example["upstreams"], example["routes"], env=env) as gateway:
        yield gateway, env


def test_example_config_is_valid() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "onegate", "config", "validate", str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "ok (4 routes, 3 upstreams)" in result.stdout


def test_every_route_ok_when_all_backends_are_up(
    all_up: tuple[GatewayProcess, dict[str, str]], legacy_backends: LegacyBackends
) -> None:
    gateway, env = all_up
    result = onegate_check(gateway, env, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert (report["routes"], report["failed"], report["skipped"]) == (4, 0, 0)
    by_route = {r["route"]: r for r in report["results"]}
    assert list(by_route) == ROUTES  # the configuration's order
    for result_ in report["results"]:
        assert result_["ok"] is True, result_
        assert result_["mismatches"] == []
        assert result_["gateway"]["status"] == result_["direct"]["status"] == 200
        assert result_["gateway"]["body_sha256"] == result_["direct"]["body_sha256"]
        assert result_["gateway"]["url"] == gateway.url + result_["path"]
    payments = by_route["payments"]
    assert payments["path"] == "/api/payments/health"
    assert payments["target"] == legacy_backends.fastapi_url
    # Forwarded unchanged (no strip_prefix): the direct probe asks the backend the same path.
    assert payments["direct"]["url"] == legacy_backends.fastapi_url + "/api/payments/health"


def test_a_down_backend_fails_its_routes_only(
    fastapi_down: tuple[GatewayProcess, dict[str, str]],
) -> None:
    gateway, env = fastapi_down
    result = onegate_check(gateway, env, "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert report["failed"] == 2
    by_route = {r["route"]: r for r in report["results"]}
    for name in ("payments", "ml"):
        failed = by_route[name]
        assert failed["ok"] is False
        gateway_reason, direct_reason = failed["mismatches"]
        # 502 while the gateway still tries the target; 503 once its breaker or health
        # checks have given up on it.
        assert re.fullmatch(r"gateway: (502|503) [a-z-]+", gateway_reason), gateway_reason
        assert direct_reason == "direct: connection refused"
        assert failed["direct"]["status"] is None
        assert failed["direct"]["error"] == "connection refused"
        assert failed["gateway"]["content_type"] == "application/problem+json"
    for name in ("ai", "main"):
        assert by_route[name]["ok"] is True, by_route[name]


def test_table_names_every_route_and_the_failures(
    fastapi_down: tuple[GatewayProcess, dict[str, str]],
) -> None:
    gateway, env = fastapi_down
    result = onegate_check(gateway, env)
    assert result.returncode == 1, result.stdout + result.stderr
    rows = {line.split()[1]: line for line in result.stdout.splitlines() if line.startswith("│")}
    assert set(rows) == set(ROUTES)
    for name in ("payments", "ml"):
        assert "FAIL: gateway: 50" in rows[name]
        assert "direct: connection refused" in rows[name]
    for name in ("ai", "main"):
        assert rows[name].rstrip(" │").endswith("OK"), rows[name]
    assert result.stdout.rstrip().endswith("4 routes, 2 failed")


# --- the comparison rules, with tiny in-process apps -----------------------------------------
#
# The gateway process serves one set of apps (``GATEWAY_APPS``) while the check's own copy of
# the configuration points the same upstreams at others. That is how the two probes can
# disagree on purpose, as they would if the gateway ran a stale configuration.


def _app(status: int, content_type: str, body: bytes) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", content_type.encode()), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


async def crashing_app(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("boom")


json_ok = _app(200, "application/json", b'{"status": "ok", "backend": "a", "at": 1}')
json_ok_later = _app(200, "application/json", b'{"status": "ok", "backend": "b", "at": 2}')
json_other_keys = _app(200, "application/json", b'{"status": "ok", "version": 3, "at": 1}')
json_array = _app(200, "application/json", b"[1, 2]")
teapot = _app(418, "application/json", b'{"status": "teapot"}')
text_ok = _app(200, "text/plain", b"ok")
text_other = _app(200, "text/plain", b"ko")
server_error = _app(500, "text/plain", b"oops")

# route name: (the gateway's app, the check's app, expected mismatches)
CASES: dict[str, tuple[str, str, list[str]]] = {
    "same": ("json_ok", "json_ok", []),
    "json-values": ("json_ok", "json_ok_later", []),
    "status": ("json_ok", "teapot", ["status 200 != 418"]),
    "content-type": (
        "json_ok",
        "text_ok",
        ["content-type differs: application/json != text/plain"],
    ),
    "json-keys": ("json_ok", "json_other_keys", ["json keys differ: +backend -version"]),
    "json-kind": ("json_ok", "json_array", ["json differs: object != array"]),
    "body": ("text_ok", "text_other", ["body differs"]),
    "server-error": ("server_error", "server_error", ["gateway: 500", "direct: 500"]),
    "crash": (
        "json_ok",
        "crashing_app",
        ["direct: in-process app raised RuntimeError: boom"],
    ),
}

# The gateway process imports this module by the name pytest gave it: find its import root.
_IMPORT_ROOT = Path(__file__).resolve().parents[__name__.count(".")]
_TESTS = Path(__file__).resolve().parents[1]  # for the ``helpers`` this module imports


def _target(app_name: str) -> str:
    return f"asgi:{__name__}:{app_name}"


def _tiny_config(apps: dict[str, str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    upstreams = {name: {"targets": [_target(app)]} for name, app in apps.items()}
    routes: list[dict[str, Any]] = [
        {"name": name, "match": {"prefix": f"/{name}"}, "upstream": name} for name in apps
    ]
    # Probing a POST-only route would mean inventing a body: it is skipped.
    routes.append(
        {"name": "post-only", "match": {"path": "/form", "methods": ["POST"]}, "upstream": "same"}
    )
    # A check_path that another route captures tests the wrong route: reported.
    routes.append(
        {"name": "captured", "match": {"prefix": "/x"}, "upstream": "same", "check_path": "/same"}
    )
    return upstreams, routes


def test_mismatch_rules(tmp_path: Path) -> None:
    upstreams, routes = _tiny_config({name: case[0] for name, case in CASES.items()})
    paths = [str(_IMPORT_ROOT), str(_TESTS), os.environ.get("PYTHONPATH", "")]
    python_path = os.pathsep.join(p for p in paths if p)
    with run_gateway(tmp_path, upstreams, routes, env={"PYTHONPATH": python_path}) as gateway:
        checked, _ = _tiny_config({name: case[1] for name, case in CASES.items()})
        config = Config(GatewayConfig.model_validate({"upstreams": checked, "routes": routes}))
        report = run_check(config, gateway.url, timeout=5)

    results = {result.route: result for result in report.results}
    for name, (_, _, expected) in CASES.items():
        assert results[name].mismatches == expected, name
        assert results[name].ok is (not expected)
    skipped = results["post-only"]
    assert skipped.ok
    assert skipped.method == "-"
    assert skipped.skipped == "allows neither GET nor HEAD: POST"
    assert skipped.gateway.status is None
    assert results["captured"].mismatches == ["/same is routed to 'same'"]
    assert not report.ok
    assert results["same"].direct.url == _target("json_ok") + "/same"
    assert results["same"].direct.latency_ms is not None


def test_no_routes_is_not_a_success() -> None:
    report = run_check(Config(GatewayConfig()), f"http://127.0.0.1:{free_port()}")
    assert report.results == []
    assert not report.ok


@pytest.mark.parametrize(
    ("match", "check_path", "expected"),
    [
        ({"prefix": "/api/ai"}, None, "/api/ai"),
        ({"path": "/users/{id}/posts/{post:str}"}, None, "/users/1/posts/1"),
        ({"path": "/files/{rest:path}"}, None, "/files/check"),
        ({"prefix": "/api"}, "/api/health?deep=1", "/api/health?deep=1"),
    ],
)
def test_probe_path(match: dict[str, Any], check_path: str | None, expected: str) -> None:
    route = RouteConfig.model_validate(
        {"name": "r", "match": match, "upstream": "u", "check_path": check_path}
    )
    assert probe_path(route) == expected
