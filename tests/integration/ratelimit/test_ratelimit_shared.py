"""Two ``onegate serve`` processes sharing the Redis on this machine enforce one limit."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from helpers.gateway import GatewayProcess, run_gateway, wait_ready

LIMIT = 10
HOUR = 3600


@contextlib.contextmanager
def gateways(
    tmp_path: Any, count: int, rate_limits: dict[str, Any], routes: list[dict[str, Any]]
) -> Iterator[list[GatewayProcess]]:
    """``count`` gateways with the same configuration, started side by side."""
    with contextlib.ExitStack() as stack:
        started = [
            stack.enter_context(
                run_gateway(
                    tmp_path,
                    {"demo": {"targets": ["asgi:onegate.dev.demo:app"]}},
                    routes,
                    wait=False,
                    drain_seconds=1,
                    trusted_proxies=["127.0.0.1/32"],
                    extra={"rate_limits": rate_limits},
                )
            )
            for _ in range(count)
        ]
        for gateway in started:
            wait_ready(gateway)
        yield started


@pytest.fixture(scope="module")
def pair(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> Iterator[list[GatewayProcess]]:
    run = uuid.uuid4().hex[:12]
    policies = [
        {"name": f"ip{run}", "key": "client_ip", "limit": LIMIT, "window_seconds": HOUR},
        {"name": f"win{run}", "key": "route", "limit": LIMIT, "window_seconds": HOUR},
        {"name": f"tb{run}", "key": "route", "limit": LIMIT, "window_seconds": HOUR,
         "algorithm": "token_bucket"},
    ]  # fmt: skip
    routes = [
        {"name": name, "match": {"prefix": f"/{name}"}, "upstream": "demo", "rate_limits": [p]}
        for name, p in (("per-ip", f"ip{run}"), ("window", f"win{run}"), ("bucket", f"tb{run}"))
    ]
    rate_limits = {"store": redis_url, "store_timeout_seconds": 1.0, "policies": policies}
    with gateways(tmp_path_factory.mktemp("shared"), 2, rate_limits, routes) as started:
        yield started
    with redis.Redis.from_url(redis_url) as client:
        keys = list(client.scan_iter(match=f"onegate:rl:*{run}:*"))
        if keys:
            client.delete(*keys)


def test_alternating_between_two_instances_counts_one_limit(pair: list[GatewayProcess]) -> None:
    with httpx.Client(timeout=5, headers={"X-Forwarded-For": "203.0.113.9"}) as client:
        responses = [client.get(pair[n % 2].url + "/per-ip/x") for n in range(2 * LIMIT)]
    assert [r.status_code for r in responses] == [200] * LIMIT + [429] * LIMIT
    remaining = [int(r.headers["ratelimit-remaining"]) for r in responses[:LIMIT]]
    assert remaining == list(range(LIMIT - 1, -1, -1))
    # Both instances refuse, and agree on when to retry (Redis's clock, not theirs).
    first, second = (int(r.headers["retry-after"]) for r in responses[LIMIT : LIMIT + 2])
    assert abs(first - second) <= 1


@pytest.mark.parametrize("route", ["window", "bucket"])
async def test_a_concurrent_burst_on_both_instances_gets_exactly_the_limit(
    pair: list[GatewayProcess], route: str
) -> None:
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(timeout=10, limits=limits) as client:
        responses = await asyncio.gather(
            *(client.get(pair[n % 2].url + f"/{route}/x") for n in range(4 * LIMIT))
        )
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == LIMIT
    assert statuses.count(429) == 3 * LIMIT  # alone, each instance would have allowed 10
