"""Runs the gateway under uvicorn: one process, or a supervisor with N workers.

uvicorn gives us the HTTP/1.1 and WebSocket server, ``--workers`` supervision and graceful
shutdown: on SIGTERM it stops accepting, lets in-flight requests and streams finish for up to
``server.drain_seconds``, then exits. SIGHUP reloads the configuration in place (each worker
reloads itself), instead of uvicorn's default of restarting the workers.

With ``server.tls`` the workers listen with TLS, but not through uvicorn's ``ssl_certfile``:
uvicorn would build a context the gateway cannot reach. Each worker's gateway app owns its
context (:class:`onegate.gateway.tls.ListenerCertificate`) and reloads the certificate into it;
:meth:`GatewayServer.startup` hands that same object to uvicorn before it listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import socket
import threading
from collections.abc import Iterator
from types import FrameType

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from onegate.errors import ConfigError
from onegate.gateway.app import Gateway
from onegate.gateway.config import CONFIG_ENV, Config
from onegate.gateway.runtime import Runtime
from onegate.gateway.tls import ListenerCertificate
from onegate.observability.multiprocess import metrics_directory, worker_exited
from onegate.observability.processlog import LogFormat, logging_config, resolve_format

logger = logging.getLogger("uvicorn.error")  # where uvicorn's supervisor logs its own lines


class WorkerProcess(Process):
    """A worker process that serves with :class:`GatewayServer`, not uvicorn's plain Server."""

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = GatewayServer(config=self.config)
        return self._server


class ReloadingSupervisor(Multiprocess):
    """uvicorn's worker supervisor, with three changes.

    - Workers run :class:`GatewayServer` (uvicorn would start its plain Server).
    - SIGHUP is passed on to the workers, which reload themselves, instead of restarting them.
    - SIGTERM and SIGINT stop the listening socket at once. uvicorn's handlers only queue the
      signal for the supervisor's loop, which looks every 0.5 s and only then tells the
      workers; meanwhile the kernel kept completing handshakes on the shared socket.
    """

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket]) -> None:
        super().__init__(config, sockets)
        self._stopping = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_stop_signal)

    def _on_stop_signal(self, sig: int, frame: FrameType | None) -> None:
        # Runs in the main thread as soon as the signal arrives, between two bytecodes of
        # whatever the loop was doing: only signal-safe work here (kill, shutdown, close).
        self._stop_listening()
        self.signal_queue.append(sig)  # uvicorn's loop still logs it and stops as before

    def _stop_listening(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        # The workers first: each closes its server at once (GatewayServer.handle_exit) and
        # starts draining, so none is left polling a listener that is gone.
        for process in self.processes:
            if process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)
        for sock in self.sockets:
            # One kernel socket is shared by this process and every worker: close() only
            # drops this process's reference, shutdown() stops the listener for all of them,
            # so a newcomer is refused at connect even before the last worker let go.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RD)
            sock.close()

    def _spawn(self) -> Process:
        process = WorkerProcess(self.config, self.sockets)
        process.start()
        return process

    def init_processes(self) -> None:
        for _ in range(self.processes_num):
            self.processes.append(self._spawn())

    def keep_subprocess_alive(self) -> None:
        # uvicorn's, spawning WorkerProcess and forgetting the metrics of a worker that died.
        for index, process in enumerate(self.processes):
            if self._exiting():
                return
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()  # hung, or already gone
            process.join()
            if process.pid is not None:
                worker_exited(process.pid)  # its in-flight count and target views are gone
            if process.exitcode == STARTUP_FAILURE:
                # It failed before serving: every replacement would fail the same way.
                logger.error("Child process [%s] failed to start, stopping.", process.pid)
                self.should_exit.set()
                return
            if self._exiting():
                return
            logger.info("Child process [%s] died", process.pid)
            self.processes[index] = self._spawn()

    def _exiting(self) -> bool:
        # Checked right before spawning: a replacement started now would get a socket that no
        # longer listens (or, worse, listen on it again).
        return self.should_exit.is_set() or self._stopping

    def handle_hup(self) -> None:
        for process in self.processes:
            if process.pid is not None:
                os.kill(process.pid, signal.SIGHUP)

    def handle_ttin(self) -> None:
        if self._exiting():
            return
        logger.info("Received SIGTTIN, increasing the number of processes.")
        self.processes_num += 1
        self.processes.append(self._spawn())


class GatewayServer(uvicorn.Server):
    """uvicorn's server, which stops listening as soon as it is told to stop, and exits with
    status 0 after a graceful shutdown.

    uvicorn notices a stop signal at its next tick (every 0.1 s) and only then closes its
    listening sockets: connections that arrive meanwhile are accepted, then have to be
    drained. Here the signal handler closes them at once, on the event loop, while requests
    and streams in flight drain as before.

    uvicorn also re-raises the SIGTERM it caught once it has drained, so the process would die
    by that signal (status 143) even though every request was served; an orderly shutdown
    that an operator asked for is a success.
    """

    _loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn has loaded the app (config.load) and not listened yet: listen with the
        # context the gateway reloads certificates into.
        gateway = _gateway_of(self.config.loaded_app)
        if gateway is not None and gateway.listener is not None:
            self.config.ssl = gateway.listener.context
        await super().startup(sockets)

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            # A signal handler runs between two bytecodes, maybe inside the loop's own
            # bookkeeping: hand the work to the loop rather than doing it here.
            loop.call_soon_threadsafe(self._stop_accepting)

    def _stop_accepting(self) -> None:
        # Set by uvicorn's startup; a signal during startup finds none, and uvicorn's own
        # shutdown closes them right after startup then.
        for server in getattr(self, "servers", ()):
            server.close()

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


def _gateway_of(app: object) -> Gateway | None:
    """The gateway app inside whatever uvicorn wrapped it in (its middlewares keep ``.app``)."""
    for _ in range(8):
        if isinstance(app, Gateway):
            return app
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def serve(
    config: Config,
    *,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
    log_format: LogFormat | None = None,
) -> None:
    server_config = config.gateway.server
    workers = workers or server_config.workers or default_workers()
    if config.path is not None:
        os.environ[CONFIG_ENV] = str(config.path.resolve())  # the workers load it again
    # One logging set-up for this process and every worker: uvicorn applies the dictionary in
    # uvicorn.Config below, and again in each worker it spawns (they inherit this stderr, so
    # the format is decided here, once).
    log_config = logging_config(resolve_format(log_format or server_config.log_format))
    uv_config = uvicorn.Config(
        "onegate.gateway.app:create_app",
        factory=True,
        host=host or server_config.host,
        port=server_config.port if port is None else port,
        workers=workers,
        loop="uvloop",
        # uvicorn's httptools protocol with the gateway's edge limits, deadlines, connection
        # cap and lingering close (onegate.gateway.protocol); named by path so the workers
        # import it themselves.
        http="onegate.gateway.protocol:GatewayHttpProtocol",
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
        # Unused: the protocol keeps its own keep-alive deadline (server.client_timeouts).
        timeout_keep_alive=math.ceil(server_config.client_timeouts.keep_alive),
        log_config=log_config,
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
        if server_config.tls is not None:
            # A missing or mismatched certificate stops the start here, as one line.
            try:
                ListenerCertificate(server_config.tls, config.directory)
            except ConfigError as exc:
                raise config.error(exc.detail, "server", "tls") from exc
        if workers == 1:
            server.run()
            return
        sock = uv_config.bind_socket()
        ReloadingSupervisor(uv_config, sockets=[sock]).run()
