"""What the gateway accepts as a ``Host`` (and a trusted proxy's ``X-Forwarded-Host``).

RFC 9110 section 7.2: ``Host = uri-host [ ":" port ]``. RFC 3986's reg-name also allows
sub-delimiters (``!$&'()*+,;=``) and percent-encoding, which no DNS name needs and which are
exactly what lets a Host smuggle extra parameters into ``Forwarded`` (``a, for=6.6.6.6``) or
a path into a URL (``a/b``). So the gateway is stricter than the ABNF and accepts only:

- a DNS-style name: labels of letters, digits, ``-`` and ``_`` (underscores appear in internal
  names such as Docker services), 1 to 63 bytes each, dot-separated, an optional trailing dot,
  at most 253 bytes before it;
- an IPv4 address (a name made of digit labels, so the rule above covers it);
- an IPv6 literal in brackets, checked by :mod:`ipaddress` (no zone id);
- then optionally ``:`` and a port from 1 to 65535 (digits only; an empty port is refused).

Nothing else: no spaces, no userinfo ``@``, no ``/``, no commas, no empty value.
"""

from __future__ import annotations

import functools
import ipaddress
import re

_NAME = re.compile(rb"(?:[A-Za-z0-9_-]{1,63}\.)*[A-Za-z0-9_-]{1,63}\.?\Z")
_PORT = re.compile(rb"[0-9]{1,5}\Z")
_MAX_NAME = 253


# Real traffic repeats a handful of Host values, and the check runs for every request (the
# guard and the forwarding headers both ask), so answers are kept, in a bounded LRU cache
# that clients sending random hosts can churn but never grow.
@functools.lru_cache(maxsize=256)
def is_valid_host(value: bytes) -> bool:
    """True if ``value`` is ``uri-host [":" port]`` in the strict form described above."""
    return _check(value)


def _check(value: bytes) -> bool:
    if value.startswith(b"["):
        literal, bracket, rest = value[1:].partition(b"]")
        if not bracket or not _valid_ipv6(literal):
            return False
        if not rest:
            return True
        return rest.startswith(b":") and _valid_port(rest[1:])
    name, colon, port = value.partition(b":")
    if colon and not _valid_port(port):
        return False
    bare = name[:-1] if name.endswith(b".") else name
    return 0 < len(bare) <= _MAX_NAME and _NAME.match(name) is not None


def _valid_ipv6(literal: bytes) -> bool:
    try:
        ipaddress.IPv6Address(literal.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return False
    return b"%" not in literal  # a zone id names an interface of the client's machine


def _valid_port(port: bytes) -> bool:
    return _PORT.match(port) is not None and 0 < int(port) <= 65535
