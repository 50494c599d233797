"""The ASGI application uvicorn serves: health endpoints, lifespan, reload, then the pipeline."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import logging
import signal
import time
from typing import Any

from onegate.errors import ConfigError
from onegate.gateway.config import Config, load_config
from onegate.gateway.process import ProcessState
from onegate.gateway.runtime import Runtime
from onegate.gateway.tls import ListenerCertificate
from onegate.gateway.upstreams import Upstream
from onegate.http import http_date
from onegate.types import Receive, Scope, Send

logger = logging.getLogger("onegate.gateway")

#: Allocations between young-generation collections (CPython's default is 700).
GC_THRESHOLD = 10_000

HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"


class Gateway:
    """Holds the current :class:`Runtime` and swaps it when the configuration changes."""

    def __init__(self, config: Config, process: ProcessState | None = None) -> None:
        self.process = process if process is not None else ProcessState()
        """What outlives every reload (metrics, rate-limit stores, keys, request ids)."""
        self.runtime = Runtime(config, self.process)
        tls = config.gateway.server.tls
        self.listener = ListenerCertificate(tls, config.directory) if tls is not None else None
        """The TLS listener's certificate (None: plain HTTP). Its context is the one the
        server listens with (``GatewayServer.startup``), so reloading it here reaches new
        connections; open ones keep their certificate."""
        self.loaded_at = time.time()
        self.reloads = 0
        self.last_reload_error: str | None = None
        self._fingerprint = config.digest
        self._tasks: list[asyncio.Task[None]] = []
        self._retiring: set[asyncio.Task[None]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        path = scope["path"]
        if kind == "http" and path in (HEALTH_PATH, READY_PATH):
            await self._health(path, send)
            return
        await self.runtime.app(scope, receive, send)

    # --- health ----------------------------------------------------------------------------

    def readiness(self) -> dict[str, Any]:
        """The ``/readyz`` document. ``status``: ``ready``; ``degraded`` when an upstream has
        no available target; ``unavailable`` (answered with 503) when one of those is required
        by ``server.readiness.require``."""
        upstreams = {n: u.describe() for n, u in self.runtime.upstreams.items()}
        degraded = [n for n, u in upstreams.items() if u["available"] == 0]
        required = self.runtime.config.server.readiness.require
        missing = [n for n in degraded if required == "all" or n in required]
        return {
            "status": "unavailable" if missing else "degraded" if degraded else "ready",
            "config": {
                "path": str(self.runtime.source.path) if self.runtime.source.path else None,
                "loaded_at": self.loaded_at,
                "reloads": self.reloads,
                "last_reload_error": self.last_reload_error,
                "routes": len(self.runtime.config.routes),
            },
            "upstreams": upstreams,
            "unavailable_upstreams": degraded,
            "required_upstreams": sorted(upstreams) if required == "all" else list(required),
        }

    async def _health(self, path: str, send: Send) -> None:
        document = {"status": "ok"} if path == HEALTH_PATH else self.readiness()
        body = json.dumps(document).encode()
        await send(
            {
                "type": "http.response.start",
                # 503 only when a required upstream is out: a load balancer then sends this
                # gateway's traffic elsewhere; the body is the same document either way.
                "status": 503 if document["status"] == "unavailable" else 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"),
                    (b"date", http_date()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    # --- reload ----------------------------------------------------------------------------

    def reload(self) -> bool:
        """Load the configuration again; keep serving the old one if the new one is bad."""
        previous = self.runtime
        try:
            config = load_config(previous.source.path)
            runtime = Runtime(config, self.process, previous)
        except ConfigError as error:
            self.last_reload_error = str(error)
            logger.error("configuration rejected, still serving the previous one: %s", error)
            self._reload_listener(previous.source)  # SIGHUP still renews the certificate
            return False
        self._reload_listener(config)
        self._fingerprint = config.digest
        runtime.start()
        self.runtime = runtime
        self.reloads += 1
        self.loaded_at = time.time()
        self.last_reload_error = None
        retiring = [self._retire(u) for u in runtime.retired(previous)]
        retiring.append(self._retire_stages(previous))
        for work in retiring:
            task = asyncio.get_running_loop().create_task(work)
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        logger.info("configuration reloaded (%d routes)", len(runtime.config.routes))
        return True

    def _reload_listener(self, config: Config) -> None:
        """Load the listener's certificate again if its files (or their paths) changed."""
        tls = config.gateway.server.tls
        if self.listener is None:
            if tls is not None:
                logger.warning("server.tls was added: restart the gateway to serve HTTPS")
            return
        if tls is None:
            logger.warning("server.tls was removed: still serving HTTPS until a restart")
            return
        try:
            self.listener.use(tls, config.directory)
        except ConfigError as error:
            logger.error("listener certificate not reloaded, the previous one stays: %s", error)

    async def _retire(self, upstream: Upstream) -> None:
        """Close a dropped upstream once its in-flight requests are done (or after the grace)."""
        deadline = time.monotonic() + self.runtime.config.server.drain_seconds
        # Outstanding counts are plain integers on the hot path; polling them is cheaper than
        # signalling an event on every request.
        while any(t.outstanding for t in upstream.targets) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        await upstream.aclose()

    async def _retire_stages(self, previous: Runtime) -> None:
        """Close the old pipeline's stages once requests that started on it had time to end."""
        await asyncio.sleep(previous.config.server.drain_seconds)
        await previous.close_stages()

    async def _watch(self) -> None:
        """Once a second: expire idle connections and reload if the file changed."""
        seen: str | None = None
        while True:
            await asyncio.sleep(1.0)
            self.runtime.sweep()
            source = self.runtime.source
            if not self.runtime.config.server.watch_config:
                continue
            if self.listener is not None:
                self.listener.poll()  # a renewed certificate, written over the same files
            if source.path is None:
                continue
            try:
                fingerprint = hashlib.sha256(
                    source.path.read_bytes()
                ).hexdigest()  # like Config.digest
            except OSError:
                continue
            if fingerprint == self._fingerprint:
                seen = None
            elif fingerprint != seen:
                seen = fingerprint  # changed: wait one more tick, an editor may be mid-write
            else:
                self._fingerprint = fingerprint  # stable for a second: try it, once
                seen = None
                self.reload()

    # --- lifespan --------------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        # Everything built so far lives as long as the process: move it out of the collector's
        # sight, so collections triggered by request garbage don't walk it again and again (a
        # full walk was a visible tail-latency stall), and collect young objects less often.
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
        loop = asyncio.get_running_loop()
        self.runtime.start()
        self._tasks.append(loop.create_task(self._watch()))
        # Flushes metrics and access-log lines every 100 ms (and once more when cancelled).
        self._tasks.append(
            loop.create_task(self.process.observability.housekeeping(self._upstreams))
        )
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, self.reload)

    async def shutdown(self) -> None:
        for task in self._tasks + list(self._retiring):
            task.cancel()
        for task in self._tasks + list(self._retiring):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.runtime.aclose()
        # Last log lines and spans out, this worker's gauges retired.
        self.process.observability.shutdown()

    def _upstreams(self) -> list[Upstream]:
        return list(self.runtime.upstreams.values())


def create_app() -> Gateway:
    """uvicorn's factory: reads the configuration named by ``ONEGATE_CONFIG``."""
    return Gateway(load_config())
