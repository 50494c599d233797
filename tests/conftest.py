"""Shared fixtures. ``tests/`` is on sys.path (pytest rootdir conftest), so helpers import as
``helpers.*``."""

import gc
from collections.abc import Iterator

import pytest

from helpers.legacy import legacy_backends
from helpers.redis_server import redis_url

__all__ = ["legacy_backends", "redis_url"]


@pytest.fixture(autouse=True, scope="module")
def collect_garbage_after_each_module() -> Iterator[None]:
    """A socket or transport a module leaks is reported (as a ResourceWarning, an error here)
    at the end of that module, not in whichever later test the collector happens to run."""
    yield
    gc.collect()
