"""Everything built from one configuration: router, upstreams and the composed pipeline.

A reload builds a new Runtime and swaps it in; requests already running keep the objects they
started with. Upstreams whose configuration did not change are carried over, so their pools,
health state and breakers survive a reload.
"""

from __future__ import annotations

import logging

from onegate.errors import ConfigError
from onegate.gateway.admin.surface import AdminSurface
from onegate.gateway.config import Config, GatewayConfig
from onegate.gateway.context import StageContext
from onegate.gateway.headers import TrustedProxies
from onegate.gateway.pipeline import compose
from onegate.gateway.process import ProcessState
from onegate.gateway.protocol import EdgeSettings
from onegate.gateway.proxy import ProxyStage
from onegate.gateway.routing import Router
from onegate.gateway.stages.auth import AuthStage
from onegate.gateway.stages.cors import CorsStage
from onegate.gateway.stages.errors import ErrorsStage
from onegate.gateway.stages.guard import GuardStage
from onegate.gateway.stages.match import MatchStage
from onegate.gateway.stages.observe import ObserveStage
from onegate.gateway.stages.ratelimit import RateLimitStage
from onegate.gateway.tls import client_context
from onegate.gateway.upstreams import Upstream
from onegate.types import ASGIApp

logger = logging.getLogger("onegate.gateway")

STAGES = (ObserveStage, ErrorsStage, GuardStage, MatchStage, CorsStage, AuthStage, RateLimitStage)


class Runtime:
    def __init__(
        self,
        source: Config,
        process: ProcessState | None = None,
        previous: Runtime | None = None,
    ) -> None:
        """``process``: what outlives reloads; a fresh one when None (a one-off build, as
        ``config validate`` does). Upstreams of ``previous`` whose settings are unchanged
        are carried over."""
        self.source = source
        self.config: GatewayConfig = source.gateway
        self.edge = EdgeSettings(self.config.server)
        """What the client-facing HTTP protocol enforces (limits, deadlines)."""
        process = process if process is not None else ProcessState()
        try:
            router = Router(self.config.routes)
        except ValueError as exc:
            raise source.error(str(exc), *self._route_location(str(exc))) from exc
        carried = previous.upstreams if previous is not None else {}
        self.upstreams: dict[str, Upstream] = {}
        for name, upstream_config in self.config.upstreams.items():
            old = carried.get(name)
            if old is not None and old.config == upstream_config:
                self.upstreams[name] = old
                continue
            tls = None
            if any(t.startswith("https:") for t in upstream_config.targets):
                try:
                    tls = client_context(upstream_config.tls, source.directory)
                except ConfigError as exc:
                    where = ("tls", exc.key) if exc.key else ("tls",)
                    raise source.error(exc.detail, "upstreams", name, *where) from exc
                if not upstream_config.tls.verify:
                    logger.warning(
                        "upstream %s: TLS certificates are NOT verified (tls.verify: false)", name
                    )
            try:
                self.upstreams[name] = Upstream(
                    name, upstream_config, tls=tls, health_log=process.observability.health_log
                )
            except ConfigError as exc:
                raise source.error(exc.detail, "upstreams", name, "targets") from exc
        # Everything the stages are built from exists before the first stage is: the gateway's
        # own endpoints (/_onegate/**, metrics), matched before any route, come first.
        self.context = context = StageContext(
            source=source,
            router=router,
            upstreams=self.upstreams,
            trusted_proxies=TrustedProxies(self.config.server.trusted_proxies),
            admin=AdminSurface(source, self.upstreams, process),
            process=process,
        )
        self.app: ASGIApp
        self.app, self.stages = compose(STAGES, ProxyStage(context), context)

    def _route_location(self, message: str) -> tuple[str | int, ...]:
        """``routes[i]`` for a router error naming route i (``route 'name': ...``)."""
        for index, route in enumerate(self.config.routes):
            if message.startswith(f"route {route.name!r}"):
                return ("routes", index, "match")
        return ("routes",)

    def retired(self, previous: Runtime) -> list[Upstream]:
        """Upstreams of ``previous`` that this runtime no longer uses."""
        kept = {id(u) for u in self.upstreams.values()}
        return [u for u in previous.upstreams.values() if id(u) not in kept]

    def start(self) -> None:
        for upstream in self.upstreams.values():
            upstream.start()
        for stage in self.stages:
            stage.start()

    async def close_stages(self) -> None:
        """Stop the stages' background work (JWKS refreshes, store connections)."""
        for stage in self.stages:
            await stage.aclose()

    def sweep(self) -> None:
        for upstream in self.upstreams.values():
            upstream.sweep()

    async def aclose(self) -> None:
        await self.close_stages()
        for upstream in self.upstreams.values():
            await upstream.aclose()
