"""Route selection: normalise the request path, then find the most specific route.

The path is normalised once, before matching, and that same normalised path is what gets
forwarded. The gateway and the upstream therefore never disagree about which resource was asked
for, which is what defeats ``/public/../admin``, ``/public/%2e%2e/admin`` and
``/public%2F..%2Fadmin`` style bypasses of per-route policy.

Routes are compiled into a segment trie. A match walks the request's segments once; at each
node it tries the literal child, then the parameter child, then the routes that end there. Because
that order *is* the precedence order, the first route found that allows the method wins, and the
cost depends on the path's length, not on the number of routes.

Precedence, compared segment by segment from the left: a literal segment beats a ``{param}``,
which beats a ``{rest:path}`` tail, which beats the end of a prefix; an exact template end beats
a prefix ending at the same place (so a longer prefix beats a shorter one). Between routes equally
specific for the path, one with a ``host`` beats one without, then config order decides.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote

from onegate.errors import BadRequest, MethodNotAllowed, RouteNotFound
from onegate.gateway.config import RouteConfig
from onegate.http import normalize_path

__all__ = ["Route", "RouteMatch", "Router"]

# --- routes --------------------------------------------------------------------------------

# A parameter segment: "{name}" or "{name:converter}".
_PARAM = re.compile(r"\{([^{}:]*)(?::([^{}]*))?\}")


@dataclass(frozen=True, slots=True)
class Route:
    """One configured route, compiled. Raises ``ValueError`` if the route cannot be compiled."""

    config: RouteConfig
    index: int
    """Position in the configuration: the last tie-breaker."""

    # Compiled from ``config`` in __post_init__.
    _segments: tuple[str | None, ...] = field(init=False, repr=False, compare=False)
    """Literal segments (normalised), None for a one-segment ``{param}``; no tail."""
    _is_prefix: bool = field(init=False, repr=False, compare=False)
    _params: tuple[tuple[int, str], ...] = field(init=False, repr=False, compare=False)
    _tail: str | None = field(init=False, repr=False, compare=False)
    _host: str | None = field(init=False, repr=False, compare=False)
    _methods: frozenset[str] | None = field(init=False, repr=False, compare=False)
    _strip: str = field(init=False, repr=False, compare=False)
    _rewrite: str | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        match = self.config.match
        try:
            if match.prefix is not None:
                segments: tuple[str | None, ...] = _parse_prefix(match.prefix)
                params: tuple[tuple[int, str], ...] = ()
                tail = None
            else:
                assert match.path is not None  # the config model guarantees one of the two
                segments, params, tail = _parse_template(match.path)
            host = _parse_host(match.host)
            strip = _config_path(self.config.strip_prefix, "strip_prefix")
            rewrite = _config_path(self.config.rewrite_prefix, "rewrite_prefix")
        except ValueError as exc:
            raise ValueError(f"route {self.config.name!r}: {exc}") from None
        methods: frozenset[str] | None = None
        if match.methods is not None:
            if not match.methods:
                raise ValueError(
                    f"route {self.config.name!r}: 'methods' is empty (omit it to allow all)"
                )
            methods = frozenset(match.methods)
            if "GET" in methods:
                methods |= {"HEAD"}
        values = {
            "_segments": segments,
            "_is_prefix": match.prefix is not None,
            "_params": params,
            "_tail": tail,
            "_host": host,
            "_methods": methods,
            "_strip": (strip or "").rstrip("/"),
            "_rewrite": rewrite,
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)  # the dataclass is frozen

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def upstream(self) -> str:
        return self.config.upstream

    def forward_path(self, path: str) -> str:
        """The path sent upstream for the normalised request ``path``."""
        strip = self._strip
        if strip and path.startswith(strip) and path[len(strip) : len(strip) + 1] in ("", "/"):
            path = path[len(strip) :]  # "" when the whole path was the prefix
        if self._rewrite is not None:
            # "/api" -> "/v2", "/api/" -> "/v2/", "/api/x" -> "/v2/x", whatever the slashes.
            return self._rewrite.rstrip("/") + path if path else self._rewrite
        return path or "/"

    def _extract(self, segments: list[str]) -> dict[str, str]:
        params = {name: _unquote(segments[position]) for position, name in self._params}
        if self._tail is not None:
            params[self._tail] = _unquote("/".join(segments[len(self._segments) :]))
        return params


def _unquote(value: str) -> str:
    return unquote(value) if "%" in value else value  # unquote is slow even with nothing to do


def _parse_prefix(prefix: str) -> tuple[str, ...]:
    if "{" in prefix or "}" in prefix:
        raise ValueError(f"prefix {prefix!r} contains braces; use 'path' for a template")
    parts = prefix[1:].split("/")
    if parts[-1] == "":  # "/api/" means "/api"; "/" means everything
        parts.pop()
    return tuple(_literal(part, prefix) for part in parts)


def _parse_template(
    template: str,
) -> tuple[tuple[str | None, ...], tuple[tuple[int, str], ...], str | None]:
    def invalid(reason: str) -> ValueError:
        return ValueError(f"invalid path template {template!r}: {reason}")

    parts = template[1:].split("/")
    last = len(parts) - 1
    segments: list[str | None] = []
    params: list[tuple[int, str]] = []
    tail: str | None = None
    seen: set[str] = set()
    for position, part in enumerate(parts):
        if "{" not in part and "}" not in part:
            # A trailing "" is a trailing slash: "/users/" matches only "/users/".
            segments.append("" if part == "" and position == last else _literal(part, template))
            continue
        if part.count("{") != part.count("}"):
            raise invalid(f"unbalanced braces in {part!r}")
        found = _PARAM.fullmatch(part)
        if found is None:
            raise invalid(f"{part!r}: a parameter must be a whole segment, {{name}}")
        name, converter = found.groups()
        if not (name.isidentifier() and name.isascii()):
            raise invalid(f"{part!r}: parameter names are letters, digits and '_'")
        if name in seen:
            raise invalid(f"duplicate parameter {name!r}")
        seen.add(name)
        if converter == "path":
            if position != last:
                raise invalid(f"{part!r} must be the last segment")
            tail = name
        elif converter in (None, "str"):
            segments.append(None)
            params.append((position, name))
        else:
            raise invalid(f"{part!r}: unknown converter {converter!r} (use 'str' or 'path')")
    return tuple(segments), tuple(params), tail


def _literal(part: str, whole: str) -> str:
    """One literal segment of a prefix or template, normalised like a request path."""
    try:
        segment = normalize_path(b"/" + part.encode("utf-8"))[1:]
    except BadRequest as exc:
        raise ValueError(f"{whole!r}: {exc.detail}") from None
    # "", ".", ".." and encoded slashes would be normalised away in requests: never matchable.
    if part in ("", ".", "..") or segment in ("", ".", "..") or "/" in segment:
        raise ValueError(f"{whole!r}: empty, dot or slash-containing segment {part!r}")
    return segment


def _config_path(path: str | None, key: str) -> str | None:
    if path is None:
        return None
    try:
        return normalize_path(path.encode("utf-8"))
    except BadRequest as exc:
        raise ValueError(f"{key} {path!r}: {exc.detail}") from None


def _parse_host(host: str | None) -> str | None:
    if host is None:
        return None
    host = host.lower()
    wildcard_ok = host.startswith("*.") and "*" not in host[1:] and host[2:3] not in ("", ".")
    if "*" in host and not wildcard_ok:
        raise ValueError(f"host {host!r}: only a leading '*.' wildcard is supported")
    if ":" in host and not host.startswith("["):
        raise ValueError(f"host {host!r}: give the host without a port")
    return host


@dataclass(frozen=True, slots=True)
class RouteMatch:
    route: Route
    params: dict[str, str]
    """Template parameters, percent-decoded."""
    forward_path: str


# --- the trie ------------------------------------------------------------------------------


class _Slot:
    """Routes ending at one trie node in one way, grouped by host so lookup stays O(1)."""

    __slots__ = ("any_host", "by_host")

    def __init__(self) -> None:
        # Keys are exact hosts and "*.example.com" patterns, which no real host can equal.
        self.by_host: dict[str, list[Route]] = {}
        self.any_host: list[Route] = []

    def add(self, route: Route) -> None:
        if route._host is None:
            self.any_host.append(route)
        else:
            self.by_host.setdefault(route._host, []).append(route)

    def pick(
        self, method: str, host: str | None, wildcard: str | None, refused: list[Route]
    ) -> Route | None:
        """The first route here allowing ``method``; routes refusing it go to ``refused``."""
        if host is not None and self.by_host:
            exact = self.by_host.get(host, [])
            wild = self.by_host.get(wildcard, []) if wildcard is not None else []
            # Exact and wildcard hosts are equally specific: config order decides between them.
            hosted = sorted(exact + wild, key=_by_index) if exact and wild else exact or wild
            for route in hosted:
                if route._methods is None or method in route._methods:
                    return route
                refused.append(route)
        for route in self.any_host:
            if route._methods is None or method in route._methods:
                return route
            refused.append(route)
        return None


def _by_index(route: Route) -> int:
    return route.index


class _Node:
    __slots__ = ("end", "literals", "param", "prefix", "tail")

    def __init__(self) -> None:
        self.literals: dict[str, _Node] = {}
        self.param: _Node | None = None
        self.end: _Slot | None = None
        """Templates ending exactly here."""
        self.tail: _Slot | None = None
        """Templates whose ``{x:path}`` tail takes the remaining segments from here."""
        self.prefix: _Slot | None = None
        """Prefixes ending here: they match here and everything below."""

    def insert(self, route: Route) -> None:
        node = self
        for segment in route._segments:
            if segment is None:
                node.param = node.param or _Node()
                node = node.param
            else:
                node = node.literals.setdefault(segment, _Node())
        if route._is_prefix:
            node.prefix = node.prefix or _Slot()
            node.prefix.add(route)
        elif route._tail is not None:
            node.tail = node.tail or _Slot()
            node.tail.add(route)
        else:
            node.end = node.end or _Slot()
            node.end.add(route)


def _search(
    node: _Node,
    segments: list[str],
    depth: int,
    method: str,
    host: str | None,
    wildcard: str | None,
    refused: list[Route],
) -> Route | None:
    """Depth-first, in precedence order. Each trie node is visited at most once per match."""
    if depth < len(segments):
        segment = segments[depth]
        child = node.literals.get(segment)
        if child is not None:
            found = _search(child, segments, depth + 1, method, host, wildcard, refused)
            if found is not None:
                return found
        # Parameters and tails never match an empty segment (the one after a trailing slash).
        if segment:
            if node.param is not None:
                found = _search(node.param, segments, depth + 1, method, host, wildcard, refused)
                if found is not None:
                    return found
            if node.tail is not None:
                found = node.tail.pick(method, host, wildcard, refused)
                if found is not None:
                    return found
    elif node.end is not None:
        found = node.end.pick(method, host, wildcard, refused)
        if found is not None:
            return found
    if node.prefix is not None:
        return node.prefix.pick(method, host, wildcard, refused)
    return None


#: How many recent (method, host, path) answers :class:`Router` keeps.
RECENT_MATCHES = 4096


class Router:
    """Selects the route for a request. Raises ``ValueError`` for a route it cannot compile."""

    def __init__(self, routes: Sequence[RouteConfig]) -> None:
        self._routes = tuple(Route(config, index) for index, config in enumerate(routes))
        self._root = _Node()
        for route in self._routes:
            self._root.insert(route)
        # Recent answers. Real traffic repeats a small set of (method, host, path); bounded by
        # clearing when full, so a scan of random paths costs memory only up to the limit.
        self._recent: dict[tuple[str, str | None, str], RouteMatch] = {}

    @property
    def routes(self) -> tuple[Route, ...]:
        return self._routes

    def match(self, method: str, host: str | None, path: str) -> RouteMatch:
        """Route a request. ``path`` is normalised; ``host`` is lower-case, without port.

        Raises :class:`RouteNotFound` when no route matches the path and host, and
        :class:`MethodNotAllowed` when some do but none allows ``method``.
        """
        key = (method, host, path)
        found = self._recent.get(key)
        if found is None:
            found = self.resolve(method, host, path)
            if len(self._recent) >= RECENT_MATCHES:
                self._recent.clear()
            self._recent[key] = found
        return found

    def resolve(self, method: str, host: str | None, path: str) -> RouteMatch:
        """:meth:`match` without the cache of recent answers (what the benchmark measures)."""
        if not path.startswith("/"):
            raise BadRequest("The request path must start with '/'")
        segments = path[1:].split("/")
        wildcard = None
        if host:
            dot = host.find(".")
            if dot > 0:  # "a.example.com" may match "*.example.com"
                wildcard = "*" + host[dot:]
        else:
            host = None
        refused: list[Route] = []
        route = _search(self._root, segments, 0, method, host, wildcard, refused)
        if route is None:
            if not refused:
                raise RouteNotFound()
            allowed: set[str] = set()
            for other in refused:
                allowed.update(other._methods or ())
            raise MethodNotAllowed(sorted(allowed))
        return RouteMatch(route, route._extract(segments), route.forward_path(path))
