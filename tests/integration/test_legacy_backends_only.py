"""``onegate dev legacy-backends --only NAME``: one stand-in on its own, to stop it alone."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import httpx

from helpers.legacy import free_ports

COMMAND = [sys.executable, "-m", "onegate", "dev", "legacy-backends"]


def _refused(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_only_the_named_stand_ins_start() -> None:
    main, fastapi, ai = free_ports(3)
    process = subprocess.Popen(
        [
            *COMMAND,
            f"--main-port={main}",
            f"--fastapi-port={fastapi}",
            f"--ai-port={ai}",
            "--only",
            "fastapi",
            "--only",
            "ai",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        # Announced once all the chosen ones listen, one line each.
        announced = [process.stdout.readline().split() for _ in range(2)]
        assert announced == [
            ["fastapi", f"http://127.0.0.1:{fastapi}"],
            ["ai", f"http://127.0.0.1:{ai}"],
        ]
        assert httpx.get(f"http://127.0.0.1:{fastapi}/health", timeout=5).json() == {
            "status": "ok",
            "backend": "fastapi",
        }
        assert httpx.get(f"http://127.0.0.1:{ai}/health", timeout=5).status_code == 200
        assert _refused(main)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=15)
    assert process.returncode == 0, stderr


def test_an_unknown_stand_in_is_refused_with_the_choices() -> None:
    result = subprocess.run(
        [*COMMAND, "--only", "nextjs"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "'nextjs' is not one of 'main', 'fastapi', 'ai'" in result.stderr


def test_help_lists_the_option() -> None:
    result = subprocess.run([*COMMAND, "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert "--only <main|fastapi|ai>" in result.stdout
