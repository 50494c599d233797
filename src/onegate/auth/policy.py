"""Who may call a route: the route's ``auth`` (or the default) compiled for the hot path."""

from __future__ import annotations

from dataclasses import dataclass

from onegate.auth.config import AuthConfig, RouteAuth
from onegate.auth.principal import Principal


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    public: bool
    scopes: frozenset[str] = frozenset()
    """All required."""
    roles: frozenset[str] = frozenset()
    """Any one required, if not empty."""
    issuers: frozenset[str] | None = None
    """Issuer names accepted; None accepts every configured issuer."""

    def accepts_issuer(self, principal: Principal) -> bool:
        return self.issuers is None or principal.issuer in self.issuers

    def missing_scopes(self, principal: Principal) -> frozenset[str]:
        return self.scopes - principal.scopes

    def lacks_role(self, principal: Principal) -> bool:
        return bool(self.roles) and self.roles.isdisjoint(principal.roles)


PUBLIC = RoutePolicy(public=True)
AUTHENTICATED = RoutePolicy(public=False)


def compile_policy(
    route: RouteAuth | None, auth: AuthConfig, *, strict: bool = True
) -> RoutePolicy:
    """The route's policy. Raises ValueError naming what is wrong with it.

    ``strict=False`` is for the gateway's own routes, which exist whatever the configuration:
    one needing authentication without any issuer simply lets nobody in.
    """
    if route is None:
        default = auth.default_policy or ("authenticated" if auth.issuers else "public")
        if default == "authenticated" and not auth.issuers:
            raise ValueError("auth.default_policy is 'authenticated' but auth.issuers is empty")
        return PUBLIC if default == "public" else AUTHENTICATED
    if route.policy == "public":
        if route.scopes or route.roles or route.issuers:
            raise ValueError("a public route cannot require scopes, roles or issuers")
        return PUBLIC
    if not auth.issuers:
        if not strict:
            return AUTHENTICATED
        raise ValueError("the route requires authentication but auth.issuers is empty")
    known = {issuer.name for issuer in auth.issuers}
    if route.issuers is not None:
        unknown = sorted(set(route.issuers) - known)
        if unknown:
            raise ValueError(
                f"unknown issuer(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )
    return RoutePolicy(
        public=False,
        scopes=frozenset(route.scopes),
        roles=frozenset(route.roles),
        issuers=frozenset(route.issuers) if route.issuers is not None else None,
    )
