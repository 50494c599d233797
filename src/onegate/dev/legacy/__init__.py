"""Stand-ins for the three legacy backends that onegate fronts.

The mobile app talks to a Next.js server (port 3000), a FastAPI service for payments and ML
(port 8001) and an AI-agents service (port 8000). These small Starlette apps answer the same
paths the same way, closely enough to exercise the gateway end to end: identifying headers,
echoes that report exactly what arrived, slow and failing answers, big streamed bodies,
Server-Sent Events and a WebSocket. They run in one process with ``python -m
onegate.dev.legacy`` (or ``onegate dev legacy-backends``), or in-process with
:func:`serve_legacy_backends`.

One module per stand-in (``nextjs``, ``fastapi``, ``ai``), what they share (``shared``) and
what serves them (``runner``); the names below are the ones other code imports from here.
"""

from __future__ import annotations

from onegate.dev.legacy.ai import ai_app
from onegate.dev.legacy.fastapi import fastapi_app
from onegate.dev.legacy.nextjs import BYTES_CHUNK, main_app, pattern_chunks
from onegate.dev.legacy.runner import LegacyPorts, main, serve_legacy_backends

__all__ = [
    "BYTES_CHUNK",
    "LegacyPorts",
    "ai_app",
    "fastapi_app",
    "main",
    "main_app",
    "pattern_chunks",
    "serve_legacy_backends",
]
