"""Auth benchmark: what does the auth stage cost per request once a credential is cached?

Usage::

    taskset -c 0 python benchmarks/auth_bench.py [--json results.json]

Measures, on uvloop like the server, µs per request through ``AuthStage`` over a downstream
app that does nothing:

- **public route**: the stage's pass-through (the floor);
- **cached JWT** and **cached API key**: the hot path (find the credential among ten request
  headers, hash it, look it up, check scopes, add the identity headers and the cached
  assertion);
- **cold JWT (ES256)** and **cold JWT (RS256)**: a token seen for the first time (parse,
  verify the signature, build the principal, sign the assertion), for comparison;
- **assertion signing** alone (ES256), which the hot path does once per ``ttl / 2`` per
  principal.

Each figure is the best of several samples with the garbage collector off, minus nothing:
the cost of building a fresh Exchange per request is included in every row (it is what the
observe stage does anyway), so compare rows with each other.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import uvloop
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from onegate.auth import keyadmin
from onegate.auth.keystore import open_store
from onegate.auth.principal import Principal
from onegate.gateway.config import load_config
from onegate.gateway.exchange import SCOPE_KEY, Exchange
from onegate.gateway.runtime import Runtime
from onegate.gateway.stages.auth import AuthStage
from onegate.types import Message, Scope

SAMPLES = 7
COLD = 300  # requests per sample with never-seen tokens
ISSUER = "https://idp.example.com"
BASE_HEADERS = [
    (b"host", b"api.example.com"),
    (b"user-agent", b"okhttp/4.12.0"),
    (b"accept", b"application/json"),
    (b"accept-encoding", b"gzip"),
    (b"accept-language", b"en-GB"),
    (b"x-request-id", b"3f2a9c1e-8d7b-4b1e-9c3a-2d4e5f6a7b8c"),
    (b"content-type", b"application/json"),
    (b"x-app-version", b"5.12.0"),
    (b"cookie", b"session=abc; theme=dark"),
]


def setup(directory: Path) -> tuple[Runtime, dict[str, Any]]:
    """A runtime with two JWT issuers (ES256, RS256) and an API key issuer, and credentials."""
    es_key = ec.generate_private_key(ec.SECP256R1())
    rs_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for name, key in (("es.pem", es_key), ("rs.pem", rs_key)):
        (directory / name).write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    config = {
        "upstreams": {"demo": {"targets": ["asgi:onegate.dev.demo:app"]}},
        "routes": [
            {"name": "open", "match": {"prefix": "/open"}, "upstream": "demo",
             "auth": {"policy": "public"}},
            {"name": "api", "match": {"prefix": "/api"}, "upstream": "demo",
             "auth": {"scopes": ["read"]}},
        ],
        "auth": {
            "issuers": [
                {"type": "jwt", "name": "es", "issuer": ISSUER, "audiences": ["app"],
                 "algorithms": ["ES256"], "keys": [{"kid": "es", "public_key_file": "es.pem"}]},
                {"type": "jwt", "name": "rs", "issuer": ISSUER + "/rs", "audiences": ["app"],
                 "algorithms": ["RS256"], "keys": [{"kid": "rs", "public_key_file": "rs.pem"}]},
                {"type": "api_key", "name": "keys", "store": "sqlite:///keys.db"},
            ]
        },
    }  # fmt: skip
    (directory / "onegate.yaml").write_text(yaml.safe_dump(config))
    store = open_store("sqlite:///keys.db", "keys", directory)
    api_key = keyadmin.create(store, subject="svc", scopes=["read"]).key.token
    store.close()
    now = int(time.time())

    def token(key: Any, alg: str, kid: str, iss: str, sub: str = "alice") -> str:
        claims = {"iss": iss, "sub": sub, "aud": "app", "scope": "read write", "iat": now,
                  "exp": now + 3600}  # fmt: skip
        return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})

    tokens = {
        "es": token(es_key, "ES256", "es", ISSUER),
        "key": api_key,
        "es_private": es_key,
        "rs_private": rs_key,
    }
    return Runtime(load_config(directory / "onegate.yaml")), tokens


def fresh_tokens(private: Any, alg: str, kid: str, iss: str, count: int) -> list[str]:
    now = int(time.time())
    return [
        jwt.encode(
            {"iss": iss, "sub": f"user{n}", "aud": "app", "scope": "read", "iat": now,
             "exp": now + 3600},
            private, algorithm=alg, headers={"kid": kid},
        )
        for n in range(count)
    ]  # fmt: skip


def cold_headers(tokens: Iterator[str], n: int) -> list[tuple[bytes, bytes]]:
    return [*BASE_HEADERS, (b"authorization", f"Bearer {next(tokens)}".encode())]


async def nothing(scope: Scope, receive: Any, send: Any) -> None:
    return None


async def receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(message: Message) -> None:
    return None


async def best_of(run: Callable[[int], Awaitable[None]], count: int) -> float:
    """Best µs per request over SAMPLES runs of ``count`` requests."""
    best = float("inf")
    gc.disable()
    try:
        for _ in range(SAMPLES):
            started = time.perf_counter()
            await run(count)
            best = min(best, (time.perf_counter() - started) / count)
    finally:
        gc.enable()
    return best * 1e6


def request_loop(
    stage: AuthStage, runtime: Runtime, path: str, headers_for: Callable[[int], list[Any]]
) -> Callable[[int], Awaitable[None]]:
    match = runtime.context.router.match("GET", "api.example.com", path)

    async def run(count: int) -> None:
        for n in range(count):
            exchange = Exchange("bench")
            exchange.match = match
            scope: Scope = {"type": "http", "headers": headers_for(n), SCOPE_KEY: exchange}
            await stage(scope, receive, send)

    return run


async def measure(runtime: Runtime, tokens: dict[str, Any]) -> dict[str, float]:
    stage = AuthStage(nothing, runtime.context)
    stage.start()
    bearer_es = [*BASE_HEADERS, (b"authorization", f"Bearer {tokens['es']}".encode())]
    api_key = [*BASE_HEADERS, (b"x-api-key", tokens["key"].encode())]
    results: dict[str, float] = {}
    results["public route"] = await best_of(
        request_loop(stage, runtime, "/open/x", lambda n: BASE_HEADERS), 20_000
    )
    results["cached JWT"] = await best_of(
        request_loop(stage, runtime, "/api/x", lambda n: bearer_es), 20_000
    )
    results["cached API key"] = await best_of(
        request_loop(stage, runtime, "/api/x", lambda n: api_key), 20_000
    )
    for name, private, alg, kid, iss in (
        ("cold JWT (ES256)", tokens["es_private"], "ES256", "es", ISSUER),
        ("cold JWT (RS256)", tokens["rs_private"], "RS256", "rs", ISSUER + "/rs"),
    ):
        # Every request needs a token never seen before: mint them all up front.
        unused = iter(fresh_tokens(private, alg, kid, iss, SAMPLES * COLD))
        results[name] = await best_of(
            request_loop(stage, runtime, "/api/x", functools.partial(cold_headers, unused)),
            COLD,
        )
    signer = stage.authenticator.signer
    assert signer is not None
    alice = Principal("alice", "es", "jwt", scopes=frozenset({"read"}))

    async def sign(count: int) -> None:
        for _ in range(count):
            signer.sign(alice, time.time())

    results["assertion signing (ES256)"] = await best_of(sign, 2_000)
    await stage.aclose()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        runtime, tokens = setup(Path(directory))
        results = uvloop.run(measure(runtime, tokens))
    print(f"auth stage, µs per request (best of {SAMPLES}), {platform.python_version()}, "
          f"{platform.machine()}, pid {os.getpid()}")  # fmt: skip
    for name, value in results.items():
        print(f"  {name:28} {value:8.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
