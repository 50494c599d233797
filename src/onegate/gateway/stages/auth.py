"""Decides who is calling, and whether they may, before anything reaches an upstream.

Per route: ``public`` routes pass untouched (no credential is looked at); every other route
needs a valid bearer token or API key (401 otherwise) and the route's scopes and roles (403).
A caller who passes becomes ``exchange.principal``, and the upstream gets the identity as
``x-onegate-*`` headers plus an assertion signed by the gateway. Clients' own ``x-onegate-*``
headers never get through (the proxy drops them before adding ours), and API keys are not
forwarded unless their issuer says so.

The hot path for a credential seen before is a header scan, a hash, a dict lookup and a few
header tuples; signatures and stores are only consulted on a cache miss.
"""

from __future__ import annotations

import time
from typing import ClassVar

from onegate.auth.assertion import AssertionKeyError
from onegate.auth.authenticator import Authenticator, IssuerError
from onegate.auth.credentials import AUTHORIZATION, carries_api_key, find_credential
from onegate.auth.policy import RoutePolicy, compile_policy
from onegate.auth.rejection import Rejected
from onegate.errors import Forbidden, Unauthorized
from onegate.gateway.config import GatewayConfig, RouteConfig
from onegate.gateway.context import StageContext
from onegate.gateway.exchange import exchange_of
from onegate.gateway.pipeline import Stage
from onegate.types import ASGIApp, Receive, Scope, Send


class AuthStage(Stage):
    name: ClassVar[str] = "auth"

    @classmethod
    def enabled(cls, config: GatewayConfig) -> bool:
        # Without an issuer every route is public and there is nothing to verify or strip;
        # the admin surface refuses its endpoints itself (403 admin-disabled).
        return bool(config.auth.issuers)

    def __init__(self, app: ASGIApp, context: StageContext) -> None:
        super().__init__(app, context)
        auth = context.config.auth
        source = context.source
        policies: list[RoutePolicy] = []
        for index, route in enumerate(context.config.routes):
            try:
                policies.append(compile_policy(route.auth, auth))
            except ValueError as exc:
                raise source.error(str(exc), "routes", index, "auth") from None
        self.policies = tuple(policies)
        self._auth_config = auth
        self._internal: dict[str, RoutePolicy] = {}
        """Policies of the gateway's own routes (``/_onegate/**``), which have no index."""
        try:
            self.authenticator = Authenticator(
                auth, context.source.directory, keys=context.process.signing_keys
            )
        except IssuerError as exc:
            raise source.error(str(exc), "auth", "issuers", exc.index) from None
        except AssertionKeyError as exc:
            configured = auth.assertion.key_file is not None
            loc = ("auth", "assertion", "key_file") if configured else ("auth", "state_dir")
            raise source.error(f"assertion key: {exc}", *loc) from None
        self.realm = f'Bearer realm="{_quoted(auth.realm)}"'
        # A public route may still carry an API key in Authorization; it is not forwarded
        # either when some issuer says keys stay at the gateway.
        self._strip_bearer_keys = bool(self.authenticator.never_forward)

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start background work (JWKS refreshes). Idempotent; needs a running loop.

        Meant for the runtime's start-up; until something calls it, the first request that
        needs to verify a credential does.
        """
        self.authenticator.start()

    async def aclose(self) -> None:
        """Stop the JWKS refreshes and close the key stores' connections."""
        await self.authenticator.aclose()

    # --- the request -----------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        exchange = exchange_of(scope)
        assert exchange.match is not None
        route = exchange.match.route
        index = route.index
        policy = self.policies[index] if index >= 0 else self._internal_policy(route.config)
        authenticator = self.authenticator
        never_forward = authenticator.never_forward
        if never_forward:
            exchange.drop_upstream_headers = exchange.drop_upstream_headers | never_forward
        if policy.public:
            if self._strip_bearer_keys and carries_api_key(scope["headers"]):
                exchange.drop_upstream_headers = exchange.drop_upstream_headers | {AUTHORIZATION}
            await self.app(scope, receive, send)
            return
        try:
            credential = find_credential(scope["headers"], authenticator.key_headers)
            if credential is None:
                raise Unauthorized(
                    "send a bearer token or an API key",
                    reason="missing",
                    www_authenticate=self.realm,
                )
            now = time.time()
            entry = authenticator.cache.get(credential.digest, now)
            if entry is None:
                if not authenticator.started:
                    # Until the runtime starts us itself, the first request does.
                    authenticator.start()
                entry = await authenticator.verify(credential, now)
        except Rejected as rejected:
            raise self._unauthorized(rejected) from None
        principal = entry.principal
        if not policy.accepts_issuer(principal):
            raise self._unauthorized(
                Rejected("issuer_not_accepted", "credentials of this issuer are not accepted here")
            )
        if policy.scopes:
            missing = policy.missing_scopes(principal)
            if missing:
                wanted = " ".join(sorted(policy.scopes))
                raise Forbidden(
                    f"missing scope(s): {' '.join(sorted(missing))}",
                    reason="insufficient_scope",
                    www_authenticate=(
                        f'{self.realm}, error="insufficient_scope", scope="{_quoted(wanted)}"'
                    ),
                )
        if policy.lacks_role(principal):
            raise Forbidden(
                f"requires one of the roles: {' '.join(sorted(policy.roles))}",
                reason="missing_role",
                www_authenticate=f'{self.realm}, error="insufficient_scope"',
            )
        exchange.principal = principal
        if exchange.upstream_headers is None:
            exchange.upstream_headers = list(entry.headers)
        else:
            exchange.upstream_headers += entry.headers
        if authenticator.signer is not None:
            exchange.upstream_headers.append(authenticator.assertion(entry, now))
        if entry.drop:
            exchange.drop_upstream_headers = exchange.drop_upstream_headers | entry.drop
        await self.app(scope, receive, send)

    def _internal_policy(self, route: RouteConfig) -> RoutePolicy:
        policy = self._internal.get(route.name)
        if policy is None:
            policy = compile_policy(route.auth, self._auth_config, strict=False)
            self._internal[route.name] = policy
        return policy

    def _unauthorized(self, rejected: Rejected) -> Unauthorized:
        challenge = (
            f'{self.realm}, error="{rejected.error}", '
            f'error_description="{_quoted(rejected.detail)}"'
        )
        return Unauthorized(rejected.detail, reason=rejected.reason, www_authenticate=challenge)


def _quoted(text: str) -> str:
    """Safe inside a quoted-string of a challenge (our own texts, but let's be sure)."""
    return "".join(c for c in text if c not in '"\\' and 0x20 <= ord(c) < 0x7F)
