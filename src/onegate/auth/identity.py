"""The identity headers an upstream receives, encoded once per verified credential.

Values come from tokens and key records, i.e. partly from the outside world, so they are
percent-encoded (as UTF-8) wherever a byte is not printable ASCII, and ``%`` itself: a subject
holding ``\\r\\n`` can never split a header, and an upstream can always decode what it gets.
Clients can never supply these headers themselves: every ``x-onegate-*`` header a client sends
is dropped before the gateway adds its own.
"""

from __future__ import annotations

from urllib.parse import quote

from onegate.auth.principal import Principal

SUBJECT = b"x-onegate-subject"
ISSUER = b"x-onegate-issuer"
AUTH_METHOD = b"x-onegate-auth-method"
SCOPES = b"x-onegate-scopes"
ROLES = b"x-onegate-roles"
TENANT = b"x-onegate-tenant"
KEY_ID = b"x-onegate-key-id"

# Printable ASCII (space included) stays as it is, except '%', the escape character.
_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def encode_value(value: str) -> bytes:
    return quote(value, safe=_SAFE).encode("ascii")


def identity_headers(principal: Principal) -> tuple[tuple[bytes, bytes], ...]:
    headers = [
        (SUBJECT, encode_value(principal.subject)),
        (ISSUER, encode_value(principal.issuer)),
        (AUTH_METHOD, principal.method.encode("ascii")),
        (SCOPES, encode_value(" ".join(sorted(principal.scopes)))),
    ]
    if principal.roles:
        headers.append((ROLES, encode_value(" ".join(sorted(principal.roles)))))
    if principal.tenant is not None:
        headers.append((TENANT, encode_value(principal.tenant)))
    if principal.method == "api_key" and principal.key_id is not None:
        headers.append((KEY_ID, encode_value(principal.key_id)))
    return tuple(headers)
