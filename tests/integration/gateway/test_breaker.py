"""Circuit breakers, passive ejection and active health checks, over real sockets.

Breaker under test: ``failure_threshold: 3, open_seconds: 1, half_open_probes: 1``, with
``first_probe_seconds: 1`` so that every open period lasts one second (the backoff from a
shorter first wait is tested in ``test_breaker_recovery.py``). Closed, it counts consecutive
failures; at three it opens and the gateway answers 503 ``circuit-open`` itself, without
contacting the target; after a second one probe goes through (half-open); the probe's outcome
closes or re-opens it. With several targets an open breaker ejects its target from balancing,
and active health checks take dead targets out before any request fails.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from helpers.gateway import GatewayProcess, run_gateway
from helpers.upstreams import RawUpstream, Reply, dead_url

PROBLEM = "application/problem+json"
BREAKER = {
    "failure_threshold": 3,
    "first_probe_seconds": 1,
    "open_seconds": 1,
    "half_open_probes": 1,
}
OPEN_SECONDS = 1.0
HEALTH = {"path": "/health", "interval": 0.2, "timeout": 0.2, "unhealthy_threshold": 1}
NO_RETRY = {"attempts": 0}


@pytest.fixture(scope="module")
def flaky() -> Iterator[RawUpstream]:
    with RawUpstream(default=Reply(503, b"down")) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def probed() -> Iterator[RawUpstream]:
    with RawUpstream(default=Reply(503, b"down")) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def failing() -> Iterator[RawUpstream]:
    with RawUpstream(default=Reply(503, b"failing")) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def healthy() -> Iterator[RawUpstream]:
    with RawUpstream(default=Reply(200, b"healthy")) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def standby() -> Iterator[RawUpstream]:
    with RawUpstream(default=Reply(200, b"standby")) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def recovering() -> Iterator[RawUpstream]:
    with RawUpstream(default=Reply(503, b"starting")) as upstream:
        yield upstream


def route(name: str, **options: Any) -> dict[str, Any]:
    return {"name": name, "match": {"prefix": "/" + name}, "upstream": name, **options}


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
    flaky: RawUpstream,
    probed: RawUpstream,
    failing: RawUpstream,
    healthy: RawUpstream,
    standby: RawUpstream,
    recovering: RawUpstream,
) -> Iterator[GatewayProcess]:
    upstreams = {
        "flaky": {"targets": [flaky.url], "breaker": BREAKER},
        "probed": {"targets": [probed.url], "breaker": BREAKER},
        "refusing": {"targets": [dead_url()], "breaker": BREAKER},
        "pair": {
            "targets": [failing.url, healthy.url],
            "breaker": {**BREAKER, "first_probe_seconds": 60, "open_seconds": 60},
        },
        "checked": {"targets": [dead_url(), standby.url], "health": HEALTH},
        "lonely": {"targets": [dead_url()], "health": HEALTH},
        "recovering": {"targets": [recovering.url], "health": HEALTH},
    }
    routes = [
        route("flaky", retries=NO_RETRY),
        route("probed", retries=NO_RETRY),
        route("refusing", retries=NO_RETRY),
        route("pair"),
        route("checked", retries=NO_RETRY),
        route("lonely"),
        route("recovering"),
    ]
    with run_gateway(tmp_path_factory.mktemp("breaker"), upstreams, routes, drain_seconds=1) as gw:
        yield gw


@pytest.fixture
async def client(gateway: GatewayProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10.0) as client:
        yield client


def assert_turned_away(response: httpx.Response, slug: str) -> None:
    """A 503 the gateway answered itself, telling the client when to come back."""
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"] == f"https://onegate.dev/problems/{slug}"
    assert int(response.headers["retry-after"]) >= 1


async def upstream_state(client: httpx.AsyncClient, name: str) -> dict[str, Any]:
    response = await client.get("/readyz")
    assert response.status_code == 200
    readiness = response.json()
    state: dict[str, Any] = readiness["upstreams"][name]
    state["listed_unavailable"] = name in readiness["unavailable_upstreams"]
    return state


async def wait_for_state(
    client: httpx.AsyncClient,
    name: str,
    condition: Callable[[dict[str, Any]], bool],
    timeout: float = 3.0,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        state = await upstream_state(client, name)
        if condition(state):
            return state
        assert time.monotonic() < deadline, f"{name} never reached the state: {state}"
        await asyncio.sleep(0.05)


def requests_not_probes(upstream: RawUpstream) -> int:
    return sum(1 for r in upstream.requests if r.path != HEALTH["path"])


# --- one target: closed, open, half-open --------------------------------------------------------


async def test_the_breaker_opens_probes_and_closes(
    client: httpx.AsyncClient, flaky: RawUpstream
) -> None:
    # Closed: failures reach the client as the upstream sent them, and are counted.
    for i in range(3):
        response = await client.get(f"/flaky/{i}")
        assert response.status_code == 503
        assert response.content == b"down"
    assert flaky.count() == 3

    # Open: the gateway answers without contacting the target.
    for i in range(3):
        assert_turned_away(await client.get(f"/flaky/open-{i}"), "circuit-open")
    assert flaky.count() == 3
    state = await upstream_state(client, "flaky")
    assert state["targets"][0]["breaker"] == "open"
    assert state["available"] == 0
    assert state["listed_unavailable"]

    # Half-open: after open_seconds one probe goes through; it fails, so the breaker re-opens.
    await asyncio.sleep(OPEN_SECONDS + 0.1)
    response = await client.get("/flaky/probe-1")
    assert response.status_code == 503
    assert response.content == b"down"
    assert flaky.count() == 4
    assert_turned_away(await client.get("/flaky/reopened"), "circuit-open")
    assert flaky.count() == 4

    # The upstream recovers: the next probe succeeds and closes the breaker.
    flaky.script(default=Reply(200, b"up"))
    await asyncio.sleep(OPEN_SECONDS + 0.1)
    response = await client.get("/flaky/probe-2")
    assert response.status_code == 200
    assert response.content == b"up"
    for i in range(5):
        assert (await client.get(f"/flaky/closed-{i}")).status_code == 200
    assert flaky.count() == 10
    state = await upstream_state(client, "flaky")
    assert state["targets"][0]["breaker"] == "closed"
    assert state["available"] == 1
    assert not state["listed_unavailable"]


async def test_only_one_probe_goes_through_while_half_open(
    client: httpx.AsyncClient, probed: RawUpstream
) -> None:
    for i in range(3):
        assert (await client.get(f"/probed/{i}")).status_code == 503
    assert_turned_away(await client.get("/probed/open"), "circuit-open")
    probed.script(default=Reply(200, b"slowly up", delay=0.5))
    await asyncio.sleep(OPEN_SECONDS + 0.1)

    probe = asyncio.create_task(client.get("/probed/probe"))
    await asyncio.sleep(0.15)  # the probe is now waiting for its slow answer
    try:
        assert_turned_away(await client.get("/probed/meanwhile"), "circuit-open")
    finally:
        response = await probe
    assert response.status_code == 200
    assert (await client.get("/probed/after")).status_code == 200
    assert probed.count() == 5  # three failures, the probe and the one after it


async def test_refused_connections_open_the_breaker_too(client: httpx.AsyncClient) -> None:
    for i in range(3):
        response = await client.get(f"/refusing/{i}")
        assert response.status_code == 502
        assert response.json()["type"].endswith("/upstream-unreachable")
    response = await client.get("/refusing/again")
    assert_turned_away(response, "circuit-open")
    assert int(response.headers["retry-after"]) == 1
    assert (await upstream_state(client, "refusing"))["targets"][0]["breaker"] == "open"


# --- several targets: ejection and health ------------------------------------------------------


async def test_a_failing_target_is_ejected(
    client: httpx.AsyncClient, failing: RawUpstream, healthy: RawUpstream
) -> None:
    before = healthy.count()
    for i in range(10):  # GET is retried on the healthy target while the other fails
        response = await client.get(f"/pair/{i}")
        assert response.status_code == 200
        assert response.content == b"healthy"
    assert failing.count() == 3  # up to the threshold, then ejected
    for i in range(10):
        assert (await client.get(f"/pair/ejected-{i}")).status_code == 200
    assert failing.count() == 3
    assert healthy.count() - before == 20

    state = await upstream_state(client, "pair")
    assert [t["breaker"] for t in state["targets"]] == ["open", "closed"]
    assert state["available"] == 1
    assert not state["listed_unavailable"]


async def test_an_unhealthy_target_gets_no_traffic(
    client: httpx.AsyncClient, standby: RawUpstream
) -> None:
    state = await wait_for_state(
        client, "checked", lambda s: [t["healthy"] for t in s["targets"]] == [False, True]
    )
    assert state["available"] == 1
    before = requests_not_probes(standby)
    # Retries are off on this route: a request sent to the dead target would fail.
    for i in range(10):
        response = await client.get(f"/checked/{i}")
        assert response.status_code == 200
        assert response.content == b"standby"
    assert requests_not_probes(standby) - before == 10


async def test_no_healthy_target_is_a_503_with_retry_after(client: httpx.AsyncClient) -> None:
    state = await wait_for_state(client, "lonely", lambda s: not s["targets"][0]["healthy"])
    assert state["available"] == 0
    assert state["listed_unavailable"]
    response = await client.get("/lonely/x")
    assert_turned_away(response, "no-healthy-target")
    readiness = (await client.get("/readyz")).json()
    assert readiness["status"] == "degraded"


async def test_a_target_that_recovers_is_healthy_again(
    client: httpx.AsyncClient, recovering: RawUpstream
) -> None:
    await wait_for_state(client, "recovering", lambda s: not s["targets"][0]["healthy"])
    assert_turned_away(await client.get("/recovering/x"), "no-healthy-target")
    assert requests_not_probes(recovering) == 0  # only the health checker knocked

    recovering.script(default=Reply(200, b"ready"))
    state = await wait_for_state(client, "recovering", lambda s: s["targets"][0]["healthy"])
    assert state["available"] == 1
    assert not state["listed_unavailable"]
    response = await client.get("/recovering/x")
    assert response.status_code == 200
    assert response.content == b"ready"
