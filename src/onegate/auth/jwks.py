"""An identity provider's JWKS document, kept fresh off the hot path.

The keys are fetched in the background every ``refresh_seconds`` and on demand when a token
names a ``kid`` we do not know (the provider rotated its keys). On-demand fetches are limited to
one per ``min_refetch_seconds``, so a client inventing kids cannot turn the gateway into a
hammer against the provider, and concurrent requests share the one fetch in flight. A failed
fetch (provider down, 5xx, garbage, an empty key set) keeps the last good keys: an outage of
the provider must not log everybody out.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import ssl
import time
import weakref
from collections.abc import Sequence

import certifi
import httpx

from onegate.auth.jwt_keys import UnusableKey, VerificationKey, from_jwk

logger = logging.getLogger("onegate.auth.jwks")

MAX_DOCUMENT_BYTES = 512 * 1024


class JwksError(Exception):
    """A fetch that produced no usable keys."""


class JwksSource:
    def __init__(
        self,
        url: str,
        *,
        refresh_seconds: float,
        min_refetch_seconds: float,
        timeout_seconds: float = 5.0,
    ) -> None:
        self.url = url
        self.refresh_seconds = refresh_seconds
        self.min_refetch_seconds = min_refetch_seconds
        self.timeout_seconds = timeout_seconds
        self.keys: tuple[VerificationKey, ...] = ()
        self._by_kid: dict[str, tuple[VerificationKey, ...]] = {}
        self._anonymous: tuple[VerificationKey, ...] = ()
        self.fetched_at: float | None = None
        """Unix time of the last successful fetch."""
        self.last_error: str | None = None
        self.attempts = 0
        self._last_attempt = -math.inf
        self._inflight: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None

    # --- lookups ---------------------------------------------------------------------------

    def known(self, kid: str | None) -> Sequence[VerificationKey]:
        """Keys a token with this ``kid`` may be checked against (all keys without a kid)."""
        if kid is None:
            return self.keys
        # A published key without a kid may sign tokens that name one (some providers do).
        return self._by_kid.get(kid) or self._anonymous

    async def lookup(self, kid: str | None) -> Sequence[VerificationKey]:
        """Like :meth:`known`, refetching once (rate-limited) when nothing matches."""
        found = self.known(kid)
        if found:
            return found
        await self.refetch()
        return self.known(kid)

    # --- fetching --------------------------------------------------------------------------

    async def refetch(self) -> None:
        """Fetch now, unless a fetch is in flight (then wait for it) or one was too recent."""
        task = self._inflight
        if task is None:
            if time.monotonic() - self._last_attempt < self.min_refetch_seconds:
                return
            task = self._spawn()
        # Shielded: a client hanging up must not cancel the fetch other requests wait for.
        await asyncio.shield(task)

    def _spawn(self) -> asyncio.Task[None]:
        self._last_attempt = time.monotonic()
        task = asyncio.get_running_loop().create_task(self._fetch(), name=f"jwks {self.url}")
        self._inflight = task
        task.add_done_callback(self._fetched)
        return task

    def _fetched(self, task: asyncio.Task[None]) -> None:
        if self._inflight is task:
            self._inflight = None

    async def _fetch(self) -> None:
        self.attempts += 1
        try:
            keys = await self._download()
        except (httpx.HTTPError, JwksError) as exc:
            self.last_error = _describe(exc)
            if self.keys:
                logger.warning(
                    "JWKS fetch from %s failed (%s); keeping %d last good keys",
                    self.url,
                    self.last_error,
                    len(self.keys),
                )
            else:
                logger.warning("JWKS fetch from %s failed (%s)", self.url, self.last_error)
            return
        by_kid: dict[str, list[VerificationKey]] = {}
        for key in keys:
            if key.kid is not None:
                by_kid.setdefault(key.kid, []).append(key)
        added = set(by_kid) - set(self._by_kid)
        self.keys = keys
        self._by_kid = {kid: tuple(found) for kid, found in by_kid.items()}
        self._anonymous = tuple(key for key in keys if key.kid is None)
        self.fetched_at = time.time()
        self.last_error = None
        if added:
            logger.info("JWKS from %s: new key ids %s", self.url, ", ".join(sorted(added)))

    async def _download(self) -> tuple[VerificationKey, ...]:
        body = bytearray()
        # A client per fetch: fetches are minutes apart, and nothing is left to close when a
        # reload drops this source. Built in a thread: the first one imports half of httpcore
        # and loads the CA bundle, which would stall every request on this event loop.
        client = await asyncio.to_thread(_client, self.timeout_seconds)
        async with (
            client,
            client.stream("GET", self.url, headers={"accept": "application/json"}) as response,
        ):
            if response.status_code != 200:
                raise JwksError(f"HTTP {response.status_code}")
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise JwksError("document too large")
        return parse_jwks(bytes(body))

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Fetch now and then every ``refresh_seconds`` (idempotent; needs a running loop)."""
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.get_running_loop().create_task(
                _refresh(weakref.ref(self)), name=f"jwks refresh {self.url}"
            )

    async def aclose(self) -> None:
        for task in (self._refresher, self._inflight):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._refresher = None


async def _refresh(ref: weakref.ReferenceType[JwksSource]) -> None:
    """The background refresh. It holds the source only weakly between rounds, so a source
    dropped by a configuration reload stops refreshing on its own."""
    while True:
        source = ref()
        if source is None:
            return
        task = source._inflight or source._spawn()
        await asyncio.shield(task)
        # After a failure, try again sooner: the provider may be back in a moment.
        delay = source.refresh_seconds
        if source.last_error is not None:
            delay = min(delay, source.min_refetch_seconds)
        del source, task
        await asyncio.sleep(delay)


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context per process: loading the CA bundle costs about 0.2 s of CPU."""
    return ssl.create_default_context(cafile=certifi.where())


def _client(timeout: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=timeout, follow_redirects=False, verify=_tls())


def parse_jwks(body: bytes) -> tuple[VerificationKey, ...]:
    """The usable signature keys of a JWKS document. Raises :class:`JwksError` if none."""
    try:
        document = json.loads(body)
    except ValueError:
        raise JwksError("not JSON") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise JwksError("no 'keys' list")
    keys: list[VerificationKey] = []
    for entry in entries:
        # A shared secret in a public document is a leak, never a key to trust.
        if not isinstance(entry, dict) or entry.get("kty") == "oct":
            continue
        with contextlib.suppress(UnusableKey):
            keys.append(from_jwk(entry))
    if not keys:
        raise JwksError("no usable signature keys")
    return tuple(keys)


def _describe(exc: Exception) -> str:
    if isinstance(exc, httpx.HTTPError):
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return str(exc)
