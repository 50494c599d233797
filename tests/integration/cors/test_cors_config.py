"""A CORS policy that cannot be right is refused when the configuration is loaded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from onegate.errors import ConfigError
from onegate.gateway.config import parse_config
from onegate.gateway.cors import CorsPolicy


def config_text(cors: dict[str, Any]) -> str:
    route = {"name": "app", "match": {"prefix": "/api"}, "upstream": "demo", "cors": cors}
    document = {"upstreams": {"demo": {"targets": ["asgi:onegate.dev.demo:app"]}}}
    return yaml.safe_dump({**document, "routes": [route]}, sort_keys=False)


WILDCARD_WITH_CREDENTIALS = """\
upstreams:
  demo: {targets: ["asgi:onegate.dev.demo:app"]}
routes:
  - name: app
    match: {prefix: /api}
    upstream: demo
    cors:
      allow_origins: ["*"]
      allow_credentials: true
"""


def test_wildcard_with_credentials_is_refused_by_onegate_config_validate(tmp_path: Path) -> None:
    path = tmp_path / "onegate.yaml"
    path.write_text(WILDCARD_WITH_CREDENTIALS)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ONEGATE_")}
    result = subprocess.run(
        [sys.executable, "-m", "onegate", "config", "validate", str(path)],
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"onegate: {path}:7: routes[0].cors: allow_origins ['*'] cannot be combined with "
        "allow_credentials: list the origins\n"
    )


@pytest.mark.parametrize(
    ("cors", "key", "message"),
    [
        ({"allow_origins": []}, "allow_origins", "at least 1 item"),
        ({"allow_origins": ["https://a.example/"]}, "allow_origins", "is not an origin"),
        ({"allow_origins": ["https://a.example/app"]}, "allow_origins", "is not an origin"),
        ({"allow_origins": ["null"]}, "allow_origins", "is not an origin"),
        ({"allow_origins": ["*", "https://a.example"]}, "allow_origins", "list it alone"),
        ({"allow_origins": ["*"], "allow_methods": ["*"]}, "allow_methods", "by name"),
        ({"allow_origins": ["*"], "allow_headers": ["x y"]}, "allow_headers", "header name"),
        ({"allow_origins": ["*"], "expose_headers": ["*"]}, "expose_headers", "header name"),
        ({"allow_origins": ["*"], "max_age_seconds": 86401}, "max_age_seconds", "86400"),
    ],
)
def test_invalid_policies(cors: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config_text(cors), "gateway.yaml", {})
    assert caught.value.key == f"routes[0].cors.{key}"
    assert message in caught.value.detail


def test_origins_are_kept_as_browsers_send_them() -> None:
    policy = CorsPolicy(
        allow_origins=["HTTPS://App.Example.com:443", "http://localhost:3000", "http://x.test:80"],
        allow_methods=["get", "Post"],
        allow_headers=["X-Trace-Id"],
    )
    assert policy.allow_origins == [
        "https://app.example.com",
        "http://localhost:3000",
        "http://x.test",
    ]
    assert policy.allow_methods == ["GET", "POST"]
    assert policy.allow_headers == ["x-trace-id"]
