"""A TCP relay to Redis that can be cut and restored: Redis going away and coming back."""

from __future__ import annotations

import contextlib
import select
import socket
import socketserver
import threading

from helpers.legacy import free_port


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True  # serve again on the same port right after stop()
    daemon_threads = True


class Relay:
    """A TCP relay to Redis on a port of its own: ``stop()`` cuts every connection and refuses
    new ones, ``start()`` serves again on the same port. Redis going away and coming back."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._server: socketserver.ThreadingTCPServer | None = None
        self._open: set[socket.socket] = set()

    def start(self) -> None:
        relay = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                client: socket.socket = self.request
                with contextlib.suppress(OSError), socket.create_connection(relay.target) as up:
                    relay._open.update((client, up))
                    while True:
                        ready, _, _ = select.select([client, up], [], [], 1.0)
                        for sock in ready:
                            data = sock.recv(65536)
                            if not data:
                                return
                            (up if sock is client else client).sendall(data)

        self._server = _Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for sock in list(self._open):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._open.clear()
