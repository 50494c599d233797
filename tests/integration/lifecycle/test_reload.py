"""Configuration reloads in a running gateway: on file change and on SIGHUP.

A reload must be invisible to clients: requests keep succeeding while it happens, and a
stream opened before it runs to its end on the upstream it started with. A bad file is
rejected as a whole: the old configuration keeps serving and ``/readyz`` says what is wrong,
naming the file and line.
"""

from __future__ import annotations

import copy
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from helpers.gateway import (
    GatewayProcess,
    ask_on_a_new_connection,
    run_gateway,
    wait_for,
    worker_pids,
)
from helpers.legacy import LegacyBackends, upstreams_and_routes

IN_PROCESS_AI = "asgi:onegate.dev.legacy:ai_app"


# --- helpers ---------------------------------------------------------------------------------


def current_config(gateway: GatewayProcess) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(gateway.config_path.read_text())
    return config


def with_payments(config: dict[str, Any], backends: LegacyBackends) -> dict[str, Any]:
    """``config`` plus the FastAPI stand-in, routed at ``/api/payments``."""
    changed = copy.deepcopy(config)
    changed["upstreams"]["fastapi"] = {"targets": [backends.fastapi_url]}
    payments = {"name": "payments", "match": {"prefix": "/api/payments"}, "upstream": "fastapi"}
    changed["routes"].insert(0, payments)
    return changed


def replace_config(gateway: GatewayProcess, config: dict[str, Any] | str) -> None:
    """Swap the file in one step, as editors and config managers do, so that the gateway
    never reads a half-written file."""
    text = config if isinstance(config, str) else yaml.safe_dump(config)
    staging = gateway.config_path.with_suffix(".staging")
    staging.write_text(text)
    os.replace(staging, gateway.config_path)


def readiness(gateway: GatewayProcess) -> dict[str, Any]:
    ready: dict[str, Any] = httpx.get(f"{gateway.url}/readyz", timeout=5).json()
    return ready


def payments_served(gateway: GatewayProcess) -> bool:
    response = httpx.get(f"{gateway.url}/api/payments/health", timeout=5)
    return response.status_code == 200 and response.headers.get("x-backend") == "fastapi"


class Traffic:
    """GETs sent back to back from a thread over one keep-alive connection; every answer
    other than 200 is a failure."""

    def __init__(self, base_url: str, paths: list[str]) -> None:
        self.base_url = base_url
        self.paths = paths
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=10) as client:
            while not self._stop.is_set():
                for path in self.paths:
                    try:
                        response = client.get(path)
                    except httpx.HTTPError as error:
                        self.failures.append(f"{path}: {error!r}")
                        continue
                    if response.status_code == 200:
                        self.ok += 1
                    else:
                        self.failures.append(f"{path}: {response.status_code} {response.text}")
                time.sleep(0.002)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


class EventStream:
    """Reads a Server-Sent Events stream to its end in a thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.status = 0
        self.events = 0
        self.error: BaseException | None = None
        self.started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sse", daemon=True)

    def _run(self) -> None:
        try:
            with httpx.Client(timeout=10) as client, client.stream("GET", self.url) as response:
                self.status = response.status_code
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        self.events += 1
                        self.started.set()
        except BaseException as error:
            self.error = error
        finally:
            self.started.set()

    def start(self) -> EventStream:
        self._thread.start()
        assert self.started.wait(5)
        return self

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the stream never finished"


# --- reload under traffic --------------------------------------------------------------------


@pytest.mark.parametrize("trigger", ["file-watch", "sighup"])
def test_reload_under_traffic_loses_no_request_and_no_stream(
    legacy_backends: LegacyBackends, tmp_path: Path, trigger: str
) -> None:
    upstreams, routes = upstreams_and_routes(legacy_backends)
    watch = trigger == "file-watch"
    with run_gateway(tmp_path, upstreams, routes, watch_config=watch) as gateway:
        assert not payments_served(gateway)  # /api/payments falls to main's 404 for now
        new_config = with_payments(current_config(gateway), legacy_backends)
        # Also move the AI upstream in process, under the open stream's feet.
        new_config["upstreams"]["ai"]["targets"] = [IN_PROCESS_AI]

        paths = ["/api/users/1", "/api/ai/health"]
        stream_url = f"{gateway.url}/api/ai/stream?events=16&interval_ms=200"
        with Traffic(gateway.url, paths) as traffic:
            stream = EventStream(stream_url).start()
            time.sleep(0.3)
            replace_config(gateway, new_config)
            if not watch:
                time.sleep(1.5)
                assert not payments_served(gateway), "reloaded although watch_config is off"
                gateway.signal(signal.SIGHUP)
            waited = wait_for(lambda: payments_served(gateway), 4.0, "new route served")
            served_before = traffic.ok
            stream.join(timeout=10)
            assert traffic.ok > served_before, "traffic stopped after the reload"

        assert traffic.failures == []
        assert traffic.ok > 50
        assert (stream.error, stream.status, stream.events) == (None, 200, 16)
        assert waited < (2.0 if not watch else 3.5)  # the file is polled once a second

        ready = readiness(gateway)
        assert ready["config"]["reloads"] == 1
        assert ready["config"]["routes"] == 3
        assert ready["config"]["last_reload_error"] is None
        assert [t["url"] for t in ready["upstreams"]["ai"]["targets"]] == [IN_PROCESS_AI]
        assert set(ready["upstreams"]) == {"main", "ai", "fastapi"}


# --- bad configurations ----------------------------------------------------------------------


def yaml_syntax_error(config: dict[str, Any]) -> tuple[str, int, str]:
    lines = yaml.safe_dump(config).splitlines()
    lines.append("\tbroken: true")  # a tab cannot start a YAML token
    return "\n".join(lines) + "\n", len(lines), "invalid YAML"


def unknown_upstream(config: dict[str, Any]) -> tuple[str, int, str]:
    changed = copy.deepcopy(config)
    changed["routes"][1]["upstream"] = "nope"
    text = yaml.safe_dump(changed)
    line = text.splitlines().index("  upstream: nope") + 1
    return text, line, "routes[1].upstream: unknown upstream 'nope'"


def unloadable_app(config: dict[str, Any]) -> tuple[str, int, str]:
    changed = copy.deepcopy(config)
    changed["upstreams"]["ai"]["targets"] = ["asgi:no_such_module:app"]
    text = yaml.safe_dump(changed)
    lines = text.splitlines()
    # Like every error about targets, it points at the 'targets' key of that upstream.
    line = lines.index("    - asgi:no_such_module:app")
    assert lines[line - 1] == "    targets:"
    return text, line, "upstreams.ai.targets: cannot load in-process app"


@pytest.mark.parametrize(
    "breakage",
    [
        pytest.param(yaml_syntax_error, id="yaml-syntax"),
        pytest.param(unknown_upstream, id="unknown-upstream"),
        pytest.param(unloadable_app, id="unloadable-app"),
    ],
)
def test_bad_config_is_rejected_and_the_old_one_keeps_serving(
    legacy_backends: LegacyBackends,
    tmp_path: Path,
    breakage: Callable[[dict[str, Any]], tuple[str, int, str]],
) -> None:
    upstreams, routes = upstreams_and_routes(legacy_backends)
    with run_gateway(tmp_path, upstreams, routes) as gateway:
        good = current_config(gateway)
        text, line, message = breakage(good)
        with Traffic(gateway.url, ["/api/users/1", "/api/ai/health"]) as traffic:
            replace_config(gateway, text)
            wait_for(
                lambda: readiness(gateway)["config"]["last_reload_error"] is not None,
                4.0,
                "reload error reported",
            )
            time.sleep(0.3)
        assert traffic.failures == []
        assert traffic.ok > 0

        config = readiness(gateway)["config"]
        assert config["reloads"] == 0
        assert config["routes"] == 2
        error = config["last_reload_error"]
        assert f"{gateway.config_path.resolve()}:{line}:" in error
        assert message in error

        # Fixing the file clears the error.
        replace_config(gateway, with_payments(good, legacy_backends))
        wait_for(lambda: payments_served(gateway), 4.0, "fixed config served")
        config = readiness(gateway)["config"]
        assert (config["reloads"], config["last_reload_error"]) == (1, None)


def test_emptied_config_file_is_rejected(legacy_backends: LegacyBackends, tmp_path: Path) -> None:
    upstreams, routes = upstreams_and_routes(legacy_backends)
    with run_gateway(tmp_path, upstreams, routes) as gateway:
        gateway.config_path.write_text("")  # what a reader sees between truncate and write
        wait_for(
            lambda: (
                readiness(gateway)["config"]["reloads"] > 0
                or readiness(gateway)["config"]["last_reload_error"] is not None
            ),
            4.0,
            "the emptied file noticed",
        )
        assert httpx.get(f"{gateway.url}/api/users/1", timeout=5).status_code == 200
        config = readiness(gateway)["config"]
        assert (config["reloads"], config["routes"]) == (0, 2)
        assert str(gateway.config_path.resolve()) in config["last_reload_error"]


# --- several workers -------------------------------------------------------------------------


def test_sighup_to_the_master_reloads_every_worker(
    legacy_backends: LegacyBackends, tmp_path: Path
) -> None:
    upstreams, routes = upstreams_and_routes(legacy_backends)
    with run_gateway(tmp_path, upstreams, routes, workers=2, watch_config=False) as gateway:
        wait_for(lambda: len(worker_pids(gateway)) == 2, 10.0, "two workers")
        workers = worker_pids(gateway)
        answered: set[int] = set()

        def both_workers_answered() -> bool:
            pid = ask_on_a_new_connection(gateway, "/healthz")[0]
            assert pid is not None, "no worker holds the connection"
            answered.add(pid)
            return answered == workers

        # Both serve (their SIGHUP handlers are installed) before the signal is sent.
        wait_for(both_workers_answered, 10.0, "both workers answering")

        replace_config(gateway, with_payments(current_config(gateway), legacy_backends))
        gateway.signal(signal.SIGHUP)

        reloaded: dict[int, int] = {}

        def every_worker_reloaded() -> bool:
            pid, status, body = ask_on_a_new_connection(gateway, "/readyz")
            assert pid is not None, "no worker holds the connection"
            assert status == 200
            reloaded[pid] = yaml.safe_load(body)["config"]["reloads"]
            return set(reloaded) == workers and all(n == 1 for n in reloaded.values())

        wait_for(every_worker_reloaded, 10.0, "every worker reloaded")
        for _ in range(20):
            _, status, body = ask_on_a_new_connection(gateway, "/api/payments/health")
            assert status == 200, body
            assert yaml.safe_load(body)["backend"] == "fastapi"
        assert worker_pids(gateway) == workers  # reloaded in place, not restarted
