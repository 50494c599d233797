"""The access log of a real two-worker gateway: one JSON line per request, no credentials.

Both workers write to the same stream (here a file, as the test helper captures it); every
line must still parse on its own.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from helpers.accesslog import KEYS, RFC3339_UTC
from helpers.gateway import GatewayProcess, run_gateway
from helpers.legacy import LegacyBackends, legacy_backends

__all__ = ["legacy_backends"]  # the fixture, imported so pytest finds it here

SECRETS = ("secret-token-123", "api_key=zzz", "zzz", "cookie-secret", "body-secret")
CONCURRENT = 60


@pytest.fixture(scope="module")
def gateway(
    legacy_backends: LegacyBackends, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    upstreams = {"main": {"targets": [legacy_backends.main_url]}}
    routes = [{"name": "main", "match": {"prefix": "/api"}, "upstream": "main"}]
    directory = tmp_path_factory.mktemp("access-log")
    with run_gateway(directory, upstreams, routes, workers=2, drain_seconds=1) as gateway:
        yield gateway


def access_lines(gateway: GatewayProcess) -> list[dict[str, Any]]:
    """Every access-log line so far; anything else in the output is the server's own log
    (JSON lines too, off a terminal: told apart by their ``logger`` key)."""
    records = []
    for line in gateway.log().splitlines():
        if line.startswith("{"):
            record = json.loads(line)  # a torn or merged line fails here
            if "logger" not in record:
                records.append(record)
    return records


def logged(gateway: GatewayProcess, ids: set[str], within: float = 5.0) -> dict[str, Any]:
    """Wait for the lines of ``ids`` (written within 100 ms of each response)."""
    deadline = time.monotonic() + within
    while True:
        records = [r for r in access_lines(gateway) if r["request_id"] in ids]
        if len(records) >= len(ids) or time.monotonic() > deadline:
            by_id = {r["request_id"]: r for r in records}
            assert len(by_id) == len(records), "a request was logged twice"
            assert set(by_id) == ids, f"not logged: {sorted(ids - set(by_id))}"
            return by_id
        time.sleep(0.05)


async def send_many(gateway: GatewayProcess) -> dict[str, httpx.Response]:
    limits = httpx.Limits(max_connections=CONCURRENT, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=20, limits=limits) as client:

        async def one(index: int) -> tuple[str, httpx.Response]:
            request_id = f"log-{index}"
            response = await client.get(
                f"/api/users/{index}",
                params={"api_key": "zzz"},
                headers={
                    "x-request-id": request_id,
                    "authorization": "Bearer secret-token-123",
                    "cookie": "session=cookie-secret",
                },
            )
            return request_id, response

        return dict(await asyncio.gather(*(one(i) for i in range(CONCURRENT))))


def test_one_line_per_request_with_every_field(gateway: GatewayProcess) -> None:
    responses = asyncio.run(send_many(gateway))
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        missing = client.get("/nowhere?token=zzz", headers={"x-request-id": "log-404"})
        posted = client.post(
            "/api/echo/form", content=b"password=body-secret", headers={"x-request-id": "log-post"}
        )
    assert missing.status_code == 404 and posted.status_code == 200

    records = logged(gateway, {*responses, "log-404", "log-post"})
    for request_id, response in responses.items():
        record = records[request_id]
        assert list(record) == KEYS
        assert RFC3339_UTC.match(record["ts"])
        index = request_id.removeprefix("log-")
        assert record == {
            **record,
            "method": "GET",
            "path": f"/api/users/{index}",
            "route": "main",
            "upstream": "main",
            "status": 200,
            "bytes": len(response.content),
            "principal": None,
            "client_ip": "127.0.0.1",
            "attempts": 1,
            "error": None,
        }
        assert record["target"].startswith("http://127.0.0.1:")
        assert 0 < record["duration_ms"] < 20_000

    assert records["log-404"] == {
        **records["log-404"],
        "path": "/nowhere",
        "route": None,
        "upstream": None,
        "target": None,
        "status": 404,
        "bytes": len(missing.content),
        "attempts": 0,
        "error": "not-found",
    }
    assert records["log-post"]["method"] == "POST"
    assert records["log-post"]["path"] == "/api/echo/form"


def test_no_credential_reaches_the_log(gateway: GatewayProcess) -> None:
    asyncio.run(send_many(gateway))
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        client.get("/api/users/1?api_key=zzz", headers={"x-request-id": "log-last"})
    logged(gateway, {"log-last"})
    text = gateway.log()
    for secret in SECRETS:
        assert secret not in text
