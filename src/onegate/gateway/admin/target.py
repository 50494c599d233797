"""The in-process target behind admin-only internal routes: it lets admins through, only.

The auth stage authenticates the caller (the internal route's policy is ``authenticated``);
this target then requires the admin scope, in the principal's scopes *or* roles, which a
route's ``auth`` section cannot express (its scopes are all required, its roles any-of). It
is checked here rather than in the admin app because an in-process app gets a fresh ASGI
scope, while a target still sees the client's, and so the exchange and its principal.
"""

from __future__ import annotations

from onegate.auth.principal import Principal
from onegate.gateway.admin.errors import AdminCredentialRequired, AdminForbidden
from onegate.gateway.config import UpstreamConfig
from onegate.gateway.exchange import exchange_of
from onegate.gateway.upstreams import AsgiTarget, UpstreamRequest, UpstreamResponse
from onegate.types import ASGIApp


def is_admin(principal: Principal, admin_scope: str) -> bool:
    return admin_scope in principal.scopes or admin_scope in principal.roles


class AdminTarget(AsgiTarget):
    def __init__(self, url: str, config: UpstreamConfig, app: ASGIApp, admin_scope: str) -> None:
        super().__init__(url, config, app=app)
        self.admin_scope = admin_scope

    async def open(self, request: UpstreamRequest) -> UpstreamResponse:
        principal = exchange_of(request.scope).principal
        if principal is None:
            raise AdminCredentialRequired()
        if not is_admin(principal, self.admin_scope):
            raise AdminForbidden(f"This needs the {self.admin_scope!r} scope or role")
        return await super().open(request)
