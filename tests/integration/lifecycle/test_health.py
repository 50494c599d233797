"""The gateway's own endpoints: ``/healthz`` (alive) and ``/readyz`` (what it serves)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers.gateway import GatewayProcess, run_gateway
from helpers.legacy import LegacyBackends, free_port

IN_PROCESS_DEMO = "asgi:onegate.dev.demo:app"


@pytest.fixture(scope="module")
def gateway(
    legacy_backends: LegacyBackends, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    upstreams = {
        "main": {"targets": [legacy_backends.main_url]},
        "pair": {
            "targets": [legacy_backends.ai_url, legacy_backends.fastapi_url],
            "balance": "least_outstanding",
        },
        "demo": {"targets": [IN_PROCESS_DEMO]},
    }
    routes = [
        {"name": "ai", "match": {"prefix": "/api/ai"}, "upstream": "pair"},
        {"name": "demo", "match": {"prefix": "/demo"}, "upstream": "demo"},
        # A catch-all route: the gateway's own endpoints must still win.
        {"name": "everything", "match": {"prefix": "/"}, "upstream": "main"},
    ]
    with run_gateway(tmp_path_factory.mktemp("health"), upstreams, routes) as gateway:
        yield gateway


def test_healthz_says_ok(gateway: GatewayProcess) -> None:
    response = httpx.get(f"{gateway.url}/healthz", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert response.json() == {"status": "ok"}
    # Answered by the gateway itself, not by the catch-all route's backend.
    assert "x-backend" not in response.headers


def test_readyz_describes_the_configuration(
    gateway: GatewayProcess, legacy_backends: LegacyBackends
) -> None:
    response = httpx.get(f"{gateway.url}/readyz", timeout=5)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    ready = response.json()

    assert ready["status"] == "ready"
    assert ready["unavailable_upstreams"] == []
    config = ready["config"]
    assert config["path"] == str(gateway.config_path.resolve())
    assert config["routes"] == 3
    assert config["reloads"] == 0
    assert config["last_reload_error"] is None
    assert isinstance(config["loaded_at"], float)

    upstreams = ready["upstreams"]
    assert set(upstreams) == {"main", "pair", "demo"}
    urls = {name: [t["url"] for t in upstream["targets"]] for name, upstream in upstreams.items()}
    assert urls == {
        "main": [legacy_backends.main_url],
        "pair": [legacy_backends.ai_url, legacy_backends.fastapi_url],
        "demo": [IN_PROCESS_DEMO],
    }
    assert upstreams["pair"]["available"] == upstreams["pair"]["total"] == 2
    for upstream in upstreams.values():
        for target in upstream["targets"]:
            assert target["healthy"] is True
            assert target["breaker"] == "closed"
            assert target["outstanding"] == 0


def test_routes_still_reach_their_backends(gateway: GatewayProcess) -> None:
    with httpx.Client(base_url=gateway.url, timeout=5) as client:
        assert client.get("/api/health").headers["x-backend"] == "main"
        assert client.get("/api/ai/health").json()["backend"] in {"ai", "fastapi"}
        assert client.get("/demo/x").json()["path"] == "/demo/x"


def test_readyz_reports_an_upstream_without_healthy_targets(
    legacy_backends: LegacyBackends, tmp_path: Path
) -> None:
    health = {"path": "/", "interval": 0.2, "timeout": 0.2, "unhealthy_threshold": 1}
    upstreams = {
        "main": {"targets": [legacy_backends.main_url], "health": health},
        "gone": {"targets": [f"http://127.0.0.1:{free_port()}"], "health": health},
    }
    routes = [{"name": "main", "match": {"prefix": "/api"}, "upstream": "main"}]
    with run_gateway(tmp_path, upstreams, routes) as gateway:
        ready = wait_for_readiness(gateway, lambda r: r["status"] == "degraded")
        assert ready["unavailable_upstreams"] == ["gone"]
        assert ready["upstreams"]["gone"]["targets"][0]["healthy"] is False
        assert ready["upstreams"]["main"]["targets"][0]["healthy"] is True
        # Alive and still answering for the upstreams it can reach.
        assert httpx.get(f"{gateway.url}/healthz", timeout=5).json() == {"status": "ok"}
        assert httpx.get(f"{gateway.url}/api/health", timeout=5).status_code == 200


def wait_for_readiness(
    gateway: GatewayProcess, condition: Callable[[dict[str, Any]], bool], within: float = 5.0
) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        ready: dict[str, Any] = httpx.get(f"{gateway.url}/readyz", timeout=5).json()
        if condition(ready):
            return ready
        assert time.monotonic() < deadline, f"readiness never matched: {ready}"
        time.sleep(0.1)
