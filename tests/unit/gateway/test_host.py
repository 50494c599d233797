"""The Host validator: what the gateway routes on and passes on in X-Forwarded-Host/Forwarded.

Each refused value below breaks exactly one rule of :mod:`onegate.gateway.host`, next to an
accepted neighbour that differs only there, so flipping any single condition fails a case.
"""

from __future__ import annotations

import pytest

from onegate.gateway.host import is_valid_host

ACCEPTED = [
    b"a",
    b"example.com",
    b"EXAMPLE.com",
    b"api.example.com.",  # a fully qualified name's trailing dot
    b"my_service",  # Docker and other internal names
    b"x-1.example",
    b"10.0.0.1",
    b"example.com:8080",
    b"example.com:1",
    b"example.com:65535",
    b"[::1]",
    b"[2001:db8::1]:443",
    b"a" * 63 + b".com",  # the longest label
    b".".join([b"a" * 63] * 3) + b"." + b"a" * 61,  # 253 bytes, the longest name
]

REFUSED = [
    b"",  # empty
    b"a/b",  # a path
    b"a, for=6.6.6.6",  # a list, and Forwarded parameters
    b"a,b",
    b"a b",  # a space inside
    b" a",
    b"a ",
    b"a\tb",
    b"user@a",  # userinfo
    b"a;b",
    b'a"b',
    b"a%2fb",  # percent-encoding
    b"*.example.com",
    b"a..b",  # an empty label
    b".a",
    b"a" * 64 + b".com",  # a label over 63 bytes
    b".".join([b"a" * 63] * 3) + b"." + b"a" * 62,  # 254 bytes
    b"example.com:",  # empty port
    b"example.com:0",
    b"example.com:65536",
    b"example.com:123456",
    b"example.com:8o",
    b"example.com:-1",
    b"example.com:+80",
    b"example.com:80:80",
    b"[::1",  # unclosed bracket
    b"[::1]x",  # junk after the literal
    b"[::1]:",  # empty port after a literal
    b"[::1]:0",
    b"[not-an-address]",
    b"[fe80::1%25eth0]",  # a zone id
    b"[1.2.3.4]",  # IPv4 is not bracketed
    b"::1",  # IPv6 without brackets
    "bücher.example".encode(),  # raw UTF-8 (IDNs travel as punycode)
    b"a\x00b",
]


@pytest.mark.parametrize("value", ACCEPTED)
def test_a_valid_host_is_accepted(value: bytes) -> None:
    assert is_valid_host(value)


@pytest.mark.parametrize("value", REFUSED)
def test_an_invalid_host_is_refused(value: bytes) -> None:
    assert not is_valid_host(value)


def test_answers_do_not_change_when_asked_again() -> None:
    """The cache of valid hosts must not turn a refusal into an acceptance or back."""
    for _ in range(2):
        assert all(is_valid_host(v) for v in ACCEPTED)
        assert not any(is_valid_host(v) for v in REFUSED)


def test_many_distinct_hosts_keep_being_checked() -> None:
    # Past the cache's bound, values are still checked, one by one.
    assert all(is_valid_host(b"h%d.example" % i) for i in range(1000))
    assert not is_valid_host(b"h1000.example/x")
