"""The Prometheus endpoint: every worker's metrics, whichever worker is asked.

:func:`metrics_app` makes a plain ASGI app; the admin surface decides where it is mounted
(``observability.metrics.path``) and who may read it. Under ``onegate serve`` the workers
share their values through files (see :mod:`onegate.observability.multiprocess`), and a
scrape adds up the files of all workers, live and dead, so counts stay right with any number
of workers and across worker restarts.
"""

from __future__ import annotations

import asyncio

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from onegate.observability import multiprocess
from onegate.observability.worker import Worker
from onegate.types import ASGIApp, Receive, Scope, Send

CONTENT_TYPE = CONTENT_TYPE_LATEST
_METHODS = ("GET", "HEAD")


def _registry(worker: Worker) -> CollectorRegistry:
    directory = multiprocess.directory()
    if directory is not None:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        return registry
    worker.recorder()  # the metrics exist (at zero) even before the first request
    assert worker.registry is not None
    return worker.registry


def render_metrics(worker: Worker) -> bytes:
    """The metrics in Prometheus' text format.

    This worker's latest counts are flushed first; other workers' are at most 100 ms old.
    """
    worker.flush_metrics()
    return generate_latest(_registry(worker))


def metrics_app(worker: Worker) -> ASGIApp:
    """An ASGI endpoint serving :func:`render_metrics` to GET and HEAD."""

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] not in _METHODS:
            await _answer(send, 405, b"", [(b"allow", b"GET, HEAD")])
            return
        worker.flush_metrics()  # on this thread: the hot path's counters are not locked
        # Reading every worker's files takes milliseconds with many series: not on the loop.
        body = await asyncio.to_thread(generate_latest, _registry(worker))
        headers = [
            (b"content-type", CONTENT_TYPE.encode("latin-1")),
            (b"cache-control", b"no-store"),
        ]
        await _answer(send, 200, body, headers, head=scope["method"] == "HEAD")

    return serve


async def _answer(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]], head: bool = False
) -> None:
    headers.append((b"content-length", str(len(body)).encode("latin-1")))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})
