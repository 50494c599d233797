"""``server.readiness.require``: ``/readyz`` answers 503 while a required upstream is out.

One gateway, reloaded (SIGHUP) with each setting in turn: the upstreams are unchanged, so they
are carried over with their health state, and only the readiness rule changes.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from helpers.gateway import GatewayProcess, run_gateway, wait_for
from helpers.upstreams import RawUpstream, Reply

HEALTH = {"path": "/", "interval": 0.1, "healthy_threshold": 1, "unhealthy_threshold": 1}


@pytest.fixture(scope="module")
def critical() -> Iterator[RawUpstream]:
    with RawUpstream(default=Reply(503)) as upstream:  # failing its health checks
        yield upstream


@pytest.fixture(scope="module")
def optional() -> Iterator[RawUpstream]:
    with RawUpstream(default=Reply(200)) as upstream:
        yield upstream


def _upstreams(critical: RawUpstream, optional: RawUpstream) -> dict[str, Any]:
    return {
        "critical": {"targets": [critical.url], "health": HEALTH},
        "optional": {"targets": [optional.url], "health": HEALTH},
    }


ROUTES = [
    {"name": "critical", "match": {"prefix": "/critical"}, "upstream": "critical"},
    {"name": "optional", "match": {"prefix": "/optional"}, "upstream": "optional"},
]


@pytest.fixture(scope="module")
def gateway(
    critical: RawUpstream, optional: RawUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    directory = tmp_path_factory.mktemp("readiness")
    with run_gateway(directory, _upstreams(critical, optional), ROUTES) as gateway:
        wait_for(
            lambda: _ready(gateway)[1]["unavailable_upstreams"] == ["critical"],
            10.0,
            "the critical upstream marked down by its health checks",
        )
        yield gateway


def _ready(gateway: GatewayProcess) -> tuple[int, dict[str, Any]]:
    response = httpx.get(f"{gateway.url}/readyz", timeout=5)
    return response.status_code, response.json()


def _require(gateway: GatewayProcess, require: list[str] | str | None) -> None:
    """Reload the gateway with ``server.readiness.require`` set to ``require``."""
    config = yaml.safe_load(gateway.config_path.read_text())
    config["server"].pop("readiness", None)
    if require is not None:
        config["server"]["readiness"] = {"require": require}
    reloads = _ready(gateway)[1]["config"]["reloads"]
    gateway.write_config(config)
    gateway.signal(signal.SIGHUP)
    wait_for(lambda: _ready(gateway)[1]["config"]["reloads"] > reloads, 10.0, "the reload")


@pytest.mark.parametrize(
    ("require", "status", "state"),
    [
        (None, 200, "degraded"),  # the default: an outage does not take the gateway out
        (["optional"], 200, "degraded"),  # the required one is fine
        (["critical"], 503, "unavailable"),
        (["optional", "critical"], 503, "unavailable"),
        ("all", 503, "unavailable"),
    ],
    ids=["default", "other-required", "critical-required", "both-required", "all"],
)
def test_readyz_is_503_only_while_a_required_upstream_is_out(
    gateway: GatewayProcess, require: list[str] | str | None, status: int, state: str
) -> None:
    _require(gateway, require)
    code, document = _ready(gateway)
    assert (code, document["status"]) == (status, state), document
    assert document["unavailable_upstreams"] == ["critical"]
    expected = ["critical", "optional"] if require == "all" else (require or [])
    assert sorted(document["required_upstreams"]) == sorted(expected)
    # The routes themselves are unaffected by the rule: the healthy one still serves.
    assert httpx.get(f"{gateway.url}/optional/x", timeout=5).status_code == 200


def test_readyz_is_200_again_once_the_required_upstream_recovers(
    gateway: GatewayProcess, critical: RawUpstream
) -> None:
    _require(gateway, ["critical"])
    assert _ready(gateway)[0] == 503
    critical.script(default=Reply(200))
    try:
        wait_for(lambda: _ready(gateway)[0] == 200, 10.0, "readiness after recovery")
        assert _ready(gateway)[1]["status"] == "ready"
    finally:
        critical.script(default=Reply(503))


def test_an_unknown_required_upstream_is_a_config_error(tmp_path: Path) -> None:
    config = {
        "upstreams": {"main": {"targets": ["http://127.0.0.1:9"]}},
        "server": {"readiness": {"require": ["mian"]}},
    }
    path = tmp_path / "onegate.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "onegate", "config", "validate", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, result
    assert "server.readiness.require[0]" in result.stderr
    assert "unknown upstream 'mian' (known: main)" in result.stderr
