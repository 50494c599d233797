"""The gateway's ASGI app in this process, driven through ``httpx.ASGITransport``.

For suites about the gateway's own logic (CORS, the admin surface, auth policy, header and
forwarding rules): no subprocess to start and no port to wait for. Upstreams stay real loopback
servers (the legacy stand-ins, :class:`helpers.upstreams.RawUpstream`...). What is left out is
uvicorn: its HTTP parser, the listening socket, workers and signals. Suites about those
(transport, framing, signals, workers, reload) keep using :func:`helpers.gateway.run_gateway`.

The app is built by its own factory (``create_app``, as uvicorn does) from a config file
written like :func:`~helpers.gateway.run_gateway` writes it, and it runs on an event loop of
its own, in a thread, with the ASGI lifespan sent to it: startup before the first request,
shutdown at the end. Why a thread: a gateway shared by the tests of a module outlives each
test's event loop, and its connection pools and background tasks belong to the loop they were
started on. Clients, sync or async and on any loop, hand each request over to that loop.

Bodies are read whole on each side of the hand-over (``ASGITransport`` buffers the response
anyway): streaming, backpressure and timing belong to the subprocess suites. The TCP peer the
gateway sees is ``peer`` (``scope["client"]``), 127.0.0.1 unless a client asks otherwise.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import os
import threading
from collections.abc import Coroutine, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvloop
import yaml

from helpers.gateway import gateway_config
from helpers.legacy import free_port
from onegate.gateway.app import create_app
from onegate.gateway.config import CONFIG_ENV
from onegate.types import ASGIApp, Message

T = TypeVar("T")

#: The TCP peer the gateway sees unless a client names another: the loopback, as for a test
#: client talking to a subprocess gateway.
PEER = ("127.0.0.1", 50000)
#: How long one request, or the lifespan startup or shutdown, may take before the test fails.
DEADLINE = 30.0
_LIFESPAN_SCOPE = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}}


class _LoopThread:
    """An event loop running in a daemon thread, and a way to run coroutines on it."""

    def __init__(self) -> None:
        # uvloop, as under `onegate serve`: its transports are the ones production runs on.
        self.loop = uvloop.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="onegate-in-process", daemon=True
        )
        self._thread.start()

    def submit(self, work: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(work, self.loop)

    def run(self, work: Coroutine[Any, Any, T], timeout: float = DEADLINE) -> T:
        """Run ``work`` on the loop and wait for its result from this (another) thread."""
        future = self.submit(work)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def close(self) -> None:
        async def cancel_leftovers() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(cancel_leftovers())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(DEADLINE)
        self.loop.close()


class _Lifespan:
    """Speaks the ASGI lifespan protocol to ``app``, as uvicorn's ``LifespanOn`` does."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self._to_app: asyncio.Queue[Message] = asyncio.Queue()
        self._from_app: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        async def run() -> None:
            await self._app({**_LIFESPAN_SCOPE, "state": {}}, self._to_app.get, self._from_app.put)

        self._task = asyncio.get_running_loop().create_task(run())
        await self._step("lifespan.startup")

    async def shutdown(self) -> None:
        await self._step("lifespan.shutdown")
        assert self._task is not None
        await self._task

    async def _step(self, event: str) -> None:
        assert self._task is not None
        await self._to_app.put({"type": event})
        reply = asyncio.ensure_future(self._from_app.get())
        await asyncio.wait({reply, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if not reply.done():
            reply.cancel()
            self._task.result()  # raises what the app raised
            raise RuntimeError(f"the app returned without answering {event}")
        message = reply.result()
        if message["type"] != f"{event}.complete":
            raise RuntimeError(f"{event} failed: {message.get('message', message)}")


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


@dataclass
class InProcessGateway:
    """A gateway app running in this process; make clients for it with :meth:`client`."""

    app: ASGIApp
    config_path: Path
    url: str
    """Base URL of the clients (scheme and Host header); nothing listens there."""
    _loop: _LoopThread = field(repr=False)

    def client(
        self, peer: tuple[str, int] = PEER, *, base_url: str | None = None, **settings: Any
    ) -> httpx.Client:
        """A blocking client whose requests reach the app as coming from ``peer``."""
        transport = InProcessTransport(self, peer)
        return httpx.Client(transport=transport, base_url=base_url or self.url, **settings)

    def async_client(
        self, peer: tuple[str, int] = PEER, *, base_url: str | None = None, **settings: Any
    ) -> httpx.AsyncClient:
        """An asyncio client (on any loop) whose requests reach the app as from ``peer``."""
        transport = InProcessAsyncTransport(self, peer)
        return httpx.AsyncClient(transport=transport, base_url=base_url or self.url, **settings)

    def _submit(
        self, request: httpx.Request, body: bytes, peer: tuple[str, int]
    ) -> concurrent.futures.Future[_Answer]:
        return self._loop.submit(self._exchange(request, body, peer))

    async def _exchange(
        self, request: httpx.Request, body: bytes, peer: tuple[str, int]
    ) -> _Answer:
        """On the gateway's loop: one request through ``ASGITransport``, read to the end."""
        transport = httpx.ASGITransport(app=self.app, client=peer)
        # The headers as the client built them (a streamed body keeps Transfer-Encoding and
        # gets no Content-Length), the body as bytes read on the client's side.
        copy = httpx.Request(
            request.method, request.url, headers=request.headers, stream=httpx.ByteStream(body)
        )
        response = await transport.handle_async_request(copy)
        content = await response.aread()
        return _Answer(response.status_code, list(response.headers.raw), content)


def _response(answer: _Answer) -> httpx.Response:
    # A stream, not ``content=``: httpx would add a Content-Length the app never sent.
    return httpx.Response(
        answer.status, headers=answer.headers, stream=httpx.ByteStream(answer.body)
    )


class InProcessTransport(httpx.BaseTransport):
    def __init__(self, gateway: InProcessGateway, peer: tuple[str, int]) -> None:
        self._gateway = gateway
        self._peer = peer

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        future = self._gateway._submit(request, request.read(), self._peer)
        try:
            return _response(future.result(DEADLINE))
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise httpx.ReadTimeout(f"no answer in {DEADLINE} s", request=request) from None


class InProcessAsyncTransport(httpx.AsyncBaseTransport):
    def __init__(self, gateway: InProcessGateway, peer: tuple[str, int]) -> None:
        self._gateway = gateway
        self._peer = peer

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        future = self._gateway._submit(request, await request.aread(), self._peer)
        try:
            return _response(await asyncio.wait_for(asyncio.wrap_future(future), DEADLINE))
        except TimeoutError:
            raise httpx.ReadTimeout(f"no answer in {DEADLINE} s", request=request) from None


@contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` set, as a subprocess would get them; restored after."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def _gc_settings_kept() -> Iterator[None]:
    """The gateway's startup tunes the collector for a server process (``gc.freeze()``, a
    higher threshold); the test process gets its own settings back afterwards."""
    threshold = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


@contextmanager
def serve_in_process(
    config_path: Path, env: Mapping[str, str] | None = None
) -> Iterator[InProcessGateway]:
    """Run the gateway configured by the file ``config_path`` until the block ends.

    ``env`` is set in ``os.environ`` for as long as the gateway runs (secrets named by
    ``secret_env`` are read from there).
    """
    config = yaml.safe_load(config_path.read_text())
    port = config.get("server", {}).get("port", 8080)
    with _environment(env or {}), _gc_settings_kept():
        loop = _LoopThread()
        try:

            async def build() -> tuple[ASGIApp, _Lifespan]:
                with _environment({CONFIG_ENV: str(config_path)}):
                    app = create_app()
                lifespan = _Lifespan(app)
                await lifespan.startup()
                return app, lifespan

            app, lifespan = loop.run(build())
            try:
                yield InProcessGateway(app, config_path, f"http://127.0.0.1:{port}", loop)
            finally:
                loop.run(lifespan.shutdown())
        finally:
            loop.close()


@contextmanager
def run_in_process(
    tmp_path: Path,
    upstreams: dict[str, Any],
    routes: list[dict[str, Any]],
    *,
    env: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
    **server: Any,
) -> Iterator[InProcessGateway]:
    """:func:`helpers.gateway.run_gateway`'s twin, in process: same arguments, same config.

    The configured port is one where nothing listens, so a request that misses the in-process
    transport by mistake fails at once instead of reaching some other server.
    """
    port = free_port()
    config = gateway_config(port, upstreams, routes, **server)
    config.update(extra or {})
    config_path = tmp_path / f"onegate-in-process-{port}.yaml"
    with contextlib.suppress(FileExistsError):
        tmp_path.mkdir(parents=True)
    config_path.write_text(yaml.safe_dump(config))
    with serve_in_process(config_path, env) as gateway:
        yield gateway
