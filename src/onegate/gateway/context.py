"""What the stages of one pipeline are built from: finished before the pipeline is composed.

Each stage takes what it needs from here when it is built and keeps only that; nothing in it
changes afterwards (a reload builds a new one). It replaces handing every stage the whole
runtime while the runtime was still being built.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from onegate.gateway.admin.surface import AdminSurface
from onegate.gateway.config import Config, GatewayConfig
from onegate.gateway.headers import TrustedProxies
from onegate.gateway.process import ProcessState
from onegate.gateway.routing import Router
from onegate.gateway.upstreams import Upstream


@dataclass(frozen=True, eq=False)
class StageContext:
    source: Config
    """The loaded file: stages point their configuration errors at its lines."""
    router: Router
    upstreams: Mapping[str, Upstream]
    trusted_proxies: TrustedProxies
    admin: AdminSurface
    """The gateway's own endpoints, matched before the configured routes."""
    process: ProcessState

    @property
    def config(self) -> GatewayConfig:
        return self.source.gateway
