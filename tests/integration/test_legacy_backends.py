"""The stand-in legacy backends, exercised over real sockets.

The gateway's integration tests lean on these stand-ins behaving as documented; these tests pin
that behaviour down: identifying headers, echoes, streams, WebSockets and FastAPI-style errors.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import itertools
import json
import os
import socket
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from helpers.legacy import LegacyBackends, free_ports, legacy_backends
from onegate.dev.legacy import BYTES_CHUNK, LegacyPorts, pattern_chunks, serve_legacy_backends

__all__ = ["legacy_backends"]  # the fixture, imported so pytest finds it here


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10.0) as client:
        yield client


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- identity and health -------------------------------------------------------------------


async def test_each_backend_is_healthy_and_says_who_it_is(
    legacy_backends: LegacyBackends, client: httpx.AsyncClient
) -> None:
    checks = [
        (legacy_backends.main_url + "/api/health", "main", None),
        (legacy_backends.fastapi_url + "/health", "fastapi", None),
        (legacy_backends.fastapi_url + "/api/payments/health", "fastapi", "payments"),
        (legacy_backends.fastapi_url + "/api/ml/health", "fastapi", "ml"),
        (legacy_backends.ai_url + "/health", "ai", None),
        (legacy_backends.ai_url + "/api/ai/health", "ai", "ai"),
    ]
    for url, backend, service in checks:
        response = await client.get(url)
        assert response.status_code == 200, url
        assert response.headers["x-backend"] == backend
        expected = {"status": "ok", "backend": backend}
        if service is not None:
            expected["service"] = service
        assert response.json() == expected


async def test_main_looks_like_nextjs(
    legacy_backends: LegacyBackends, client: httpx.AsyncClient
) -> None:
    response = await client.get(legacy_backends.main_url + "/")
    assert response.headers["x-powered-by"] == "Next.js"
    assert "server" not in response.headers  # Next.js sends none; uvicorn-served apps do
    assert response.json()["backend"] == "main"

    fastapi = await client.get(legacy_backends.fastapi_url + "/health")
    assert "x-powered-by" not in fastapi.headers
    assert fastapi.headers["server"] == "uvicorn"


async def test_unknown_paths_are_json_404s(
    legacy_backends: LegacyBackends, client: httpx.AsyncClient
) -> None:
    response = await client.get(legacy_backends.main_url + "/api/nope")
    assert response.status_code == 404
    assert response.headers["x-backend"] == "main"
    assert response.json() == {"detail": "Not Found"}


async def test_users_and_feed_are_deterministic(
    legacy_backends: LegacyBackends, client: httpx.AsyncClient
) -> None:
    first = (await client.get(legacy_backends.main_url + "/api/users/42")).json()
    again = (await client.get(legacy_backends.main_url + "/api/users/42")).json()
    assert first == again
    assert first["id"] == "42"
    assert first["email"] == "user42@example.com"

    feed = await client.get(legacy_backends.main_url + "/api/feed", params={"limit": 3})
    assert [post["id"] for post in feed.json()] == ["post_1", "post_2", "post_3"]
    bad = await client.get(legacy_backends.main_url + "/api/feed", params={"limit": "x"})
    assert bad.status_code == 400


# --- echo, slow, status ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("which", "prefix"),
    [("main", "/api"), ("fastapi", "/api/payments"), ("fastapi", "/api/ml"), ("ai", "/api/ai")],
)
async def test_echo_reports_what_arrived(
    legacy_backends: LegacyBackends, client: httpx.AsyncClient, which: str, prefix: str
) -> None:
    base = getattr(legacy_backends, f"{which}_url")
    body = os.urandom(100_000)
    response = await client.request(
        "PATCH",
        f"{base}{prefix}/echo/a/b%20c",
        params={"x": "1", "y": "two"},
        headers={"X-Test-Header": "Mixed Case Value"},
        content=body,
    )
    assert response.status_code == 200
    echo = response.json()
    assert echo["backend"] == which
    assert echo["method"] == "PATCH"
    assert echo["path"] == f"{prefix}/echo/a/b c"
    assert echo["raw_path"] == f"{prefix}/echo/a/b%20c"
    assert echo["query"] == "x=1&y=two"
    assert ["x-test-header", "Mixed Case Value"] in echo["headers"]
    assert ["content-length", str(len(body))] in echo["headers"]
    assert echo["body"] == {"bytes": len(body), "sha256": _sha256(body)}


async def test_echo_takes_any_method(
    legacy_backends: LegacyBackends, client: httpx.AsyncClient
) -> None:
    response = await client.request("PROPFIND", legacy_backends.main_url + "/api/echo/")
    assert response.json()["method"] == "PROPFIND"
    assert response.json()["body"] == {"bytes": 0, "sha256": _sha256(b"")}


@pytest.mark.parametrize(
    ("which", "path"),
    [("main", "/api/slow"), ("fastapi", "/api/payments/slow"), ("fastapi", "/api/ml/slow")],
)
async def test_slow_waits_before_answering(
    legacy_backends: LegacyBackends, client: httpx.AsyncClient, which: str, path: str
) -> None:
    started = time.monotonic()
    response = await client.get(getattr(legacy_backends, f"{which}_url") + path, params={"ms": 300})
    assert time.monotonic() - started >= 0.3
    assert response.json() == {"backend": which, "slept_ms": 300}


async def test_status_answers_with_the_asked_status(
    legacy_backends: LegacyBackends, client: httpx.AsyncClient
) -> None:
    unavailable = await client.get(legacy_backends.main_url + "/api/status/503")
    assert unavailable.status_code == 503
    assert unavailable.json() == {"backend": "main", "status": 503}

    no_content = await client.get(legacy_backends.main_url + "/api/status/204")
    assert no_content.status_code == 204
    assert no_content.content == b""

    informational = await client.get(legacy_backends.main_url + "/api/status/101")
    assert informational.status_code == 400


# --- big bodies ----------------------------------------------------------------------------


async def test_bytes_streams_the_documented_pattern(
    legacy_backends: LegacyBackends, client: httpx.AsyncClient
) -> None:
    n = 3 * BYTES_CHUNK + 123
    expected = b"".join(pattern_chunks(n))
    assert len(expected) == n
    assert expected[BYTES_CHUNK : BYTES_CHUNK + 8] == (1).to_bytes(8, "big")  # chunk index
    assert expected[BYTES_CHUNK + 8 : BYTES_CHUNK + 11] == bytes([8, 9, 10])  # byte i is i % 256

    digest = hashlib.sha256()
    size = 0
    async with client.stream("GET", f"{legacy_backends.main_url}/api/bytes/{n}") as response:
        assert response.headers["content-length"] == str(n)
        assert response.headers["content-type"] == "application/octet-stream"
        async for chunk in response.aiter_raw():
            digest.update(chunk)
            size += len(chunk)
    assert size == n
    assert digest.hexdigest() == _sha256(expected)

    empty = await client.get(f"{legacy_backends.main_url}/api/bytes/0")
    assert empty.content == b""


async def test_upload_hashes_a_streamed_body(
    legacy_backends: LegacyBackends, client: httpx.AsyncClient
) -> None:
    pieces = [os.urandom(50_000) for _ in range(21)]

    async def body() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    # An async iterator goes out chunked, as a phone's streamed upload would.
    response = await client.post(legacy_backends.main_url + "/api/upload", content=body())
    data = b"".join(pieces)
    assert response.json() == {"bytes": len(data), "sha256": _sha256(data)}


# --- payments and ML -----------------------------------------------------------------------


async def test_payment_intent_round_trip(
    legacy_backends: LegacyBackends, client: httpx.AsyncClient
) -> None:
    url = legacy_backends.fastapi_url + "/api/payments/intents"
    created = await client.post(url, json={"amount": 1999, "currency": "EUR"})
    assert created.status_code == 200
    intent = created.json()
    assert intent["id"].startswith("pi_")
    assert intent["object"] == "payment_intent"
    assert intent["status"] == "requires_payment_method"
    assert (intent["amount"], intent["currency"]) == (1999, "eur")
    assert intent["client_secret"].startswith(intent["id"] + "_secret_")

    replayed = await client.post(url, json={"currency": "eur", "amount": 1999})
    assert replayed.json() == intent  # id derived from the body: a replay is idempotent
    other = await client.post(url, json={"amount": 2000, "currency": "eur"})
    assert other.json()["id"] != intent["id"]

    fetched = await client.get(f"{url}/{intent['id']}")
    assert fetched.json() == intent
    missing = await client.get(f"{url}/pi_unknown")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "No such payment_intent: 'pi_unknown'"}


async def test_bad_payment_intents_get_fastapi_style_422(
    legacy_backends: LegacyBackends, client: httpx.AsyncClient
) -> None:
    url = legacy_backends.fastapi_url + "/api/payments/intents"
    response = await client.post(url, json={"currency": "usd"})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/json"
    [error] = response.json()["detail"]
    assert error["type"] == "missing"
    assert error["loc"] == ["body", "amount"]

    wrong = await client.post(url, json={"amount": "ten", "currency": "dollars"})
    assert [e["loc"][-1] for e in wrong.json()["detail"]] == ["amount", "currency"]

    for bad_body in (b"{not json", b"[1, 2]"):
        invalid = await client.post(url, content=bad_body)
        assert invalid.status_code == 422
        assert invalid.json()["detail"][0]["loc"] == ["body"]


async def test_ml_predict(legacy_backends: LegacyBackends, client: httpx.AsyncClient) -> None:
    url = legacy_backends.fastapi_url + "/api/ml/predict"
    response = await client.post(url, json={"inputs": [1, 2, 3.5, 5.5]})
    assert response.json()["outputs"] == [12.0, 3.0]
    bad: object  # each a different shape of wrong
    for bad in ({}, {"inputs": []}, {"inputs": [1, "x"]}, {"inputs": 3}):
        assert (await client.post(url, json=bad)).status_code == 422, bad


# --- ai: chat, SSE, WebSocket --------------------------------------------------------------


async def test_ai_chat(legacy_backends: LegacyBackends, client: httpx.AsyncClient) -> None:
    url = legacy_backends.ai_url + "/api/ai/chat"
    response = await client.post(url, json={"message": "hello"})
    assert response.json()["reply"] == "echo: hello"
    assert response.json()["backend"] == "ai"
    assert (await client.post(url, json={"text": "hello"})).status_code == 422


async def test_sse_events_arrive_one_by_one(
    legacy_backends: LegacyBackends, client: httpx.AsyncClient
) -> None:
    count, interval = 5, 0.2
    params = {"events": count, "interval_ms": int(interval * 1000)}
    arrivals: list[float] = []
    events: list[str] = []
    buffer = b""
    async with client.stream("GET", legacy_backends.ai_url + "/api/ai/stream", params=params) as r:
        assert r.headers["content-type"] == "text/event-stream"
        assert r.headers["cache-control"] == "no-cache"
        async for chunk in r.aiter_raw():
            buffer += chunk
            while b"\n\n" in buffer:
                event, buffer = buffer.split(b"\n\n", 1)
                arrivals.append(time.monotonic())
                events.append(event.decode())
    assert buffer == b""
    assert len(events) == count
    for i, text in enumerate(events):
        id_line, data_line = text.split("\n")
        assert id_line == f"id: {i}"
        assert data_line.startswith("data: ")
        assert json.loads(data_line.removeprefix("data: "))["i"] == i
    # Generous: a proxy that buffered the stream would deliver them all at once.
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert all(gap >= interval * 0.5 for gap in gaps), gaps


async def test_websocket_echoes_text_and_bytes(legacy_backends: LegacyBackends) -> None:
    async with connect(legacy_backends.ai_ws_url + "/api/ai/ws") as ws:
        assert ws.subprotocol is None
        assert ws.response is not None
        assert ws.response.headers["x-backend"] == "ai"
        await ws.send("hello")
        assert await ws.recv() == "hello"
        payload = os.urandom(70_000)
        await ws.send(payload)
        assert await ws.recv() == payload


async def test_websocket_selects_chat_v1_when_offered(legacy_backends: LegacyBackends) -> None:
    offered = [Subprotocol("other.v0"), Subprotocol("chat.v1")]
    async with connect(legacy_backends.ai_ws_url + "/api/ai/ws", subprotocols=offered) as ws:
        assert ws.subprotocol == "chat.v1"
        await ws.send("still an echo")
        assert await ws.recv() == "still an echo"

    only_other = [Subprotocol("other.v0")]
    async with connect(legacy_backends.ai_ws_url + "/api/ai/ws", subprotocols=only_other) as ws:
        assert ws.subprotocol is None


# --- keep-alive and serving in-process ---------------------------------------------------------


async def test_fastapi_closes_idle_connections_after_two_seconds(
    legacy_backends: LegacyBackends,
) -> None:
    # gunicorn's 2 s keep-alive is what makes the gateway's pool idle timeout matter.
    reader, writer = await asyncio.open_connection(
        legacy_backends.host, legacy_backends.ports.fastapi
    )
    try:
        writer.write(b"GET /health HTTP/1.1\r\nhost: fastapi\r\n\r\n")
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        rest = await asyncio.wait_for(reader.read(), timeout=10)  # until the server closes
        assert rest == b'{"status":"ok","backend":"fastapi"}'
        assert 1.5 <= time.monotonic() - started <= 5
    finally:
        writer.close()
        await writer.wait_closed()


async def test_serve_in_process_until_cancelled() -> None:
    main, fastapi, ai = free_ports(3)
    ready = asyncio.Event()
    serving = asyncio.create_task(
        serve_legacy_backends(LegacyPorts(main, fastapi, ai), ready=ready)
    )
    await asyncio.wait_for(ready.wait(), timeout=10)
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{ai}/api/ai/health")
        assert response.json()["backend"] == "ai"
    serving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await serving
    for port in (main, fastapi, ai):  # all three let go of their ports
        with socket.socket() as probe:
            # SO_REUSEADDR: a closed connection in TIME_WAIT is fine, a listener is not.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))


async def test_serve_in_process_reports_a_taken_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        fastapi, ai = free_ports(2)
        ports = LegacyPorts(main=taken.getsockname()[1], fastapi=fastapi, ai=ai)
        ready = asyncio.Event()
        with pytest.raises(OSError) as raised:
            await asyncio.wait_for(serve_legacy_backends(ports, ready=ready), timeout=10)
    assert raised.value.errno == errno.EADDRINUSE
    assert "main stand-in" in str(raised.value)
    assert not ready.is_set()
