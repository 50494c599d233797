"""With one worker the server process serves itself: its metrics must still reach /metrics."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from helpers.gateway import run_gateway


def test_one_worker_counts_every_request(tmp_path: Path) -> None:
    demo = {"demo": {"targets": ["asgi:onegate.dev.demo:app"]}}
    routes = [{"name": "api", "match": {"prefix": "/api"}, "upstream": "demo"}]
    with run_gateway(tmp_path, demo, routes, workers=1) as gateway, httpx.Client() as client:
        for i in range(3):
            assert client.get(f"{gateway.url}/api/{i}").status_code == 200
        scrape = client.get(f"{gateway.url}/metrics").text
    counts = [
        sample.value
        for family in text_string_to_metric_families(scrape)
        for sample in family.samples
        if sample.name == "onegate_requests_total" and sample.labels["route"] == "api"
    ]
    assert counts == [3.0]
