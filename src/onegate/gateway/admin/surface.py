"""The gateway's own endpoints: ``/_onegate/**`` and the metrics path, matched before any route.

They are internal routes, served by in-process apps, so they pass the same pipeline as any
request (measured, logged, authenticated) and the auth stage enforces their policy like any
route's. Their names start with ``_``, which configured route names cannot, so logs and
metrics never confuse them with a user's route. Policy:

- ``/_onegate/jwks.json`` is public: upstreams fetch the keys of the gateway's assertions there.
- the metrics path is public to peers in ``observability.metrics.public_networks`` (loopback by
  default), and admin-only for everyone else;
- everything else under ``/_onegate/`` is admin-only (the admin scope, in scopes or roles).

Admin-only means authenticated by the auth stage, then checked for the admin scope by
:class:`~onegate.gateway.admin.target.AdminTarget`. With no issuer configured nobody can be an
admin: admin-only endpoints answer 403 ``admin-disabled``, never anything public.
"""

from __future__ import annotations

from collections.abc import Mapping

from onegate.auth.config import RouteAuth
from onegate.errors import BadRequest, MethodNotAllowed, RouteNotFound
from onegate.gateway.admin.app import create_admin_app
from onegate.gateway.admin.errors import AdminDisabled
from onegate.gateway.admin.networks import Networks
from onegate.gateway.admin.target import AdminTarget
from onegate.gateway.config import Config, Match, Retries, RouteConfig, UpstreamConfig
from onegate.gateway.exchange import Exchange
from onegate.gateway.process import ProcessState
from onegate.gateway.routing import Route, RouteMatch
from onegate.gateway.upstreams import AsgiTarget, Upstream
from onegate.http import normalize_path
from onegate.observability.metrics import metrics_app
from onegate.types import ASGIApp, Scope

PREFIX = "/_onegate"
JWKS_PATH = PREFIX + "/jwks.json"
#: The admin surface is read-only for now.
METHODS = frozenset({"GET", "HEAD"})

Internal = tuple[RouteMatch, Upstream]


class AdminSurface:
    """Internal routes and their in-process upstreams, built once per configuration."""

    def __init__(
        self, source: Config, upstreams: Mapping[str, Upstream], process: ProcessState
    ) -> None:
        config = source.gateway
        metrics_config = config.observability.metrics
        self.metrics_path: str | None = None
        if metrics_config.enabled:
            try:
                self.metrics_path = normalize_path(metrics_config.path.encode("utf-8"))
            except BadRequest as exc:
                raise source.error(exc.detail, *_METRICS_PATH) from None
        check_reserved(source, self.metrics_path)
        self.has_issuers = bool(config.auth.issuers)
        admin_scope = config.auth.admin_scope
        #: Paths the match stage hands to :meth:`match` (a cheap ``startswith`` test first).
        self.prefixes: tuple[str, ...] = (PREFIX,)

        app = create_admin_app(source, upstreams, process.signing_keys)
        self.admin = _admin_only("_onegate.admin", app, admin_scope)
        self.admin_route = _route("_onegate.admin", Match(prefix=PREFIX), self.admin, public=False)
        self.jwks = _internal("_onegate.jwks", JWKS_PATH, app, None)
        self.public_networks = Networks(metrics_config.public_networks)
        #: The metrics endpoint for peers in ``public_networks``, and for everyone else.
        self.metrics: tuple[Internal, Internal] | None = None
        if self.metrics_path is not None:
            serve_metrics = metrics_app(process.observability)
            self.prefixes += (self.metrics_path,)
            self.metrics = (
                _internal("_onegate.metrics-local", self.metrics_path, serve_metrics, None),
                _internal("_onegate.metrics", self.metrics_path, serve_metrics, admin_scope),
            )

    def match(self, scope: Scope, path: str, exchange: Exchange) -> Internal | None:
        """The internal route for ``path``, or None if ``path`` is not the gateway's own.

        Raises the problem to answer when the path is internal but cannot be served.
        """
        if path == self.metrics_path and self.metrics is not None:
            self._check(scope)
            if self.is_public_peer(scope, exchange):
                return self.metrics[0]
            self._need_issuer()
            return self.metrics[1]
        if path != PREFIX and not path.startswith(PREFIX + "/"):
            return None  # "/_onegatefoo" is an ordinary path
        self._check(scope)
        if path == JWKS_PATH:
            return self.jwks
        self._need_issuer()
        return RouteMatch(self.admin_route, {}, path), self.admin

    def is_public_peer(self, scope: Scope, exchange: Exchange) -> bool:
        # The TCP peer, which a header cannot forge, and the client behind it: through a
        # trusted proxy on the same host the peer is loopback but the client may not be.
        client = scope.get("client")
        peer = client[0] if client else None
        return peer in self.public_networks and exchange.client_ip in self.public_networks

    @staticmethod
    def _check(scope: Scope) -> None:
        if scope["type"] != "http":
            raise RouteNotFound("The gateway's own endpoints do not accept WebSockets")
        if scope["method"] not in METHODS:
            raise MethodNotAllowed(sorted(METHODS))

    def _need_issuer(self) -> None:
        if not self.has_issuers:
            raise AdminDisabled()


def check_reserved(source: Config, metrics_path: str | None) -> None:
    """Refuse configured routes that the gateway's own endpoints would shadow."""
    for index, route in enumerate(source.gateway.routes):
        where = route.match.prefix or route.match.path or ""
        try:
            normal = normalize_path(where.encode("utf-8")).rstrip("/") or "/"
        except BadRequest:
            continue  # not a path any request can have; the router reports it
        if normal == PREFIX or normal.startswith(PREFIX + "/"):
            raise source.error(
                f"{where!r}: paths under {PREFIX}/ are the gateway's own", *_at(index)
            )
        if metrics_path is not None and normal == metrics_path.rstrip("/"):
            raise source.error(
                f"{where!r} is the metrics path (observability.metrics.path): "
                "move the route, or the metrics path",
                *_at(index),
            )


_METRICS_PATH = ("observability", "metrics", "path")


def _at(index: int) -> tuple[str | int, ...]:
    return ("routes", index, "match")


# Internal upstreams have no health checks and are never retried: the app runs in process.
_UPSTREAM = UpstreamConfig(targets=["asgi:onegate.gateway.admin.app:create_admin_app"])
_NO_RETRIES = Retries(attempts=0)


def _admin_only(name: str, app: ASGIApp, admin_scope: str) -> Upstream:
    target = AdminTarget(f"internal:{name}", _UPSTREAM, app, admin_scope)
    return Upstream(name, _UPSTREAM, targets=[target])


def _internal(name: str, path: str, app: ASGIApp, admin_scope: str | None) -> Internal:
    """An exact-path internal route: public when ``admin_scope`` is None, else admin-only."""
    if admin_scope is None:
        target = AsgiTarget(f"internal:{name}", _UPSTREAM, app)
        upstream = Upstream(name, _UPSTREAM, targets=[target])
    else:
        upstream = _admin_only(name, app, admin_scope)
    route = _route(name, Match(path=path), upstream, public=admin_scope is None)
    return RouteMatch(route, {}, path), upstream


def _route(name: str, match: Match, upstream: Upstream, *, public: bool) -> Route:
    # Admin-only routes need authentication here; their AdminTarget then checks for admins.
    policy = RouteAuth(policy="public" if public else "authenticated")
    # Built without validation: the "_" name is what keeps it apart from configured routes.
    config = RouteConfig.model_construct(
        name=name, match=match, upstream=upstream.name, auth=policy, retries=_NO_RETRIES
    )
    return Route(config, -1)
