"""Several worker processes behind one port: each serves, and a lost one is replaced."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from helpers.gateway import (
    GatewayProcess,
    ask_on_a_new_connection,
    run_gateway,
    wait_for,
    worker_pids,
)
from helpers.legacy import LegacyBackends


@pytest.fixture(scope="module")
def gateway(
    legacy_backends: LegacyBackends, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    upstreams = {"main": {"targets": [legacy_backends.main_url]}}
    routes = [{"name": "main", "match": {"prefix": "/api"}, "upstream": "main"}]
    directory = tmp_path_factory.mktemp("workers")
    with run_gateway(directory, upstreams, routes, workers=2) as gateway:
        wait_for(lambda: len(worker_pids(gateway)) == 2, 10.0, "two workers")
        yield gateway


def workers_answering(gateway: GatewayProcess, path: str, within: float = 10.0) -> set[int]:
    """Send requests on new connections until every worker has answered one with 200."""
    workers = worker_pids(gateway)
    answered: set[int] = set()

    def all_answered() -> bool:
        pid, status, body = ask_on_a_new_connection(gateway, path)
        assert status == 200, body
        if pid is not None:
            answered.add(pid)
        return answered >= workers

    wait_for(all_answered, within, f"every worker answering {path}")
    return answered


def test_two_workers_each_serve_requests(gateway: GatewayProcess) -> None:
    workers = worker_pids(gateway)
    assert len(workers) == 2
    assert gateway.process.pid not in workers  # the supervisor itself serves nothing
    assert workers_answering(gateway, "/api/users/7") == workers


def test_concurrent_requests_all_succeed(gateway: GatewayProcess) -> None:
    with httpx.Client(base_url=gateway.url, timeout=10) as client:

        def fetch(index: int) -> tuple[int, str]:
            response = client.get(f"/api/users/{index}")
            return response.status_code, response.json()["id"]

        with ThreadPoolExecutor(max_workers=16) as pool:
            results = list(pool.map(fetch, range(200)))
    assert results == [(200, str(i)) for i in range(200)]


def test_a_killed_worker_is_replaced(gateway: GatewayProcess) -> None:
    before = worker_pids(gateway)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)

    # The survivor keeps serving while the supervisor starts a replacement.
    with httpx.Client(base_url=gateway.url, timeout=5) as client:
        for _ in range(10):
            assert client.get("/api/health").status_code == 200
    wait_for(
        lambda: len(worker_pids(gateway)) == 2 and victim not in worker_pids(gateway),
        15.0,
        "replacement worker",
    )
    after = worker_pids(gateway)
    assert before - {victim} < after
    assert workers_answering(gateway, "/api/health") == after
