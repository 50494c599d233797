"""Misbehaving HTTP/1.1 upstreams on real loopback sockets, for the gateway's integration tests.

The legacy stand-ins are well-behaved web apps; a gateway also has to survive upstreams that are
not. :class:`RawUpstream` is a tiny hand-written HTTP/1.1 server (asyncio streams, in a thread
with its own event loop) that records every request it reads completely and answers each one
with the next scripted :class:`Action`:

- :class:`Reply`: a normal response (optionally delayed, optionally closing the connection);
- :class:`Reset`: read the request, optionally send some bytes, then reset the connection (RST);
- :class:`Hang`: read the request and never answer (or stop after a first part);
- :class:`Raw`: send these bytes verbatim (a broken response), then close.

``RawUpstream(Reply(503), Reply(503), default=Reply(200))`` answers the first two requests with
503 and every later one with 200; :meth:`RawUpstream.script` replaces the script while the server
runs. Health-check probes are requests too: filter them with ``count(path=...)``.

:class:`StalledListener` is a listening socket whose accept queue is full, so a new connection
neither succeeds nor fails: the only way to produce a connect timeout on loopback.
:func:`dead_url` is an address where nothing listens (connection refused).

Everything started here is stopped, and every socket closed, when its ``with`` block ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType

from helpers.legacy import free_port

HOST = "127.0.0.1"
_START_TIMEOUT = 5.0
_MAX_HEAD = 1024 * 1024


@dataclass(frozen=True)
class Reply:
    """A well-formed response. ``Content-Length`` is added unless ``headers`` frame the body."""

    status: int = 200
    body: bytes = b"ok"
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0
    """Seconds to wait before answering."""
    close: bool = False
    """Send ``Connection: close`` and close the connection after the response."""


@dataclass(frozen=True)
class Reset:
    """Reset the connection (RST) after reading the request, having sent ``send`` first."""

    send: bytes = b""


@dataclass(frozen=True)
class Hang:
    """Read the request, send ``send`` (say, a response head), then say nothing more."""

    send: bytes = b""


@dataclass(frozen=True)
class Raw:
    """Send ``data`` verbatim, then close the connection."""

    data: bytes


Action = Reply | Reset | Hang | Raw


@dataclass(frozen=True)
class Received:
    """A request the upstream read completely."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    """Names lower-cased, in the order they arrived, duplicates kept."""
    body: bytes

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def header(self, name: str) -> str | None:
        values = self.header_values(name)
        return values[0] if values else None

    def header_values(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self.headers if key == name]


@dataclass
class _State:
    queue: deque[Action]
    default: Action
    requests: list[Received] = field(default_factory=list)
    connections: int = 0


class RawUpstream:
    """A scriptable HTTP/1.1 server on a free loopback port, served from a background thread."""

    def __init__(
        self, *script: Action, default: Action | None = None, tls: ssl.SSLContext | None = None
    ) -> None:
        """``tls``: serve HTTPS with this server context (see ``helpers.tls``)."""
        self.tls = tls
        self._lock = threading.Lock()
        self._state = _State(deque(script), default or Reply())
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.port = 0

    # --- what tests use ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{HOST}:{self.port}"

    @property
    def requests(self) -> list[Received]:
        with self._lock:
            return list(self._state.requests)

    @property
    def connections(self) -> int:
        """Connections accepted so far (whether or not a request was read on them)."""
        with self._lock:
            return self._state.connections

    def count(self, path: str | None = None, method: str | None = None) -> int:
        """Requests read completely, optionally only those for ``path`` and/or ``method``."""
        return sum(
            1
            for r in self.requests
            if (path is None or r.path == path) and (method is None or r.method == method)
        )

    def script(self, *actions: Action, default: Action | None = None) -> None:
        """Answer the next requests with ``actions``, then with ``default`` (if given)."""
        with self._lock:
            self._state.queue = deque(actions)
            if default is not None:
                self._state.default = default

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> RawUpstream:
        self._thread = threading.Thread(target=self._run, name="raw-upstream", daemon=True)
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT) or self._error is not None:
            self.close()
            raise RuntimeError(f"raw upstream did not start: {self._error!r}")
        return self

    def close(self) -> None:
        loop, stop, thread = self._loop, self._stop, self._thread
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop already finished
                loop.call_soon_threadsafe(stop.set)
        if thread is not None:
            thread.join(_START_TIMEOUT)
            self._thread = None

    def __enter__(self) -> RawUpstream:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- the server ------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by start(); never escapes the thread
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        handlers: set[asyncio.Task[None]] = set()
        transports: set[asyncio.WriteTransport] = set()

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            handlers.add(task)
            transports.add(writer.transport)
            try:
                await self._handle(reader, writer)
            except asyncio.CancelledError:
                pass  # shutting down; end normally, asyncio's stream callback expects a result
            finally:
                handlers.discard(task)

        server = await asyncio.start_server(on_connect, HOST, 0, limit=_MAX_HEAD, ssl=self.tls)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
            server.close()
            for task in list(handlers):
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)
            # A close waits for unsent bytes the gateway may never read: abort what is left, or
            # the transport outlives the loop and is reported as leaked in some later test.
            for transport in transports:
                transport.abort()
            await asyncio.sleep(0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self._state.connections += 1
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                with self._lock:
                    self._state.requests.append(request)
                    state = self._state
                    action = state.queue.popleft() if state.queue else state.default
                keep_open = await _perform(action, request, writer)
                if not keep_open:
                    return
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            return  # the gateway went away or sent something this little server cannot read
        finally:
            writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()


async def _read_request(reader: asyncio.StreamReader) -> Received | None:
    """The next complete request, or None if the connection ended cleanly between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise
        return None
    lines = head[:-4].decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip().lower(), value.strip()))
    fields = dict(headers)
    if fields.get("transfer-encoding", "").lower() == "chunked":
        body = await _read_chunked(reader)
    else:
        body = await reader.readexactly(int(fields.get("content-length", "0")))
    return Received(method, target, headers, body)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, then the blank line
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


async def _perform(action: Action, request: Received, writer: asyncio.StreamWriter) -> bool:
    """Carry out ``action``; True if the connection stays open for another request."""
    if isinstance(action, Hang):
        if action.send:
            writer.write(action.send)
            await writer.drain()
        await asyncio.Event().wait()  # until the upstream is closed (the task is cancelled)
        return False
    if isinstance(action, Raw):
        writer.write(action.data)
        await writer.drain()
        return False
    if isinstance(action, Reset):
        if action.send:
            writer.write(action.send)
            await writer.drain()
            await asyncio.sleep(0.05)  # let the bytes leave before the RST discards them
        _reset(writer)
        return False
    if action.delay:
        await asyncio.sleep(action.delay)
    close = action.close or (request.header("connection") or "").lower() == "close"
    writer.write(_encode_response(action, close))
    await writer.drain()
    return not close


def _encode_response(reply: Reply, close: bool) -> bytes:
    try:
        reason = HTTPStatus(reply.status).phrase
    except ValueError:
        reason = "Whatever"
    headers = list(reply.headers)
    names = {name.lower() for name, _ in headers}
    if not names & {"content-length", "transfer-encoding"}:
        headers.append(("Content-Length", str(len(reply.body))))
    if close:
        headers.append(("Connection", "close"))
    head = f"HTTP/1.1 {reply.status} {reason}\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers)
    return head.encode("latin-1") + b"\r\n" + reply.body


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


# --- addresses that do not answer ----------------------------------------------------------------


def dead_url() -> str:
    """A loopback URL where nothing listens (a connection is refused at once)."""
    return f"http://{HOST}:{free_port()}"


class StalledListener:
    """A listening socket that never accepts, its accept queue filled up by us.

    Once the queue is full the kernel drops further SYNs, so connecting neither succeeds nor
    fails: a connect timeout, on loopback.
    """

    def __init__(self, fillers: int = 8) -> None:
        self._max_fillers = fillers
        self._sockets: list[socket.socket] = []
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def __enter__(self) -> StalledListener:
        listener = socket.socket()
        self._sockets.append(listener)
        listener.bind((HOST, 0))
        listener.listen(0)
        self.port = listener.getsockname()[1]
        for _ in range(self._max_fillers):
            filler = socket.socket()
            self._sockets.append(filler)
            filler.settimeout(0.2)
            try:
                filler.connect((HOST, self.port))
            except TimeoutError:
                return self  # the queue is full: this SYN was dropped
        self._close_all()
        raise RuntimeError("could not fill the accept queue of a loopback listener")

    def __exit__(self, *exc_info: object) -> None:
        self._close_all()

    def _close_all(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()


# --- a raw client --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawResponse:
    """A response read off a raw socket, and whether the server closed the connection after it."""

    status: int
    headers: list[tuple[str, str]]
    """Names lower-cased, in order, duplicates kept."""
    body: bytes
    closed: bool
    """The server closed the connection (EOF or reset) right after this response."""

    def header(self, name: str) -> str | None:
        values = [value for key, value in self.headers if key == name.lower()]
        return values[0] if values else None


def raw_request(port: int, *pieces: bytes, pause: float = 0.0, timeout: float = 5.0) -> RawResponse:
    """Send ``pieces`` verbatim (``pause`` seconds apart) on a new connection; read one response
    (its body framed by Content-Length, as every response these tests read is).

    For requests no HTTP client library would send. The server may answer, and even close,
    before every piece is sent: sending stops quietly then. Raises ``TimeoutError`` if no
    complete response arrives within ``timeout``.
    """
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        for index, piece in enumerate(pieces):
            if index and pause:
                time.sleep(pause)
            try:
                sock.sendall(piece)
            except OSError:  # answered and closed early: read what was said
                break
        reader = _SocketReader(sock)
        head = reader.until(b"\r\n\r\n").decode("latin-1")
        status_line, *lines = head[:-4].split("\r\n")
        headers = [
            (name.strip().lower(), value.strip())
            for name, _, value in (line.partition(":") for line in lines)
        ]
        length = int(dict(headers).get("content-length", "0"))
        body = reader.exactly(length)
        return RawResponse(int(status_line.split(" ")[1]), headers, body, reader.at_eof(1.0))


class _SocketReader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _more(self) -> bytes:
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            raise ConnectionError(f"connection closed; got {self.buffer[:300]!r}")
        return data

    def until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            self.buffer += self._more()
        end = self.buffer.index(marker) + len(marker)
        data, self.buffer = self.buffer[:end], self.buffer[end:]
        return data

    def exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self.buffer += self._more()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def at_eof(self, timeout: float) -> bool:
        """True if the peer closes (or resets) within ``timeout`` with nothing more to say."""
        if self.buffer:
            return False
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
