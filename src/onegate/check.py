"""``onegate check``: prove that every route works, through the gateway and directly.

Every route gets two probes: one through the gateway, and the same request (after the
route's ``strip_prefix``/``rewrite_prefix``) sent straight to the first target of its
upstream. If both answer alike, the route works and the gateway is not what changed the
answer. If they differ, the ``mismatches`` say how, in a few words each.

Answers are compared loosely on purpose. The status and the content type must be equal. A
JSON body must have the same top-level keys, because its values are allowed to differ
(timestamps, request ids). Any other body must be byte for byte the same.

Besides probing, each route's probe path is matched against the whole configuration, the way
the gateway will match it, so a ``check_path`` that another route captures is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table
from rich.text import Text

from onegate.errors import PROBLEM_TYPE_BASE, BadRequest, OnegateError
from onegate.gateway.config import Config, RouteConfig
from onegate.gateway.routing import Route, Router
from onegate.gateway.upstreams import load_asgi_app
from onegate.http import normalize_path

__all__ = [
    "CheckReport",
    "Probe",
    "RouteResult",
    "probe_path",
    "render_json",
    "render_table",
    "run_check",
    "run_check_async",
]

CONCURRENCY = 8
"""Routes probed at once: quick for a large config, and not enough to look like a load test."""
MAX_BODY_BYTES = 1024 * 1024
"""Only the first MiB of a body is read and compared, because a route may serve a download or
an endless stream."""
ASGI_BASE_URL = "http://onegate-check"
"""Base URL of requests to an in-process app; it only sets the Host header the app sees."""

_PARAM = re.compile(r"\{([^{}:]*)(?::([^{}]*))?\}")


# --- results -------------------------------------------------------------------------------


@dataclass
class Probe:
    """One request and what came back. ``status`` is None when there was no answer."""

    url: str
    status: int | None
    latency_ms: float | None
    """Until the whole body (at most ``MAX_BODY_BYTES``) was read."""
    error: str | None
    """Why there was no answer: ``connection refused``, ``timed out after 5 s``..."""
    body_sha256: str | None
    """Of the first ``MAX_BODY_BYTES`` of the decoded body."""
    content_type: str | None

    @classmethod
    def not_sent(cls, url: str) -> Probe:
        return cls(url, None, None, None, None, None)


@dataclass
class RouteResult:
    route: str
    method: str
    """The probe's method, ``-`` when the route was skipped."""
    path: str
    """The path requested from the gateway; the direct probe sends it as the route forwards it."""
    upstream: str
    target: str
    """The upstream's first target, which the direct probe goes to."""
    gateway: Probe
    direct: Probe
    mismatches: list[str]
    ok: bool
    skipped: str | None = None
    """Why the route was not probed (it allows neither GET nor HEAD); such a route is ok."""


@dataclass
class CheckReport:
    gateway_url: str
    results: list[RouteResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        # A config without routes checks nothing, and nothing is not a success.
        return bool(self.results) and all(result.ok for result in self.results)

    @property
    def failed(self) -> int:
        return sum(1 for result in self.results if not result.ok)

    @property
    def skipped(self) -> int:
        return sum(1 for result in self.results if result.skipped is not None)


# --- what to probe -------------------------------------------------------------------------


def probe_path(route: RouteConfig) -> str:
    """The path ``onegate check`` requests for ``route``.

    ``check_path`` if set, else the prefix, else the template with ``1`` for each
    ``{param}`` and ``check`` for a ``{rest:path}`` tail.
    """
    if route.check_path is not None:
        return route.check_path
    if route.match.prefix is not None:
        return route.match.prefix
    assert route.match.path is not None  # the config model guarantees one of the two
    return _PARAM.sub(lambda m: "check" if m.group(2) == "path" else "1", route.match.path)


def _probe_method(route: RouteConfig) -> str | None:
    methods = route.match.methods
    if methods is None or "GET" in methods:
        return "GET"
    if "HEAD" in methods:
        return "HEAD"
    return None  # a probe would have to invent a body, and might change something


def _probe_host(route: RouteConfig) -> str | None:
    """A Host header that the route's ``host`` matches, if it has one."""
    host = route.match.host
    if host is not None and host.startswith("*."):
        return "check" + host[1:]
    return host


@dataclass
class _Plan:
    config: RouteConfig
    method: str | None
    path: str
    forward: str
    """The path and query the gateway sends upstream."""
    host: str | None
    problems: list[str] = field(default_factory=list)
    """Reasons the gateway would not route the probe to this route."""
    unusable: str | None = None
    """Why the route cannot be probed at all: it fails the check unprobed."""


def _plan(config: RouteConfig, route: Route | str, router: Router) -> _Plan:
    """What to send for ``route`` (a compiled route, or why it does not compile)."""
    path = probe_path(config)
    method = _probe_method(config)
    plan = _Plan(config, method, path, path, _probe_host(config))
    if isinstance(route, str):
        plan.unusable = f"invalid route: {route}"
        return plan
    if method is None:
        return plan
    raw, question, query = path.partition("?")
    try:
        normal = normalize_path(raw.encode("utf-8"))
        plan.forward = route.forward_path(normal) + question + query
        matched = router.match(method, plan.host, normal).route.name
    except BadRequest as error:
        plan.unusable = f"check_path {path!r}: {error.detail}"
        return plan
    except OnegateError:  # RouteNotFound or MethodNotAllowed
        plan.problems.append(f"{path} matches no route")
        return plan
    if matched != config.name:
        plan.problems.append(f"{path} is routed to {matched!r}")
    return plan


def _compile(routes: list[RouteConfig]) -> tuple[Router, dict[str, Route | str]]:
    """The router the gateway would build, and each route compiled or why it does not compile.

    ``onegate serve`` refuses a configuration with a broken route; here the broken routes are
    left out of the router and reported, so the others can still be checked.
    """
    invalid: dict[str, str] = {}
    for index, config in enumerate(routes):
        try:
            Route(config, index)
        except ValueError as exc:
            invalid[config.name] = str(exc)
    router = Router([config for config in routes if config.name not in invalid])
    compiled: dict[str, Route | str] = {route.name: route for route in router.routes}
    return router, compiled | invalid


# --- probing -------------------------------------------------------------------------------

_NOT_JSON = object()


@dataclass
class _Answer:
    probe: Probe
    shape: frozenset[str] | str | None = None
    """A JSON body's top-level keys, or its kind ("array", "string"...); None if not JSON."""
    problem: str | None = None
    """The slug of a problem document onegate itself produced (``upstream-unreachable``...)."""


class _Prober:
    """The HTTP clients of one check run: to the gateway, to remote targets, to in-process apps."""

    def __init__(
        self,
        gateway_url: str,
        timeout: float,
        headers: Mapping[str, str] | None = None,
        direct_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.gateway_url = gateway_url.rstrip("/")
        self.timeout = timeout
        # Credentials are for the gateway's auth; the direct probe gets only what it is given
        # on its own, as the gateway does not forward (e.g.) API keys to upstreams by default.
        self.headers = dict(headers or {})
        self.direct_headers = dict(direct_headers or {})
        # The gateway is reached like any client would reach it, proxies from the environment
        # included. Targets are reached as the gateway reaches them: directly.
        self.gateway = httpx.AsyncClient(timeout=timeout)
        self.remote = httpx.AsyncClient(timeout=timeout, trust_env=False)
        self.in_process: dict[str, httpx.AsyncClient | str] = {}
        """Per ``asgi:`` target: a client calling the app, or why the app failed to load."""

    async def warm_up(self) -> None:
        """Pay httpx's one-off costs (lazy imports, the resolver thread) before timing anything.

        Otherwise the first probes look tens of milliseconds slower than the others. A client
        of its own, closed at once, so no probe gets a connection that is already open.
        """
        async with httpx.AsyncClient(timeout=min(1.0, self.timeout)) as client:
            with contextlib.suppress(httpx.HTTPError):
                await client.get(self.gateway_url + "/healthz")

    def gateway_url_for(self, plan: _Plan) -> str:
        return self.gateway_url + plan.path

    def direct_url_for(self, plan: _Plan, target: str) -> str:
        # An in-process app has no URL; "asgi:module:app/path" says what was called.
        return target.rstrip("/") + plan.forward

    async def through_gateway(self, plan: _Plan, method: str) -> _Answer:
        headers = dict(self.headers)
        if plan.host:
            headers["host"] = plan.host
        url = self.gateway_url_for(plan)
        return await self._send(self.gateway, method, url, url, headers=headers)

    async def direct(self, plan: _Plan, method: str, target: str) -> _Answer:
        shown = self.direct_url_for(plan, target)
        headers = self.direct_headers
        if not target.startswith("asgi:"):
            return await self._send(self.remote, method, shown, shown, headers=headers)
        client = self._in_process_client(target)
        if isinstance(client, str):
            return _Answer(Probe(shown, None, None, client, None, None))
        return await self._send(
            client, method, plan.forward, shown, headers=headers, in_process=True
        )

    def _in_process_client(self, target: str) -> httpx.AsyncClient | str:
        # Loaded once per target, as the gateway does: a factory may be costly to call.
        if target not in self.in_process:
            try:
                app = load_asgi_app(target)
            except OnegateError as error:
                self.in_process[target] = error.detail
            else:
                transport = httpx.ASGITransport(app=app)
                self.in_process[target] = httpx.AsyncClient(
                    transport=transport, base_url=ASGI_BASE_URL, timeout=self.timeout
                )
        return self.in_process[target]

    async def _send(
        self,
        client: httpx.AsyncClient,
        method: str,
        url: str,
        shown_url: str,
        *,
        headers: dict[str, str] | None = None,
        in_process: bool = False,
    ) -> _Answer:
        started = time.perf_counter()
        try:
            # httpx's timeout applies to each read; this deadline also bounds a slow drip.
            async with asyncio.timeout(self.timeout):
                async with client.stream(method, url, headers=headers) as response:
                    body = await _read_capped(response)
        except Exception as exc:  # an in-process app may raise anything
            error = self._describe(exc, in_process)
            return _Answer(Probe(shown_url, None, None, error, None, None))
        latency_ms = round((time.perf_counter() - started) * 1000, 2)
        content_type = response.headers.get("content-type")
        probe = Probe(
            url=shown_url,
            status=response.status_code,
            latency_ms=latency_ms,
            error=None,
            body_sha256=hashlib.sha256(body).hexdigest(),
            content_type=content_type,
        )
        document = _parse_json(content_type, body)
        if document is _NOT_JSON:
            return _Answer(probe)
        return _Answer(probe, _shape(document), _problem_slug(content_type, document))

    def _describe(self, exc: Exception, in_process: bool) -> str:
        if isinstance(exc, TimeoutError | httpx.TimeoutException):
            kind = "connect timeout" if isinstance(exc, httpx.ConnectTimeout) else "timed out"
            return f"{kind} after {self.timeout:g} s"
        if isinstance(exc, httpx.ConnectError):
            # httpx (anyio) says "All connection attempts failed"; the reason is further down.
            code = _errno_in_chain(exc)
            if code is None:
                return f"cannot connect: {exc}"
            return "connection refused" if code == errno.ECONNREFUSED else os.strerror(code).lower()
        if isinstance(exc, httpx.RemoteProtocolError):
            return f"protocol error: {exc}"
        if isinstance(exc, httpx.ReadError | httpx.WriteError):
            return "connection reset"
        if in_process and not isinstance(exc, httpx.HTTPError):
            return f"in-process app raised {type(exc).__name__}: {exc}"
        return f"{type(exc).__name__}: {exc}"

    async def aclose(self) -> None:
        clients = [self.gateway, self.remote]
        clients += [c for c in self.in_process.values() if isinstance(c, httpx.AsyncClient)]
        for client in clients:
            await client.aclose()


async def _read_capped(response: httpx.Response) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) >= MAX_BODY_BYTES:
            break
    return bytes(body[:MAX_BODY_BYTES])


def _errno_in_chain(exc: BaseException) -> int | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno is not None:
            return current.errno
        current = current.__cause__ or current.__context__
    return None


def _parse_json(content_type: str | None, body: bytes) -> Any:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if not (media == "application/json" or media.endswith("+json")):
        return _NOT_JSON
    try:
        return json.loads(body)
    except ValueError:  # invalid, or cut at MAX_BODY_BYTES: compare the bytes instead
        return _NOT_JSON


def _shape(document: Any) -> frozenset[str] | str:
    if isinstance(document, dict):
        return frozenset(document)
    kinds = {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}
    return kinds.get(type(document), "null")


def _problem_slug(content_type: str | None, document: Any) -> str | None:
    if not (content_type or "").startswith("application/problem+json"):
        return None
    kind = document.get("type") if isinstance(document, dict) else None
    if isinstance(kind, str) and kind.startswith(PROBLEM_TYPE_BASE):
        return kind.removeprefix(PROBLEM_TYPE_BASE)
    return None


# --- comparing -----------------------------------------------------------------------------


def _mismatches(gateway: _Answer, direct: _Answer) -> list[str]:
    """Why the two answers show a broken route; empty when they agree."""
    reasons: list[str] = []
    for side, answer in (("gateway", gateway), ("direct", direct)):
        probe = answer.probe
        if probe.error is not None:
            reasons.append(f"{side}: {probe.error}")
        elif probe.status is not None and probe.status >= 500:
            reasons.append(f"{side}: {probe.status} {answer.problem or ''}".rstrip())
        elif side == "gateway" and answer.problem is not None:
            # The gateway answered itself (404 not-found...), so the upstream was never asked.
            reasons.append(f"gateway: {probe.status} {answer.problem}")
    if reasons:
        return reasons
    # From here on both answered; the first difference found explains the others.
    g, d = gateway.probe, direct.probe
    if g.status != d.status:
        return [f"status {g.status} != {d.status}"]
    if _normal_type(g.content_type) != _normal_type(d.content_type):
        return [f"content-type differs: {g.content_type} != {d.content_type}"]
    if isinstance(gateway.shape, frozenset) and isinstance(direct.shape, frozenset):
        added = [f"+{key}" for key in sorted(gateway.shape - direct.shape)]
        removed = [f"-{key}" for key in sorted(direct.shape - gateway.shape)]
        return [f"json keys differ: {' '.join(added + removed)}"] if added or removed else []
    if gateway.shape is not None and direct.shape is not None:
        if gateway.shape != direct.shape:
            return [f"json differs: {_kind(gateway.shape)} != {_kind(direct.shape)}"]
        return []
    if g.body_sha256 != d.body_sha256:
        return ["body differs"]
    return []


def _normal_type(content_type: str | None) -> str:
    return (content_type or "").replace(" ", "").lower()


def _kind(shape: frozenset[str] | str) -> str:
    return "object" if isinstance(shape, frozenset) else shape


# --- running -------------------------------------------------------------------------------


def run_check(
    config: Config,
    gateway_url: str,
    *,
    timeout: float = 5.0,
    headers: Mapping[str, str] | None = None,
    direct_headers: Mapping[str, str] | None = None,
) -> CheckReport:
    """Probe every route of ``config`` through the gateway at ``gateway_url`` and directly.

    ``timeout`` bounds each probe, body included. ``headers`` (credentials, say) are sent on
    every probe through the gateway, ``direct_headers`` on every direct one. Results keep the
    configuration's order.
    """
    return asyncio.run(
        run_check_async(
            config, gateway_url, timeout=timeout, headers=headers, direct_headers=direct_headers
        )
    )


async def run_check_async(
    config: Config,
    gateway_url: str,
    *,
    timeout: float = 5.0,
    headers: Mapping[str, str] | None = None,
    direct_headers: Mapping[str, str] | None = None,
) -> CheckReport:
    """:func:`run_check`, for a caller that is already in an event loop."""
    routes = config.gateway.routes
    upstreams = config.gateway.upstreams
    router, compiled = _compile(routes)
    prober = _Prober(gateway_url, timeout, headers, direct_headers)
    limit = asyncio.Semaphore(CONCURRENCY)

    async def check_one(route: RouteConfig) -> RouteResult:
        plan = _plan(route, compiled[route.name], router)
        target = upstreams[route.upstream].targets[0]
        if plan.unusable is not None:
            return _unprobed(plan, target, prober, [plan.unusable])
        if plan.method is None:
            allowed = ", ".join(route.match.methods or ())
            reason = f"allows neither GET nor HEAD: {allowed}"
            return _unprobed(plan, target, prober, [], skipped=reason)
        async with limit:
            return await _check_route(plan, plan.method, target, prober)

    try:
        await prober.warm_up()
        results = await asyncio.gather(*(check_one(route) for route in routes))
    finally:
        await prober.aclose()
    return CheckReport(gateway_url, list(results))


async def _check_route(plan: _Plan, method: str, target: str, prober: _Prober) -> RouteResult:
    gateway, direct = await asyncio.gather(
        prober.through_gateway(plan, method), prober.direct(plan, method, target)
    )
    mismatches = plan.problems + _mismatches(gateway, direct)
    return RouteResult(
        route=plan.config.name,
        method=method,
        path=plan.path,
        upstream=plan.config.upstream,
        target=target,
        gateway=gateway.probe,
        direct=direct.probe,
        mismatches=mismatches,
        ok=not mismatches,
    )


def _unprobed(
    plan: _Plan, target: str, prober: _Prober, mismatches: list[str], skipped: str | None = None
) -> RouteResult:
    return RouteResult(
        route=plan.config.name,
        method="-",
        path=plan.path,
        upstream=plan.config.upstream,
        target=target,
        gateway=Probe.not_sent(prober.gateway_url_for(plan)),
        direct=Probe.not_sent(prober.direct_url_for(plan, target)),
        mismatches=mismatches,
        ok=not mismatches,
        skipped=skipped,
    )


# --- output --------------------------------------------------------------------------------


def render_json(report: CheckReport) -> str:
    document = {
        "gateway_url": report.gateway_url,
        "ok": report.ok,
        "routes": len(report.results),
        "failed": report.failed,
        "skipped": report.skipped,
        "results": [asdict(result) for result in report.results],
    }
    return json.dumps(document, indent=2)


def render_table(report: CheckReport) -> None:
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        # Piped or in CI there is no screen to fit: rich's 80 columns would fold every reason.
        console.width = 160
    table = Table(title=f"onegate check: {report.gateway_url}", title_justify="left")
    for name in ("route", "method", "path", "upstream"):
        table.add_column(name, no_wrap=True)
    table.add_column("gateway", justify="right", no_wrap=True)
    table.add_column("direct", justify="right", no_wrap=True)
    table.add_column("result", overflow="fold")
    for result in report.results:
        table.add_row(
            Text(result.route, style="bold"),
            Text(result.method),
            Text(result.path),
            Text(result.upstream),
            _probe_cell(result.gateway),
            _probe_cell(result.direct),
            _result_cell(result),
        )
    console.print(table)
    summary = f"{len(report.results)} routes, {report.failed} failed"
    if report.skipped:
        summary += f", {report.skipped} skipped"
    if not report.results:
        summary += " (the configuration has no routes)"
    console.print(Text(summary, style="green" if report.ok else "bold red"))


def _probe_cell(probe: Probe) -> Text:
    if probe.error is not None:
        return Text("error", style="red")
    if probe.status is None:
        return Text("-", style="dim")
    style = "green" if probe.status < 400 else "yellow" if probe.status < 500 else "red"
    cell = Text(str(probe.status), style=style)
    if probe.latency_ms is not None:
        cell.append(f" {probe.latency_ms:6.1f} ms", style="dim")
    return cell


def _result_cell(result: RouteResult) -> Text:
    if result.skipped is not None:
        return Text(f"SKIP: {result.skipped}", style="yellow")
    if result.ok:
        return Text("OK", style="green")
    return Text("FAIL: " + "; ".join(result.mismatches), style="red")
