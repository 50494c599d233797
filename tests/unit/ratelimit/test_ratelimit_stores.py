"""A store is shared by every pipeline that describes it the same way, and closed with the
last one: a reload keeps the counts, shutdown releases the connections."""

from __future__ import annotations

from typing import Any

from onegate.gateway.config import Config, GatewayConfig
from onegate.gateway.process import ProcessState
from onegate.gateway.runtime import Runtime
from onegate.gateway.stages.ratelimit import RateLimitStage
from onegate.ratelimit.config import LimitPolicy, RateLimitConfig
from onegate.ratelimit.memory import MemoryStore
from onegate.ratelimit.redis import RedisStore
from onegate.ratelimit.stores import Stores


def runtime(process: ProcessState, **rate_limits: Any) -> Runtime:
    policy = {"name": "per-ip", "limit": 3}
    config = GatewayConfig.model_validate(
        {
            "upstreams": {"demo": {"targets": ["asgi:onegate.dev.demo:app"]}},
            "routes": [{"name": "api", "match": {"prefix": "/api"}, "upstream": "demo"}],
            "rate_limits": {"policies": [policy], "default": ["per-ip"], **rate_limits},
        }
    )
    return Runtime(Config(config), process)


def stage_of(built: Runtime) -> RateLimitStage:
    (stage,) = (s for s in built.stages if isinstance(s, RateLimitStage))
    return stage


async def test_a_reload_keeps_the_store_and_the_last_user_closes_it() -> None:
    process = ProcessState()
    old = runtime(process)
    store = stage_of(old).store
    assert isinstance(store, MemoryStore)
    await store.hit("ip:1", LimitPolicy(name="per-ip", limit=3), 0.0)

    new = runtime(process)  # the reload: built before the old one retires
    assert stage_of(new).store is store
    await old.close_stages()
    await old.close_stages()  # closing twice releases once
    assert store.size() == 1  # still in use by the new pipeline: counts kept

    await new.aclose()
    assert store.size() == 0
    fresh = runtime(process)
    assert stage_of(fresh).store is not store  # the last user closed it: a new one
    await fresh.aclose()


def test_different_settings_get_different_stores() -> None:
    stores = Stores()
    a = stores.acquire(RateLimitConfig(store="redis://127.0.0.1:6379/0"))
    b = stores.acquire(RateLimitConfig(store="redis://127.0.0.1:6379/0"))
    c = stores.acquire(RateLimitConfig(store="redis://127.0.0.1:6379/0", store_timeout_seconds=0.2))
    assert a is not Stores().acquire(RateLimitConfig(store="redis://127.0.0.1:6379/0"))
    assert a is b
    assert a is not c
    assert isinstance(a, RedisStore)


def test_no_stage_and_no_store_without_a_limit() -> None:
    built = runtime(ProcessState(), default=[])
    assert not any(isinstance(s, RateLimitStage) for s in built.stages)
