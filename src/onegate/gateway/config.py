"""The gateway's typed configuration: one YAML file, validated at start-up.

The file is read by :mod:`onegate.loader` into these pydantic models; every validation error
is reported as ``file:line: key.path: message`` so an operator can jump straight to the
mistake. Each infrastructure package keeps its own section's models (``auth.config``,
``ratelimit.config``, ``observability.config``); the gateway's own are here. Every
upstream's targets can be replaced from the environment with ``ONEGATE_UPSTREAM_<NAME>_URL``
(comma-separated for several targets), the way the seed's gateway was configured.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from onegate.auth.config import AuthConfig, RouteAuth
from onegate.errors import ConfigError
from onegate.gateway.cors import CorsPolicy
from onegate.http import KNOWN_METHODS
from onegate.loader import (
    URL_CREDENTIALS,
    Document,
    format_key,
    masked,
    parse_document,
    read_document,
)
from onegate.model import NAME_PATTERN, Model, Name, Network, Seconds
from onegate.observability.config import ObservabilityConfig
from onegate.ratelimit.config import RateLimitConfig

CONFIG_ENV = "ONEGATE_CONFIG"
UPSTREAM_URL_ENV = "ONEGATE_UPSTREAM_{name}_URL"
DEFAULT_CONFIG = Path(__file__).parent.parent / "defaults" / "onegate.yaml"

_UPSTREAM_VARIABLE = re.compile(r"^ONEGATE_UPSTREAM_(.+)_URL$")
_HOST = re.compile(r"^([A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?|[0-9A-Fa-f:.]+)$")


class Timeouts(Model):
    connect: Seconds = 2.0
    """Seconds to open a connection to a target (not counting time waiting in the pool)."""
    read: Seconds = 30.0
    """Longest silence, in seconds, while waiting for the upstream's next bytes."""
    total: Seconds | None = None
    """Deadline for the whole upstream exchange, body included. None: no deadline (streams)."""


class Retries(Model):
    attempts: Annotated[int, Field(ge=0, le=10)] = 1
    """Extra attempts after the first. Idempotent methods only, unless the request never left."""
    on_statuses: list[Annotated[int, Field(ge=500, le=599)]] = Field(
        default_factory=lambda: [502, 503, 504]
    )
    """Upstream statuses that count as retryable for idempotent methods."""
    buffer_bytes: Annotated[int, Field(ge=0)] = 65536
    """A request body up to this size is kept so it can be replayed on a retry."""


class Pool(Model):
    max_connections: Annotated[int, Field(ge=1)] = 256
    """Connections per target; requests beyond this wait (bounded by the connect timeout)."""
    idle_timeout: Seconds = 4.0
    """Close pooled connections idle this long. Keep it below the upstream's keep-alive timeout
    (Next.js closes idle sockets after 5 s, gunicorn after 2 s) to avoid the keep-alive race."""


class HealthCheck(Model):
    path: str = "/"
    """Path probed with GET on each target."""
    interval: Seconds = 5.0
    timeout: Seconds = 1.0
    healthy_threshold: Annotated[int, Field(ge=1)] = 1
    """Consecutive successes that mark an unhealthy target healthy again."""
    unhealthy_threshold: Annotated[int, Field(ge=1)] = 2
    """Consecutive failures (connect error, timeout or 5xx) that mark a target unhealthy."""


class Breaker(Model):
    failure_threshold: Annotated[int, Field(ge=1)] = 5
    """Consecutive failures that open the breaker (and eject the target from balancing)."""
    first_probe_seconds: Seconds = 0.5
    """How long a breaker that just opened rejects requests before letting a probe through
    (half-open). Each probe that fails doubles the wait, up to ``open_seconds``; a short first
    wait lets a brief outage end for clients as soon as the target is back."""
    open_seconds: Seconds = 10.0
    """Longest wait between half-open probes: the cap of the backoff that starts at
    ``first_probe_seconds``. One failed client request per period is the price of probing."""
    half_open_probes: Annotated[int, Field(ge=1)] = 1
    """Requests let through while half-open; all must succeed to close the breaker."""
    failure_statuses: list[Annotated[int, Field(ge=500, le=599)]] = Field(
        default_factory=lambda: [502, 503, 504]
    )
    """Upstream statuses counted as failures, besides connect errors, resets and timeouts."""


def target_problem(target: str) -> str | None:
    """Why ``target`` is not a usable upstream address, or None if it is."""
    if target.startswith("asgi:"):
        module, _, attribute = target[5:].partition(":")
        if not module or not attribute or ":" in attribute:
            return f"{target!r}: expected asgi:module:attribute"
        return None
    shown = URL_CREDENTIALS.sub(r"\1********@", target)  # never echo a password
    expected = f"{shown!r}: expected http://host:port, https://host:port or asgi:module:attribute"
    if "@" in target.split("//", 1)[-1].split("/", 1)[0]:
        return f"{shown!r}: credentials in a target URL are not supported"
    try:
        parts = urlsplit(target)
        port = parts.port
    except ValueError:
        return f"{shown!r}: the port must be a number from 1 to 65535"
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.username
        or parts.password
    ):
        return expected
    if not _HOST.match(parts.hostname):
        return f"{target!r}: {parts.hostname!r} is not a host name or IP address"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return f"{target!r}: a target is scheme, host and port only (no path or query)"
    if port == 0:
        return f"{target!r}: the port must be a number from 1 to 65535"
    return None


class UpstreamTls(Model):
    """How the gateway speaks TLS to an upstream's ``https://`` targets (``http://`` and
    ``asgi:`` targets ignore it). The certificate is always verified unless ``verify`` is off.

    File paths are relative to the configuration file. They are read when the upstream is
    built: at start-up, and on a reload that changes this upstream's settings."""

    ca_file: str | None = None
    """PEM file of the CA certificates trusted to sign the targets' certificates, used instead
    of the system trust store (a private CA). None: the system trust store (with certifi's
    bundle as a fallback where the system has none)."""
    server_name: str | None = None
    """Name sent in SNI and checked against the certificate, instead of the target's host. For
    targets addressed by IP or by an internal name their certificate does not carry. The
    ``Host`` header stays the target's host and port."""
    client_cert: str | None = None
    """PEM certificate (chain) presented to targets that require mutual TLS."""
    client_key: str | None = None
    """PEM private key of ``client_cert`` (unencrypted); None when ``client_cert`` holds it."""
    verify: bool = True
    """Verify the targets' certificates and names. Turning it off accepts any certificate
    (anyone on the path can then read and change the traffic); it is logged at start-up."""

    @model_validator(mode="after")
    def _key_needs_cert(self) -> UpstreamTls:
        if self.client_key is not None and self.client_cert is None:
            raise ValueError("client_key needs client_cert")
        if self.server_name is not None and not _HOST.match(self.server_name):
            raise ValueError(f"server_name {self.server_name!r} is not a host name")
        return self


class UpstreamConfig(Model):
    targets: list[str] = Field(min_length=1)
    """``http://host:port`` or ``https://host:port`` URLs (the port defaults to 80 and 443),
    or ``asgi:module:attribute`` for an in-process ASGI app."""
    tls: UpstreamTls = UpstreamTls()
    """TLS settings for ``https://`` targets: trusted CAs, server name, client certificate."""
    balance: Literal["round_robin", "least_outstanding"] = "round_robin"
    pool: Pool = Pool()
    health: HealthCheck | None = None
    """Active health checks; None disables them (passive ejection still applies)."""
    breaker: Breaker = Breaker()
    max_response_header_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024
    """Largest response head (status line and header fields, interim 1xx heads included) read
    from a target; beyond it the client gets a 502 and the connection is closed. Counted as the
    bytes arrive, so a target cannot make a worker buffer an endless head. 64 KiB is above what
    real responses carry (big cookies and CSP included; Envoy's default is 60 KiB) and small
    enough that thousands of connections cannot exhaust memory this way."""

    @field_validator("targets")
    @classmethod
    def _valid_targets(cls, targets: list[str]) -> list[str]:
        for target in targets:
            problem = target_problem(target)
            if problem:
                raise ValueError(problem)
        return targets


class Match(Model):
    prefix: str | None = None
    """Path prefix, matched on segment boundaries (``/api`` matches ``/api/x``, not ``/apix``)."""
    path: str | None = None
    """Path template: ``/users/{id}``; a final ``{rest:path}`` matches the remaining segments."""
    methods: list[str] | None = None
    """Allowed methods; None allows all. A path match with another method answers 405."""
    host: str | None = None
    """Host to match (without port); ``*.example.com`` matches one subdomain level."""

    @model_validator(mode="after")
    def _one_path_kind(self) -> Match:
        if (self.prefix is None) == (self.path is None):
            raise ValueError("set exactly one of 'prefix' or 'path'")
        for value in (self.prefix, self.path):
            if value is not None and not value.startswith("/"):
                raise ValueError(f"{value!r} must start with '/'")
        return self

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, methods: list[str] | None) -> list[str] | None:
        if methods is None:
            return None
        upper = [m.upper() for m in methods]
        unknown = [m for m in upper if m not in KNOWN_METHODS]
        if unknown:
            raise ValueError(f"unknown method(s): {', '.join(unknown)}")
        return upper


class RouteConfig(Model):
    name: Name
    """Unique name, used in logs, metrics and ``onegate check``."""
    match: Match
    upstream: str
    """Name of an entry under ``upstreams``."""
    strip_prefix: str | None = None
    """Remove this prefix from the path before forwarding."""
    rewrite_prefix: str | None = None
    """Put this prefix in front of the (possibly stripped) path before forwarding."""
    timeouts: Timeouts = Timeouts()
    retries: Retries = Retries()
    max_body_bytes: Annotated[int, Field(ge=0)] | None = None
    """Override of ``server.max_body_bytes`` for this route."""
    check_path: str | None = None
    """Path ``onegate check`` probes for this route; defaults to the route's prefix or template."""
    auth: RouteAuth | None = None
    """Who may call this route; None applies ``auth.default_policy``."""
    rate_limits: list[str] | None = None
    """Names of ``rate_limits.policies`` applied here; None applies ``rate_limits.default``."""
    cors: CorsPolicy | None = None
    """Cross-origin policy; preflight requests are answered at the edge."""


class ClientTimeouts(Model):
    """How long a client connection may keep the gateway waiting (issue 11: slow clients).

    Expiry closes the connection and counts it in ``onegate_client_connections_closed_total``
    under the phase's reason. A client that had started a request and has no answer yet gets
    a 408 problem document first; an idle connection is just closed (FIN).
    """

    first_byte: Seconds = 5.0
    """A new connection must send the first byte of its first request within this. Real
    clients connect to send; a silent connection only holds a file descriptor."""
    head: Seconds = 10.0
    """From the first byte of a request to the end of its head (request line and headers).
    Not extended by progress, so a head trickled a byte at a time (slow-loris) still ends."""
    keep_alive: Seconds = 75.0
    """Idle time allowed between requests on a kept-alive connection. Longer than the 60 s
    idle timeout of common load balancers (AWS ALB, nginx defaults): the side in front must
    give up first, or it may send a request just as the gateway closes. Idle connections cost
    little here: at ``max_client_connections`` the gateway closes one to admit a newcomer."""
    body_idle: Seconds = 30.0
    """Longest silence between pieces of a request body the gateway is waiting for. It does
    not run while the gateway itself stopped reading (backpressure from a slow upstream) or
    while the client waits for ``100 Continue``."""


class ListenerTls(Model):
    """Serve HTTPS (and WSS) with this certificate instead of plain HTTP.

    The pair is loaded again, for new connections, on SIGHUP and when either file changes
    (checked every second with ``watch_config``), without a restart; connections already
    open keep the certificate they started with. A pair that cannot be loaded (missing file,
    key not matching) is logged and the previous one stays in use. Paths are relative to the
    configuration file."""

    cert_file: str
    """PEM certificate chain: the server's certificate first, then its intermediates."""
    key_file: str
    """PEM private key of the certificate (unencrypted)."""


class Readiness(Model):
    """When ``/readyz`` answers 503 instead of 200 (see docs/operations.md)."""

    require: list[str] | Literal["all"] = Field(default_factory=list)
    """Upstreams without which this gateway should take no traffic: ``/readyz`` answers 503
    while any of them has no available target (all unhealthy or behind an open breaker).
    ``all`` names every upstream. Empty (the default): 200 whatever the upstreams' state, with
    ``status: degraded`` in the body, so that one backend's outage does not take the whole
    gateway out of a load balancer."""


class ServerConfig(Model):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    workers: Annotated[int, Field(ge=1)] | None = None
    """Worker processes; None means one per CPU core."""
    trusted_proxies: list[Network] = Field(default_factory=list)
    """CIDRs of proxies in front of onegate whose X-Forwarded-For / Forwarded hops are trusted."""
    max_body_bytes: Annotated[int, Field(ge=0)] | None = 10 * 1024 * 1024
    """Largest request body accepted (413 beyond). None: unlimited (bodies are streamed)."""
    max_header_bytes: Annotated[int, Field(ge=256)] = 32 * 1024
    """Largest total size of the request line and headers (431 beyond). Counted as the bytes
    arrive: a head that would cross it is refused there, without buffering the rest."""
    max_request_line_bytes: Annotated[int, Field(ge=64)] = 8 * 1024
    """Longest request target (the URL of the request line): 414 as soon as it is crossed.
    8 KiB is what common servers and CDNs allow (nginx's large header buffer, Cloudflare)."""
    max_client_connections: Annotated[int, Field(ge=1)] = 1024
    """Open client connections per worker (HTTP and WebSocket). Past it, an idle kept-alive
    connection is closed to make room; if none is idle, the newcomer gets an immediate 503
    problem document with ``Connection: close``. Lowered at start-up, with a warning, to fit
    half of the process's file descriptor limit: each proxied connection may hold an
    upstream connection too."""
    client_timeouts: ClientTimeouts = ClientTimeouts()
    """Deadlines for slow or silent clients."""
    drain_seconds: Seconds = 30.0
    """On SIGTERM, how long in-flight requests and streams may take to finish."""
    watch_config: bool = True
    """Reload when the config file, or the listener's certificate files, change (SIGHUP
    always reloads)."""
    tls: ListenerTls | None = None
    """Serve HTTPS with a certificate and key; None (the default) serves plain HTTP, for a
    gateway behind a load balancer that ends TLS. Enabling or disabling it needs a restart;
    a new certificate does not."""
    log_format: Literal["auto", "json", "text"] = "auto"
    """Format of the process log on stderr (start, stop, reloads, health changes, errors):
    ``json``, one object per line; ``text``, a readable line; ``auto``, text when stderr is a
    terminal and JSON otherwise. ``onegate serve --log-format`` overrides it; a change takes a
    restart. The access log is JSON whatever this says."""
    readiness: Readiness = Readiness()
    """Which upstreams ``/readyz`` requires to answer 200."""


class GatewayConfig(Model):
    """The whole configuration file."""

    server: ServerConfig = ServerConfig()
    upstreams: dict[str, UpstreamConfig] = Field(default_factory=dict)
    routes: list[RouteConfig] = Field(default_factory=list)
    auth: AuthConfig = AuthConfig()
    rate_limits: RateLimitConfig = RateLimitConfig()
    observability: ObservabilityConfig = ObservabilityConfig()

    @model_validator(mode="after")
    def _references(self) -> GatewayConfig:
        names: set[str] = set()
        for index, route in enumerate(self.routes):
            if route.name in names:
                raise ValueError(f"routes[{index}].name: duplicate route name {route.name!r}")
            names.add(route.name)
            if route.upstream not in self.upstreams:
                raise ValueError(
                    f"routes[{index}].upstream: unknown upstream {route.upstream!r} "
                    f"(known: {', '.join(sorted(self.upstreams)) or 'none'})"
                )
        for name in self.upstreams:
            if not NAME_PATTERN.match(name):
                raise ValueError(f"upstreams.{name}: use letters, digits, '-' and '_'")
        required = self.server.readiness.require
        for index, name in enumerate(required if required != "all" else []):
            if name not in self.upstreams:
                raise ValueError(
                    f"server.readiness.require[{index}]: unknown upstream {name!r} "
                    f"(known: {', '.join(sorted(self.upstreams)) or 'none'})"
                )
        return self


# --- loading -------------------------------------------------------------------------------


def load_config(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read, validate and apply environment overrides. Raises :class:`ConfigError`."""
    environ = os.environ if environ is None else environ
    if path is None:
        path = environ.get(CONFIG_ENV) or DEFAULT_CONFIG
    document = read_document(Path(path))
    return Config(_validate(document, environ), document)


def parse_config(text: str, source: str, environ: Mapping[str, str]) -> GatewayConfig:
    return _validate(parse_document(text, source), environ)


def _validate(document: Document, environ: Mapping[str, str]) -> GatewayConfig:
    _apply_env_overrides(document.data, environ, document.source)
    return document.validate(GatewayConfig)


def _apply_env_overrides(data: dict[str, Any], environ: Mapping[str, str], source: str) -> None:
    upstreams = data.get("upstreams")
    upstreams = upstreams if isinstance(upstreams, dict) else {}
    variables = {upstream_variable(str(name)): name for name in upstreams}
    # A variable naming no upstream is a typo that would silently leave the file's targets in
    # place (traffic to the wrong backend), so it stops the gateway and names the valid ones.
    for variable in sorted(environ):
        found = _UPSTREAM_VARIABLE.match(variable)
        if found and variable not in variables:
            valid = ", ".join(f"{v} ({n})" for v, n in variables.items()) or "no upstreams"
            raise ConfigError(
                f"names no upstream of this configuration; valid: {valid}",
                location=f"environment ({source})",
                key=variable,
            )
    for variable, name in variables.items():
        value = environ.get(variable)
        if value is None:
            continue
        targets = [t.strip() for t in value.split(",") if t.strip()]
        if not targets:
            raise ConfigError("is empty", location=f"environment ({source})", key=variable)
        for target in targets:
            problem = target_problem(target)
            if problem:
                raise ConfigError(problem, location=f"environment ({source})", key=variable)
        upstream = upstreams[name]
        if isinstance(upstream, dict):
            upstream["targets"] = targets


def upstream_variable(name: str) -> str:
    """``ONEGATE_UPSTREAM_<NAME>_URL`` for the upstream ``name`` (``ai-agents``: ``AI_AGENTS``)."""
    return UPSTREAM_URL_ENV.format(name=name.upper().replace("-", "_"))


class Config:
    """A validated gateway configuration together with the file it came from."""

    def __init__(self, gateway: GatewayConfig, document: Document | None = None) -> None:
        self.gateway = gateway
        self.document = document
        self.path = document.path if document is not None else None
        self.digest = document.digest if document is not None else None
        """SHA-256 of the bytes this was loaded from, to tell when the file changes."""

    @property
    def directory(self) -> Path | None:
        """What relative paths in the file (SQLite stores, key files) are resolved against;
        None for a configuration that came from no file."""
        return self.path.resolve().parent if self.path is not None else None

    def error(self, message: str, *loc: str | int) -> ConfigError:
        """A :class:`ConfigError` pointing at ``loc`` in this file (see :meth:`Document.error`)."""
        if self.document is None:
            return ConfigError(message, key=format_key([str(p) for p in loc]) or None)
        return self.document.error(message, *loc)

    def masked(self) -> dict[str, Any]:
        """The effective configuration as plain data, with secrets masked."""
        data: dict[str, Any] = masked(self.gateway.model_dump(mode="json"))
        return data
