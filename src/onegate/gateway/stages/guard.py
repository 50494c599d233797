"""Rejects requests whose framing is ambiguous or whose head is too large.

Two parties that disagree on where a request ends are how request smuggling works, so any
doubt is a 400: Content-Length together with Transfer-Encoding, Content-Length twice, a
transfer coding other than plain ``chunked``, or Host twice. The server's own parser rejects
some of these first; this stage is the gateway's guarantee for the rest.

A Host that is missing (HTTP/1.1) or not ``host[:port]`` (see :mod:`onegate.gateway.host`) is
a 400 too: routing and the forwarding headers both read it.
"""

from __future__ import annotations

from typing import ClassVar

from onegate.errors import AmbiguousFraming, BadRequest, HeadersTooLarge, InvalidHost
from onegate.gateway.context import StageContext
from onegate.gateway.exchange import exchange_of
from onegate.gateway.host import is_valid_host
from onegate.gateway.pipeline import Stage
from onegate.types import ASGIApp, Receive, Scope, Send


class GuardStage(Stage):
    name: ClassVar[str] = "guard"

    def __init__(self, app: ASGIApp, context: StageContext) -> None:
        super().__init__(app, context)
        self.max_header_bytes = context.config.server.max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        length: bytes | None = None
        coding: bytes | None = None
        host: bytes | None = None
        size = len(scope.get("raw_path") or b"") + len(scope.get("query_string", b""))
        for name, value in scope["headers"]:
            size += len(name) + len(value) + 4
            if name == b"content-length":
                if length is not None:
                    raise AmbiguousFraming("duplicate Content-Length header")
                length = value
            elif name == b"transfer-encoding":
                if coding is not None:
                    raise AmbiguousFraming("more than one Transfer-Encoding header")
                coding = value
            elif name == b"host":
                if host is not None:
                    raise AmbiguousFraming("duplicate Host header")
                host = value
        if host is None:
            if scope.get("http_version") == "1.1":
                raise InvalidHost("HTTP/1.1 requests must carry a Host header")
        elif not is_valid_host(host):
            # The value is not echoed: it is whatever the client chose to send.
            raise InvalidHost("Host must be a host name or IP address, with an optional port")
        if size > self.max_header_bytes:
            raise HeadersTooLarge(f"request head is larger than {self.max_header_bytes} bytes")
        exchange = exchange_of(scope)
        if coding is not None:
            if length is not None:
                raise AmbiguousFraming("Content-Length together with Transfer-Encoding")
            if coding.strip().lower() != b"chunked":
                raise AmbiguousFraming("only 'Transfer-Encoding: chunked' is accepted")
            exchange.body_chunked = True
        elif length is not None:
            if not length.isdigit() or len(length) > 18:
                raise BadRequest("Content-Length must be a non-negative integer")
            exchange.body_length = int(length)
        await self.app(scope, receive, send)
