"""Redis unreachable, refusing or silent: fail open or closed as configured, never hang, and
log the outage once (and the recovery once), not per request."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from helpers.gateway import GatewayProcess, run_gateway, wait_ready
from helpers.redis_relay import Relay

NOTHING_LISTENING = "redis://127.0.0.1:1"
OUTAGE = "rate limit store unavailable"
RECOVERY = "rate limit store answers again"


def limited_gateway(
    tmp_path: Path, policy_name: str, *, wait: bool = True, **rate_limits: Any
) -> Any:
    policy = {"name": policy_name, "key": "client_ip", "limit": 100, "window_seconds": 3600}
    return run_gateway(
        tmp_path,
        {"demo": {"targets": ["asgi:onegate.dev.demo:app"]}},
        [{"name": "api", "match": {"prefix": "/api"}, "upstream": "demo"}],
        drain_seconds=1,
        wait=wait,
        extra={"rate_limits": {"policies": [policy], "default": [policy_name], **rate_limits}},
    )


def timed_get(client: httpx.Client, gateway: GatewayProcess) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = client.get(gateway.url + "/api/x")
    return response, time.monotonic() - started


def log_count(gateway: GatewayProcess, text: str) -> int:
    return sum(text in line for line in gateway.log().splitlines())


def test_fail_open_lets_traffic_through_and_logs_once(tmp_path: Path, policy_name: str) -> None:
    with (
        limited_gateway(
            tmp_path, policy_name, store=NOTHING_LISTENING, store_retry_seconds=0.1
        ) as gateway,
        httpx.Client(timeout=5) as client,
    ):
        for _ in range(8):  # over 0.4 s: the store is tried again, and fails again, 3-4 times
            response, _ = timed_get(client, gateway)
            assert response.status_code == 200
            assert not any(h.startswith("ratelimit-") for h in response.headers)
            time.sleep(0.05)
        assert log_count(gateway, OUTAGE) == 1
        # The outage is visible in the metrics too, one count per unchecked request.
        scrape = client.get(gateway.url + "/metrics").text
        skipped = [
            sample.value
            for family in text_string_to_metric_families(scrape)
            for sample in family.samples
            if sample.name == "onegate_rate_limit_skipped_total" and sample.labels["route"] == "api"
        ]
        assert skipped == [8.0]


def test_fail_closed_answers_503_with_retry_after(tmp_path: Path, policy_name: str) -> None:
    with (
        limited_gateway(
            tmp_path, policy_name, store=NOTHING_LISTENING, on_store_error="closed"
        ) as gateway,
        httpx.Client(timeout=5) as client,
    ):
        for _ in range(3):
            response, _ = timed_get(client, gateway)
            assert response.status_code == 503
            assert response.headers["retry-after"] == "1"
            assert response.headers["content-type"] == "application/problem+json"
            problem = response.json()
            assert problem["type"] == "https://onegate.dev/problems/rate-limit-store-unavailable"
            assert problem["request_id"] == response.headers["x-request-id"]
        assert log_count(gateway, OUTAGE) == 1


def test_a_silent_redis_costs_one_timeout_not_a_hang(
    tmp_path: Path, policy_name: str, silent_port: int
) -> None:
    silent = f"redis://127.0.0.1:{silent_port}"
    with contextlib.ExitStack() as stack:
        modes = {"open": 200, "closed": 503}
        gateways = {
            mode: stack.enter_context(
                limited_gateway(
                    tmp_path,
                    policy_name,
                    wait=False,
                    store=silent,
                    on_store_error=mode,
                    store_timeout_seconds=0.5,
                )
            )
            for mode in modes
        }
        client = stack.enter_context(httpx.Client(timeout=10))
        for mode, gateway in gateways.items():
            wait_ready(gateway)
            first, waited = timed_get(client, gateway)
            assert first.status_code == modes[mode]
            assert 0.5 <= waited < 3.0  # the store's deadline, not redis-py's 5 s or a hang
            # For store_retry_seconds the store is skipped: no waiting at all.
            second, waited = timed_get(client, gateway)
            assert second.status_code == modes[mode]
            assert waited < 0.4


def test_back_to_counting_when_redis_returns(
    tmp_path: Path, policy_name: str, relay: Relay
) -> None:
    with (
        limited_gateway(
            tmp_path,
            policy_name,
            store=relay.url,
            on_store_error="closed",
            store_timeout_seconds=0.5,
            store_retry_seconds=0.2,
        ) as gateway,
        httpx.Client(timeout=5) as client,
    ):
        assert timed_get(client, gateway)[0].headers["ratelimit-remaining"] == "99"
        relay.stop()
        assert [timed_get(client, gateway)[0].status_code for _ in range(3)] == [503] * 3
        relay.start()
        time.sleep(0.3)  # past store_retry_seconds: the next request asks the store again
        response, _ = timed_get(client, gateway)
        assert response.status_code == 200
        assert response.headers["ratelimit-remaining"] == "98"  # nothing lost, nothing extra
        assert log_count(gateway, OUTAGE) == 1
        assert log_count(gateway, RECOVERY) == 1
