"""Finding the credential a request carries: a bearer token or an API key header.

``Authorization: Bearer ...`` comes first; a bearer value that looks like an onegate API key
(``og_...``) is treated as one. Otherwise the first configured API key header present is used.
A credential header sent twice is refused: the gateway and a backend might each believe a
different copy.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from onegate.auth.apikey import PREFIX
from onegate.auth.rejection import Rejected

AUTHORIZATION = b"authorization"
MAX_CREDENTIAL_BYTES = 16 * 1024
_API_KEY_PREFIX = PREFIX.encode("ascii")


@dataclass(slots=True)
class Credential:
    kind: Literal["jwt", "api_key"]
    raw: bytes
    header: bytes
    """The (lower-case) header that carried it."""
    digest: bytes
    """Cache key: the header and a hash of the value, never the credential itself."""

    @property
    def value(self) -> str:
        """The credential as text; only verification needs it, so a cache hit never decodes."""
        try:
            return self.raw.decode("ascii")
        except UnicodeDecodeError:
            raise Rejected("malformed", "credential is not ASCII") from None


def find_credential(
    headers: Iterable[tuple[bytes, bytes]], key_headers: frozenset[bytes]
) -> Credential | None:
    authorization: bytes | None = None
    api_key: tuple[bytes, bytes] | None = None
    for name, value in headers:
        if name == AUTHORIZATION:
            if authorization is not None:
                raise Rejected(
                    "ambiguous", "more than one Authorization header", error="invalid_request"
                )
            authorization = value
        elif name in key_headers:
            if api_key is not None:
                raise Rejected("ambiguous", "more than one API key header", error="invalid_request")
            api_key = (name, value)
    if authorization is not None:
        scheme, _, token = authorization.strip().partition(b" ")
        token = token.strip()
        if scheme.lower() == b"bearer" and token:
            kind: Literal["jwt", "api_key"] = (
                "api_key" if token.startswith(_API_KEY_PREFIX) else "jwt"
            )
            return _credential(kind, AUTHORIZATION, token)
    if api_key is not None and api_key[1].strip():
        return _credential("api_key", api_key[0], api_key[1].strip())
    return None


def _credential(kind: Literal["jwt", "api_key"], header: bytes, value: bytes) -> Credential:
    if len(value) > MAX_CREDENTIAL_BYTES:
        raise Rejected("malformed", "credential is too long")
    # BLAKE2b rather than SHA-256: twice as fast without SHA CPU instructions, and this runs
    # on every request. 128 bits are plenty for a cache key nobody can choose collisions for.
    # The header is part of the key: what to drop upstream depends on where the value came from.
    digest = header + hashlib.blake2b(value, digest_size=16).digest()
    return Credential(kind, value, header, digest)


def carries_api_key(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether ``Authorization`` holds an onegate API key (``Bearer og_...``)."""
    for name, value in headers:
        if name == AUTHORIZATION:
            scheme, _, token = value.strip().partition(b" ")
            if scheme.lower() == b"bearer" and token.strip().startswith(_API_KEY_PREFIX):
                return True
    return False
