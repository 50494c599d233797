"""HTTP facts every layer shares: method sets, path normalisation, dates, breaker states.

This is the base layer: it imports nothing from onegate but :mod:`onegate.errors`, so the
infrastructure packages (observability, rate limits, auth) and the gateway agree on what a
method, a normalised path or a breaker state is without importing one another.
"""

from __future__ import annotations

import enum
import functools
import time
from email.utils import formatdate

from onegate.errors import BadRequest

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
KNOWN_METHODS = frozenset(IDEMPOTENT_METHODS | {"POST", "PATCH", "CONNECT"})


class BreakerState(enum.Enum):
    """A circuit breaker's state, as the gateway keeps it and the metrics report it."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


def http_date() -> bytes:
    """The current time as an HTTP ``Date`` value (IMF-fixdate), formatted once per second."""
    return _date_of(int(time.time()))


@functools.lru_cache(maxsize=2)
def _date_of(second: int) -> bytes:
    return formatdate(second, usegmt=True).encode("ascii")


# RFC 3986 unreserved characters: escaping them changes nothing, so they are always decoded.
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# Everything a path may carry unescaped (pchar, minus '%', plus '/').
_PLAIN = bytes(sorted(_UNRESERVED | frozenset(b"!$&'()*+,;=:@/")))
_PLAIN_SET = frozenset(_PLAIN)
_HEX = b"0123456789abcdefABCDEF"
_SLASH, _BACKSLASH = 0x2F, 0x5C


def normalize_path(raw_path: bytes) -> str:
    """Normalise an ASGI ``raw_path`` (percent-encoded, no query) for matching and forwarding.

    Unreserved characters are decoded; an encoded or literal ``\\`` and an encoded ``/`` become
    separators; runs of ``/`` collapse; dot-segments are removed (RFC 3986 5.2.4) without ever
    climbing above the root; a trailing slash is kept. Other escapes are kept with upper-case
    hex, and characters a path may not carry raw (space, non-ASCII bytes...) are escaped.
    Control characters, raw or encoded, and malformed escapes raise :class:`BadRequest`.
    """
    if not raw_path.startswith(b"/"):
        raise BadRequest("The request path must start with '/'")
    if not raw_path.translate(None, _PLAIN) and b"//" not in raw_path and b"/." not in raw_path:
        # The common case: nothing to decode, escape, collapse or remove.
        return raw_path.decode("ascii")
    return _remove_dot_segments(_decode(raw_path))


def _decode(raw: bytes) -> str:
    chunks = raw.split(b"%")
    out = [_plain(chunks[0])]
    for chunk in chunks[1:]:
        digits = chunk[:2]
        if len(digits) < 2 or digits.translate(None, _HEX):
            raise BadRequest("Malformed percent-escape in the request path")
        byte = int(digits, 16)
        if byte < 0x20 or byte == 0x7F:
            raise BadRequest("Control character in the request path")
        if byte in (_SLASH, _BACKSLASH):
            # An encoded separator is a separator in disguise: upstreams disagree on decoding it.
            out.append("/")
        elif byte in _UNRESERVED:
            out.append(chr(byte))
        else:
            out.append("%" + digits.decode("ascii").upper())
        out.append(_plain(chunk[2:]))
    return "".join(out)


def _plain(chunk: bytes) -> str:
    """Unescaped text between escapes: check it, turn ``\\`` into ``/``, escape the rest."""
    if not chunk.translate(None, _PLAIN):
        return chunk.decode("ascii")
    out = []
    for byte in chunk:
        if byte in _PLAIN_SET:
            out.append(chr(byte))
        elif byte == _BACKSLASH:
            out.append("/")
        elif byte < 0x20 or byte == 0x7F:
            raise BadRequest("Control character in the request path")
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)


def _remove_dot_segments(path: str) -> str:
    segments = path.split("/")[1:]
    kept: list[str] = []
    for segment in segments:
        if segment.startswith((".;", "..;")):
            # Servlet containers read "..;x" as "..": refuse rather than disagree with them.
            raise BadRequest("dot-segments with path parameters are not allowed")
        if segment == "..":
            if kept:  # '..' at the root stays at the root
                kept.pop()
        elif segment and segment != ".":  # empty segments are collapsed slashes
            kept.append(segment)
    normal = "/" + "/".join(kept)
    # "/a/b/", "/a/b/." and "/a/b/c/.." all name a directory: keep the trailing slash.
    if kept and segments[-1] in ("", ".", ".."):
        normal += "/"
    return normal
