"""Shared fixtures. ``tests/`` is on sys.path (pytest rootdir conftest), so helpers import as
``helpers.*``."""

from helpers.legacy import legacy_backends
from helpers.redis_server import redis_url

__all__ = ["legacy_backends", "redis_url"]
