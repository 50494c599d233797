"""Header hygiene: what crosses the gateway, in each direction, and what the gateway adds.

Rules (each one a known proxy pitfall):
- hop-by-hop headers, and every header a ``Connection`` header names, stop at the gateway;
  otherwise a client could send ``Connection: X-Forwarded-For`` to make a proxy drop a header
  it relies on. Framing headers are never taken from the client: the gateway sets them.
- ``X-Forwarded-*`` and ``Forwarded`` are rebuilt from the real peer; a client's own values are
  kept only when the peer is a trusted proxy. The client address is the rightmost hop that is
  not a trusted proxy (everything left of it could be forged). The host they name is always
  one that passed :func:`onegate.gateway.host.is_valid_host`, or none at all.
- ``X-Request-ID`` is accepted when it looks like an id, generated otherwise, and returned.
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import os
import re
from collections.abc import Iterable, Sequence

from onegate.gateway.host import is_valid_host

Headers = list[tuple[bytes, bytes]]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)

#: Request headers the gateway always sets itself (never forwarded as the client sent them).
GATEWAY_OWNED_REQUEST = frozenset(
    {
        b"host",
        b"content-length",
        b"expect",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"x-real-ip",
        b"forwarded",
        b"x-request-id",
    }
)

#: Identity headers (``x-onegate-subject`` and friends) are the gateway's alone to set: any
#: copy from a client, or from an upstream's response, is dropped.
IDENTITY_PREFIX = b"x-onegate-"

#: Response headers the gateway sets itself.
GATEWAY_OWNED_RESPONSE = frozenset({b"x-request-id"})

REQUEST_ID = b"x-request-id"
_PROTO = re.compile(r"^[a-z][a-z0-9+.-]{0,15}$")
_REQUEST_ID_SHAPE = re.compile(rb"^[A-Za-z0-9._:@/+=-]{1,128}$")


def connection_named(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Lower-case names listed in every ``Connection`` header."""
    named: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            named.update(token.strip().lower() for token in value.split(b",") if token.strip())
    return frozenset(named)


#: Connection options that name no header, so they never widen what is removed.
_CONNECTION_OPTIONS = frozenset({b"close", b"keep-alive", b"upgrade"})


def filter_headers(headers: Sequence[tuple[bytes, bytes]], drop: frozenset[bytes]) -> Headers:
    """Headers without hop-by-hop ones, ``Connection``-named ones and those in ``drop``."""
    removed = _removed_with(drop)
    kept: Headers = []
    named: frozenset[bytes] | None = None
    for header in headers:
        name = header[0]
        if name in removed:
            if name == b"connection" and header[1].lower() not in _CONNECTION_OPTIONS:
                named = connection_named(headers) - _CONNECTION_OPTIONS
        # Checking the first byte first spares the prefix test to nearly every header.
        elif name[0] != _X or not name.startswith(IDENTITY_PREFIX):
            kept.append(header)
    if named:
        # Framing is decided by the gateway, so a Connection-named Content-Length changes
        # nothing, and must not make us lose track of the body either.
        kept = [h for h in kept if h[0] not in named or h[0] == b"content-length"]
    return kept


_X = ord("x")


@functools.lru_cache(maxsize=64)
def _removed_with(drop: frozenset[bytes]) -> frozenset[bytes]:
    return HOP_BY_HOP | drop  # a handful of distinct sets: the cache stays small


class RequestIds:
    """Request ids: a random prefix and a counter, unique across processes and instances, and
    four times cheaper than 16 fresh random bytes per request. One per process, kept across
    reloads (see :class:`onegate.gateway.process.ProcessState`)."""

    __slots__ = ("_counter", "_prefix")

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count(1)

    def new(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"

    def accept(self, value: bytes | None) -> str:
        """The client's request id when it is safe to propagate, else a fresh one."""
        if value is not None and _REQUEST_ID_SHAPE.match(value):
            return value.decode("ascii")
        return self.new()


class TrustedProxies:
    """Decides which hops of a forwarding chain can be believed."""

    def __init__(self, cidrs: Iterable[str]) -> None:
        self.networks: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(c, strict=False) for c in cidrs
        )

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, address: str) -> bool:
        if not self.networks:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)


def _chain(headers: Sequence[tuple[bytes, bytes]]) -> list[str]:
    hops: list[str] = []
    for name, value in headers:
        if name == b"x-forwarded-for":
            hops += [h.strip() for h in value.decode("latin-1").split(",") if h.strip()]
    return hops


def _first(headers: Sequence[tuple[bytes, bytes]], wanted: bytes) -> bytes | None:
    for name, value in headers:
        if name == wanted:
            return value
    return None


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _forwarded_node(address: str) -> str:
    if ":" in address:  # IPv6 needs brackets and quotes in Forwarded (RFC 7239 section 6)
        return f'"[{address}]"'
    return address if address.replace(".", "").isdigit() else f'"{address}"'


class ForwardedInfo:
    """Who the client is and what the upstream should be told about the hop chain."""

    __slots__ = ("chain", "client_ip", "host", "proto")

    def __init__(self, client_ip: str, chain: list[str], proto: str, host: str) -> None:
        self.client_ip = client_ip
        self.chain = chain
        self.proto = proto
        self.host = host

    @classmethod
    def from_request(
        cls,
        peer: str,
        scheme: str,
        headers: Sequence[tuple[bytes, bytes]],
        trusted: TrustedProxies,
    ) -> ForwardedInfo:
        # Only a validated host is ever passed on (an invalid Host is refused by the guard
        # stage anyway): a raw one could carry a path, a list or extra Forwarded parameters.
        host_header = _first(headers, b"host")
        host = host_header.decode("ascii") if host_header and is_valid_host(host_header) else ""
        if not trusted.networks or not trusted.trusts(peer):
            return cls(peer, [peer], scheme, host)
        # Hops before the peer come from a client: anything but an address is "unknown", so a
        # forged hop can't smuggle extra parameters into Forwarded.
        chain = [hop if _is_ip(hop) else "unknown" for hop in _chain(headers)]
        chain.append(peer)
        client = peer
        for hop in reversed(chain):
            client = hop
            if not trusted.trusts(hop):
                break
        proto_header = _first(headers, b"x-forwarded-proto")
        host_fwd = _first(headers, b"x-forwarded-host")
        proto = scheme
        if proto_header:
            first = proto_header.decode("latin-1").split(",")[0].strip().lower()
            proto = first if _PROTO.match(first) else scheme
        if host_fwd:
            # The first entry is what the client asked the first proxy for; a value that is
            # not a valid host is ignored, and the request's own Host is passed on instead.
            claimed = host_fwd.split(b",", 1)[0].strip()
            if is_valid_host(claimed):
                host = claimed.decode("ascii")
        return cls(client, chain, proto, host)

    def headers(self) -> Headers:
        chain = self.chain
        if len(chain) == 1:
            forwarded = "for=" + _forwarded_node(chain[0])
        else:
            forwarded = ", ".join(["for=" + _forwarded_node(hop) for hop in chain])
        headers = [
            (b"x-forwarded-for", ", ".join(self.chain).encode("latin-1")),
            (b"x-forwarded-proto", self.proto.encode("latin-1")),
        ]
        if self.host:
            # A quoted-string must not let the client's Host close the quotes early.
            host = self.host.replace("\\", "").replace('"', "")
            forwarded += f';host="{host}";proto={self.proto}'
            headers.append((b"x-forwarded-host", self.host.encode("latin-1")))
        else:
            # No host (HTTP/1.0 without Host): no X-Forwarded-Host at all, not an empty one.
            forwarded += ";proto=" + self.proto
        headers.append((b"forwarded", forwarded.encode("latin-1")))
        return headers
