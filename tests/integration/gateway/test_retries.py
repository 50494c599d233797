"""When the gateway tries another target, and when it must not, over real sockets.

The rules: a request that provably never left (connection refused) may be retried whatever its
method; once a request may have reached an upstream, only idempotent methods are retried, never
after a timeout; ``retries.attempts: 0`` turns retrying off. Every scenario has its own upstream
of two raw targets, counting what each one received: a fresh upstream sends its first request
to its first target, and a retry goes to a target not tried yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from helpers.gateway import GatewayProcess, run_gateway
from helpers.upstreams import Action, Hang, Raw, RawUpstream, Reply, Reset, dead_url

PROBLEM = "application/problem+json"


@dataclass
class Scenario:
    """An upstream of two targets; ``first`` gets a fresh upstream's first request."""

    first: RawUpstream | None  # None: a dead port, nothing listening
    second: RawUpstream
    route: dict[str, Any]


SCENARIOS: dict[str, tuple[Action | None, dict[str, Any]]] = {
    # name: (what the first target does, or None for a dead port; route options)
    "dead-first": (None, {}),
    "dead-first-post": (None, {}),
    "dead-first-big-post": (None, {}),
    "dead-first-no-retries": (None, {"retries": {"attempts": 0}}),
    "reset-get": (Reset(), {}),
    "reset-post": (Reset(), {}),
    "reset-get-no-retries": (Reset(), {"retries": {"attempts": 0}}),
    "reset-streamed-put": (Reset(), {"retries": {"buffer_bytes": 65536}}),
    "reset-big-put": (Reset(), {"retries": {"buffer_bytes": 1024}}),
    "unavailable-get": (Reply(503, b"busy"), {}),
    "unavailable-post": (Reply(503, b"busy"), {}),
    "unavailable-not-listed": (Reply(503, b"busy"), {"retries": {"on_statuses": [502]}}),
    "silent-get": (Hang(), {"timeouts": {"read": 0.3}}),
}


@pytest.fixture(scope="module")
def scenarios() -> Iterator[dict[str, Scenario]]:
    with contextlib.ExitStack() as stack:
        built: dict[str, Scenario] = {}
        for name, (action, options) in SCENARIOS.items():
            first = None if action is None else stack.enter_context(RawUpstream(default=action))
            second = stack.enter_context(RawUpstream(default=Reply(200, b"second")))
            route = {"name": name, "match": {"prefix": "/" + name}, "upstream": name, **options}
            built[name] = Scenario(first, second, route)
        yield built


@pytest.fixture(scope="module")
def closes_idle() -> Iterator[RawUpstream]:
    """Answers once per connection, then closes it when the next request arrives."""
    with RawUpstream() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
    scenarios: dict[str, Scenario],
    closes_idle: RawUpstream,
) -> Iterator[GatewayProcess]:
    upstreams: dict[str, Any] = {
        name: {"targets": [s.first.url if s.first else dead_url(), s.second.url]}
        for name, s in scenarios.items()
    }
    upstreams["closes-idle"] = {"targets": [closes_idle.url]}
    routes = [s.route for s in scenarios.values()]
    routes.append(
        {"name": "closes-idle", "match": {"prefix": "/closes-idle"}, "upstream": "closes-idle"}
    )
    with run_gateway(tmp_path_factory.mktemp("retries"), upstreams, routes, drain_seconds=1) as gw:
        yield gw


@pytest.fixture
async def client(gateway: GatewayProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10.0) as client:
        yield client


def received(upstream: RawUpstream | None) -> list[tuple[str, str]]:
    assert upstream is not None
    return [(r.method, r.path) for r in upstream.requests]


# --- never sent: any method is retried -----------------------------------------------------------


async def test_a_get_to_a_dead_target_succeeds_on_the_other(
    client: httpx.AsyncClient, scenarios: dict[str, Scenario]
) -> None:
    second = scenarios["dead-first"].second
    for i in range(4):
        response = await client.get(f"/dead-first/{i}")
        assert response.status_code == 200
        assert response.content == b"second"
    assert second.count() == 4


async def test_a_post_to_a_dead_target_is_retried_with_its_body(
    client: httpx.AsyncClient, scenarios: dict[str, Scenario]
) -> None:
    second = scenarios["dead-first-post"].second
    response = await client.post("/dead-first-post/orders", json={"amount": 1999})
    assert response.status_code == 200
    assert received(second) == [("POST", "/dead-first-post/orders")]
    assert second.requests[0].body == b'{"amount":1999}'


async def test_a_streamed_post_to_a_dead_target_is_retried_whole(
    client: httpx.AsyncClient, scenarios: dict[str, Scenario]
) -> None:
    body = hashlib.sha256(b"seed").digest() * 8192  # 256 KiB, more than one message

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 16384):
            yield body[start : start + 16384]

    second = scenarios["dead-first-big-post"].second
    response = await client.post("/dead-first-big-post/upload", content=pieces())
    assert response.status_code == 200
    assert [r.body == body for r in second.requests] == [True]


async def test_no_retry_when_attempts_is_zero(
    client: httpx.AsyncClient, scenarios: dict[str, Scenario]
) -> None:
    response = await client.get("/dead-first-no-retries/x")
    assert response.status_code == 502
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"].endswith("/upstream-unreachable")
    assert scenarios["dead-first-no-retries"].second.count() == 0


# --- sent, then reset: only idempotent methods are retried ---------------------------------------


async def test_a_get_reset_by_the_first_target_is_retried_on_the_second(
    client: httpx.AsyncClient, scenarios: dict[str, Scenario]
) -> None:
    scenario = scenarios["reset-get"]
    response = await client.get("/reset-get/x")
    assert response.status_code == 200
    assert response.content == b"second"
    assert received(scenario.first) == [("GET", "/reset-get/x")]
    assert received(scenario.second) == [("GET", "/reset-get/x")]


async def test_a_post_reset_by_the_first_target_is_not_sent_again(
    client: httpx.AsyncClient, scenarios: dict[str, Scenario]
) -> None:
    scenario = scenarios["reset-post"]
    response = await client.post("/reset-post/payments", json={"amount": 1999})
    assert response.status_code == 502
    assert response.json()["type"].endswith("/upstream-reset")
    assert received(scenario.first) == [("POST", "/reset-post/payments")]
    assert scenario.second.requests == []  # the payment must not be made twice


async def test_a_reset_get_is_not_retried_when_attempts_is_zero(
    client: httpx.AsyncClient, scenarios: dict[str, Scenario]
) -> None:
    scenario = scenarios["reset-get-no-retries"]
    response = await client.get("/reset-get-no-retries/x")
    assert response.status_code == 502
    assert received(scenario.first) == [("GET", "/reset-get-no-retries/x")]
    assert scenario.second.requests == []


async def trickle(body: bytes, piece: int = 4096) -> AsyncIterator[bytes]:
    """``body`` in pieces with pauses, so the gateway receives it as several messages."""
    for start in range(0, len(body), piece):
        yield body[start : start + piece]
        await asyncio.sleep(0.02)


async def test_a_streamed_put_too_big_to_keep_is_not_retried(
    client: httpx.AsyncClient, scenarios: dict[str, Scenario]
) -> None:
    scenario = scenarios["reset-big-put"]
    body = b"p" * 20_000  # over this route's buffer_bytes
    response = await client.put("/reset-big-put/doc", content=trickle(body))
    assert response.status_code == 502
    assert scenario.first is not None
    assert [r.body == body for r in scenario.first.requests] == [True]
    assert scenario.second.requests == []


async def test_a_streamed_put_within_buffer_bytes_is_retried(
    client: httpx.AsyncClient, scenarios: dict[str, Scenario]
) -> None:
    scenario = scenarios["reset-streamed-put"]
    body = b"q" * 20_000  # well under this route's buffer_bytes (64 KiB)
    response = await client.put("/reset-streamed-put/doc", content=trickle(body))
    assert response.status_code == 200
    assert [r.body == body for r in scenario.second.requests] == [True]


async def test_a_timed_out_get_is_not_retried(
    client: httpx.AsyncClient, scenarios: dict[str, Scenario]
) -> None:
    scenario = scenarios["silent-get"]
    response = await client.get("/silent-get/x")
    assert response.status_code == 504
    assert response.json()["type"].endswith("/upstream-timeout")
    assert received(scenario.first) == [("GET", "/silent-get/x")]
    assert scenario.second.requests == []  # the first may still be working on it


async def test_a_get_on_a_pooled_connection_the_upstream_closed_is_retried(
    client: httpx.AsyncClient, closes_idle: RawUpstream
) -> None:
    """The keep-alive race: the upstream drops an idle connection just as a request reuses it."""
    closes_idle.script(Reply(200, b"first"), Raw(b""), default=Reply(200, b"fresh connection"))
    assert (await client.get("/closes-idle/1")).content == b"first"
    response = await client.get("/closes-idle/2")  # sent on the pooled connection, then closed
    assert response.status_code == 200
    assert response.content == b"fresh connection"
    assert closes_idle.connections == 2
    paths = [r.path for r in closes_idle.requests]
    assert paths == ["/closes-idle/1", "/closes-idle/2", "/closes-idle/2"]


# --- retryable statuses --------------------------------------------------------------------------


async def test_a_503_is_retried_for_get(
    client: httpx.AsyncClient, scenarios: dict[str, Scenario]
) -> None:
    scenario = scenarios["unavailable-get"]
    response = await client.get("/unavailable-get/x")
    assert response.status_code == 200
    assert response.content == b"second"
    assert received(scenario.first) == [("GET", "/unavailable-get/x")]
    assert received(scenario.second) == [("GET", "/unavailable-get/x")]


async def test_a_503_is_passed_on_for_post(
    client: httpx.AsyncClient, scenarios: dict[str, Scenario]
) -> None:
    scenario = scenarios["unavailable-post"]
    response = await client.post("/unavailable-post/x", content=b"once")
    assert response.status_code == 503
    assert response.content == b"busy"  # the upstream's own answer, not a problem document
    assert received(scenario.first) == [("POST", "/unavailable-post/x")]
    assert scenario.second.requests == []


async def test_only_the_listed_statuses_are_retried(
    client: httpx.AsyncClient, scenarios: dict[str, Scenario]
) -> None:
    scenario = scenarios["unavailable-not-listed"]
    response = await client.get("/unavailable-not-listed/x")
    assert response.status_code == 503
    assert response.content == b"busy"
    assert scenario.second.requests == []
