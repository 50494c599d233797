"""The client-facing HTTP/1.1 connection: uvicorn's httptools protocol, hardened at the edge.

uvicorn's :class:`HttpToolsProtocol` parses with llhttp and runs the ASGI app; on its own it
trusts the client to be quick and small. This subclass (plugged in with uvicorn's ``http=``)
adds what one misbehaving client must not be able to do to everyone else (issue 11):

- **Heads bounded while they arrive.** The bytes of a request head are counted in
  ``data_received``; the parser is never fed more than ``server.max_header_bytes`` (plus the
  request line's fixed parts) of one head, so memory stays bounded and parse time linear.
  Crossing it is a 431, a URL longer than ``server.max_request_line_bytes`` a 414.
- **Strict request lines.** HTTP/1.0 and HTTP/1.1 only: the HTTP/0.9 form (no version) is a
  400, any other version a 505, CONNECT a 400 (the gateway is no forward proxy). Host itself
  is checked by the guard stage, which answers with the pipeline's problem documents.
- **Deadlines** (``server.client_timeouts``): first byte of a new connection, a whole request
  head, idle between keep-alive requests, idle between body pieces while the gateway wants
  them. One ``call_at`` handle per connection, re-armed only when it fires: it fires at most
  every ``tick`` seconds (the shortest timeout), so a request costs no timer operation, just
  a deadline stored as a float.
- **A cap on connections per worker** (``server.max_client_connections``): past it an idle
  kept-alive connection is closed to make room, else the newcomer gets an immediate 503.
- **Lingering close.** Whenever the gateway ends a connection (an error, ``Connection:
  close``, a drain, a timeout) it sends its answer, then a FIN (``write_eof``), then reads and
  discards until the client closes or ``LINGER_SECONDS`` pass. Closing with unread input
  makes the kernel send RST, which can destroy the answer before the client reads it.
- **A clean drain.** On shutdown idle connections get that FIN; a request already arriving
  is answered, with ``Connection: close``. A request cut at the drain deadline logs one line.

Every refusal is an RFC 9457 problem document written by :func:`problem_response`, and is
counted in ``onegate_client_connections_closed_total`` (:mod:`onegate.observability.connections`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import resource
import urllib.parse
from typing import TYPE_CHECKING, Any, Final

import httptools
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from onegate.errors import (
    PROBLEM_CONTENT_TYPE,
    HeadersTooLarge,
    HttpVersionNotSupported,
    MalformedRequest,
    OnegateError,
    RequestTargetTooLong,
    RequestTimeout,
    TooManyConnections,
    problem_body,
)
from onegate.gateway.config import ServerConfig
from onegate.gateway.exchange import SCOPE_KEY, Exchange
from onegate.gateway.headers import RequestIds
from onegate.http import http_date
from onegate.observability.connections import ConnectionStats

if TYPE_CHECKING:
    from uvicorn._types import ASGI3Application

logger = logging.getLogger("onegate.gateway")

#: After its last answer, how long a closing connection keeps reading (and discarding) so the
#: client can read that answer before the socket goes. Apache waits 2 s the same way.
LINGER_SECONDS: Final = 2.0
#: The bytes of a request line besides the target (method, spaces, version, line ends), which
#: ``max_header_bytes`` does not count (the guard stage counts the target and the headers).
HEAD_SLACK: Final = 64

# Where a connection is. Each phase but BUSY and UPGRADED has a deadline.
_NEW: Final = 0  # connected, not a byte yet
_IDLE: Final = 1  # between requests (keep-alive)
_HEAD: Final = 2  # a request head is arriving
_BODY: Final = 3  # head complete, body (if any) arriving
_BUSY: Final = 4  # request complete, answer not yet complete
_LINGER: Final = 5  # answered for the last time; discarding input until the client closes
_CLOSING: Final = 6  # input refused while earlier requests are answered; close after them
_UPGRADED: Final = 7  # handed over to the WebSocket protocol

_SUPPORTED_VERSIONS = ("1.1", "1.0")
_DRAINING = "onegate_draining"
"""Attribute set on uvicorn's ServerState once it asked connections to shut down."""


class EdgeSettings:
    """The limits and deadlines of the client edge, read once per configuration."""

    __slots__ = (
        "body_idle",
        "first_byte",
        "head",
        "keep_alive",
        "max_connections",
        "max_head",
        "max_line",
        "tick",
    )

    def __init__(self, server: ServerConfig, fd_limit: int | None = None) -> None:
        timeouts = server.client_timeouts
        self.first_byte = timeouts.first_byte
        self.head = timeouts.head
        self.keep_alive = timeouts.keep_alive
        self.body_idle = timeouts.body_idle
        #: How often a connection's timer fires at most; every deadline is at least this far
        #: away when it is set, so a pending timer never needs to be moved earlier.
        self.tick = min(self.first_byte, self.head, self.keep_alive, self.body_idle)
        self.max_head = server.max_header_bytes + HEAD_SLACK
        self.max_line = server.max_request_line_bytes
        self.max_connections = server.max_client_connections
        budget = fd_budget() if fd_limit is None else fd_limit
        if budget is not None and budget < self.max_connections:
            logger.warning(
                "server.max_client_connections lowered from %d to %d to fit the file "
                "descriptor limit (RLIMIT_NOFILE); raise it with ulimit -n",
                self.max_connections,
                budget,
            )
            self.max_connections = budget


def fd_budget() -> int | None:
    """Client connections the process's file descriptor limit allows: half of it, since a
    proxied request may hold an upstream connection too. None when there is no limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    return max(1, soft // 2)


def settings_for(app: Any) -> EdgeSettings:
    """The settings of the configuration the gateway app serves now (built once per
    configuration, by the runtime), or the defaults for another app."""
    settings = getattr(getattr(app, "runtime", None), "edge", None)
    return settings if isinstance(settings, EdgeSettings) else EdgeSettings(ServerConfig())


def problem_response(error: OnegateError, request_id: str) -> bytes:
    """A complete HTTP/1.1 response carrying ``error`` as a problem document, then close.

    For answers the protocol gives itself, before (or instead of) the ASGI app: the same
    document the pipeline's errors stage would write, with a request id of its own.
    """
    body = problem_body(error.problem(request_id=request_id))
    lines = [
        STATUS_LINE[error.status],
        b"content-type: " + PROBLEM_CONTENT_TYPE + b"\r\n",
        b"content-length: %d\r\n" % len(body),
        b"cache-control: no-store\r\n",
        b"date: " + http_date() + b"\r\n",
        b"x-request-id: " + request_id.encode("ascii") + b"\r\n",
        b"connection: close\r\n",
    ]
    for name, value in error.headers.items():
        lines.append(f"{name}: {value}\r\n".encode("latin-1"))
    lines.append(b"\r\n")
    lines.append(body)
    return b"".join(lines)


def version_refusal(version: str) -> tuple[OnegateError, str]:
    """The answer to a request line with HTTP ``version`` (llhttp's ``major.minor``)."""
    if version == "0.9":
        return MalformedRequest("HTTP/0.9 requests (no version) are not supported"), "malformed"
    return (
        HttpVersionNotSupported(f"HTTP/{version} is not supported; use HTTP/1.1"),
        "unsupported_version",
    )


def request_line_refusal(line: bytes) -> tuple[OnegateError, str] | None:
    """Why a complete request line (without its line end) is refused, or None if it is not
    (as far as a look at its version goes; llhttp checks the rest)."""
    version = line.rpartition(b" ")[2]
    if b" " not in line or not version.startswith(b"HTTP/"):
        return version_refusal("0.9")
    number = version[5:]
    if number in (b"1.1", b"1.0"):
        return None
    return version_refusal(number.decode("latin-1")[:8])


_DEFAULT_PORTS = {b"http": 80, b"https": 443}


def absolute_form_refusal(url: Any, headers: list[tuple[bytes, bytes]]) -> OnegateError | None:
    """Why a request with an absolute-form target (``GET http://host/path``) is refused, or
    None. RFC 9112 section 3.2.2 has a server accept that form and take the target's authority
    over Host; the gateway routes and forwards by Host, so the two must name the same host
    (default ports aside), or a client could have one route chosen and another host named."""
    scheme = (url.schema or b"").lower()
    if scheme not in _DEFAULT_PORTS or not url.host:
        return MalformedRequest("an absolute request target must be an http or https URL")
    host = next((value for name, value in headers if name == b"host"), None)
    if host is None:
        return None  # the guard stage answers a missing Host
    target_host = url.host.lower()
    if b":" in target_host:
        target_host = b"[" + target_host + b"]"  # an IPv6 literal, as Host writes it
    default = _DEFAULT_PORTS[scheme]
    if _host_and_port(host, default) != (target_host, url.port or default):
        return MalformedRequest("the absolute request target names another host than Host")
    return None


def _host_and_port(host: bytes, default: int) -> tuple[bytes, int]:
    """``host[:port]`` split, lower-cased, the port defaulted (the guard stage validates Host)."""
    if host.startswith(b"["):
        literal, _, rest = host.partition(b"]")
        name, port = literal + b"]", rest[1:]
    else:
        name, _, port = host.partition(b":")
    return name.lower(), int(port) if port.isdigit() else default


class _Refused(Exception):
    """Raised in a parser callback to stop parsing; the reason is on the protocol."""


class _CycleTransport:
    """What a request's cycle sees of the connection: closing it is a lingering close.

    uvicorn's cycle closes the transport after a ``Connection: close`` answer or when an app
    fails mid-response; those closes go through the protocol so the answer is not lost to a
    reset. Writes go straight to the real transport.
    """

    __slots__ = ("_protocol", "is_closing", "write")

    def __init__(self, protocol: GatewayHttpProtocol, transport: asyncio.Transport) -> None:
        self._protocol = protocol
        self.write = transport.write
        self.is_closing = transport.is_closing

    def close(self) -> None:
        self._protocol.close_after_answer()


class GatewayCycle(RequestResponseCycle):
    """uvicorn's request cycle, with the gateway's view of how a request may end badly."""

    async def run_asgi(self, app: ASGI3Application) -> None:
        try:
            result = await app(self.scope, self.receive, self.send)  # type: ignore[func-returns-value]
        except asyncio.CancelledError:
            # uvicorn cancels what still runs when the drain deadline passes: expected, and
            # worth one line, not a traceback.
            logger.warning(
                "%s %s cut at the drain deadline%s",
                self.scope.get("method"),
                self.scope.get("path"),
                _request_id_suffix(self.scope),
            )
            self.transport.close()
        except BaseException as exc:
            self.logger.error("Exception in ASGI application\n", exc_info=exc)
            if not self.response_started:
                await self.send_500_response()
            else:
                self.transport.close()
        else:
            if result is not None:
                self.logger.error("ASGI callable should return None, but returned '%s'.", result)
                self.transport.close()
            elif not self.response_started and not self.disconnected:
                self.logger.error("ASGI callable returned without starting response.")
                await self.send_500_response()
            elif not self.response_complete and not self.disconnected:
                # The gateway already logged why (an upstream failed mid-stream) when it left
                # its error on the exchange; a second, vaguer line would only add noise.
                if _error_of(self.scope) is None:
                    self.logger.error("ASGI callable returned without completing response.")
                self.transport.close()
        finally:
            self.on_response = lambda: None


def _error_of(scope: Any) -> OnegateError | None:
    exchange: Exchange | None = scope.get(SCOPE_KEY)
    return exchange.error if exchange is not None else None


def _request_id_suffix(scope: Any) -> str:
    exchange = scope.get(SCOPE_KEY)
    return f" (request {exchange.request_id})" if exchange is not None else ""


class GatewayHttpProtocol(HttpToolsProtocol):
    """One client connection (see the module's docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings = settings_for(self.app)
        # The gateway app's process state counts connections and hands out request ids; any
        # other app (a test's) gets its own.
        process = getattr(self.app, "process", None)
        self.stats: ConnectionStats = (
            process.observability.connections if process is not None else ConnectionStats()
        )
        self.request_ids: RequestIds = process.request_ids if process is not None else RequestIds()
        self._phase = _NEW
        self._deadline = math.inf
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._head_bytes = 0
        self._url_bytes = 0
        self._line = b""
        self._line_checked = True
        self._refusal: tuple[OnegateError, str] | None = None
        self._draining = False
        self._peer_eof = False
        self._heads = 0
        self._cycle_transport: _CycleTransport | None = None

    # --- connection ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._cycle_transport = _CycleTransport(self, transport)
        self.stats.track(self.connections)
        self._draining = getattr(self.server_state, _DRAINING, False)
        self._set_deadline(self.loop.time() + self.settings.first_byte)
        if len(self.connections) > self.settings.max_connections and not self._make_room():
            self._refuse(
                TooManyConnections("this worker is at its connection limit"), "over_capacity"
            )

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        super().connection_lost(exc)

    def eof_received(self) -> bool | None:  # type: ignore[override]
        self._peer_eof = True
        phase = self._phase
        if phase == _HEAD:
            # The client will send no more: the head it started can never complete.
            self._refuse(MalformedRequest("the request head ended early"), "malformed")
            return True
        # Otherwise close, as uvicorn does: a FIN while a request is being answered usually
        # means the client left (it cannot be told from a half-close), and closing is how the
        # app hears of it (``http.disconnect``) and frees the upstream.
        return None

    def _make_room(self) -> bool:
        """Close the longest-idle kept-alive connection of this worker, if there is one."""
        victim: GatewayHttpProtocol | None = None
        for connection in self.connections:
            if (
                isinstance(connection, GatewayHttpProtocol)
                and connection._phase == _IDLE
                and (victim is None or connection._deadline < victim._deadline)
            ):
                victim = connection
        if victim is None:
            return False
        self.stats.closed("reclaimed")
        victim._linger()
        return True

    # --- bytes in --------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        phase = self._phase
        if phase >= _LINGER:
            return  # no more requests are read here; what the client still sends is dropped
        if phase <= _IDLE:
            self._start_head()
            self._line_checked = False
        if self._phase == _HEAD:
            counted = self._head_bytes + len(data)
            self._head_bytes = counted
            if counted > self.settings.max_head:
                self._feed_to_limit(data, counted - self.settings.max_head)
                return
        self._feed(data)
        if self._phase == _HEAD and not self._line_checked:
            self._check_request_line(data)

    def _feed_to_limit(self, data: bytes, excess: int) -> None:
        """Feed what the head may still have; refuse if it has not ended by then."""
        allowed = len(data) - excess
        heads = self._heads
        self._feed(data[:allowed])
        if self._phase == _HEAD and self._heads == heads:
            self._refuse(
                HeadersTooLarge(
                    f"request head is larger than {self.settings.max_head - HEAD_SLACK} bytes"
                ),
                "head_too_large",
            )
        elif not self.transport.is_closing():
            self.data_received(data[allowed:])  # a body, or a next request: counted afresh

    def _feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError as exc:
            self._parse_failed(exc)

    def _parse_failed(self, exc: httptools.HttpParserError) -> None:
        refusal = self._refusal
        if refusal is None:
            message = str(exc)
            if message in ("Invalid HTTP version", "Pause on PRI/Upgrade"):
                # A version llhttp does not know, or the HTTP/2 connection preface.
                refusal = (
                    HttpVersionNotSupported("only HTTP/1.1 and HTTP/1.0 are supported"),
                    "unsupported_version",
                )
            else:
                if exc.__context__ is not None and not isinstance(exc.__context__, _Refused):
                    logger.debug("request refused by a parser callback", exc_info=exc)
                refusal = (MalformedRequest(f"invalid HTTP request: {message}"), "malformed")
        self._refuse(*refusal)

    def _check_request_line(self, data: bytes) -> None:
        """The head is incomplete after this feed: look at the request line's version now, so
        an HTTP/0.9 client (which sends no headers) or HTTP/2.0 hears no later than needed."""
        line = self._line + data
        start = len(line) - len(line.lstrip(b"\r\n"))  # empty lines before a request are allowed
        end = line.find(b"\n", start)
        if end < 0:
            if len(line) - start > self.settings.max_line + HEAD_SLACK:
                self._line_checked = True  # the target's own limit answers for it
                self._line = b""
            else:
                self._line = line
            return
        self._line_checked = True
        self._line = b""
        refusal = request_line_refusal(line[start:end].rstrip(b"\r"))
        if refusal is not None:
            self._refuse(*refusal)

    def _start_head(self) -> None:
        self._phase = _HEAD
        self._heads += 1
        self._head_bytes = 0
        self._url_bytes = 0
        self._line = b""
        self._set_deadline(self.loop.time() + self.settings.head)

    # --- parser callbacks ------------------------------------------------------------------

    def _stop(self, error: OnegateError, reason: str) -> None:
        self._refusal = (error, reason)
        raise _Refused

    def on_message_begin(self) -> None:
        if self._phase != _HEAD:
            # A pipelined request starting in the same read as the end of the one before:
            # where it starts in the data is unknown, so it is counted from the next read on
            # (the guard stage still checks its exact size) and its line only at the end.
            self._start_head()
            self._line_checked = True
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._url_bytes += len(url)
        if self._url_bytes > self.settings.max_line:
            self._stop(
                RequestTargetTooLong(
                    f"the request target is longer than {self.settings.max_line} bytes"
                ),
                "request_line_too_long",
            )
        self.url += url

    def on_headers_complete(self) -> None:
        # uvicorn's method, with the version and method checks first and the gateway's cycle.
        self._line_checked = True
        parser = self.parser
        http_version = parser.get_http_version()
        if http_version not in _SUPPORTED_VERSIONS:
            self._stop(*version_refusal(http_version))
        method = parser.get_method()
        if method == b"CONNECT":
            self._stop(
                MalformedRequest("CONNECT is not supported: onegate is not a forward proxy"),
                "malformed",
            )
        scope = self.scope
        scope["method"] = method.decode("ascii")
        if http_version != "1.1":
            scope["http_version"] = http_version
        if parser.should_upgrade() and self._should_upgrade():
            return
        parsed_url = httptools.parse_url(self.url)
        raw_path = parsed_url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        scope["path"] = self.root_path + path
        scope["raw_path"] = self.root_path.encode("ascii") + raw_path
        scope["query_string"] = parsed_url.query or b""
        if parsed_url.schema is not None:
            refusal = absolute_form_refusal(parsed_url, self.headers)
            if refusal is not None:
                self._stop(refusal, "malformed")

        self._phase = _BODY
        self._deadline = self.loop.time() + self.settings.body_idle
        existing_cycle = self.cycle
        assert self._cycle_transport is not None
        self.cycle = GatewayCycle(
            scope=scope,
            transport=self._cycle_transport,  # type: ignore[arg-type]
            flow=self.flow,
            logger=self.logger,
            access_logger=self.access_logger,
            access_log=self.access_log,
            default_headers=self.server_state.default_headers,
            message_event=asyncio.Event(),
            expect_100_continue=self.expect_100_continue,
            keep_alive=http_version != "1.0" and parser.should_keep_alive() and not self._draining,
            on_response=self.on_response_complete,
        )
        if existing_cycle is None or existing_cycle.response_complete:
            self._start_asgi_task(self.cycle, self.app)
        else:
            # Pipelined requests wait for the answers before theirs.
            self.flow.pause_reading()
            self.pipeline.appendleft((self.cycle, self.app))

    def on_body(self, body: bytes) -> None:
        self._deadline = self.loop.time() + self.settings.body_idle
        super().on_body(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self._phase != _BODY:
            return
        cycle = self.cycle
        if cycle is not None and cycle.response_complete and not self.pipeline:
            self._idle()  # answered before the body ended (say, a 413)
        else:
            self._phase = _BUSY
            self._deadline = math.inf

    # --- answers out -----------------------------------------------------------------------

    def on_response_complete(self) -> None:
        self.server_state.total_requests += 1
        if self.transport.is_closing() or self._phase == _LINGER:
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        elif self._phase == _BUSY:
            self._idle()
        # _HEAD: the next request is arriving; _BODY: this request's body still is.

    def _idle(self) -> None:
        self._phase = _IDLE
        self._set_deadline(self.loop.time() + self.settings.keep_alive)

    def send_400_response(self, msg: str) -> None:
        self._refuse(MalformedRequest(msg), "malformed")

    def _refuse(self, error: OnegateError, reason: str) -> None:
        """Answer ``error`` and close, when that answer can be the next response on the wire.

        The refused request is the one arriving: a head (no cycle of its own yet) or the body
        of the newest cycle. If earlier requests still await their answers, those go first
        and the connection closes after them, unanswered for the refused one. If the refused
        body's own answer has started, the connection just closes (the answer is cut).
        """
        self.stats.closed(reason)
        if self.transport.is_closing() or self._phase >= _LINGER:
            return
        cycle = self.cycle
        if (cycle is not None and not cycle.response_complete) or self.pipeline:
            assert cycle is not None
            if self._phase == _BODY:
                if self.pipeline or cycle.response_started:
                    self.transport.close()
                    return
                # Its app has not answered: the answer is ours, the app finds its client gone.
                cycle.disconnected = True
                cycle.waiting_for_100_continue = False
                cycle.message_event.set()
            else:
                cycle.keep_alive = False
                self._phase = _CLOSING
                self._deadline = math.inf
                return
        self.transport.write(problem_response(error, self.request_ids.new()))
        self._linger()

    def close_after_answer(self) -> None:
        """The cycle's ``transport.close()``: linger instead of closing at once."""
        if self.transport.is_closing() or self._phase == _LINGER:
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # a close mid-answer ends it: nothing more is written
        self._linger()

    def _linger(self) -> None:
        """Half-close (FIN after what is queued), then drop input until the client closes."""
        self._phase = _LINGER
        self.pipeline.clear()
        if self._peer_eof:
            self.transport.close()  # the client sends no more: nothing is left to discard
            return
        self.flow.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        else:  # pragma: no cover - TLS transports cannot half-close
            self.transport.close()
        self._set_deadline(self.loop.time() + LINGER_SECONDS)

    def handle_websocket_upgrade(self) -> None:
        self._phase = _UPGRADED
        self._cancel_timer()
        super().handle_websocket_upgrade()

    def shutdown(self) -> None:
        """uvicorn asks every connection to finish when it drains."""
        setattr(self.server_state, _DRAINING, True)
        self._draining = True
        phase = self._phase
        if phase >= _LINGER or self.transport.is_closing():
            return
        if phase <= _IDLE:
            self.stats.closed("drain")
            self._linger()
            return
        # A request is arriving or being answered: it is answered, with Connection: close.
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False
        for cycle, _ in self.pipeline:
            cycle.keep_alive = False

    # --- deadlines -------------------------------------------------------------------------

    def _set_deadline(self, deadline: float) -> None:
        self._deadline = deadline
        if self._timer is None or deadline < self._timer_at:
            self._schedule(deadline)

    def _schedule(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_at(when, self._on_timer)
        self._timer_at = when

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_at = math.inf

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        phase = self._phase
        if self.transport.is_closing() or phase == _UPGRADED:
            return
        now = self.loop.time()
        if phase in (_HEAD, _BODY) and self._waiting_on_gateway():
            self._deadline = now + (
                self.settings.head if phase == _HEAD else self.settings.body_idle
            )
        elif now + 0.001 >= self._deadline:
            self._expire(phase)  # which arms the timer again if the connection lingers
            return
        self._schedule(min(self._deadline, now + self.settings.tick))

    def _waiting_on_gateway(self) -> bool:
        """True while the client cannot be blamed for silence: the gateway stopped reading
        (backpressure, pipelining) or the client waits for ``100 Continue``."""
        if self.flow.read_paused:
            return True
        cycle = self.cycle
        return self._phase == _BODY and cycle is not None and cycle.waiting_for_100_continue

    def _expire(self, phase: int) -> None:
        settings = self.settings
        if phase == _LINGER:
            self.transport.close()
        elif phase == _NEW:
            self.stats.closed("first_byte_timeout")
            self._linger()
        elif phase == _IDLE:
            self.stats.closed("keep_alive_timeout")
            self._linger()
        elif phase == _HEAD:
            self._refuse(
                RequestTimeout(f"the request head did not arrive within {settings.head:g} s"),
                "head_timeout",
            )
        elif phase == _BODY:
            self._refuse(
                RequestTimeout(f"no request body bytes for {settings.body_idle:g} s"),
                "body_timeout",
            )
