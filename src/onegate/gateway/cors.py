"""Cross-origin resource sharing, decided at the edge.

:class:`CorsPolicy` is what a route's ``cors`` section says. :class:`CorsRules` is the same
policy compiled once per configuration into byte sets and ready-made header values, so the
``cors`` stage answers a preflight with a few set lookups and never formats anything that
does not depend on the request.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from onegate.errors import OnegateError
from onegate.model import Model

Headers = list[tuple[bytes, bytes]]

ANY = "*"
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 token: a method or header name
_ORIGIN = re.compile(r"^(https?)://([a-z0-9.-]+|\[[0-9a-f:.]+\])(?::(\d{1,5}))?$")
_DEFAULT_PORTS = {"http": "80", "https": "443"}


class CorsPolicy(Model):
    allow_origins: list[str] = Field(min_length=1)
    """Exact origins (``https://app.example.com``) or ``*`` (never with credentials)."""
    allow_methods: list[str] = Field(
        default_factory=lambda: ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    )
    allow_headers: list[str] = Field(default_factory=lambda: ["authorization", "content-type"])
    """Request headers a page may send; ``*`` alone allows any (each is echoed by name)."""
    expose_headers: list[str] = Field(default_factory=lambda: ["x-request-id"])
    allow_credentials: bool = False
    max_age_seconds: Annotated[int, Field(ge=0, le=86400)] = 600

    @field_validator("allow_origins")
    @classmethod
    def _valid_origins(cls, origins: list[str]) -> list[str]:
        if ANY in origins:
            if len(origins) > 1:
                raise ValueError("'*' allows every origin: list it alone")
            return origins
        return [_normal_origin(origin) for origin in origins]

    @field_validator("allow_methods")
    @classmethod
    def _valid_methods(cls, methods: list[str]) -> list[str]:
        if not methods:
            raise ValueError("list at least one method")
        for method in methods:
            if method == ANY or not _TOKEN.match(method):
                raise ValueError(f"{method!r}: list methods by name")
        return [m.upper() for m in methods]

    @field_validator("allow_headers")
    @classmethod
    def _valid_allow_headers(cls, names: list[str]) -> list[str]:
        if ANY in names and len(names) > 1:
            raise ValueError("'*' allows every header: list it alone")
        return _header_names(names, wildcard=True)

    @field_validator("expose_headers")
    @classmethod
    def _valid_expose_headers(cls, names: list[str]) -> list[str]:
        return _header_names(names, wildcard=False)

    @model_validator(mode="after")
    def _no_credentials_for_everyone(self) -> CorsPolicy:
        # Browsers refuse credentials with "Access-Control-Allow-Origin: *", and echoing any
        # origin instead would let every site make authenticated calls as the user.
        if self.allow_credentials and self.allow_origins == [ANY]:
            raise ValueError(
                "allow_origins ['*'] cannot be combined with allow_credentials: list the origins"
            )
        return self


def _normal_origin(origin: str) -> str:
    """An origin as browsers serialise it: lower-case, without a default port."""
    lowered = origin.strip().lower()
    found = _ORIGIN.match(lowered)
    if found is None:
        raise ValueError(
            f"{origin!r} is not an origin: use scheme://host[:port], without path or '/'"
        )
    scheme, host, port = found.groups()
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def _header_names(names: list[str], *, wildcard: bool) -> list[str]:
    for name in names:
        if not (_TOKEN.match(name) and (name != ANY or wildcard)):
            raise ValueError(f"{name!r} is not a header name")
    return [n.lower() for n in names]


class CorsRejected(OnegateError):
    """A preflight asked for something the route's policy does not allow."""

    status = 403
    slug = "cors-rejected"
    title = "Cross-origin request not allowed"


# Precomputed once: the headers every preflight answer and every CORS response varies on.
VARY_ORIGIN: tuple[bytes, bytes] = (b"vary", b"Origin")
VARY_PREFLIGHT: tuple[bytes, bytes] = (
    b"vary",
    b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
)
ALLOW_ORIGIN = b"access-control-allow-origin"
ALLOW_HEADERS = b"access-control-allow-headers"


class CorsRules:
    """One route's :class:`CorsPolicy`, compiled for the hot path (all values are bytes)."""

    __slots__ = ("any_header", "any_origin", "headers", "methods", "origins", "preflight", "simple")

    def __init__(self, policy: CorsPolicy) -> None:
        self.any_origin = policy.allow_origins == [ANY]
        self.origins = frozenset(o.encode("ascii") for o in policy.allow_origins)
        self.methods = frozenset(m.encode("ascii") for m in policy.allow_methods)
        self.any_header = policy.allow_headers == [ANY]
        self.headers = frozenset(h.encode("ascii") for h in policy.allow_headers)
        credentials = [(b"access-control-allow-credentials", b"true")]
        no_credentials: Headers = []
        with_credentials = credentials if policy.allow_credentials else no_credentials
        #: Added to a preflight answer after Allow-Origin (and Allow-Headers, when asked).
        self.preflight: Headers = [
            (b"access-control-allow-methods", ", ".join(policy.allow_methods).encode("ascii")),
            (b"access-control-max-age", str(policy.max_age_seconds).encode("ascii")),
            *with_credentials,
            VARY_PREFLIGHT,
        ]
        #: Added to any other response after Allow-Origin, for an allowed origin.
        self.simple: Headers = [*with_credentials]
        if policy.expose_headers:
            exposed = ", ".join(policy.expose_headers).encode("ascii")
            self.simple.append((b"access-control-expose-headers", exposed))

    def allow_origin(self, origin: bytes) -> bytes | None:
        """The ``Access-Control-Allow-Origin`` value for ``origin``; None if it is not allowed."""
        if self.any_origin:
            return b"*"
        # Browsers send origins lower-case already; lower() guards against hand-made clients.
        if origin in self.origins or origin.lower() in self.origins:
            return origin
        return None

    def preflight_headers(self, origin: bytes, method: bytes, requested: bytes | None) -> Headers:
        """The headers of the answer to a preflight; raises :class:`CorsRejected` if refused."""
        allowed_origin = self.allow_origin(origin)
        if allowed_origin is None:
            raise CorsRejected("This origin is not allowed to call this route")
        if method not in self.methods:
            raise CorsRejected(f"Method {method.decode('latin-1')} is not allowed cross-origin")
        headers: Headers = [(ALLOW_ORIGIN, allowed_origin)]
        if requested:
            names = [n.strip().lower() for n in requested.split(b",")]
            names = [n for n in names if n]
            if not self.any_header:
                refused = [n for n in names if n not in self.headers]
                if refused:
                    listed = ", ".join(n.decode("latin-1") for n in refused)
                    raise CorsRejected(f"Header(s) not allowed cross-origin: {listed}")
            if names:
                headers.append((ALLOW_HEADERS, b", ".join(names)))
        headers += self.preflight
        return headers
