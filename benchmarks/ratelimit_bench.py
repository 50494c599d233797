"""Rate-limit benchmark: what does one hit cost, in memory and in Redis?

Usage::

    taskset -c 0 python benchmarks/ratelimit_bench.py [--redis redis://127.0.0.1:6379/0]
                                                      [--json results.json]

Measures, on uvloop like the server:

- **memory store**: µs per ``hit`` for each algorithm, on one hot key and spread over 10,000
  keys (the realistic case: a dict miss, then the same work);
- **stage**: µs per request through ``RateLimitStage`` with one policy (key derivation, the
  hit, four RateLimit headers) and on a route without policies (the zero-cost path), over a
  downstream app that does nothing;
- **redis store**: µs per hit one at a time (a full round trip each: the latency a request
  pays) and with 64 hits in flight (the throughput one gateway process can get).

Each figure is the best of several samples (the garbage collector off while timing), as wall
clock and as this process's CPU time: on a busy machine the CPU figure is the steadier one,
and for Redis the gap between the two is the round trip the request waits for. Redis keys use a
prefix of their own and are deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import platform
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis
import uvloop

from onegate.auth.principal import Principal
from onegate.gateway.config import Config, GatewayConfig
from onegate.gateway.exchange import SCOPE_KEY, Exchange
from onegate.gateway.headers import ForwardedInfo
from onegate.gateway.routing import RouteMatch
from onegate.gateway.runtime import Runtime
from onegate.gateway.stages.ratelimit import RateLimitStage
from onegate.ratelimit.config import Algorithm, LimitPolicy
from onegate.ratelimit.memory import MemoryStore
from onegate.ratelimit.redis import RedisStore
from onegate.ratelimit.store import Store
from onegate.types import Message, Scope

ALGORITHMS: tuple[Algorithm, ...] = ("sliding_window", "token_bucket")
SAMPLES = 7
KEYS = 10_000
KEY_NAMES = [f"ip:10.0.{n // 256}.{n % 256}" for n in range(KEYS)]


async def best_of(run: Callable[[int], Awaitable[None]], count: int) -> tuple[float, float]:
    """Best wall-clock and best CPU µs per operation over SAMPLES runs of ``count``."""
    await run(min(count, 1000))  # warm-up: code paths, dicts, connections
    wall = cpu = float("inf")
    for _ in range(SAMPLES):
        gc.disable()
        start, start_cpu = time.perf_counter(), time.process_time()
        await run(count)
        elapsed, elapsed_cpu = time.perf_counter() - start, time.process_time() - start_cpu
        gc.enable()
        wall = min(wall, elapsed / count * 1e6)
        cpu = min(cpu, elapsed_cpu / count * 1e6)
    return wall, cpu


def policy(algorithm: Algorithm, name: str) -> LimitPolicy:
    # A limit that is never reached: refusals would measure a different, cheaper path.
    return LimitPolicy(name=name, limit=10**9, window_seconds=60, algorithm=algorithm)


async def hits_on_one_key(store: Store, rule: LimitPolicy, count: int) -> None:
    clock = time.monotonic
    for _ in range(count):
        await store.hit("ip:10.0.0.1", rule, clock())


async def hits_over_many_keys(store: Store, rule: LimitPolicy, count: int) -> None:
    clock = time.monotonic
    for n in range(count):
        await store.hit(KEY_NAMES[n % KEYS], rule, clock())


async def hits_in_flight(store: Store, rule: LimitPolicy, count: int, flight: int = 64) -> None:
    async def worker(offset: int) -> None:
        for n in range(offset, count, flight):
            await store.hit(KEY_NAMES[n % KEYS], rule, 0.0)

    await asyncio.gather(*(worker(i) for i in range(flight)))


async def bench_memory() -> dict[str, tuple[float, float]]:
    results = {}
    for algorithm in ALGORITHMS:
        store = MemoryStore(max_keys=2 * KEYS)
        rule = policy(algorithm, "bench")
        one = functools.partial(hits_on_one_key, store, rule)
        many = functools.partial(hits_over_many_keys, store, rule)
        results[f"memory {algorithm}, one key"] = await best_of(one, 200_000)
        results[f"memory {algorithm}, {KEYS:,} keys"] = await best_of(many, 200_000)
    return results


def stage_for(policies: list[str]) -> tuple[RateLimitStage, Exchange]:
    config = GatewayConfig.model_validate(
        {
            "upstreams": {"demo": {"targets": ["asgi:onegate.dev.demo:app"]}},
            "routes": [
                {
                    "name": "api",
                    "match": {"prefix": "/api"},
                    "upstream": "demo",
                    "rate_limits": policies,
                }
            ],
            "rate_limits": {
                "policies": [{"name": "per-ip", "limit": 10**9, "window_seconds": 60}],
            },
        }
    )
    runtime = Runtime(Config(config))

    async def nothing(scope: Scope, receive: Any, send: Any) -> None:
        return None

    stage = RateLimitStage(nothing, runtime.context)
    exchange = Exchange("bench", principal=Principal("alice", "corp", "jwt"))
    exchange.forwarded = ForwardedInfo("203.0.113.7", ["203.0.113.7"], "http", "gw.example")
    exchange.match = RouteMatch(runtime.context.router.routes[0], {}, "/api/x")
    return stage, exchange


async def bench_stage() -> dict[str, tuple[float, float]]:
    results = {}
    for label, policies in (("stage, one policy", ["per-ip"]), ("stage, no policy", [])):
        stage, exchange = stage_for(policies)
        scope: Scope = {"type": "http", SCOPE_KEY: exchange}

        async def receive() -> Message:
            return {"type": "http.request"}

        async def send(message: Message) -> None:
            return None

        async def run(
            count: int, stage: RateLimitStage = stage, scope: Scope = scope, ex: Exchange = exchange
        ) -> None:
            for _ in range(count):
                ex.response_headers = None
                await stage(scope, receive, send)

        results[label] = await best_of(run, 200_000)
    return results


async def bench_redis(url: str) -> dict[str, tuple[float, float]]:
    results = {}
    prefix = f"onegate:bench:{uuid.uuid4().hex}:"
    store = RedisStore(url, timeout=1.0, prefix=prefix)
    try:
        for algorithm in ALGORITHMS:
            rule = policy(algorithm, "bench")
            serial = functools.partial(hits_over_many_keys, store, rule)
            parallel = functools.partial(hits_in_flight, store, rule)
            results[f"redis {algorithm}, one at a time"] = await best_of(serial, 5_000)
            results[f"redis {algorithm}, 64 in flight"] = await best_of(parallel, 20_000)
    finally:
        await store.aclose()
        with redis.Redis.from_url(url) as client:
            for key in client.scan_iter(match=prefix + "*", count=1000):
                client.delete(key)
    return results


async def main_async(redis_url: str | None) -> dict[str, tuple[float, float]]:
    results = await bench_memory()
    results |= await bench_stage()
    if redis_url:
        results |= await bench_redis(redis_url)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="'' to skip Redis")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    results = uvloop.run(main_async(args.redis or None))
    width = max(map(len, results))
    print(f"{'µs per hit, best of ' + str(SAMPLES):{width}}  {'wall':>8}  {'cpu':>8}")
    for label, (wall, cpu) in results.items():
        print(f"{label:{width}}  {wall:8.2f}  {cpu:8.2f}")
    if args.json:
        document = {
            "python": sys.version.split()[0],
            "machine": platform.machine(),
            "us_per_hit": {
                label: {"wall": round(wall, 3), "cpu": round(cpu, 3)}
                for label, (wall, cpu) in results.items()
            },
        }
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(document, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
