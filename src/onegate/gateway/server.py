"""Runs the gateway under uvicorn: one process, or a supervisor with N workers.

uvicorn gives us the HTTP/1.1 and WebSocket server, ``--workers`` supervision and graceful
shutdown: on SIGTERM it stops accepting, lets in-flight requests and streams finish for up to
``server.drain_seconds``, then exits. SIGHUP reloads the configuration in place (each worker
reloads itself), instead of uvicorn's default of restarting the workers.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import threading
from collections.abc import Iterator

import uvicorn
from uvicorn.supervisors.multiprocess import Multiprocess

from onegate.gateway.config import CONFIG_ENV, Config
from onegate.gateway.runtime import Runtime
from onegate.observability.multiprocess import metrics_directory, worker_exited


class ReloadingSupervisor(Multiprocess):
    """uvicorn's worker supervisor, with SIGHUP passed on to the workers."""

    def handle_hup(self) -> None:
        for process in self.processes:
            if process.pid is not None:
                os.kill(process.pid, signal.SIGHUP)

    def keep_subprocess_alive(self) -> None:
        before = {process.pid for process in self.processes}
        super().keep_subprocess_alive()
        for pid in before - {process.pid for process in self.processes}:
            if pid is not None:
                worker_exited(pid)  # its in-flight count and target views are gone with it

    def handle_term(self) -> None:
        self._stop_listening()
        super().handle_term()

    def handle_int(self) -> None:
        self._stop_listening()
        super().handle_int()

    def _stop_listening(self) -> None:
        # The workers close their copies of the listening socket as they start draining; the
        # supervisor's copy must go too, or the kernel keeps accepting connections nobody
        # will ever serve, instead of refusing them.
        for sock in self.sockets:
            sock.close()


class GatewayServer(uvicorn.Server):
    """uvicorn's server, exiting with status 0 after a graceful shutdown.

    uvicorn re-raises the SIGTERM it caught once it has drained, so the process would die
    by that signal (status 143) even though every request was served; an orderly shutdown
    that an operator asked for is a success.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        originals = {s: signal.signal(s, self.handle_exit) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def serve(
    config: Config, *, host: str | None = None, port: int | None = None, workers: int | None = None
) -> None:
    server_config = config.gateway.server
    workers = workers or server_config.workers or default_workers()
    if config.path is not None:
        os.environ[CONFIG_ENV] = str(config.path.resolve())  # the workers load it again
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    uv_config = uvicorn.Config(
        "onegate.gateway.app:create_app",
        factory=True,
        host=host or server_config.host,
        port=server_config.port if port is None else port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        lifespan="on",
        # The upstream's Date is relayed; uvicorn's own would make it two (gateway-made
        # answers add theirs, see errors.http_date).
        date_header=False,
        proxy_headers=False,  # onegate builds X-Forwarded-* itself, from trusted_proxies
        server_header=False,
        access_log=False,
        # uvicorn takes whole seconds; rounding up never cuts a drain short.
        timeout_graceful_shutdown=math.ceil(server_config.drain_seconds),
        timeout_keep_alive=75,
        log_level="info",
    )
    server = GatewayServer(uv_config)
    # Workers share metric values through files in a fresh directory, named in the environment
    # before any worker starts. Always, even with metrics off: a reload may turn them on.
    with metrics_directory():
        # Build the pipeline once before any worker starts, so a bad route or app reference
        # fails here, as one ConfigError. Inside the directory's context: building it creates
        # this process's metric objects, which must write to the shared files.
        Runtime(config)
        if workers == 1:
            server.run()
            return
        sock = uv_config.bind_socket()
        ReloadingSupervisor(uv_config, sockets=[sock]).run()
