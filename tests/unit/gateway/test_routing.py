"""Path normalisation, route matching, precedence and forwarded paths."""

from __future__ import annotations

import pytest

from onegate.errors import BadRequest, MethodNotAllowed, RouteNotFound
from onegate.gateway.config import Match, RouteConfig
from onegate.gateway.routing import Route, RouteMatch, Router
from onegate.http import normalize_path


def route(
    name: str,
    *,
    prefix: str | None = None,
    path: str | None = None,
    methods: list[str] | None = None,
    host: str | None = None,
    strip: str | None = None,
    rewrite: str | None = None,
) -> RouteConfig:
    return RouteConfig(
        name=name,
        match=Match(prefix=prefix, path=path, methods=methods, host=host),
        upstream="backend",
        strip_prefix=strip,
        rewrite_prefix=rewrite,
    )


def name_of(router: Router, path: str, method: str = "GET", host: str | None = None) -> str:
    return router.match(method, host, path).route.name


# --- normalize_path ------------------------------------------------------------------------

NORMALISED = [
    # already normal: untouched
    (b"/", "/"),
    (b"/api/users", "/api/users"),
    (b"/api/users/", "/api/users/"),
    (b"/a/b;v=1/c:d@e!$&'()*+,=", "/a/b;v=1/c:d@e!$&'()*+,="),
    # unreserved characters are decoded, any case
    (b"/%41%62%63%2d%2E%5f%7E%7e", "/Abc-._~~"),
    (b"/%30%39", "/09"),
    # other escapes are kept, hex upper-cased
    (b"/a%3a%3Ab", "/a%3A%3Ab"),
    (b"/a%20b", "/a%20b"),
    (b"/%252e%252e/x", "/%252e%252e/x"),  # one level of decoding only: "2e" is text
    (b"/caf%c3%a9", "/caf%C3%A9"),
    (b"/%25", "/%25"),
    # characters a path may not carry raw are escaped
    (b"/caf\xc3\xa9", "/caf%C3%A9"),
    (b"/a b", "/a%20b"),
    (b'/a"<>^`{|}[]', "/a%22%3C%3E%5E%60%7B%7C%7D%5B%5D"),
    # encoded slash and backslash, raw backslash: separators
    (b"/api%2Fai/x", "/api/ai/x"),
    (b"/api%2fai/x", "/api/ai/x"),
    (b"/api%5Cai/x", "/api/ai/x"),
    (b"/api%5cai/x", "/api/ai/x"),
    (b"/api\\ai\\x", "/api/ai/x"),
    (b"/\\\\evil.com/x", "/evil.com/x"),
    # runs of slashes collapse
    (b"//api//ai///x", "/api/ai/x"),
    (b"///", "/"),
    (b"/a//", "/a/"),
    (b"/a%2F%2F/b", "/a/b"),
    # dot-segments
    (b"/a/./b/", "/a/b/"),
    (b"/a/b/.", "/a/b/"),
    (b"/a/b/..", "/a/"),
    (b"/a/b/../", "/a/"),
    (b"/a/b/../c", "/a/c"),
    (b"/a/b//../c", "/a/c"),
    (b"/a/..", "/"),
    (b"/..", "/"),
    (b"/.", "/"),
    (b"/api/public/../admin", "/api/admin"),
    (b"/api/public/./../admin", "/api/admin"),
    (b"/api/%2e%2e/admin", "/admin"),
    (b"/api/public/%2E%2E/admin", "/api/admin"),
    (b"/api/public/.%2e/admin", "/api/admin"),
    (b"/api/public/%2e./admin", "/api/admin"),
    (b"/api/public%2F..%2Fadmin", "/api/admin"),
    (b"/api/public%5C..%5Cadmin", "/api/admin"),
    (b"/api/public\\..\\admin", "/api/admin"),
    (b"/%2e%2e/%2e%2e/etc", "/etc"),
    (b"/../../../etc/passwd", "/etc/passwd"),
    (b"/a/../../../b", "/b"),
    (b"/%2e/a", "/a"),
    # segments that merely contain dots are ordinary
    (b"/.well-known/x", "/.well-known/x"),
    (b"/a/.../b", "/a/.../b"),
    (b"/a/..b/c.", "/a/..b/c."),
    (b"/v1.2/x", "/v1.2/x"),
]


@pytest.mark.parametrize(
    ("raw", "expected"), NORMALISED, ids=[r.decode("latin-1") for r, _ in NORMALISED]
)
def test_normalize_path(raw: bytes, expected: str) -> None:
    assert normalize_path(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"), NORMALISED, ids=[r.decode("latin-1") for r, _ in NORMALISED]
)
def test_normalize_path_is_idempotent(raw: bytes, expected: str) -> None:
    assert normalize_path(expected.encode()) == expected


REJECTED = [
    b"/%00",
    b"/a%00b",
    b"/a%0d%0aSet-Cookie:x",
    b"/a%0A",
    b"/a%1f",
    b"/a%7f",
    b"/a\x00",
    b"/a\r\nx",
    b"/a\tb",
    b"/a\x7f",
    b"/%zz",
    b"/%4",
    b"/%",
    b"/a%g1",
    b"/%%41",
    b"/%+1",
    b"/% 1",
    b"",
    b"api/x",
    b"*",
    b"%2Fapi",
    b"\\api",
    b"http://example.com/x",
]


@pytest.mark.parametrize("raw", REJECTED, ids=[r.decode("latin-1") for r in REJECTED])
def test_normalize_path_rejects(raw: bytes) -> None:
    with pytest.raises(BadRequest):
        normalize_path(raw)


# --- prefixes and templates ----------------------------------------------------------------


def test_prefix_matches_on_segment_boundaries() -> None:
    router = Router([route("api", prefix="/api")])
    for path in ("/api", "/api/", "/api/x", "/api/x/y/"):
        assert name_of(router, path) == "api"
    for path in ("/apix", "/ap", "/", "/x/api"):
        with pytest.raises(RouteNotFound):
            router.match("GET", None, path)


def test_prefix_with_trailing_slash_is_the_same_prefix() -> None:
    router = Router([route("api", prefix="/api/")])
    assert name_of(router, "/api") == "api"
    assert name_of(router, "/api/x") == "api"
    with pytest.raises(RouteNotFound):
        router.match("GET", None, "/apix")


def test_root_prefix_matches_everything() -> None:
    router = Router([route("all", prefix="/")])
    for path in ("/", "/a", "/a/b/c/"):
        match = router.match("GET", None, path)
        assert match.route.name == "all"
        assert match.params == {}


def test_literal_segments_are_case_sensitive() -> None:
    router = Router([route("users", path="/users")])
    assert name_of(router, "/users") == "users"
    with pytest.raises(RouteNotFound):
        router.match("GET", None, "/Users")


def test_template_params() -> None:
    router = Router([route("post", path="/users/{user_id}/posts/{post_id:str}")])
    match = router.match("GET", None, "/users/42/posts/hello")
    assert match.route.name == "post"
    assert match.params == {"user_id": "42", "post_id": "hello"}
    for path in ("/users/42/posts", "/users/42/posts/", "/users/42/posts/a/b", "/users//posts/a"):
        with pytest.raises(RouteNotFound):
            router.match("GET", None, path)


def test_template_param_values_are_percent_decoded() -> None:
    router = Router([route("user", path="/users/{name}")])
    path = normalize_path(b"/users/caf%C3%A9%20au%3Alait")
    assert router.match("GET", None, path).params == {"name": "café au:lait"}


def test_template_param_never_matches_empty_segment() -> None:
    router = Router([route("user", path="/users/{id}")])
    with pytest.raises(RouteNotFound):
        router.match("GET", None, "/users/")


def test_template_trailing_slash_is_significant() -> None:
    router = Router([route("dir", path="/users/{id}/"), route("root", path="/")])
    assert name_of(router, "/users/1/") == "dir"
    assert name_of(router, "/") == "root"
    with pytest.raises(RouteNotFound):
        router.match("GET", None, "/users/1")


def test_template_tail() -> None:
    router = Router([route("files", path="/files/{bucket}/{rest:path}")])
    assert router.match("GET", None, "/files/b/a").params == {"bucket": "b", "rest": "a"}
    assert router.match("GET", None, "/files/b/a/b/c.txt").params == {
        "bucket": "b",
        "rest": "a/b/c.txt",
    }
    assert router.match("GET", None, "/files/b/a/").params == {"bucket": "b", "rest": "a/"}
    assert router.match("GET", None, "/files/b/%C3%A9%20x").params["rest"] == "é x"
    # the tail needs at least one non-empty segment
    for path in ("/files/b", "/files/b/"):
        with pytest.raises(RouteNotFound):
            router.match("GET", None, path)


def test_config_paths_are_normalised_like_requests() -> None:
    router = Router([route("cafe", prefix="/café"), route("tilde", path="/%7Euser/{x}")])
    assert name_of(router, normalize_path("/café/menu".encode())) == "cafe"
    assert name_of(router, normalize_path(b"/caf%c3%a9")) == "cafe"
    assert name_of(router, normalize_path(b"/~user/1")) == "tilde"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("/users/{id", "unbalanced"),
        ("/users/id}", "unbalanced"),
        ("/users/{{id}", "unbalanced"),
        ("/users/{id}}", "unbalanced"),
        ("/files/{rest:path}/x", "last segment"),
        ("/files/{rest:path}/{other}", "last segment"),
        ("/a/{id}/b/{id}", "duplicate"),
        ("/a/{id}/{id:path}", "duplicate"),
        ("/a/{id:int}", "unknown converter"),
        ("/a/{id:}", "unknown converter"),
        ("/a/{}", "parameter names"),
        ("/a/{1x}", "parameter names"),
        ("/a/{x-y}", "parameter names"),
        ("/a/{id}.json", "whole segment"),
        ("/a/x{id}", "whole segment"),
        ("/a//b", "empty"),
        ("/a/../b", "dot"),
        ("/a/./b", "dot"),
        ("/a/%2e%2e/b", "dot"),
        ("/a%2Fb/c", "slash"),
        ("/a/%zz", "Malformed"),
        ("/a/%00", "Control"),
    ],
)
def test_invalid_templates_raise(template: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        Router([route("ok", prefix="/ok"), route("bad", path=template)])
    assert "'bad'" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prefix": "/users/{id}"}, "braces"),
        ({"prefix": "/a//b"}, "empty"),
        ({"prefix": "/a/%zz"}, "Malformed"),
        ({"prefix": "/a", "host": "a.*.com"}, "wildcard"),
        ({"prefix": "/a", "host": "*"}, "wildcard"),
        ({"prefix": "/a", "host": "*."}, "wildcard"),
        ({"prefix": "/a", "host": "**.example.com"}, "wildcard"),
        ({"prefix": "/a", "host": "api.example.com:8080"}, "port"),
        ({"prefix": "/a", "methods": []}, "empty"),
        ({"prefix": "/a", "strip": "/x%zz"}, "strip_prefix"),
        ({"prefix": "/a", "rewrite": "/x%00"}, "rewrite_prefix"),
    ],
)
def test_invalid_routes_raise(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Router([route("bad", **kwargs)])  # type: ignore[arg-type]


def test_ipv6_host_is_accepted() -> None:
    router = Router([route("v6", prefix="/", host="[::1]")])
    assert name_of(router, "/", host="[::1]") == "v6"


# --- precedence ----------------------------------------------------------------------------


def test_literal_beats_param() -> None:
    router = Router([route("by-id", path="/users/{id}"), route("me", path="/users/me")])
    assert name_of(router, "/users/me") == "me"
    assert name_of(router, "/users/42") == "by-id"


def test_param_beats_tail() -> None:
    router = Router([route("tail", path="/files/{rest:path}"), route("one", path="/files/{name}")])
    assert name_of(router, "/files/a") == "one"
    assert name_of(router, "/files/a/b") == "tail"


def test_tail_beats_prefix_of_same_length() -> None:
    router = Router([route("prefix", prefix="/files"), route("tail", path="/files/{rest:path}")])
    assert name_of(router, "/files/a/b") == "tail"
    assert name_of(router, "/files") == "prefix"


def test_template_beats_prefix_of_same_length() -> None:
    router = Router([route("prefix", prefix="/api/health"), route("exact", path="/api/health")])
    assert name_of(router, "/api/health") == "exact"
    assert name_of(router, "/api/health/deep") == "prefix"


def test_param_template_beats_shorter_prefix() -> None:
    router = Router([route("api", prefix="/api"), route("item", path="/api/{id}")])
    assert name_of(router, "/api/7") == "item"
    assert name_of(router, "/api/7/x") == "api"
    assert name_of(router, "/api") == "api"


def test_more_literal_segments_beat_fewer() -> None:
    router = Router(
        [
            route("item", path="/api/{id}"),
            route("v1", prefix="/api/v1"),
            route("files", path="/api/{rest:path}"),
        ]
    )
    assert name_of(router, "/api/v1") == "v1"
    assert name_of(router, "/api/v1/x") == "v1"
    assert name_of(router, "/api/v2") == "item"
    assert name_of(router, "/api/v2/x") == "files"


def test_longer_prefix_beats_shorter_regardless_of_order() -> None:
    routes = [route("api", prefix="/api"), route("ai", prefix="/api/ai"), route("all", prefix="/")]
    for ordered in (routes, routes[::-1]):
        router = Router(ordered)
        assert name_of(router, "/api/ai/chat") == "ai"
        assert name_of(router, "/api/aix") == "api"
        assert name_of(router, "/api") == "api"
        assert name_of(router, "/other") == "all"
        assert name_of(router, "/") == "all"


def test_segments_compare_from_the_left() -> None:
    # Literal first segment beats a param there, even though the other template has more literals.
    router = Router([route("late", path="/{a}/b/c"), route("early", path="/a/{b}/{c}")])
    assert name_of(router, "/a/b/c") == "early"
    assert name_of(router, "/x/b/c") == "late"


def test_host_route_beats_hostless_route() -> None:
    router = Router(
        [route("any", prefix="/api"), route("hosted", prefix="/api", host="API.example.com")]
    )
    assert name_of(router, "/api/x", host="api.example.com") == "hosted"
    assert name_of(router, "/api/x", host="other.example.com") == "any"
    assert name_of(router, "/api/x") == "any"


def test_path_specificity_beats_host() -> None:
    router = Router(
        [route("hosted", prefix="/api", host="api.example.com"), route("v1", prefix="/api/v1")]
    )
    assert name_of(router, "/api/v1/x", host="api.example.com") == "v1"
    assert name_of(router, "/api/v2", host="api.example.com") == "hosted"


def test_config_order_breaks_ties() -> None:
    router = Router([route("first", prefix="/api"), route("second", prefix="/api")])
    assert name_of(router, "/api") == "first"
    router = Router(
        [
            route("wild", prefix="/api", host="*.example.com"),
            route("exact", prefix="/api", host="api.example.com"),
        ]
    )
    assert name_of(router, "/api", host="api.example.com") == "wild"
    router = Router(
        [
            route("exact", prefix="/api", host="api.example.com"),
            route("wild", prefix="/api", host="*.example.com"),
        ]
    )
    assert name_of(router, "/api", host="api.example.com") == "exact"


# --- hosts ---------------------------------------------------------------------------------


def test_exact_host() -> None:
    router = Router([route("api", prefix="/", host="Api.Example.com")])
    assert name_of(router, "/", host="api.example.com") == "api"
    for host in (None, "", "example.com", "x.api.example.com", "api.example.com.evil"):
        with pytest.raises(RouteNotFound):
            router.match("GET", host, "/")


def test_wildcard_host_matches_exactly_one_label() -> None:
    router = Router([route("sub", prefix="/", host="*.example.com")])
    assert name_of(router, "/", host="a.example.com") == "sub"
    assert name_of(router, "/", host="api-1.example.com") == "sub"
    for host in (None, "example.com", "a.b.example.com", ".example.com", "aexample.com"):
        with pytest.raises(RouteNotFound):
            router.match("GET", host, "/")


# --- methods -------------------------------------------------------------------------------


def test_method_not_allowed_lists_allowed_methods_sorted() -> None:
    router = Router([route("ro", path="/items/{id}", methods=["get"])])
    assert name_of(router, "/items/1", "GET") == "ro"
    assert name_of(router, "/items/1", "HEAD") == "ro"
    with pytest.raises(MethodNotAllowed) as info:
        router.match("DELETE", None, "/items/1")
    assert info.value.allowed == ["GET", "HEAD"]
    assert info.value.headers == {"allow": "GET, HEAD"}


def test_head_is_not_allowed_without_get() -> None:
    router = Router([route("w", prefix="/w", methods=["POST", "PUT"])])
    with pytest.raises(MethodNotAllowed) as info:
        router.match("HEAD", None, "/w")
    assert info.value.allowed == ["POST", "PUT"]


def test_method_filtering_falls_back_to_less_specific_route() -> None:
    router = Router(
        [
            route("catch-all", prefix="/api"),
            route("read", path="/api/items/{id}", methods=["GET"]),
            route("write", path="/api/items/{id}", methods=["PUT", "DELETE"]),
        ]
    )
    assert name_of(router, "/api/items/1", "GET") == "read"
    assert name_of(router, "/api/items/1", "DELETE") == "write"
    assert name_of(router, "/api/items/1", "POST") == "catch-all"


def test_405_allowed_is_union_of_matching_routes() -> None:
    router = Router(
        [
            route("items", prefix="/api/items", methods=["POST"]),
            route("read", path="/api/items/{id}", methods=["GET"]),
            route("write", path="/api/items/{id}", methods=["PUT", "DELETE"]),
            route("other", prefix="/other", methods=["PATCH"]),  # does not match the path
            route("elsewhere", prefix="/api", methods=["OPTIONS"], host="x.example.com"),
        ]
    )
    with pytest.raises(MethodNotAllowed) as info:
        router.match("PATCH", None, "/api/items/1")
    assert info.value.allowed == ["DELETE", "GET", "HEAD", "POST", "PUT"]
    with pytest.raises(MethodNotAllowed) as info:
        router.match("PATCH", "x.example.com", "/api/items/1")
    assert info.value.allowed == ["DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT"]


def test_404_when_path_matches_but_host_does_not() -> None:
    router = Router([route("api", prefix="/api", methods=["GET"], host="api.example.com")])
    with pytest.raises(RouteNotFound):
        router.match("POST", "www.example.com", "/api")
    with pytest.raises(MethodNotAllowed):
        router.match("POST", "api.example.com", "/api")


def test_methods_are_case_sensitive() -> None:
    router = Router([route("r", prefix="/", methods=["GET"])])
    with pytest.raises(MethodNotAllowed):
        router.match("get", None, "/")


# --- forwarded paths -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strip", "rewrite", "path", "expected"),
    [
        (None, None, "/api/x", "/api/x"),
        ("/api", None, "/api/x/y", "/x/y"),
        ("/api", None, "/api/x/", "/x/"),
        ("/api", None, "/api", "/"),
        ("/api", None, "/api/", "/"),
        ("/api", None, "/apix/y", "/apix/y"),  # not on a segment boundary: left alone
        ("/api/", None, "/api/x", "/x"),
        ("/", None, "/api/x", "/api/x"),
        (None, "/v2", "/x", "/v2/x"),
        (None, "/v2/", "/x", "/v2/x"),
        (None, "/", "/x", "/x"),
        ("/api", "/v2", "/api/x", "/v2/x"),
        ("/api", "/v2/", "/api/x", "/v2/x"),
        ("/api", "/v2", "/api", "/v2"),
        ("/api", "/v2/", "/api", "/v2/"),
        ("/api", "/v2", "/api/", "/v2/"),
        ("/api", "/", "/api", "/"),
        ("/api", "/", "/api/", "/"),
        ("/api/ai", "/internal/ai", "/api/ai/chat", "/internal/ai/chat"),
        ("/api", "/v2", "/apix", "/v2/apix"),
        ("/caf%c3%a9", None, "/caf%C3%A9/x", "/x"),
        (None, "/a b", "/x", "/a%20b/x"),
    ],
)
def test_forward_path(strip: str | None, rewrite: str | None, path: str, expected: str) -> None:
    config = route("r", prefix="/", strip=strip, rewrite=rewrite)
    forwarded = Route(config, 0).forward_path(path)
    assert forwarded == expected
    assert "//" not in forwarded


def test_match_carries_forward_path_and_route() -> None:
    router = Router([route("ai", prefix="/api/ai", strip="/api/ai", rewrite="/v1")])
    match = router.match("POST", None, normalize_path(b"//api/ai/../ai/%63hat"))
    assert match == RouteMatch(router.routes[0], {}, "/v1/chat")
    assert match.route.name == "ai"
    assert match.route.upstream == "backend"
    assert match.route.index == 0


def test_routes_keep_config_order() -> None:
    configs = [route("b", prefix="/b"), route("a", prefix="/a")]
    router = Router(configs)
    assert [r.name for r in router.routes] == ["b", "a"]
    assert [r.index for r in router.routes] == [0, 1]
    assert router.routes[1].config is configs[1]


def test_empty_router_finds_nothing() -> None:
    with pytest.raises(RouteNotFound):
        Router([]).match("GET", None, "/")


# --- scale ---------------------------------------------------------------------------------


def test_five_thousand_routes_resolve_correctly() -> None:
    configs = []
    for i in range(1000):
        configs += [
            route(f"prefix{i}", prefix=f"/svc{i}/v1"),
            route(f"item{i}", path=f"/svc{i}/items/{{id}}", methods=["GET", "PUT"]),
            route(f"files{i}", path=f"/svc{i}/files/{{rest:path}}"),
            route(f"hosted{i}", prefix=f"/svc{i}/v1", host=f"svc{i}.example.com"),
            route(f"detail{i}", path=f"/svc{i}/items/{{id}}/detail", host="*.example.com"),
        ]
    router = Router(configs)
    assert len(router.routes) == 5000
    for i in (0, 1, 499, 998, 999):
        assert name_of(router, f"/svc{i}/v1/users/42") == f"prefix{i}"
        assert name_of(router, f"/svc{i}/v1", host=f"svc{i}.example.com") == f"hosted{i}"
        assert name_of(router, f"/svc{i}/v1", host=f"svc{i + 1}.example.com") == f"prefix{i}"
        match = router.match("PUT", None, f"/svc{i}/items/{i * 7}")
        assert (match.route.name, match.params) == (f"item{i}", {"id": str(i * 7)})
        match = router.match("GET", None, f"/svc{i}/files/a/b{i}.txt")
        assert (match.route.name, match.params) == (f"files{i}", {"rest": f"a/b{i}.txt"})
        assert name_of(router, f"/svc{i}/items/1/detail", host="x.example.com") == f"detail{i}"
        with pytest.raises(RouteNotFound):
            router.match("GET", None, f"/svc{i}/items/1/detail")
        with pytest.raises(MethodNotAllowed) as info:
            router.match("POST", None, f"/svc{i}/items/1")
        assert info.value.allowed == ["GET", "HEAD", "PUT"]
    for path in ("/svc1000/v1", "/svc1/v2", "/svc/v1", "/", "/svc1"):
        with pytest.raises(RouteNotFound):
            router.match("GET", None, path)


@pytest.mark.parametrize("raw", [b"/api/public/..;/admin", b"/api/.;x/admin", b"/a/%2e%2e;/b"])
def test_dot_segments_with_path_parameters_are_rejected(raw: bytes) -> None:
    with pytest.raises(BadRequest):
        normalize_path(raw)
