"""Errors the gateway answers itself, as RFC 9457 problem documents, over real sockets.

Upstreams here misbehave on purpose: nothing listening, a reset before or during the response,
an invalid response, silence, a connect that never completes. Whatever they do, the client gets
a prompt, well-formed answer, and other routes keep serving meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from helpers.gateway import GatewayProcess, run_gateway
from helpers.problems import assert_problem
from helpers.upstreams import Hang, Raw, RawUpstream, Reply, Reset, StalledListener, dead_url

READ_TIMEOUT = 0.5
CONNECT_TIMEOUT = 0.3
SLOW_READ_TIMEOUT = 4.0
TOTAL_TIMEOUT = 0.4
NO_RETRY = {"attempts": 0}


@pytest.fixture(scope="module")
def fast() -> Iterator[RawUpstream]:
    with RawUpstream(default=Reply(200, b"fast")) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def resetting() -> Iterator[RawUpstream]:
    with RawUpstream(default=Reset()) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def half_head() -> Iterator[RawUpstream]:
    with RawUpstream(default=Reset(send=b"HTTP/1.1 200 OK\r\nContent-Le")) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def cut_short() -> Iterator[RawUpstream]:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n"
    with RawUpstream(default=Reset(send=head + b"only the beginning")) as upstream:
        yield upstream


BROKEN_RESPONSES = {
    "not-http": b"hello there\r\n\r\n",
    "bad-content-length": b"HTTP/1.1 200 OK\r\nContent-Length: twelve\r\n\r\n",
    "two-content-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!",
    "length-and-chunked": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nok\r\n0\r\n\r\n"
    ),
    "status-999": b"HTTP/1.1 999 Whatever\r\nContent-Length: 2\r\n\r\nok",
    "gzip-coding": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nnot really gzip",
}


#: Unusual but valid: each must reach the client as a 200 with the body "ok".
ODD_RESPONSES = {
    "continue-first": (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    ),
    "early-hints": (
        b"HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    ),
    "until-close": b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nok",
    "chunked": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\no\r\n1\r\nk\r\n0\r\n\r\n"
    ),
}


@pytest.fixture(scope="module")
def broken() -> Iterator[dict[str, RawUpstream]]:
    with contextlib.ExitStack() as stack:
        yield {
            name: stack.enter_context(RawUpstream(default=Raw(data)))
            for name, data in {**BROKEN_RESPONSES, **ODD_RESPONSES}.items()
        }


@pytest.fixture(scope="module")
def silent() -> Iterator[RawUpstream]:
    with RawUpstream(default=Hang()) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def stuck_midway() -> Iterator[RawUpstream]:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n"
    with RawUpstream(default=Hang(send=head + b"the first part")) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def stalled() -> Iterator[StalledListener | None]:
    """None where the kernel will not leave a connect hanging (then that test is skipped)."""
    try:
        listener = StalledListener().__enter__()
    except RuntimeError:
        yield None
        return
    with listener:
        yield listener


def route(name: str, upstream: str, **options: Any) -> dict[str, Any]:
    return {"name": name, "match": {"prefix": "/" + name}, "upstream": upstream, **options}


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
    fast: RawUpstream,
    resetting: RawUpstream,
    half_head: RawUpstream,
    cut_short: RawUpstream,
    broken: dict[str, RawUpstream],
    silent: RawUpstream,
    stuck_midway: RawUpstream,
    stalled: StalledListener | None,
) -> Iterator[GatewayProcess]:
    targets = {
        "fast": fast.url,
        "resetting": resetting.url,
        "half_head": half_head.url,
        "cut_short": cut_short.url,
        "silent": silent.url,
        "stuck_midway": stuck_midway.url,
        "stalled": stalled.url if stalled is not None else dead_url(),
        "refused": dead_url(),
    }
    targets.update({name: upstream.url for name, upstream in broken.items()})
    upstreams = {name: {"targets": [url]} for name, url in targets.items()}
    routes = [
        route("fast", "fast"),
        {
            "name": "read-only",
            "match": {"path": "/read-only/{id}", "methods": ["GET", "DELETE"]},
            "upstream": "fast",
        },
        route("refused", "refused"),
        route("resetting", "resetting", retries=NO_RETRY),
        route("half-head", "half_head", retries=NO_RETRY),
        route("cut-short", "cut_short", retries=NO_RETRY),
        *(route(name, name, retries=NO_RETRY) for name in broken),
        route("silent", "silent", timeouts={"read": READ_TIMEOUT}),
        route("slow", "silent", timeouts={"read": SLOW_READ_TIMEOUT}),
        route("deadline", "silent", timeouts={"read": 30, "total": TOTAL_TIMEOUT}),
        route("stuck-midway", "stuck_midway", timeouts={"read": READ_TIMEOUT}),
        route("stalled", "stalled", timeouts={"connect": CONNECT_TIMEOUT}, retries=NO_RETRY),
    ]
    with run_gateway(tmp_path_factory.mktemp("errors"), upstreams, routes, drain_seconds=1) as gw:
        yield gw


@pytest.fixture
async def client(gateway: GatewayProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10.0) as client:
        yield client


async def timed(client: httpx.AsyncClient, method: str, url: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await client.request(method, url)
    return response, time.monotonic() - started


# --- the gateway's own answers -------------------------------------------------------------------


async def test_no_route_is_a_404_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/nowhere/at/all")
    document = assert_problem(response, 404, "not-found")
    assert document["instance"] == "/nowhere/at/all"


async def test_a_wrong_method_is_a_405_problem_with_allow(client: httpx.AsyncClient) -> None:
    response = await client.post("/read-only/42", content=b"{}")
    document = assert_problem(response, 405, "method-not-allowed")
    allowed = {m.strip() for m in response.headers["allow"].split(",")}
    assert allowed == {"GET", "HEAD", "DELETE"}
    assert "GET" in document["detail"]
    assert (await client.get("/read-only/42")).status_code == 200


async def test_a_clients_request_id_is_in_the_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/nowhere", headers={"X-Request-ID": "trace-me-123"})
    assert assert_problem(response, 404, "not-found")["request_id"] == "trace-me-123"


# --- upstream failures ---------------------------------------------------------------------------


async def test_a_refused_connection_is_a_prompt_502(client: httpx.AsyncClient) -> None:
    response, elapsed = await timed(client, "GET", "/refused/x")
    assert_problem(response, 502, "upstream-unreachable")
    assert elapsed < 1.0


async def test_a_reset_before_the_response_is_a_502(
    client: httpx.AsyncClient, resetting: RawUpstream
) -> None:
    before = resetting.count()
    response, elapsed = await timed(client, "GET", "/resetting/x")
    assert_problem(response, 502, "upstream-reset")
    assert elapsed < 1.0
    assert resetting.count() == before + 1


async def test_a_reset_in_the_middle_of_the_head_is_a_502(client: httpx.AsyncClient) -> None:
    response, elapsed = await timed(client, "GET", "/half-head/x")
    assert_problem(response, 502, "upstream-reset")
    assert elapsed < 1.0


async def test_a_reset_during_the_response_truncates_it(client: httpx.AsyncClient) -> None:
    async with client.stream("GET", "/cut-short/x") as response:
        assert response.status_code == 200  # the head had already been passed on
        with pytest.raises(httpx.RemoteProtocolError):
            await response.aread()
    # The connection was dropped, not the gateway: the next request is served.
    assert (await client.get("/fast/after-truncation")).status_code == 200


@pytest.mark.parametrize("name", BROKEN_RESPONSES)
async def test_an_invalid_response_is_a_502(client: httpx.AsyncClient, name: str) -> None:
    response = await client.get(f"/{name}/x")
    assert_problem(response, 502, "upstream-protocol-error")


@pytest.mark.parametrize("name", ODD_RESPONSES)
async def test_an_unusual_but_valid_response_is_relayed(
    client: httpx.AsyncClient, name: str
) -> None:
    response = await client.get(f"/{name}/x")
    assert response.status_code == 200
    assert response.content == b"ok"


async def test_a_silent_upstream_is_a_504_after_the_read_timeout(
    client: httpx.AsyncClient, silent: RawUpstream
) -> None:
    before = silent.count(path="/silent/x")
    response, elapsed = await timed(client, "GET", "/silent/x")
    assert_problem(response, 504, "upstream-timeout")
    assert READ_TIMEOUT * 0.8 <= elapsed < READ_TIMEOUT + 0.7
    assert silent.count(path="/silent/x") == before + 1  # a timeout is not retried


async def test_the_total_timeout_bounds_the_exchange(client: httpx.AsyncClient) -> None:
    response, elapsed = await timed(client, "GET", "/deadline/x")
    assert_problem(response, 504, "upstream-timeout")
    assert TOTAL_TIMEOUT * 0.8 <= elapsed < TOTAL_TIMEOUT + 0.7


async def test_a_timeout_after_the_response_started_truncates_it(
    client: httpx.AsyncClient,
) -> None:
    started = time.monotonic()
    async with client.stream("GET", "/stuck-midway/x") as response:
        assert response.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            await response.aread()
    assert time.monotonic() - started < READ_TIMEOUT + 0.7


async def test_a_connect_that_never_completes_is_a_504(
    client: httpx.AsyncClient, stalled: StalledListener | None
) -> None:
    if stalled is None:
        pytest.skip("this kernel does not leave a connect to a full accept queue hanging")
    response, elapsed = await timed(client, "GET", "/stalled/x")
    assert_problem(response, 504, "upstream-connect-timeout")
    assert CONNECT_TIMEOUT * 0.8 <= elapsed < CONNECT_TIMEOUT + 0.7


async def test_other_routes_keep_serving_while_an_upstream_is_stuck(
    client: httpx.AsyncClient,
) -> None:
    stuck = [asyncio.create_task(client.get(f"/slow/{i}")) for i in range(8)]
    try:
        await asyncio.sleep(0.1)  # the stuck requests are now waiting on the silent upstream
        started = time.monotonic()
        fast = await asyncio.gather(*(client.get(f"/fast/{i}") for i in range(40)))
        failing = await asyncio.gather(*(client.get(f"/refused/{i}") for i in range(5)))
        elapsed = time.monotonic() - started
        assert not any(task.done() for task in stuck)  # proof that they overlapped
    finally:
        results = await asyncio.gather(*stuck, return_exceptions=True)
    assert [r.status_code for r in fast] == [200] * 40
    # Refused at once, or turned away by the breaker once it has seen enough refusals.
    assert {r.status_code for r in failing} <= {502, 503}
    # Far less than the stuck requests' read timeout, with room for a busy CI machine.
    assert elapsed < SLOW_READ_TIMEOUT / 2
    for response in results:
        assert isinstance(response, httpx.Response)
        assert_problem(response, 504, "upstream-timeout")
