"""One error hierarchy for everything onegate reports.

Every error the gateway produces itself derives from :class:`OnegateError`. Errors that reach a
client become RFC 9457 problem documents (``application/problem+json``); errors that reach the
CLI become one line naming the file, line and key. Mapping happens once, at the boundary (the
``errors`` stage and the CLI), never at the place where the error is raised.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, ClassVar

PROBLEM_CONTENT_TYPE = b"application/problem+json"
PROBLEM_TYPE_BASE = "https://onegate.dev/problems/"


class OnegateError(Exception):
    """Base class of every error onegate raises on purpose."""

    status: ClassVar[int] = 500
    slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal gateway error"

    def __init__(self, detail: str | None = None, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.headers = dict(headers or {})

    def problem(self, request_id: str | None = None, instance: str | None = None) -> dict[str, Any]:
        """The RFC 9457 problem document describing this error."""
        document: dict[str, Any] = {
            "type": PROBLEM_TYPE_BASE + self.slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance is not None:
            document["instance"] = instance
        if request_id is not None:
            document["request_id"] = request_id
        return document


# --- configuration -------------------------------------------------------------------------


class ConfigError(OnegateError):
    """A configuration file or environment override is invalid.

    ``location`` is ``file:line`` when it is known, so the CLI can print one line that points
    at the offending key.
    """

    slug = "config-error"
    title = "Invalid configuration"

    def __init__(
        self,
        detail: str,
        *,
        location: str | None = None,
        key: str | None = None,
        also: Sequence[ConfigError] = (),
    ) -> None:
        super().__init__(detail)
        self.location = location
        self.key = key
        self.also = tuple(also)
        """Further problems found in the same pass, so an operator fixes them all at once."""

    @property
    def problems(self) -> list[ConfigError]:
        """This problem and every other one found with it, in file order."""
        return [self, *self.also]

    def line(self) -> str:
        """This problem alone, as ``file:line: key: message``."""
        where = f"{self.location}: " if self.location else ""
        key = f"{self.key}: " if self.key else ""
        return f"{where}{key}{self.detail}"

    def __str__(self) -> str:
        # One line per problem: a single problem stays one line.
        return "\n".join(problem.line() for problem in self.problems)


# --- client errors ---------------------------------------------------------------------------


class BadRequest(OnegateError):
    status = 400
    slug = "bad-request"
    title = "Bad request"


class AmbiguousFraming(BadRequest):
    """Conflicting message framing, the raw material of request smuggling."""

    slug = "ambiguous-framing"
    title = "Ambiguous HTTP framing"


class InvalidHost(BadRequest):
    """A missing, repeated or malformed ``Host`` (see :mod:`onegate.gateway.host`)."""

    slug = "invalid-host"
    title = "Invalid Host header"


class MalformedRequest(BadRequest):
    """Bytes that are not an HTTP/1.x request (the parser stopped); the connection closes."""

    slug = "malformed-request"
    title = "Malformed HTTP request"


class RequestTimeout(OnegateError):
    """The client took too long to send its request head or the next piece of its body."""

    status = 408
    slug = "request-timeout"
    title = "Request timed out"


class RequestTargetTooLong(OnegateError):
    """The request line (the URL) crossed ``server.max_request_line_bytes`` while arriving."""

    status = 414
    slug = "uri-too-long"
    title = "Request target too long"


class HttpVersionNotSupported(OnegateError):
    """Anything but HTTP/1.0 and HTTP/1.1 on the wire (HTTP/2 and 3 need their own framing)."""

    status = 505
    slug = "http-version-not-supported"
    title = "HTTP version not supported"


class RouteNotFound(OnegateError):
    status = 404
    slug = "not-found"
    title = "No route matches this request"


class MethodNotAllowed(OnegateError):
    status = 405
    slug = "method-not-allowed"
    title = "Method not allowed on this route"

    def __init__(self, allowed: list[str]) -> None:
        super().__init__(
            f"Allowed methods: {', '.join(allowed)}", headers={"allow": ", ".join(allowed)}
        )
        self.allowed = allowed


class PayloadTooLarge(OnegateError):
    status = 413
    slug = "payload-too-large"
    title = "Request body too large"


class HeadersTooLarge(OnegateError):
    status = 431
    slug = "headers-too-large"
    title = "Request header fields too large"


class ClientDisconnected(OnegateError):
    """The client went away; there is nobody left to answer (logged as 499, nginx's code)."""

    status = 499
    slug = "client-closed-request"
    title = "Client closed the request"


# --- upstream errors -------------------------------------------------------------------------


class UpstreamError(OnegateError):
    """Something went wrong between the gateway and an upstream."""

    status = 502
    slug = "bad-gateway"
    title = "Bad gateway"

    #: True when the request provably never reached the upstream, so any method may be retried.
    never_sent: bool = False


class UpstreamConnectError(UpstreamError):
    """The connection was refused or could not be opened: the request never left."""

    slug = "upstream-unreachable"
    title = "Upstream refused the connection"
    never_sent = True


class UpstreamTlsError(UpstreamError):
    """TLS with the upstream failed: its certificate was not accepted, or the handshake was
    refused. ``reason`` is one of :data:`TLS_FAILURE_REASONS` (a bounded metric label).

    ``never_sent`` is True when the handshake failed, so nothing of the request could have
    been read by the upstream; an error on an established TLS session is not that."""

    slug = "upstream-tls-error"
    title = "TLS with the upstream failed"

    def __init__(self, detail: str, *, reason: str, never_sent: bool = True) -> None:
        super().__init__(detail)
        self.reason = reason
        self.never_sent = never_sent


#: Why TLS with an upstream failed, as counted in ``onegate_upstream_tls_failures_total``.
TLS_FAILURE_REASONS = frozenset(
    {
        "expired",
        "not-yet-valid",
        "unknown-ca",
        "name-mismatch",
        "revoked",
        "invalid-certificate",
        "client-certificate-refused",
        "handshake",
    }
)


class UpstreamResetError(UpstreamError):
    """The upstream closed or reset the connection before a complete response."""

    slug = "upstream-reset"
    title = "Upstream reset the connection"


class UpstreamProtocolError(UpstreamError):
    slug = "upstream-protocol-error"
    title = "Upstream sent an invalid HTTP response"


class UpstreamHeadersTooLarge(UpstreamProtocolError):
    """The upstream's response head (status line and header fields) exceeded the upstream's
    ``max_response_header_bytes``; the connection is closed before more of it is read."""

    slug = "upstream-headers-too-large"
    title = "Upstream response head too large"


class UpstreamTimeout(UpstreamError):
    status = 504
    slug = "upstream-timeout"
    title = "Upstream timed out"


class UpstreamConnectTimeout(UpstreamTimeout):
    """Connecting took too long; nothing was sent."""

    slug = "upstream-connect-timeout"
    title = "Timed out connecting to the upstream"
    never_sent = True


class ServiceUnavailable(OnegateError):
    """No target can take the request right now; ``retry_after`` tells the client when to retry."""

    status = 503
    slug = "service-unavailable"
    title = "Service unavailable"

    def __init__(self, detail: str, *, retry_after: int = 1) -> None:
        super().__init__(detail, headers={"retry-after": str(max(1, retry_after))})
        self.retry_after = max(1, retry_after)


class CircuitOpen(ServiceUnavailable):
    slug = "circuit-open"
    title = "Circuit breaker open"


class NoHealthyTarget(ServiceUnavailable):
    slug = "no-healthy-target"
    title = "No healthy upstream target"


class ShuttingDown(ServiceUnavailable):
    slug = "shutting-down"
    title = "Gateway is shutting down"


class TooManyConnections(ServiceUnavailable):
    """A worker already holds ``server.max_client_connections`` client connections."""

    slug = "too-many-connections"
    title = "Too many client connections"


def problem_body(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


# --- authentication and authorisation --------------------------------------------------------


class Unauthorized(OnegateError):
    """No acceptable credential: 401 with a ``WWW-Authenticate`` challenge.

    ``reason`` is a short machine-readable word (``missing``, ``expired``, ``bad_signature``,
    ``unknown_issuer``...) for metrics and logs; ``detail`` never contains the credential.
    """

    status = 401
    slug = "unauthorized"
    title = "Authentication required"

    def __init__(self, detail: str, *, reason: str, www_authenticate: str) -> None:
        super().__init__(detail, headers={"www-authenticate": www_authenticate})
        self.reason = reason


class Forbidden(OnegateError):
    """The caller is known but lacks a required scope or role: 403."""

    status = 403
    slug = "forbidden"
    title = "Not allowed"

    def __init__(self, detail: str, *, reason: str, www_authenticate: str | None = None) -> None:
        headers = {"www-authenticate": www_authenticate} if www_authenticate else None
        super().__init__(detail, headers=headers)
        self.reason = reason


class TooManyRequests(OnegateError):
    """A rate limit is used up: 429, with ``Retry-After`` in whole seconds (at least 1)."""

    status = 429
    slug = "rate-limited"
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail, headers={"retry-after": str(max(1, retry_after))})
        self.retry_after = max(1, retry_after)


class RateLimitStoreUnavailable(ServiceUnavailable):
    """The shared rate-limit store did not answer in time; the gateway is set to fail closed."""

    slug = "rate-limit-store-unavailable"
    title = "Rate limit store unavailable"
