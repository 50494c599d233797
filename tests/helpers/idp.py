"""A real identity provider on loopback, and the keys and tokens tests need.

:class:`IdentityProvider` serves a JWKS document over HTTP (uvicorn in a background thread)
whose keys a test can rotate, make fail (``idp.status = 503``) or take down entirely
(``idp.stop()``, then ``idp.start()`` again on the same port). It counts the fetches it
answers, so tests can check refetch coalescing and rate limits.

:func:`signing_key` makes an HS256, RS256, ES256 or EdDSA key; :func:`mint` signs a token
with one. :class:`ServedApp` runs any ASGI app the same way, for test upstreams.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import json
import os
import threading
import time
import uuid
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import jwt
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from helpers.legacy import free_port

HOST = "127.0.0.1"
AUDIENCE = "mobile-app"


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: str
    private: Any
    """An RSA, EC or Ed25519 private key, or the HMAC secret (bytes)."""

    @property
    def public(self) -> Any:
        return self.private if isinstance(self.private, bytes) else self.private.public_key()

    def public_pem(self) -> bytes:
        pem: bytes = self.public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return pem

    def public_jwk(self) -> dict[str, Any]:
        if isinstance(self.private, bytes):
            raise ValueError("an HMAC secret has no public half")
        algorithm = jwt.get_algorithm_by_name(self.alg)
        jwk: dict[str, Any] = algorithm.to_jwk(self.public, as_dict=True)
        return {**jwk, "kid": self.kid, "alg": self.alg, "use": "sig"}


@functools.cache
def _rsa(index: int) -> rsa.RSAPrivateKey:
    # RSA key generation takes tens of milliseconds: a few shared keys keep the suite fast.
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


_rsa_counter = iter(range(1_000_000))


def signing_key(
    alg: str = "ES256", kid: str | None = None, *, fresh_rsa: bool = False
) -> SigningKey:
    """A new key for ``alg`` (RS256 keys come from a small shared pool unless ``fresh_rsa``)."""
    kid = kid or f"{alg.lower()}-{uuid.uuid4().hex[:8]}"
    private: Any
    if alg.startswith("HS"):
        private = base64.urlsafe_b64encode(os.urandom(48))  # 64 bytes of secret text
    elif alg.startswith(("RS", "PS")):
        private = _rsa(next(_rsa_counter) if fresh_rsa else 0)
    elif alg == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    elif alg == "ES384":
        private = ec.generate_private_key(ec.SECP384R1())
    elif alg == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(alg)
    return SigningKey(kid, alg, private)


def claims_for(
    issuer: str,
    subject: str = "alice",
    *,
    audience: str | list[str] = AUDIENCE,
    scope: str | None = "read",
    expires_in: float = 300,
    **extra: Any,
) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "iat": now,
        "exp": now + int(expires_in),
    }
    if scope is not None:
        claims["scope"] = scope
    claims.update(extra)
    return {k: v for k, v in claims.items() if v is not None}


def mint(
    key: SigningKey,
    claims: dict[str, Any],
    *,
    alg: str | None = None,
    headers: dict[str, Any] | None = None,
    with_kid: bool = True,
) -> str:
    """``claims`` signed as given: JWS-level encoding, so even claims PyJWT would refuse to
    produce (a numeric ``iss``) can be sent, as an attacker could."""
    header = {"kid": key.kid} if with_kid else {}
    header.update(headers or {})
    payload = json.dumps(claims, separators=(",", ":")).encode()
    return jwt.api_jws.encode(
        payload, key.private, algorithm=alg or key.alg, headers=header or None
    )


def unsigned(claims: dict[str, Any], header: dict[str, Any] | None = None) -> str:
    """A token with ``alg: none`` and an empty signature, the classic forgery."""

    def part(data: dict[str, Any]) -> str:
        raw = json.dumps(data, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT', **(header or {})})}.{part(claims)}."


def forged_with_public_key(public_pem: bytes, claims: dict[str, Any], kid: str) -> str:
    """HS256 signed with the issuer's RSA *public* key as the HMAC secret (key confusion)."""

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    header = {"alg": "HS256", "typ": "JWT", "kid": kid}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


class ServedApp:
    """An ASGI app served by uvicorn on a loopback port, in a background thread."""

    def __init__(self, app: ASGIApp, port: int | None = None) -> None:
        self.app = app
        self.port = port or free_port()
        self.url = f"http://{HOST}:{self.port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        config = uvicorn.Config(
            self.app,
            host=HOST,
            port=self.port,
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name=f"served-app-{self.port}", daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"app on port {self.port} did not start")
            time.sleep(0.01)
        self._server, self._thread = server, thread

    @property
    def running(self) -> bool:
        return self._server is not None

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> ServedApp:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class IdentityProvider(ServedApp):
    """Publishes ``keys`` at ``/jwks.json``; ``issuer`` is its base URL."""

    def __init__(self, *keys: SigningKey) -> None:
        self.published: list[SigningKey] = list(keys) or [signing_key("ES256")]
        self.signing = self.published[0]
        """The key :meth:`token` signs with (rotation changes it)."""
        self.status = 200
        """Set to 503 (or any status) to make the JWKS endpoint fail."""
        self.delay = 0.0
        """Seconds each JWKS answer takes (to see concurrent requests share one fetch)."""
        self.fetches = 0
        self.without_kids = False
        """Publish the keys without their ``kid`` (tokens still name one)."""
        super().__init__(Starlette(routes=[Route("/jwks.json", self._jwks)]))
        self.issuer = self.url
        self.jwks_url = self.url + "/jwks.json"

    async def _jwks(self, request: Request) -> Response:
        self.fetches += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.status != 200:
            return JSONResponse({"error": "unavailable"}, status_code=self.status)
        keys = [key.public_jwk() for key in self.published]
        if self.without_kids:
            keys = [{k: v for k, v in key.items() if k != "kid"} for key in keys]
        return JSONResponse({"keys": keys})

    def rotate(self, alg: str = "ES256", *, keep_old: bool = False) -> SigningKey:
        """Publish a new key and sign with it from now on (dropping the old unless kept)."""
        new = signing_key(alg)
        self.published = [new, *self.published] if keep_old else [new]
        self.signing = new
        return new

    def token(
        self,
        subject: str = "alice",
        *,
        key: SigningKey | None = None,
        with_kid: bool = True,
        **claims: Any,
    ) -> str:
        return mint(
            key or self.signing, claims_for(self.issuer, subject, **claims), with_kid=with_kid
        )

    def __enter__(self) -> IdentityProvider:
        self.start()
        return self
