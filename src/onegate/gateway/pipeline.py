"""The request pipeline: small ASGI stages composed once, in a declared order.

A stage wraps the next one (Starlette's middleware idea). Any stage may answer early, and its
answer still flows back out through the stages before it, so the outermost stage sees every
response. The order below is checked when the pipeline is built rather than left to
convention: a stage placed out of order is a start-up error, not a subtle bug.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from onegate.gateway.config import GatewayConfig
from onegate.gateway.context import StageContext
from onegate.types import ASGIApp, Receive, Scope, Send

#: Every stage onegate knows, outermost first. Later issues fill in the reserved names.
STAGE_ORDER: tuple[str, ...] = (
    "observe",  # request id, client address, metrics and the access log
    "errors",  # OnegateError -> RFC 9457 problem document
    "guard",  # framing and header limits, before anything trusts the request
    "match",  # route lookup; later stages read the route from the exchange
    # CORS comes before auth, not after as first sketched: browsers send preflights without
    # credentials, and a 401 must still carry CORS headers for the app to be able to read it.
    "cors",
    "auth",  # who is calling, decided before anything reaches an upstream
    "rate-limit",  # after auth, so limits can be per principal or per API key
    "split",
    "shadow",
    "proxy",  # the endpoint: forward to a remote or in-process target
)


class Stage:
    """Base of every stage: built once per configuration around the next ASGI app."""

    name: ClassVar[str]

    def __init__(self, app: ASGIApp, context: StageContext) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    @classmethod
    def enabled(cls, config: GatewayConfig) -> bool:
        """Whether this configuration gives the stage anything to do. A stage that would only
        pass every request on is left out of the pipeline: each layer costs every request."""
        return True

    def start(self) -> None:
        """Start background work, once the event loop runs (at start-up, or after a reload)."""

    async def aclose(self) -> None:
        """Stop background work and release connections, once this pipeline is retired."""


def check_order(names: Sequence[str]) -> None:
    positions = []
    for name in names:
        if name not in STAGE_ORDER:
            raise ValueError(f"unknown pipeline stage {name!r}")
        positions.append(STAGE_ORDER.index(name))
    if positions != sorted(positions) or len(set(positions)) != len(positions):
        expected = [n for n in STAGE_ORDER if n in names]
        raise ValueError(f"pipeline stages out of order: {list(names)}; expected {expected}")


def compose(
    stages: Sequence[type[Stage]], endpoint: ASGIApp, context: StageContext
) -> tuple[ASGIApp, list[Stage]]:
    """Wrap ``endpoint`` in ``stages`` (outermost first) after checking their order.

    Returns the outermost app and the stage instances, outermost first, for their lifecycle.
    """
    check_order([*(s.name for s in stages), "proxy"])
    app = endpoint
    built: list[Stage] = []
    for stage_type in reversed([s for s in stages if s.enabled(context.config)]):
        stage = stage_type(app, context)
        built.append(stage)
        app = stage
    return app, built[::-1]
