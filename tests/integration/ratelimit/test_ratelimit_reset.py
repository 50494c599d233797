"""``RateLimit-Reset`` and ``Retry-After`` a client can trust: wait exactly that long, retry.

A real ``onegate serve`` process per store (memory, and the real Redis), a real clock, and
windows of 2 s so the waits stay short. For the sliding window the burst fills one fixed
window, so after its end the previous window still weighs: a client that waited only for the
window's end (what Reset used to say) was refused again. (That a retry just before the
advertised time is refused is shown exactly, with time passed in, in the unit tests.)
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis

from helpers.gateway import GatewayProcess, run_gateway

WINDOW = 2.0
LIMIT = 2
ALGORITHMS = ["sliding_window", "token_bucket"]


@pytest.fixture(scope="module", params=["memory", "redis"])
def gateway(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayProcess, str]]:
    """A gateway with one route per algorithm, and the prefix of its policy names."""
    prefix = f"r{uuid.uuid4().hex[:10]}"
    store = "memory"
    if request.param == "redis":
        store = request.getfixturevalue("redis_url")
    policies = [
        {"name": f"{prefix}-{algorithm}", "key": "client_ip", "limit": LIMIT,
         "window_seconds": WINDOW, "algorithm": algorithm}
        for algorithm in ALGORITHMS
    ]  # fmt: skip
    routes = [
        {"name": algorithm, "match": {"prefix": f"/{algorithm}"}, "upstream": "demo",
         "rate_limits": [f"{prefix}-{algorithm}"]}
        for algorithm in ALGORITHMS
    ]  # fmt: skip
    rate_limits = {"store": store, "store_timeout_seconds": 1.0, "policies": policies}
    try:
        with run_gateway(
            tmp_path_factory.mktemp("reset"),
            {"demo": {"targets": ["asgi:onegate.dev.demo:app"]}},
            routes,
            trusted_proxies=["127.0.0.1/32"],
            drain_seconds=1,
            extra={"rate_limits": rate_limits},
        ) as gw:
            yield gw, prefix
    finally:
        if store != "memory":
            with redis.Redis.from_url(store) as client:
                keys = list(client.scan_iter(match=f"onegate:rl:{prefix}-*"))
                if keys:
                    client.delete(*keys)


def send(client: httpx.Client, gateway: GatewayProcess, algorithm: str, ip: str) -> httpx.Response:
    return client.get(f"{gateway.url}/{algorithm}/x", headers={"X-Forwarded-For": ip})


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_waiting_the_advertised_time_is_enough(
    gateway: tuple[GatewayProcess, str], algorithm: str
) -> None:
    gw, _ = gateway
    with httpx.Client(timeout=5) as client:
        # Caller A is refused; caller B stops at its last allowed request (Remaining 0).
        refused_ip = f"192.0.2.{uuid.uuid4().int % 250 + 1}"
        last_ip = f"198.51.100.{uuid.uuid4().int % 250 + 1}"
        burst = [send(client, gw, algorithm, refused_ip) for _ in range(LIMIT + 1)]
        refused_at = time.monotonic()
        last = [send(client, gw, algorithm, last_ip) for _ in range(LIMIT)][-1]
        last_at = time.monotonic()
        assert [r.status_code for r in burst] == [200] * LIMIT + [429]
        refused = burst[-1]
        assert last.status_code == 200 and last.headers["ratelimit-remaining"] == "0"

        reset = int(refused.headers["ratelimit-reset"])
        assert int(refused.headers["retry-after"]) == reset
        # Not just any large number: within what the algorithm can need (two windows at most
        # for the sliding window, one token's refill for the bucket), rounded up.
        most = 2 * WINDOW if algorithm == "sliding_window" else WINDOW / LIMIT
        assert 1 <= reset <= int(most) + 1
        last_reset = int(last.headers["ratelimit-reset"])
        assert 1 <= last_reset <= int(most) + 1

        # Wait exactly the advertised seconds from when each answer arrived, then retry.
        for ip, seconds, since in sorted(
            [(refused_ip, reset, refused_at), (last_ip, last_reset, last_at)],
            key=lambda item: item[2] + item[1],
        ):
            time.sleep(max(0.0, since + seconds - time.monotonic()))
            retry = send(client, gw, algorithm, ip)
            assert retry.status_code == 200, (ip, seconds, retry.headers)
