"""The observe stage around a small inner app, with observability on and off.

The stage is built from a real configuration by a real Runtime; the access log goes to stderr,
captured at the file-descriptor level.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from onegate.gateway.config import Config, GatewayConfig
from onegate.gateway.exchange import exchange_of
from onegate.gateway.process import ProcessState
from onegate.gateway.runtime import Runtime
from onegate.gateway.stages.observe import ObserveStage
from onegate.observability.metrics import render_metrics
from onegate.observability.multiprocess import ENV
from onegate.types import Message, Receive, Scope, Send

PROCESS = ProcessState()
"""One process state for the module, as one worker process has: its metrics accumulate."""


def runtime(observability: dict[str, Any]) -> Runtime:
    data = {
        "upstreams": {"main": {"targets": ["http://127.0.0.1:9"]}},
        "routes": [{"name": "stage-test", "match": {"prefix": "/api"}, "upstream": "main"}],
        "observability": observability,
    }
    return Runtime(Config(GatewayConfig.model_validate(data)), PROCESS)


ROUTER = runtime({}).context.router


async def answer(scope: Scope, receive: Receive, send: Send) -> None:
    """Stands in for the inner stages: routed, answered 201 with a 5-byte body."""
    exchange = exchange_of(scope)
    exchange.match = ROUTER.match("GET", None, "/api/x")
    await send(exchange.response_start(201, []))
    exchange.bytes_sent += 5
    await send({"type": "http.response.body", "body": b"hello"})


async def call(stage: ObserveStage, request_id: str) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {
        "type": "http",
        "method": "GET",
        "path": "/api/x",
        "raw_path": b"/api/x",
        "query_string": b"token=zzz",
        "headers": [(b"x-request-id", request_id.encode())],
        "client": ("127.0.0.1", 4000),
    }
    await stage(scope, receive, send)
    return sent


def requests_counted() -> float:
    text = render_metrics(PROCESS.observability).decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "onegate_requests_total" and sample.labels["route"] == "stage-test"
    )


@pytest.fixture(autouse=True)
def one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)


async def test_on_counts_and_logs_each_request(capfd: pytest.CaptureFixture[str]) -> None:
    rt = runtime({"access_log": {"stream": "stderr"}})
    stage = ObserveStage(answer, rt.context)
    before = requests_counted()
    sent = await call(stage, "stage-on")
    assert sent[0]["status"] == 201
    assert (b"x-request-id", b"stage-on") in sent[0]["headers"]
    PROCESS.observability.flush()
    assert requests_counted() == before + 1
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines()]
    (record,) = [line for line in lines if line["request_id"] == "stage-on"]
    assert record["route"] == "stage-test" and record["status"] == 201 and record["bytes"] == 5
    assert record["path"] == "/api/x"


async def test_off_does_neither(capfd: pytest.CaptureFixture[str]) -> None:
    rt = runtime({"metrics": {"enabled": False}, "access_log": {"enabled": False}})
    stage = ObserveStage(answer, rt.context)
    assert not stage.observing
    before = requests_counted()
    sent = await call(stage, "stage-off")
    assert sent[0]["status"] == 201
    PROCESS.observability.flush()
    assert requests_counted() == before
    assert "stage-off" not in capfd.readouterr().err
