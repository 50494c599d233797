"""Upstreams and their targets: where a route's requests go.

Every target offers one interface, :meth:`Target.open`, which sends a request and returns once
the response head is known. A :class:`RemoteTarget` speaks HTTP/1.1 over a keep-alive pool; an
:class:`AsgiTarget` calls an in-process ASGI app directly (no loopback socket, and streamed
bodies are handed over message by message, never buffered). Balancing, health and the circuit
breaker work the same for both.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import itertools
import logging
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from onegate.errors import (
    CircuitOpen,
    ConfigError,
    NoHealthyTarget,
    OnegateError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamResetError,
    UpstreamTimeout,
)
from onegate.gateway.body import RequestBody
from onegate.gateway.breaker import CircuitBreaker, Ticket
from onegate.gateway.config import Timeouts, UpstreamConfig
from onegate.gateway.transport import ConnectionPool, encode_head
from onegate.observability.healthlog import HealthLog
from onegate.types import ASGIApp, Message, Scope

logger = logging.getLogger("onegate.upstreams")
Headers = list[tuple[bytes, bytes]]


@dataclass(slots=True)
class UpstreamRequest:
    """What the proxy asks a target to do, with gateway-owned headers already in place."""

    method: str
    path: str
    """Normalised, percent-encoded path to send."""
    query: bytes
    headers: Headers
    body: RequestBody
    timeouts: Timeouts
    scope: Scope
    """The client's ASGI scope, for in-process targets."""


class UpstreamResponse(Protocol):
    status: int
    headers: Headers

    @property
    def reused(self) -> bool: ...

    async def read_chunk(self) -> bytes | None: ...

    def take_chunk(self) -> bytes | None:
        """A piece of the body already received, if any (never waits)."""

    @property
    def received(self) -> bool:
        """True once the whole response is in (the body may still wait in the buffer)."""

    @property
    def at_end(self) -> bool:
        """True when the body is known to be over: nothing buffered and nothing to come."""

    def abort(self, error: Exception) -> None:
        """Stop the exchange now; a pending or later read raises ``error``."""

    def close(self, reusable: bool = True) -> None: ...


class Target:
    """One address (or in-process app) of an upstream."""

    kind = "remote"

    def __init__(self, url: str, config: UpstreamConfig) -> None:
        self.url = url
        self.breaker = CircuitBreaker(config.breaker)
        self.healthy = True
        self.outstanding = 0
        self._health_streak = 0

    def available(self, now: float) -> bool:
        return self.healthy and self.breaker.available(now)

    async def open(self, request: UpstreamRequest) -> UpstreamResponse:
        raise NotImplementedError

    async def probe(self, path: str, timeout: float) -> bool:
        return True

    def sweep(self) -> None:
        """Housekeeping, called about once a second."""

    async def aclose(self) -> None:
        """Release sockets and tasks."""

    def describe(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "healthy": self.healthy,
            "breaker": self.breaker.state.value,
            "outstanding": self.outstanding,
        }


class RemoteTarget(Target):
    def __init__(self, url: str, config: UpstreamConfig, tls: ssl.SSLContext | None = None) -> None:
        """``tls``: the upstream's context, used when ``url`` is ``https://``."""
        super().__init__(url, config)
        parts = urlsplit(url)
        if parts.hostname is None:
            raise ConfigError(f"target {url!r} has no host")
        self.host = parts.hostname
        self.secure = parts.scheme == "https"
        self.port = parts.port or (443 if self.secure else 80)
        self.tls = tls if self.secure else None
        if self.secure and self.tls is None:
            raise ConfigError(f"target {url!r} needs a TLS context")
        self.server_name = config.tls.server_name or self.host
        """The name sent in SNI and checked against the certificate (wss too)."""
        self.host_header = (parts.netloc.rsplit("@", 1)[-1]).encode("ascii")
        self.pool_config = config.pool
        self.max_head_bytes = config.max_response_header_bytes
        self._pool: ConnectionPool | None = None

    @property
    def pool(self) -> ConnectionPool:
        # Created lazily: the pool belongs to the event loop of the worker that serves.
        if self._pool is None:
            self._pool = ConnectionPool(
                self.host,
                self.port,
                max_connections=self.pool_config.max_connections,
                idle_timeout=self.pool_config.idle_timeout,
                max_head_bytes=self.max_head_bytes,
                tls=self.tls,
                server_hostname=self.server_name,
            )
        return self._pool

    async def open(self, request: UpstreamRequest) -> UpstreamResponse:
        timeouts = request.timeouts
        exchange = await self.pool.exchange(
            connect_timeout=timeouts.connect,
            read_timeout=timeouts.read,
            total_timeout=timeouts.total,
            head_only=request.method == "HEAD",
        )
        try:
            target = request.path.encode("latin-1")
            if request.query:
                target += b"?" + request.query
            headers = [(b"host", self.host_header), *request.headers]
            headers += request.body.framing_headers()
            exchange.write(encode_head(request.method, target, headers))
            if not request.body.empty:
                await request.body.send_to(exchange)
            await exchange.read_head()
        except BaseException:
            exchange.close(reusable=False)
            raise
        return exchange

    async def probe(self, path: str, timeout: float) -> bool:
        try:
            exchange = await self.pool.exchange(connect_timeout=timeout, read_timeout=timeout)
        except UpstreamError:
            return False
        ok = False
        try:
            exchange.write(encode_head("GET", path.encode(), [(b"host", self.host_header)]))
            await exchange.read_head()
            while await exchange.read_chunk() is not None:
                pass
            ok = exchange.status < 500
        except UpstreamError:
            ok = False
        finally:
            exchange.close(reusable=ok)
        return ok

    def sweep(self) -> None:
        if self._pool is not None:
            self._pool.sweep()

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        if self._pool is not None:
            info["connections"] = {
                "open": self._pool.open_connections,
                "idle": self._pool.idle_connections,
            }
        return info


def load_asgi_app(reference: str) -> ASGIApp:
    """Import ``asgi:module:attribute``; a zero-argument factory function is called once."""
    _, module_name, attribute = reference.split(":")
    try:
        module = importlib.import_module(module_name)
        app = getattr(module, attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot load in-process app {reference!r}: {exc}") from exc
    if getattr(app, "__onegate_factory__", False):
        app = app()
    if not callable(app):
        raise ConfigError(f"{reference!r} is not an ASGI app")
    return app  # type: ignore[no-any-return]


class AsgiTarget(Target):
    kind = "asgi"

    def __init__(self, url: str, config: UpstreamConfig, app: ASGIApp | None = None) -> None:
        super().__init__(url, config)
        # An app the gateway built itself (the admin API) is handed over; others are imported.
        self.app = app if app is not None else load_asgi_app(url)
        self.finishing: set[asyncio.Task[None]] = set()
        """Responses this app sent in full while it still runs its own clean-up: held here
        so their tasks are not collected before they end."""

    async def open(self, request: UpstreamRequest) -> UpstreamResponse:
        response = AsgiResponse(self.app, request, self.finishing)
        try:
            await response.start()
        except BaseException:
            response.close(reusable=False)
            raise
        return response


_END = object()


class AsgiResponse:
    """Runs an in-process ASGI app as an upstream exchange.

    The app runs in its own task; its ``send`` hands each body message over through a queue
    of one, so the app is paused (backpressure) until the gateway has passed the previous
    piece on to the client. Nothing is buffered.
    """

    reused = False
    at_end = received = False  # a queue cannot tell; the end arrives as its own message

    def __init__(
        self, app: ASGIApp, request: UpstreamRequest, finishing: set[asyncio.Task[None]]
    ) -> None:
        self.app = app
        self._finishing = finishing
        self.request = request
        self.status = 0
        self.headers: Headers = []
        self._head = asyncio.get_running_loop().create_future()
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=1)
        self._task: asyncio.Task[None] | None = None
        self._disconnected = asyncio.Event()
        self._body: AsyncIterator[bytes] | None = request.body.chunks()

    def _scope(self) -> Scope:
        client = self.request.scope
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": client.get("http_version", "1.1"),
            "method": self.request.method,
            "scheme": client.get("scheme", "http"),
            "path": unquote(self.request.path),
            "raw_path": self.request.path.encode("latin-1"),
            "query_string": self.request.query,
            "root_path": "",
            "headers": [*self.request.headers, *self.request.body.framing_headers()],
            "client": client.get("client"),
            "server": client.get("server"),
            "extensions": {},
        }
        return scope

    async def _receive(self) -> Message:
        if self._body is not None and self.request.body.empty:
            self._body = None
            return {"type": "http.request", "body": b"", "more_body": False}
        if self._body is not None:
            try:
                data = await anext(self._body)
            except StopAsyncIteration:
                self._body = None
                return {"type": "http.request", "body": b"", "more_body": False}
            return {"type": "http.request", "body": data, "more_body": True}
        await self._disconnected.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = int(message["status"])
            self.headers = [(bytes(n).lower(), bytes(v)) for n, v in message.get("headers", [])]
            if not self._head.done():
                self._head.set_result(None)
        elif kind == "http.response.body":
            if self._disconnected.is_set():
                raise OSError("client disconnected")
            body = message.get("body", b"")
            if body:
                await self._queue.put(bytes(body))
            if not message.get("more_body", False):
                await self._queue.put(_END)

    async def _run(self) -> None:
        try:
            await self.app(self._scope(), self._receive, self._send)
        except Exception as exc:
            error = UpstreamResetError(f"in-process app failed: {type(exc).__name__}")
            if not self._head.done():
                self._head.set_exception(error)
            else:
                await self._queue.put(error)
            logger.exception("in-process upstream %s raised", self.request.path)
            return
        if not self._head.done():
            self._head.set_exception(UpstreamProtocolError("in-process app sent no response"))
        else:
            await self._queue.put(_END)

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())
        timeouts = self.request.timeouts
        try:
            async with asyncio.timeout(timeouts.total or timeouts.read):
                await self._head
        except TimeoutError:
            raise UpstreamTimeout("in-process upstream did not answer in time") from None

    def take_chunk(self) -> bytes | None:
        return None  # pieces are handed over one at a time through the queue

    async def read_chunk(self) -> bytes | None:
        try:
            async with asyncio.timeout(self.request.timeouts.read):
                item = await self._queue.get()
        except TimeoutError:
            raise UpstreamTimeout("in-process upstream stalled") from None
        if item is _END:
            self._queue.put_nowait(_END)  # later reads see the end too
            return None
        if isinstance(item, Exception):
            raise item
        return item  # type: ignore[no-any-return]

    def abort(self, error: Exception) -> None:
        self.close(reusable=False)
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(error)

    def close(self, reusable: bool = True) -> None:
        task = self._task
        if reusable and task is not None and not task.done():
            # The app sent its whole response but is still running (cleanup, background
            # tasks): let it finish, holding a reference so the task is not collected.
            self._finishing.add(task)
            task.add_done_callback(self._finishing.discard)
            return
        self._disconnected.set()
        if task is not None and not task.done():
            task.cancel()
        if self._head.done() and not self._head.cancelled():
            self._head.exception()  # mark retrieved


def make_target(url: str, config: UpstreamConfig, tls: ssl.SSLContext | None = None) -> Target:
    if url.startswith("asgi:"):
        return AsgiTarget(url, config)
    return RemoteTarget(url, config, tls)


class Upstream:
    """A named group of targets with a balancing policy, health checks and breakers."""

    def __init__(
        self,
        name: str,
        config: UpstreamConfig,
        targets: Sequence[Target] | None = None,
        *,
        tls: ssl.SSLContext | None = None,
        health_log: HealthLog | None = None,
    ) -> None:
        """``tls``: the context of ``https://`` targets (see ``tls.client_context``);
        ``health_log``: where health changes are reported (the process's, shared by its
        upstreams, so that one worker speaks for the gateway)."""
        self.name = name
        self.config = config
        self.health_log = health_log if health_log is not None else HealthLog()
        # ``targets`` already built: the gateway's internal upstreams (the admin surface).
        self.targets: tuple[Target, ...] = (
            tuple(targets)
            if targets is not None
            else tuple(make_target(u, config, tls) for u in config.targets)
        )
        self._next = itertools.count()
        self._health_task: asyncio.Task[None] | None = None

    def pick(self, tried: Sequence[Target] = ()) -> tuple[Target, Ticket]:
        """Choose a target and reserve it with its breaker; raise 503 errors when none is left.

        Targets already ``tried`` by this request are avoided while others are available.
        Every ticket returned must go back to ``target.breaker.release``.
        """
        now = time.monotonic()
        targets = self.targets
        count = len(targets)
        if count == 1 and targets[0].healthy:
            ticket = targets[0].breaker.acquire(now)
            if ticket is not None:
                return targets[0], ticket
        start = next(self._next) % count
        order = [targets[(start + i) % count] for i in range(count)]
        if tried and count > 1:
            fresh = [t for t in order if t not in tried]
            order = fresh + [t for t in order if t in tried]
        if self.config.balance == "least_outstanding":
            order.sort(key=lambda t: t.outstanding)  # stable: ties keep round-robin order
        for target in order:
            if target.healthy:
                ticket = target.breaker.acquire(now)
                if ticket is not None:
                    return target, ticket
        if any(t.healthy for t in targets):
            retry = min(t.breaker.retry_after(now) for t in targets if t.healthy)
            raise CircuitOpen(
                f"circuit breaker open for every healthy target of upstream {self.name!r}",
                retry_after=retry,
            )
        interval = self.config.health.interval if self.config.health else 5.0
        raise NoHealthyTarget(
            f"no healthy target for upstream {self.name!r}", retry_after=int(interval) or 1
        )

    def healthy_count(self) -> int:
        now = time.monotonic()
        return sum(1 for t in self.targets if t.available(now))

    def describe(self) -> dict[str, Any]:
        return {
            "targets": [t.describe() for t in self.targets],
            "available": self.healthy_count(),
            "total": len(self.targets),
        }

    def start(self) -> None:
        if self.config.health is not None and self._health_task is None:
            self._health_task = asyncio.get_running_loop().create_task(self._check_health())

    async def _check_health(self) -> None:
        health = self.config.health
        assert health is not None
        while True:
            await asyncio.gather(*(self._probe(t) for t in self.targets))
            await asyncio.sleep(health.interval)

    async def _probe(self, target: Target) -> None:
        health = self.config.health
        assert health is not None
        ok = await target.probe(health.path, health.timeout)
        if ok:
            # The target answers again: clients need not wait for the breaker's next probe.
            target.breaker.health_check_passed()
        # The streak counts consecutive results that disagree with the current state.
        if ok != target.healthy:
            target._health_streak += 1
            needed = health.healthy_threshold if ok else health.unhealthy_threshold
            if target._health_streak >= needed:
                target.healthy = ok
                target._health_streak = 0
                self.health_log.changed(self.name, target.url, ok)
        else:
            target._health_streak = 0

    def sweep(self) -> None:
        for target in self.targets:
            target.sweep()

    async def aclose(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
            self._health_task = None
        for target in self.targets:
            await target.aclose()


def is_failure(error: OnegateError | None, status: int, failure_statuses: Sequence[int]) -> bool:
    if error is not None:
        return isinstance(error, UpstreamError)
    return status in failure_statuses
