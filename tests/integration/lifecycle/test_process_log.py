"""The process log of real ``onegate serve`` processes, read from their stderr.

One format for every line (supervisor and workers alike), JSON when stderr is not a terminal and
text when it is, a timestamp on every line, no Alembic chatter, and each target health change
logged once per gateway however many workers saw it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from helpers.gateway import (
    GatewayProcess,
    ask_on_a_new_connection,
    gateway_config,
    wait_for,
    wait_ready,
    worker_pids,
)
from helpers.legacy import free_port
from helpers.upstreams import RawUpstream, Reply

TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
TEXT_LINE = re.compile(rf"^{TIMESTAMP} (DEBUG|INFO|WARNING|ERROR|CRITICAL) +[\w.]+\[\d+\]: \S")
UNKNOWN_KEY = "og_" + "a" * 12 + "_" + "b" * 43
HEALTH_CHANGE = re.compile(r"^upstream flaky target \S+ is now (healthy|unhealthy)$")


@contextlib.contextmanager
def serve(
    directory: Path,
    config: dict[str, Any],
    *,
    tty: bool = False,
    arguments: tuple[str, ...] = (),
) -> Iterator[tuple[GatewayProcess, list[str]]]:
    """Run ``onegate serve`` with stderr on a file (or a terminal); yield the gateway and the
    list that receives its stderr lines once the block ends and the process has exited."""
    config_path = directory / "onegate.yaml"
    config_path.write_text(yaml.safe_dump(config))
    stdout_path = directory / "stdout.log"
    stderr_path = directory / "stderr.log"
    terminal: int | None = None
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr_file:
        stderr: int | Any = stderr_file
        if tty:
            terminal, stderr = os.openpty()
        process = subprocess.Popen(
            [sys.executable, "-m", "onegate", "serve", "--config", str(config_path), *arguments],
            stdout=stdout,
            stderr=stderr,
            cwd=directory,
            start_new_session=True,
        )
        if terminal is not None:
            os.close(stderr)  # the child holds its own copy of the terminal's other end
        port = config["server"]["port"]
        gateway = GatewayProcess(
            f"http://127.0.0.1:{port}", port, config_path, process, stderr_path
        )
        lines: list[str] = []
        captured = bytearray()
        try:
            if terminal is None:
                wait_ready(gateway)
            else:
                _wait_ready_reading(gateway, terminal, captured, config["server"]["workers"])
            yield gateway, lines
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            if terminal is not None:
                _drain(terminal, captured, process)
                os.close(terminal)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    output = bytes(captured) if tty else stderr_path.read_bytes()
    # A terminal turns each "\n" into "\r\n".
    lines.extend(line.rstrip("\r") for line in output.decode().splitlines() if line.strip())


def _read_available(terminal: int, captured: bytearray, timeout: float) -> bool:
    """Read what the terminal has within ``timeout``; False once the child side is closed."""
    readable, _, _ = select.select([terminal], [], [], timeout)
    if not readable:
        return True
    try:
        chunk = os.read(terminal, 65536)
    except OSError:  # EIO: every process holding the other end has exited
        return False
    captured.extend(chunk)
    return bool(chunk)


def _wait_ready_reading(
    gateway: GatewayProcess, terminal: int, captured: bytearray, workers: int
) -> None:
    # The terminal's buffer is small: keep reading it while every worker starts.
    deadline = time.monotonic() + 20
    while captured.count(b"Application startup complete") < workers:
        assert time.monotonic() < deadline, captured.decode(errors="replace")
        assert gateway.process.poll() is None, captured.decode(errors="replace")
        _read_available(terminal, captured, 0.1)


def _drain(terminal: int, captured: bytearray, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _read_available(terminal, captured, 0.2):
        if process.poll() is not None and not select.select([terminal], [], [], 0)[0]:
            return


def _config(port: int, upstreams: dict[str, Any], workers: int, **server: Any) -> dict[str, Any]:
    routes = [
        {"name": name, "match": {"prefix": f"/{name}"}, "upstream": name} for name in upstreams
    ]
    config = gateway_config(port, upstreams, routes, workers=workers, **server)
    return config


def _target_health(gateway: GatewayProcess) -> tuple[int | None, bool]:
    """The worker that answered ``/readyz`` and whether it holds the flaky target healthy."""
    pid, status, body = ask_on_a_new_connection(gateway, "/readyz")
    assert status == 200, body
    return pid, json.loads(body)["upstreams"]["flaky"]["targets"][0]["healthy"]


def _wait_every_worker_sees(gateway: GatewayProcess, healthy: bool) -> None:
    workers = worker_pids(gateway)
    seen: set[int] = set()

    def every_worker() -> bool:
        pid, state = _target_health(gateway)
        if pid is not None and state is healthy:
            seen.add(pid)
        return seen >= workers

    wait_for(every_worker, 15.0, f"every worker holding the target healthy={healthy}")


def test_two_workers_write_one_json_format_and_log_health_changes_once(
    tmp_path: Path,
) -> None:
    with RawUpstream(default=Reply(503)) as flaky:
        health = {"path": "/", "interval": 0.1, "healthy_threshold": 1, "unhealthy_threshold": 1}
        upstreams = {"flaky": {"targets": [flaky.url], "health": health}}
        config = _config(free_port(), upstreams, workers=2)
        # An API-key store: the gateway migrates its SQLite database at start, through Alembic.
        config["auth"] = {
            "issuers": [{"type": "api_key", "name": "keys", "store": "sqlite:///keys.db"}]
        }
        config["routes"][0]["auth"] = {"issuers": ["keys"]}
        with serve(tmp_path, config) as (gateway, lines):
            wait_for(lambda: len(worker_pids(gateway)) == 2, 10.0, "two workers")
            workers = worker_pids(gateway)
            # A well-formed key the store does not know: looking it up migrates the store.
            for _ in range(4):
                response = httpx.get(
                    f"{gateway.url}/flaky", headers={"authorization": f"Bearer {UNKNOWN_KEY}"}
                )
                assert response.status_code == 401, response.text
            _wait_every_worker_sees(gateway, healthy=False)
            flaky.script(default=Reply(200))
            _wait_every_worker_sees(gateway, healthy=True)
            time.sleep(0.5)  # several more probe rounds: a late duplicate would show up

    with sqlite3.connect(tmp_path / "keys.db") as database:
        tables = {row[0] for row in database.execute("select name from sqlite_master")}
    assert any("alembic" in table for table in tables)  # Alembic did run

    records = []
    for line in lines:
        record = json.loads(line)  # every line of stderr is one JSON object
        assert re.fullmatch(TIMESTAMP, record["ts"]), line
        assert set(record) >= {"ts", "level", "logger", "pid", "message"}, line
        records.append(record)
    # The same format from the supervisor and from both workers.
    by_pid = {r["pid"] for r in records}
    assert gateway.process.pid in by_pid
    assert workers <= by_pid
    assert not [r for r in records if r["logger"].startswith("alembic")]
    changes = [r for r in records if HEALTH_CHANGE.match(r["message"])]
    assert [r["message"].rsplit(" ", 1)[1] for r in changes] == ["unhealthy", "healthy"], changes
    assert {r["level"] for r in changes} == {"warning"}


def test_on_a_terminal_the_lines_are_text_with_a_timestamp(tmp_path: Path) -> None:
    config = _config(free_port(), {"demo": {"targets": ["asgi:onegate.dev.demo:app"]}}, 2)
    with serve(tmp_path, config, tty=True) as (gateway, lines):
        assert len(worker_pids(gateway)) == 2
    assert lines
    for line in lines:
        assert TEXT_LINE.match(line), line
    assert any("Started parent process" in line for line in lines)
    assert sum("Application startup complete" in line for line in lines) == 2


@pytest.mark.parametrize(
    ("tty", "setting", "arguments", "expected"),
    [
        (False, "text", (), "text"),
        (True, "auto", ("--log-format", "json"), "json"),
    ],
    ids=["setting-text-off-a-terminal", "flag-json-on-a-terminal"],
)
def test_the_format_can_be_chosen(
    tmp_path: Path, tty: bool, setting: str, arguments: tuple[str, ...], expected: str
) -> None:
    upstreams = {"demo": {"targets": ["asgi:onegate.dev.demo:app"]}}
    config = _config(free_port(), upstreams, 1, log_format=setting)
    with serve(tmp_path, config, tty=tty, arguments=arguments) as (_, lines):
        pass
    assert any("Application startup complete" in line for line in lines)
    for line in lines:
        if expected == "json":
            assert re.fullmatch(TIMESTAMP, json.loads(line)["ts"]), line
        else:
            assert TEXT_LINE.match(line), line
