"""The admin-only target: admins through, everyone else refused, before the app runs."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Set as AbstractSet
from pathlib import Path

import pytest

from onegate.auth.principal import Principal
from onegate.gateway.admin.errors import AdminCredentialRequired, AdminForbidden
from onegate.gateway.admin.target import AdminTarget
from onegate.gateway.body import RequestBody
from onegate.gateway.config import Timeouts, load_config
from onegate.gateway.exchange import SCOPE_KEY, Exchange
from onegate.gateway.runtime import Runtime
from onegate.gateway.upstreams import UpstreamRequest
from onegate.types import Message

CONFIG = """\
upstreams:
  demo: {targets: ["asgi:onegate.dev.demo:app"]}
routes:
  - {name: app, match: {prefix: /api}, upstream: demo}
auth:
  admin_scope: ops:admin
  issuers:
    - {type: jwt, name: t, issuer: i, audiences: [a], algorithms: [HS256],
       keys: [{secret_env: ONEGATE_UNIT_SECRET}]}
"""


@pytest.fixture
def target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AdminTarget:
    monkeypatch.setenv("ONEGATE_UNIT_SECRET", "unit-test-secret-" + "0123456789abcdef" * 3)
    path = tmp_path / "onegate.yaml"
    path.write_text(textwrap.dedent(CONFIG))
    runtime = Runtime(load_config(path, environ={}))
    found = runtime.context.admin.admin.targets[0]
    assert isinstance(found, AdminTarget)
    return found


async def receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def upstream_request(principal: Principal | None) -> UpstreamRequest:
    exchange = Exchange("req-1")
    exchange.principal = principal
    scope = {"type": "http", "method": "GET", "headers": [], SCOPE_KEY: exchange}
    return UpstreamRequest(
        method="GET",
        path="/_onegate/routes",
        query=b"",
        headers=[(b"x-request-id", b"req-1")],
        body=RequestBody(receive, length=0, chunked=False, limit=None),
        timeouts=Timeouts(),
        scope=scope,
    )


def principal(
    scopes: AbstractSet[str] = frozenset(), roles: AbstractSet[str] = frozenset()
) -> Principal:
    return Principal("alice", "t", "jwt", scopes=frozenset(scopes), roles=frozenset(roles))


async def test_no_principal_is_unauthenticated(target: AdminTarget) -> None:
    with pytest.raises(AdminCredentialRequired) as caught:
        await target.open(upstream_request(None))
    assert caught.value.status == 401
    assert caught.value.headers["www-authenticate"].startswith("Bearer")


async def test_other_scopes_are_forbidden(target: AdminTarget) -> None:
    with pytest.raises(AdminForbidden) as caught:
        await target.open(upstream_request(principal({"onegate:admin", "read"}, {"admin"})))
    assert "ops:admin" in caught.value.detail


@pytest.mark.parametrize("who", [principal({"ops:admin"}), principal(roles={"ops:admin"})])
async def test_the_admin_scope_or_role_is_let_through(target: AdminTarget, who: Principal) -> None:
    response = await target.open(upstream_request(who))
    try:
        assert response.status == 200
        body = b""
        while (chunk := await response.read_chunk()) is not None:
            body += chunk
    finally:
        response.close()
    assert [r["name"] for r in json.loads(body)["routes"]] == ["app"]
