"""The metrics ASGI app, called directly, in a process without a shared directory."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from onegate.observability.metrics import CONTENT_TYPE, metrics_app, render_metrics
from onegate.observability.multiprocess import ENV
from onegate.observability.worker import Worker
from onegate.types import Message

WORKER = Worker()


async def call(method: str) -> tuple[int, dict[bytes, bytes], bytes]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await metrics_app(WORKER)({"type": "http", "method": method, "path": "/metrics"}, receive, send)
    start, body = sent
    return start["status"], dict(start["headers"]), body["body"]


@pytest.fixture(autouse=True)
def one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)


async def test_get_answers_the_text_format() -> None:
    status, headers, body = await call("GET")
    assert status == 200
    assert headers[b"content-type"] == CONTENT_TYPE.encode()
    assert headers[b"cache-control"] == b"no-store"
    assert int(headers[b"content-length"]) == len(body)
    names = {family.name for family in text_string_to_metric_families(body.decode())}
    assert {
        "onegate_requests",
        "onegate_request_duration_seconds",
        "onegate_requests_in_flight",
        "onegate_upstream_errors",
        "onegate_upstream_target_healthy",
        "onegate_breaker_state",
        "onegate_auth_failures",
        "onegate_rate_limited",
    } <= names


async def test_head_has_the_length_but_no_body() -> None:
    status, headers, body = await call("HEAD")
    assert status == 200 and body == b""
    assert int(headers[b"content-length"]) > 0


async def test_other_methods_are_refused() -> None:
    status, headers, _ = await call("POST")
    assert status == 405
    assert headers[b"allow"] == b"GET, HEAD"


def test_render_metrics_is_the_same_document() -> None:
    assert b"# TYPE onegate_requests_total counter" in render_metrics(WORKER)
