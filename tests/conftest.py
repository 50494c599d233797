"""Shared fixtures. ``tests/`` is on sys.path (pytest rootdir conftest), so helpers import as
``helpers.*``."""

from helpers.legacy import legacy_backends

__all__ = ["legacy_backends"]
