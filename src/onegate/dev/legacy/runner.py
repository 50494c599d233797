"""Serving the three stand-ins in one process: in-process for tests, or from the command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import sys
import threading
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from types import FrameType

import uvicorn
from starlette.types import ASGIApp

from onegate.dev.legacy.ai import ai_app
from onegate.dev.legacy.fastapi import fastapi_app
from onegate.dev.legacy.nextjs import main_app


@dataclass
class LegacyPorts:
    main: int = 3000
    fastapi: int = 8001
    ai: int = 8000


@dataclass(frozen=True)
class _Backend:
    name: str
    app: ASGIApp
    port: int
    # Idle keep-alive the real server allows: Next.js closes after 5 s, gunicorn after 2 s.
    # The gateway's pool must cope with exactly these closes.
    keep_alive: int
    # Next.js sends no Server header; uvicorn-served FastAPI apps do.
    server_header: bool


#: The stand-ins' names, in the order they are started and announced.
BACKENDS = ("main", "fastapi", "ai")


def _backends(ports: LegacyPorts, only: Collection[str] | None = None) -> list[_Backend]:
    """The stand-ins to serve: all three, or those named in ``only``."""
    backends = [
        _Backend("main", main_app, ports.main, keep_alive=5, server_header=False),
        _Backend("fastapi", fastapi_app, ports.fastapi, keep_alive=2, server_header=True),
        _Backend("ai", ai_app, ports.ai, keep_alive=5, server_header=True),
    ]
    if only is None:
        return backends
    unknown = set(only) - set(BACKENDS)
    if unknown:
        raise ValueError(f"unknown stand-in(s): {', '.join(sorted(unknown))}")
    return [backend for backend in backends if backend.name in only]


class _Server(uvicorn.Server):
    """A uvicorn server that can share its process and event loop with others.

    Signals are left to :func:`serve_legacy_backends`, which stops all servers at once, and a
    failure to bind becomes an exception instead of uvicorn's ``sys.exit``, which would escape
    the event loop of whoever called us.
    """

    def __init__(self, config: uvicorn.Config, name: str) -> None:
        super().__init__(config)
        self.name = name

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets=sockets)
        except SystemExit as exit_:
            # uvicorn calls sys.exit while handling the OSError; keep its errno for callers.
            cause = exit_.__context__
            if isinstance(cause, OSError):
                raise OSError(cause.errno, f"{self.name} stand-in: {cause.strerror}") from cause
            raise RuntimeError(f"{self.name} stand-in failed to start") from cause


@contextlib.contextmanager
def _stop_on_signals(servers: list[_Server]) -> Iterator[None]:
    """Turn SIGINT/SIGTERM into a graceful stop of every server; a second Ctrl-C forces it."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach only the main thread; the caller stops us by cancelling
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        for server in servers:
            if server.should_exit and signum == signal.SIGINT:
                server.force_exit = True
            server.should_exit = True

    handled = (signal.SIGINT, signal.SIGTERM)
    originals = {sig: signal.signal(sig, stop) for sig in handled}
    try:
        yield
    finally:
        for sig, original in originals.items():
            signal.signal(sig, original)


async def serve_legacy_backends(
    ports: LegacyPorts,
    host: str = "127.0.0.1",
    ready: asyncio.Event | None = None,
    only: Collection[str] | None = None,
) -> None:
    """Serve the three stand-ins (or those named in ``only``) until cancelled, interrupted or
    terminated.

    ``ready`` is set once all of them listen. Cancellation, SIGINT and SIGTERM shut all three
    down gracefully (open streams get a few seconds to finish). If one cannot start or stops
    on its own, the others are stopped and its error is raised.
    """
    servers = [
        _Server(
            uvicorn.Config(
                backend.app,
                host=host,
                port=backend.port,
                log_config=None,  # leave logging set-up to the process; see main()
                log_level="warning",
                access_log=False,
                timeout_keep_alive=backend.keep_alive,
                timeout_graceful_shutdown=3,
                server_header=backend.server_header,
            ),
            backend.name,
        )
        for backend in _backends(ports, only)
    ]
    with _stop_on_signals(servers):
        tasks = [
            asyncio.create_task(server.serve(), name=f"legacy-{server.name}") for server in servers
        ]
        try:
            while not all(server.started for server in servers):
                done, _ = await asyncio.wait(
                    tasks, timeout=0.01, return_when=asyncio.FIRST_COMPLETED
                )
                if done:
                    break  # one failed to start; the finally below stops the rest
            else:
                if ready is not None:
                    ready.set()
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for server in servers:
                server.should_exit = True
            # asyncio.wait, unlike gather, lets the servers finish shutting down even while we
            # are being cancelled.
            await asyncio.wait(tasks)
            failures = [t.exception() for t in tasks if not t.cancelled()]
    if error := next((exc for exc in failures if exc is not None), None):
        raise error


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def _serve_and_announce(
    ports: LegacyPorts, host: str, only: Collection[str] | None = None
) -> None:
    ready = asyncio.Event()
    serving = asyncio.create_task(serve_legacy_backends(ports, host, ready, only))
    announced = asyncio.create_task(ready.wait())
    await asyncio.wait([serving, announced], return_when=asyncio.FIRST_COMPLETED)
    announced.cancel()
    if ready.is_set():
        # Printed only once all of them listen, so a script may wait for these lines.
        for backend in _backends(ports, only):
            print(f"{backend.name:<9} {_url(host, backend.port)}", flush=True)
    await serving


def _port(text: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a TCP port (1-65535)")
    return port


def main(argv: list[str] | None = None) -> None:
    """Command line: serve the three stand-ins until Ctrl-C or SIGTERM."""
    defaults = LegacyPorts()
    parser = argparse.ArgumentParser(
        prog="python -m onegate.dev.legacy",
        description="Serve stand-ins for the Next.js, FastAPI and AI-agents backends.",
    )
    parser.add_argument("--main-port", type=_port, default=defaults.main, metavar="PORT")
    parser.add_argument("--fastapi-port", type=_port, default=defaults.fastapi, metavar="PORT")
    parser.add_argument("--ai-port", type=_port, default=defaults.ai, metavar="PORT")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--only",
        action="append",
        choices=BACKENDS,
        metavar="NAME",
        help="Serve only this stand-in (repeatable): main, fastapi or ai. Default: all three.",
    )
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    ports = LegacyPorts(main=args.main_port, fastapi=args.fastapi_port, ai=args.ai_port)
    try:
        asyncio.run(_serve_and_announce(ports, args.host, args.only))
    except OSError as exc:
        sys.exit(f"error: {exc}")
    except KeyboardInterrupt:
        pass  # Ctrl-C before the servers took over the signal: nothing left to stop
