"""What a new user trips over in the ``onegate`` command: version, help, ``config validate``
with several problems, unset secrets or a file from ``--config``/``ONEGATE_CONFIG``, and a port
already in use. Each runs the real command as a subprocess."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from helpers.cli import onegate
from onegate import __version__

GOOD = """\
upstreams:
  main:
    targets: ["http://127.0.0.1:3000"]
routes:
  - name: main
    match: {prefix: /api}
    upstream: main
"""

SECRETS = (
    GOOD
    + """\
auth:
  issuers:
    - name: staff
      type: jwt
      issuer: https://login.example.com
      audiences: [api]
      algorithms: [HS256]
      keys:
        - kid: k1
          secret_env: STAFF_SECRET_FOR_TEST
"""
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "onegate.yaml"
    path.write_text(text)
    return path


def test_version() -> None:
    done = onegate("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"onegate {__version__}"


@pytest.mark.parametrize(
    ("command", "flags"),
    [
        (["keys", "list"], ["--json"]),
        (["config", "show"], ["--json"]),
        (["check"], ["--json"]),
        ([], ["--version"]),
    ],
)
def test_boolean_flags_are_shown_as_flags(command: list[str], flags: list[str]) -> None:
    done = onegate(*command, "--help")
    assert done.returncode == 0, done.stderr
    for flag in [*flags, "--help"]:
        (line,) = [ln for ln in done.stdout.splitlines() if ln.strip().startswith(flag + " ")]
        # "--json   Print JSON.", not "--json <bool>" (a flag takes no value).
        assert "<bool>" not in line and "BOOLEAN" not in line, line
    assert "<bool>" not in done.stdout


def test_legacy_backends_help_lists_its_options() -> None:
    done = onegate("dev", "legacy-backends", "--help")
    assert done.returncode == 0, done.stderr
    for option in ("--main-port", "--fastapi-port", "--ai-port", "--host"):
        assert option in done.stdout
    assert "3000" in done.stdout and "8001" in done.stdout


def test_validate_prints_every_problem_one_per_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        GOOD.replace("prefix: /api", "prefx: /api") + "server:\n  port: eighty\n  workrs: 2\n",
    )
    done = onegate("config", "validate", str(path))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "more)" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 3, done.stderr
    assert lines[0] == (
        f"onegate: {path}:6: routes[0].match.prefx: unknown key 'prefx'; did you mean 'prefix'?"
    )
    assert lines[1].startswith(f"onegate: {path}:9: server.port: ")
    assert lines[2] == (
        f"onegate: {path}:10: server.workrs: unknown key 'workrs'; did you mean 'workers'?"
    )


def test_validate_takes_the_file_like_every_other_command(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    for done in (
        onegate("config", "validate", "--config", str(path)),
        onegate("config", "validate", "-c", str(path)),
        onegate("config", "validate", ONEGATE_CONFIG=str(path)),
        onegate("config", "validate", str(path)),
    ):
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"{path}: ok (1 routes, 1 upstreams)"
    other = write(tmp_path / "..", GOOD)
    both = onegate("config", "validate", str(path), "--config", str(other))
    assert both.returncode == 2 and both.stderr.startswith("onegate: two files given")


def test_validate_reports_unset_secrets_as_not_set_here(tmp_path: Path) -> None:
    path = write(tmp_path, SECRETS)
    done = onegate("config", "validate", "--config", str(path))
    assert done.returncode == 0, done.stderr
    ok, note = done.stdout.splitlines()
    assert ok == f"{path}: ok (1 routes, 1 upstreams)"
    assert note == (
        f"{path}:17: auth.issuers[0].keys[0].secret_env: STAFF_SECRET_FOR_TEST is not set here "
        "(the gateway will need it)"
    )
    # Set, it is used as it is and not mentioned; set too short, it is judged like any other.
    good = onegate("config", "validate", str(path), STAFF_SECRET_FOR_TEST="k" * 40)
    assert good.returncode == 0 and "not set" not in good.stdout
    weak = onegate("config", "validate", str(path), STAFF_SECRET_FOR_TEST="short")
    assert weak.returncode == 2


def test_validate_still_fails_other_problems_with_secrets_unset(tmp_path: Path) -> None:
    path = write(tmp_path, SECRETS.replace("upstream: main", "upstream: nope"))
    done = onegate("config", "validate", str(path))
    assert done.returncode == 2
    assert "unknown upstream 'nope'" in done.stderr


def test_a_port_in_use_is_one_line_naming_it(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        started = time.monotonic()
        done = onegate("serve", "--config", str(path), "--port", str(port))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"onegate: port {port} on 127.0.0.1 is already in use (another onegate?); use --port"
    ]
    # Found before any worker started (each would have printed its own error).
    assert time.monotonic() - started < 30
