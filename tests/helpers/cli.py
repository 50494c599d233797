"""Runs the ``onegate`` command in a subprocess, as a user would, with no onegate settings
inherited from the test process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without onegate settings or a terminal width (help text
    wraps as on an 80-column terminal), plus ``extra``."""
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith("ONEGATE_") and k != "COLUMNS"
    }
    return {**environ, **extra}


def onegate(
    *args: str, env: Mapping[str, str] | None = None, **extra: str
) -> subprocess.CompletedProcess[str]:
    """``onegate ARGS...`` to its end; ``env`` replaces the clean environment, ``extra`` adds
    variables to it."""
    return subprocess.run(
        [sys.executable, "-m", "onegate", *args],
        capture_output=True,
        text=True,
        env={**(env if env is not None else clean_environment()), **extra},
        timeout=60,
    )
