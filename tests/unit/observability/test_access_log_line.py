"""Access-log lines: valid JSON whatever the values, the documented keys, no query string."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import pytest

from helpers.accesslog import KEYS, RFC3339_UTC
from onegate.auth.principal import Principal
from onegate.errors import UpstreamConnectError
from onegate.gateway.config import Match, RouteConfig, UpstreamConfig
from onegate.gateway.exchange import Exchange
from onegate.gateway.headers import ForwardedInfo
from onegate.gateway.routing import Route, RouteMatch
from onegate.gateway.upstreams import Upstream
from onegate.observability.accesslog import AccessLog, Clock, request_path
from onegate.observability.linewriter import LineWriter


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read, write = os.pipe()
    yield read, write
    os.close(read)
    os.close(write)


def routed_exchange() -> Exchange:
    upstream = Upstream("main", UpstreamConfig(targets=["http://127.0.0.1:3000"]))
    config = RouteConfig(name="users", match=Match(prefix="/api"), upstream="main")
    exchange = Exchange("abc-123")
    exchange.match = RouteMatch(Route(config, 0), {}, "/api/users/1")
    exchange.upstream = upstream
    exchange.target = upstream.targets[0]
    exchange.forwarded = ForwardedInfo("203.0.113.7", ["203.0.113.7"], "http", "example.com")
    exchange.status = 200
    exchange.bytes_sent = 170
    exchange.attempts = 1
    return exchange


def test_a_line_has_every_key_in_order(pipe: tuple[int, int]) -> None:
    log = AccessLog(LineWriter(pipe[1]))
    exchange = routed_exchange()
    exchange.principal = Principal(subject="user-42", issuer="idp", method="jwt")
    line = log.line(exchange, "GET", "/api/users/1", 0.0123456)
    record = json.loads(line)
    assert list(record) == KEYS
    assert RFC3339_UTC.match(record.pop("ts"))
    assert record == {
        "request_id": "abc-123",
        "method": "GET",
        "path": "/api/users/1",
        "route": "users",
        "upstream": "main",
        "target": "http://127.0.0.1:3000",
        "status": 200,
        "duration_ms": 12.346,
        "bytes": 170,
        "principal": "idp:user-42",
        "client_ip": "203.0.113.7",
        "attempts": 1,
        "error": None,
    }


def test_unrouted_failed_request(pipe: tuple[int, int]) -> None:
    exchange = Exchange("r1")
    exchange.status = 502
    exchange.error = UpstreamConnectError("refused")
    record = json.loads(AccessLog(LineWriter(pipe[1])).line(exchange, "GET", "/x", 0.0))
    assert record["route"] is None and record["upstream"] is None and record["target"] is None
    assert record["principal"] is None and record["client_ip"] is None
    assert record["error"] == "upstream-unreachable"
    assert record["duration_ms"] == 0


HOSTILE = ['"}\n{"status":200', "back\\slash", "tab\tand\x00nul", "caf\u00e9 \u2603 \U0001f600"]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_stay_inside_their_field(pipe: tuple[int, int], value: str) -> None:
    exchange = routed_exchange()
    exchange.principal = Principal(subject=value, issuer="idp", method="jwt")
    exchange.forwarded = ForwardedInfo(value, [value], "http", "")
    line = AccessLog(LineWriter(pipe[1])).line(exchange, value, value, 0.001)
    assert "\n" not in line and line.isascii()
    record = json.loads(line)
    assert record["path"] == value and record["method"] == value
    assert record["principal"] == f"idp:{value}" and record["client_ip"] == value


def test_record_queues_lines_until_flushed(pipe: tuple[int, int]) -> None:
    read, write = pipe
    writer = LineWriter(write)
    log = AccessLog(writer)
    log.record(routed_exchange(), "GET", "/api/users/1", 0.001)
    log.record(routed_exchange(), "POST", "/api/users", 0.002)
    os.set_blocking(read, False)
    with pytest.raises(BlockingIOError):
        os.read(read, 65536)
    writer.flush()
    lines = os.read(read, 65536).decode().splitlines()
    assert [json.loads(line)["method"] for line in lines] == ["GET", "POST"]


@pytest.mark.parametrize(
    ("raw_path", "path"),
    [
        (b"/api/users/42", "/api/users/42"),
        (b"/api/./x/../users//42", "/api/users/42"),
        (b"/api/%7Euser", "/api/~user"),
        (b"/bad/%zz", "/bad/%zz"),  # refused as malformed: logged as sent
    ],
)
def test_request_path_is_normalised_and_never_has_the_query(raw_path: bytes, path: str) -> None:
    scope = {"path": "ignored", "raw_path": raw_path, "query_string": b"api_key=zzz"}
    assert request_path(scope) == path


def test_clock_formats_utc_with_milliseconds() -> None:
    clock = Clock()
    before = time.time()
    stamp = clock.now()
    assert RFC3339_UTC.match(stamp)
    parsed = time.mktime(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    assert abs(parsed + int(stamp[20:23]) / 1000 - before) < 2
