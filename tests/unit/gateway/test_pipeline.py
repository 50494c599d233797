"""The pipeline is composed once per configuration, in the declared order."""

from __future__ import annotations

import pytest

from onegate.gateway.config import Config, GatewayConfig
from onegate.gateway.pipeline import STAGE_ORDER, check_order
from onegate.gateway.runtime import Runtime

DEMO = {"demo": {"targets": ["asgi:onegate.dev.demo:app"]}}


def stage_names(**sections: object) -> list[str]:
    config = GatewayConfig.model_validate(
        {
            "upstreams": DEMO,
            "routes": [{"name": "api", "match": {"prefix": "/api"}, "upstream": "demo"}],
            **sections,
        }
    )
    return [stage.name for stage in Runtime(Config(config)).stages]


def test_stages_out_of_order_are_refused() -> None:
    check_order(["observe", "errors", "match", "proxy"])
    with pytest.raises(ValueError, match="out of order"):
        check_order(["observe", "match", "errors", "proxy"])
    with pytest.raises(ValueError, match="unknown"):
        check_order(["observe", "teleport", "proxy"])
    assert STAGE_ORDER[0] == "observe" and STAGE_ORDER[-1] == "proxy"


def test_stages_with_nothing_to_do_are_left_out() -> None:
    assert stage_names() == ["observe", "errors", "guard", "match"]


def test_edge_stages_join_when_the_configuration_needs_them() -> None:
    names = stage_names(
        rate_limits={"policies": [{"name": "p", "limit": 5}], "default": ["p"]},
    )
    assert names == ["observe", "errors", "guard", "match", "rate-limit"]
