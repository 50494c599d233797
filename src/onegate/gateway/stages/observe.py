"""Outermost stage: gives every request its id and client address, then measures and logs it.

It sees every answer, including problem documents from inner stages (the exchange records
status and bytes), so the metrics, the access-log line and the trace span are all written
here, once the request is over: after the response's last byte, or when it failed. Each is
skipped entirely when turned off in ``observability``.
"""

from __future__ import annotations

import time
from typing import ClassVar

from onegate.gateway.context import StageContext
from onegate.gateway.exchange import SCOPE_KEY, Exchange
from onegate.gateway.headers import REQUEST_ID, ForwardedInfo
from onegate.gateway.pipeline import Stage
from onegate.observability.accesslog import request_path
from onegate.observability.recorder import WEBSOCKET
from onegate.types import ASGIApp, Receive, Scope, Send


class ObserveStage(Stage):
    name: ClassVar[str] = "observe"

    def __init__(self, app: ASGIApp, context: StageContext) -> None:
        super().__init__(app, context)
        self.trusted = context.trusted_proxies
        self.accept_request_id = context.process.request_ids.accept
        settings = context.config.observability
        worker = context.process.observability
        self.metrics = worker.recorder() if settings.metrics.enabled else None
        log = settings.access_log
        self.access_log = worker.access_log(log.stream) if log.enabled else None
        self.tracing = worker.tracing(settings.tracing)
        self.observing = (self.metrics, self.access_log, self.tracing) != (None, None, None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = scope["headers"]
        client_id = None
        for name, value in headers:
            if name == REQUEST_ID:
                client_id = value
                break
        exchange = Exchange(self.accept_request_id(client_id))
        client = scope.get("client")
        peer = client[0] if client else "unknown"
        exchange.forwarded = ForwardedInfo.from_request(
            peer, scope.get("scheme", "http"), headers, self.trusted
        )
        scope[SCOPE_KEY] = exchange
        if not self.observing:
            await self.app(scope, receive, send)
            return
        # Responders record their status on the exchange (Exchange.response_start) instead
        # of this stage wrapping ``send``: one closure and two calls fewer per request.
        method = scope["method"] if scope["type"] == "http" else WEBSOCKET
        metrics, access_log, tracing = self.metrics, self.access_log, self.tracing
        span = tracing.start(scope, exchange, method) if tracing is not None else None
        if metrics is not None:
            metrics.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            duration = time.perf_counter() - exchange.started
            if metrics is not None:
                metrics.in_flight -= 1
                metrics.record(exchange, method, duration)
            if access_log is not None or span is not None:
                path = exchange.path or request_path(scope)
                if access_log is not None:
                    access_log.record(exchange, method, path, duration)
                if span is not None:
                    assert tracing is not None
                    tracing.finish(span, exchange, method, path)
