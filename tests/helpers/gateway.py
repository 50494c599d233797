"""Start a real onegate process on a free port, with a given configuration."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

from helpers.legacy import free_port


@dataclass
class GatewayProcess:
    url: str
    port: int
    config_path: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def write_config(self, config: dict[str, Any] | str) -> None:
        text = config if isinstance(config, str) else yaml.safe_dump(config)
        self.config_path.write_text(text)

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)


def gateway_config(
    port: int, upstreams: dict[str, Any], routes: list[dict[str, Any]], **server: Any
) -> dict[str, Any]:
    return {
        "server": {"host": "127.0.0.1", "port": port, "workers": 1, **server},
        "upstreams": upstreams,
        "routes": routes,
    }


@contextmanager
def run_gateway(
    tmp_path: Path,
    upstreams: dict[str, Any],
    routes: list[dict[str, Any]],
    *,
    workers: int = 1,
    env: dict[str, str] | None = None,
    wait: bool = True,
    extra: dict[str, Any] | None = None,
    **server: Any,
) -> Iterator[GatewayProcess]:
    """Run ``onegate serve`` in a subprocess until the block ends (SIGTERM, then wait).

    ``extra`` holds further top-level sections of the config (``auth``, ``rate_limits``...).
    """
    port = free_port()
    config_path = tmp_path / f"onegate-{port}.yaml"
    config = gateway_config(port, upstreams, routes, **server)
    config["server"]["workers"] = workers
    config.update(extra or {})
    config_path.write_text(yaml.safe_dump(config))
    log_path = tmp_path / f"onegate-{port}.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "onegate", "serve", "--config", str(config_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    gateway = GatewayProcess(f"http://127.0.0.1:{port}", port, config_path, process, log_path)
    try:
        if wait:
            wait_ready(gateway)
        yield gateway
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()


def wait_ready(gateway: GatewayProcess, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gateway.process.poll() is not None:
            raise RuntimeError(f"onegate exited early:\n{gateway.log()}")
        try:
            if httpx.get(gateway.url + "/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"onegate did not become ready:\n{gateway.log()}")


def wait_for(condition: Callable[[], bool], within: float, what: str) -> float:
    """Seconds until ``condition()`` holds; fails the test after ``within``."""
    started = time.monotonic()
    while not condition():
        waited = time.monotonic() - started
        assert waited < within, f"{what}: not after {waited:.1f}s"
        time.sleep(0.02)
    return time.monotonic() - started


def worker_pids(gateway: GatewayProcess) -> set[int]:
    """The supervisor's live workers (not multiprocessing's resource tracker, nor zombies)."""
    pids = set()
    for child in psutil.Process(gateway.process.pid).children():
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                pids.add(child.pid)
        except psutil.Error:
            continue  # exited, or a zombie not yet reaped
    return pids


def ask_on_a_new_connection(gateway: GatewayProcess, path: str) -> tuple[int | None, int, bytes]:
    """GET ``path`` on a fresh connection: the worker that answered (None if no worker was
    found holding the connection), the status and the body."""
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        assert connection.sock is not None
        client_port = connection.sock.getsockname()[1]
        for pid in worker_pids(gateway):
            try:
                connections = psutil.Process(pid).net_connections("tcp")
            except psutil.Error:
                continue
            for conn in connections:
                if conn.raddr and conn.raddr.port == client_port:
                    return pid, response.status, body
        return None, response.status, body
    finally:
        connection.close()
