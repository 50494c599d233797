"""Redis for the rate-limit integration tests: the real one, and a relay to it that can be cut.

Policy names carry a random suffix, so the keys of one run never meet another's; they are
deleted when the test is done.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import pytest
import redis

from helpers.redis_relay import Relay
from helpers.redis_server import redis_address


@pytest.fixture
def policy_name(redis_url: str) -> Iterator[str]:
    """A policy name of this test's own; its Redis keys are deleted afterwards."""
    name = f"t{uuid.uuid4().hex[:12]}"
    yield name
    with redis.Redis.from_url(redis_url) as client:
        keys = list(client.scan_iter(match=f"onegate:rl:{name}:*"))
        if keys:
            client.delete(*keys)


@pytest.fixture
def relay(redis_url: str) -> Iterator[Relay]:
    relay = Relay(redis_address(redis_url))
    relay.start()
    yield relay
    relay.stop()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel completes the handshake) and never answers:
    a Redis that hangs, the case a timeout exists for."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()[1]
