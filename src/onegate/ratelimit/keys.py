"""Which bucket a request counts against, for each kind of policy key.

Keys carry a short prefix naming what they are, so that a ``principal`` policy falling back
to the client address can never share a bucket with a principal whose id looks like one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from onegate.auth.principal import Principal
from onegate.ratelimit.config import KeyKind


class Limited(Protocol):
    """What a key function reads of a request (the gateway's exchange satisfies it)."""

    @property
    def principal(self) -> Principal | None: ...
    @property
    def client_ip(self) -> str | None: ...
    @property
    def route_name(self) -> str | None: ...


#: None: the policy does not apply to this request.
KeyOf = Callable[[Limited], "str | None"]


def principal_key(exchange: Limited) -> str | None:
    """The authenticated caller; anonymous requests are counted by address instead."""
    principal = exchange.principal
    if principal is not None:
        return "p:" + principal.id
    return client_ip_key(exchange)


def api_key_key(exchange: Limited) -> str | None:
    """The API key (its public id); requests not made with an API key skip the policy."""
    principal = exchange.principal
    if principal is None or principal.method != "api_key" or principal.key_id is None:
        return None
    return "k:" + principal.key_id


def client_ip_key(exchange: Limited) -> str | None:
    """The client address: the rightmost hop not added by a trusted proxy."""
    ip = exchange.client_ip
    return None if ip is None else "ip:" + ip


def route_key(exchange: Limited) -> str | None:
    """Every caller of the route together."""
    name = exchange.route_name
    return None if name is None else "r:" + name


KEY_FUNCTIONS: dict[KeyKind, KeyOf] = {
    "principal": principal_key,
    "api_key": api_key_key,
    "client_ip": client_ip_key,
    "route": route_key,
}
