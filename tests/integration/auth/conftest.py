"""Shared pieces of the auth integration tests: the legacy stand-ins (started once for the
whole package) and a way to read what the echo endpoint says it received."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from helpers.legacy import LegacyBackends, run_legacy_backends


@pytest.fixture(scope="package")
def backends() -> Iterator[LegacyBackends]:
    with run_legacy_backends() as started:
        yield started
