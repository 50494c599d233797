"""The stand-in legacy backends, run in a subprocess for tests that need real sockets.

``legacy_backends`` is a module-scoped fixture: the three stand-ins start once per test
module, on free ports, and are stopped (SIGTERM, then waited for) when the module is done.
``run_legacy_backends`` is the same as a context manager, for scripts and benchmarks.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import httpx
import pytest

from onegate.dev.legacy import LegacyPorts

HOST = "127.0.0.1"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
# The OS may hand a port we probed to someone else before the subprocess binds it.
START_ATTEMPTS = 3


@dataclass(frozen=True)
class LegacyBackends:
    """Where the running stand-ins listen."""

    host: str
    ports: LegacyPorts

    def _url(self, port: int, scheme: str = "http") -> str:
        return f"{scheme}://{self.host}:{port}"

    @property
    def main_url(self) -> str:
        return self._url(self.ports.main)

    @property
    def fastapi_url(self) -> str:
        return self._url(self.ports.fastapi)

    @property
    def ai_url(self) -> str:
        return self._url(self.ports.ai)

    @property
    def ai_ws_url(self) -> str:
        return self._url(self.ports.ai, "ws")

    @property
    def health_urls(self) -> list[str]:
        return [
            self.main_url + "/api/health",
            self.fastapi_url + "/health",
            self.ai_url + "/health",
        ]


def upstreams_and_routes(
    backends: LegacyBackends,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A gateway in front of two stand-ins: ``/api/ai`` to the AI one, the rest of ``/api`` to
    the main one (the config of the lifecycle suites)."""
    upstreams = {
        "main": {"targets": [backends.main_url]},
        "ai": {"targets": [backends.ai_url]},
    }
    routes = [
        {"name": "ai", "match": {"prefix": "/api/ai"}, "upstream": "ai"},
        {"name": "main", "match": {"prefix": "/api"}, "upstream": "main"},
    ]
    return upstreams, routes


def free_ports(count: int, host: str = HOST) -> list[int]:
    """``count`` distinct ports that were free a moment ago (all held at once, so distinct)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]


def free_port(host: str = HOST) -> int:
    """A port that was free a moment ago."""
    return free_ports(1, host)[0]


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _output(log: IO[bytes]) -> str:
    log.seek(0)
    return log.read().decode("utf-8", "replace")


def _launch(host: str, log: IO[bytes]) -> tuple[LegacyBackends, subprocess.Popen[bytes]]:
    main, fastapi, ai = free_ports(3, host)
    command = [
        sys.executable, "-m", "onegate.dev.legacy", "--host", host,
        "--main-port", str(main), "--fastapi-port", str(fastapi), "--ai-port", str(ai),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    return LegacyBackends(host, LegacyPorts(main=main, fastapi=fastapi, ai=ai)), process


def _wait_until_healthy(backends: LegacyBackends, process: subprocess.Popen[bytes]) -> bool:
    """True once all three answer; False if the process died first (e.g. a port was taken)."""
    deadline = time.monotonic() + START_TIMEOUT
    with httpx.Client(timeout=1.0) as client:
        while process.poll() is None:
            try:
                if all(client.get(url).status_code == 200 for url in backends.health_urls):
                    return True
            except httpx.TransportError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise TimeoutError(f"legacy backends did not answer in {START_TIMEOUT} s")
            time.sleep(0.05)
    return False


@contextlib.contextmanager
def run_legacy_backends(host: str = HOST) -> Iterator[LegacyBackends]:
    """Run the three stand-ins in a subprocess for the duration of the ``with`` block.

    On leaving, the subprocess gets SIGTERM and must exit cleanly (status 0) in time.
    """
    output = ""
    for _ in range(START_ATTEMPTS):
        with tempfile.TemporaryFile() as log:
            backends, process = _launch(host, log)
            started = False
            try:
                started = _wait_until_healthy(backends, process)
                if started:
                    yield backends
            finally:
                _stop(process)
            output = _output(log)
            if started:
                if process.returncode != 0:
                    raise RuntimeError(
                        f"legacy backends exited with {process.returncode}:\n{output}"
                    )
                return
    raise RuntimeError(f"legacy backends failed to start {START_ATTEMPTS} times:\n{output}")


@pytest.fixture(scope="module")
def legacy_backends() -> Iterator[LegacyBackends]:
    """The three stand-ins, shared by the tests of one module."""
    with run_legacy_backends() as backends:
        yield backends
