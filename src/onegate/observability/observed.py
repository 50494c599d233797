"""What observability reads of a request and of an upstream, as structural types.

Observability sits below the gateway, so it names no gateway class: it states what it needs,
and the gateway's :class:`~onegate.gateway.exchange.Exchange` and upstreams satisfy it
(mypy checks that they do where the gateway hands them over).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from onegate.errors import OnegateError
from onegate.http import BreakerState


class ObservedExchange(Protocol):
    """One request as it finishes, or as its span starts."""

    drop_upstream_headers: frozenset[bytes]

    @property
    def request_id(self) -> str: ...
    @property
    def status(self) -> int: ...
    @property
    def bytes_sent(self) -> int: ...
    @property
    def attempts(self) -> int: ...
    @property
    def error(self) -> OnegateError | None: ...
    @property
    def rate_limit_skipped(self) -> bool: ...
    @property
    def client_ip(self) -> str | None: ...
    @property
    def route_name(self) -> str | None: ...
    @property
    def route_template(self) -> str | None: ...
    @property
    def upstream_name(self) -> str | None: ...
    @property
    def target_url(self) -> str | None: ...
    @property
    def principal_id(self) -> str | None: ...

    def add_upstream_header(self, name: bytes, value: bytes) -> None: ...


class ObservedBreaker(Protocol):
    @property
    def state(self) -> BreakerState: ...


class ObservedTarget(Protocol):
    @property
    def url(self) -> str: ...
    @property
    def healthy(self) -> bool: ...
    @property
    def breaker(self) -> ObservedBreaker: ...


class ObservedUpstream(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def targets(self) -> Sequence[ObservedTarget]: ...
