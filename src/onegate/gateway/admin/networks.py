"""A set of IP networks, asked whether an address belongs to it."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable


class Networks:
    def __init__(self, cidrs: Iterable[str]) -> None:
        self.networks = tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, str):
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False  # a unix socket path, "unknown"...: never trusted
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d.
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.networks)
