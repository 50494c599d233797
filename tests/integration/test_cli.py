"""The ``onegate`` command as an operator runs it: a real process, its exit status and output.

A mistake the operator can fix is one line on stderr naming the file, the line and the key,
with exit status 2; never a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from helpers.cli import clean_environment, onegate
from helpers.legacy import free_port

GOOD = """\
server:
  port: 8080
upstreams:
  main:
    targets: ["http://127.0.0.1:3000"]
  ai-agents:
    targets: ["http://127.0.0.1:8000"]
routes:
  - name: ai
    match: {prefix: /api/ai}
    upstream: ai-agents
  - name: main
    match: {prefix: /api}
    upstream: main
"""


def write(tmp_path: Path, text: str, name: str = "onegate.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def assert_one_line_error(result: subprocess.CompletedProcess[str], starts: str) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(starts), lines[0]
    return lines[0]


# --- config validate -------------------------------------------------------------------------


def test_validate_accepts_a_good_file(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    result = onegate("config", "validate", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{path}: ok (2 routes, 2 upstreams)\n"
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        pytest.param(
            GOOD.replace("  port: 8080", "  port: 8080\n  colour: blue"),
            ":3: server.colour: ",
            "unknown key 'colour' (valid keys: host, port,",
            id="unknown-key",
        ),
        pytest.param(
            GOOD.replace("match: {prefix: /api}", "match: {prefx: /api}"),
            ":13: routes[1].match.prefx: ",
            "unknown key 'prefx'; did you mean 'prefix'?",
            id="unknown-key-suggested",
        ),
        pytest.param(
            GOOD.replace("port: 8080", "port: eighty"),
            ":2: server.port: ",
            "valid integer",
            id="wrong-type",
        ),
        pytest.param(
            GOOD.replace('targets: ["http://127.0.0.1:3000"]', "balance: round_robin"),
            ":4: upstreams.main.targets: ",
            "Field required",
            id="missing-targets",
        ),
        pytest.param(
            GOOD.replace("http://127.0.0.1:3000", "ftp://127.0.0.1:3000"),
            ":5: upstreams.main.targets: ",
            "'ftp://127.0.0.1:3000': expected http://host:port",
            id="bad-target",
        ),
        pytest.param(
            GOOD.replace("upstream: main", "upstream: mian"),
            ":14: routes[1].upstream: ",
            "unknown upstream 'mian'",
            id="unknown-upstream",
        ),
        pytest.param(
            GOOD.replace("name: main", "name: ai"),
            ":12: routes[1].name: ",
            "duplicate route name 'ai'",
            id="duplicate-route",
        ),
        pytest.param(
            GOOD.replace("  ai-agents:", " ai-agents:"),
            ":6: ",
            "invalid YAML",
            id="yaml-syntax",
        ),
    ],
)
def test_validate_rejects_a_bad_file_in_one_line(
    tmp_path: Path, text: str, where: str, message: str
) -> None:
    path = write(tmp_path, text)
    result = onegate("config", "validate", str(path))
    line = assert_one_line_error(result, f"onegate: {path}{where}")
    assert message in line
    assert result.stdout == ""


def test_validate_names_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    result = onegate("config", "validate", str(missing))
    assert_one_line_error(result, f"onegate: {missing}: cannot read config file")


def test_validate_builds_the_gateway_so_bad_routes_fail_too(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("{prefix: /api}", "{path: /api/{id}/{id}}"))
    result = onegate("config", "validate", str(path))
    assert_one_line_error(result, f"onegate: {path}")


@pytest.mark.parametrize("target", ["http://127.0.0.1:99999", "http://backend:http"])
def test_validate_rejects_a_bad_port_in_one_line(tmp_path: Path, target: str) -> None:
    path = write(tmp_path, GOOD.replace("http://127.0.0.1:3000", target))
    result = onegate("config", "validate", str(path))
    assert_one_line_error(result, f"onegate: {path}:5: upstreams.main.targets: ")


def test_validate_names_the_line_of_an_unloadable_in_process_app(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("http://127.0.0.1:8000", "asgi:no_such_module:app"))
    result = onegate("config", "validate", str(path))
    assert_one_line_error(result, f"onegate: {path}:7: upstreams.ai-agents.targets: ")


# --- config show -----------------------------------------------------------------------------


WITH_SECRETS = (
    GOOD
    + """\
auth:
  issuers:
    - name: partners
      type: api_key
      store: postgresql://onegate:hunter2@db.internal:5432/keys
    - name: staff
      type: jwt
      issuer: https://login.example.com
      audiences: [api]
      algorithms: [HS256]
      keys:
        - kid: k1
          secret_env: STAFF_JWT_SECRET
"""
)


def test_show_prints_the_effective_config_with_secrets_masked(tmp_path: Path) -> None:
    path = write(tmp_path, WITH_SECRETS)
    result = onegate("config", "show", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout
    shown = yaml.safe_load(result.stdout)
    partners, staff = shown["auth"]["issuers"]
    assert partners["store"] == "postgresql://********@db.internal:5432/keys"
    # The name of the variable is shown (where the secret comes from), never a value.
    assert staff["keys"][0]["secret_env"] == "STAFF_JWT_SECRET"
    # Defaults are filled in: this is what the gateway will run with.
    assert shown["server"]["max_body_bytes"] == 10 * 1024 * 1024
    assert shown["routes"][0]["timeouts"]["read"] == 30.0


def test_show_applies_environment_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    env = clean_environment(
        ONEGATE_UPSTREAM_MAIN_URL="http://10.0.0.7:3000,http://10.0.0.8:3000",
        ONEGATE_UPSTREAM_AI_AGENTS_URL="asgi:onegate.dev.legacy:ai_app",
    )
    result = onegate("config", "show", "--config", str(path), "--json", env=env)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["upstreams"]["main"]["targets"] == ["http://10.0.0.7:3000", "http://10.0.0.8:3000"]
    assert shown["upstreams"]["ai-agents"]["targets"] == ["asgi:onegate.dev.legacy:ai_app"]


def test_bad_environment_override_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    env = clean_environment(ONEGATE_UPSTREAM_MAIN_URL="http://svc:t0ken@10.0.0.7:3000")
    result = onegate("config", "validate", str(path), env=env)
    line = assert_one_line_error(
        result, f"onegate: environment ({path}): ONEGATE_UPSTREAM_MAIN_URL: "
    )
    assert "t0ken" not in line


def test_show_reads_the_file_named_by_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("port: 8080", "port: 9123"))
    result = onegate("config", "show", "--json", env=clean_environment(ONEGATE_CONFIG=str(path)))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["server"]["port"] == 9123


def test_show_of_a_bad_file_is_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("upstream: main", "upstream: mian"))
    result = onegate("config", "show", "--config", str(path))
    assert_one_line_error(result, f"onegate: {path}:14: routes[1].upstream: ")


# --- serve -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "where"),
    [
        pytest.param(
            GOOD.replace("upstream: main", "upstream: mian"),
            ":14: routes[1].upstream: ",
            id="config",
        ),
        pytest.param(
            GOOD.replace("http://127.0.0.1:8000", "asgi:no_such_module:app"),
            ":7: upstreams.ai-agents.targets: cannot load in-process app",
            id="in-process-app",
        ),
    ],
)
def test_serve_with_a_bad_config_exits_2_in_one_line(tmp_path: Path, text: str, where: str) -> None:
    path = write(tmp_path, text)
    started = time.monotonic()
    result = onegate("serve", "--config", str(path), "--port", str(free_port()))
    assert_one_line_error(result, f"onegate: {path}{where}")
    assert time.monotonic() - started < 20


@pytest.fixture
def default_gateway() -> Iterator[str]:
    """``onegate serve`` with nothing but a port: the built-in configuration."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "onegate", "serve", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=clean_environment(),
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, "onegate serve exited early"
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "onegate serve did not become ready"
            time.sleep(0.05)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_serve_with_the_built_in_config_answers_curl(default_gateway: str) -> None:
    result = subprocess.run(
        ["curl", "-sS", "--max-time", "5", "-i", f"{default_gateway}/api/hello?who=me"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert result.returncode == 0, result.stderr
    head, body = result.stdout.split("\n\n", 1)  # text mode turned CRLF into LF
    assert head.startswith("HTTP/1.1 200")
    assert "x-request-id: " in head.lower()
    document = json.loads(body)
    assert document["message"] == "Hello from onegate's built-in demo upstream."
    assert (document["method"], document["path"], document["query"]) == (
        "GET",
        "/api/hello",
        "who=me",
    )
    assert "x-forwarded-for" in document["headers"]
    assert document["headers"]["user-agent"].startswith("curl/")
