"""Configuration loading: every mistake is reported as ``file:line: key: message``.

An operator reading the error should be able to jump to the line and fix the key without
reading a traceback. Environment overrides replace an upstream's targets, and the effective
configuration can be shown with its secrets masked.
"""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest

from onegate.auth.config import ApiKeyIssuer
from onegate.errors import ConfigError
from onegate.gateway.config import Config, GatewayConfig, load_config, parse_config
from onegate.loader import masked

SOURCE = "gateway.yaml"

GOOD = """\
server:
  port: 8080
upstreams:
  main:
    targets: ["http://127.0.0.1:3000"]
  ai-agents:
    targets: ["http://127.0.0.1:8000"]
routes:
  - name: ai
    match: {prefix: /api/ai}
    upstream: ai-agents
  - name: main
    match: {prefix: /api}
    upstream: main
"""


def parse(text: str, environ: dict[str, str] | None = None) -> GatewayConfig:
    return parse_config(textwrap.dedent(text), SOURCE, environ or {})


def config_error(text: str, environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse(text, environ)
    return caught.value


# --- a good file -----------------------------------------------------------------------------


def test_good_config_parses_with_defaults_filled_in() -> None:
    config = parse(GOOD)
    assert config.server.port == 8080
    assert config.server.max_body_bytes == 10 * 1024 * 1024
    assert config.upstreams["main"].targets == ["http://127.0.0.1:3000"]
    assert config.upstreams["main"].balance == "round_robin"
    assert [route.name for route in config.routes] == ["ai", "main"]
    assert config.routes[0].upstream == "ai-agents"
    assert config.routes[0].timeouts.read == 30.0


def test_empty_file_is_refused_rather_than_taken_for_no_routes() -> None:
    error = config_error("")
    assert str(error) == f"{SOURCE}:1: the config file is empty"


def test_a_mapping_with_no_routes_is_a_valid_config() -> None:
    config = parse("server: {port: 8080}\n")
    assert config.upstreams == {}
    assert config.routes == []


def test_load_config_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "onegate.yaml"
    path.write_text(GOOD)
    loaded = load_config(path, {})
    assert loaded.path == path
    assert loaded.gateway == parse(GOOD)


def test_load_config_uses_the_environment_variable(tmp_path: Path) -> None:
    path = tmp_path / "from-env.yaml"
    path.write_text(GOOD)
    loaded = load_config(None, {"ONEGATE_CONFIG": str(path)})
    assert loaded.path == path
    assert len(loaded.gateway.routes) == 2


def test_load_config_without_a_file_uses_the_built_in_default() -> None:
    loaded = load_config(None, {})
    assert loaded.path is not None and loaded.path.name == "onegate.yaml"
    assert loaded.gateway.upstreams["demo"].targets == ["asgi:onegate.dev.demo:app"]


def test_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(missing, {})
    assert str(caught.value) == f"{missing}: cannot read config file: No such file or directory"


# --- errors name file, line and key ----------------------------------------------------------


def test_unknown_key() -> None:
    error = config_error(
        """\
        server:
          port: 8080
          colour: blue
        """
    )
    assert (error.location, error.key) == (f"{SOURCE}:3", "server.colour")
    # Nothing close to 'colour': the valid keys are listed instead of a guess.
    assert str(error).startswith(f"{SOURCE}:3: server.colour: unknown key 'colour' (valid keys: ")
    assert "host, port, workers" in str(error)


@pytest.mark.parametrize(
    ("text", "line", "key", "suggestion"),
    [
        ("routes:\n  - name: a\n    match: {prefx: /api}\n    upstream: main\n", 3,
         "routes[0].match.prefx", "prefix"),
        ("upstreams:\n  main:\n    targets: [http://127.0.0.1:1]\n    helth: {path: /}\n", 4,
         "upstreams.main.helth", "health"),
        ("server:\n  workrs: 2\n", 2, "server.workrs", "workers"),
        ("rate_limits:\n  policies:\n    - {name: p, limit: 1, windw_seconds: 1}\n", 3,
         "rate_limits.policies[0].windw_seconds", "window_seconds"),
        # Inside a tagged union the tag pydantic adds ('jwt') is not part of the file's path.
        ("auth:\n  issuers:\n    - type: jwt\n      name: j\n      issuer: x\n"
         "      audiences: [a]\n      algorithms: [HS256]\n      keys: [{secret_env: X}]\n"
         "      audience: [b]\n", 9, "auth.issuers[0].audience", "audiences"),
    ],
)  # fmt: skip
def test_unknown_key_names_itself_and_the_closest_valid_one(
    text: str, line: int, key: str, suggestion: str
) -> None:
    error = config_error(text)
    assert error.problems == [error]
    assert (error.location, error.key) == (f"{SOURCE}:{line}", key)
    unknown = key.rpartition(".")[2]
    assert error.detail == f"unknown key {unknown!r}; did you mean {suggestion!r}?"


def test_unknown_key_in_a_route() -> None:
    extra_route = [
        "  - name: extra",
        "    match: {prefix: /extra}",
        "    upstream: main",
        "    timeout: 5",
    ]
    error = config_error(GOOD + "\n".join(extra_route) + "\n")
    assert (error.location, error.key) == (f"{SOURCE}:18", "routes[2].timeout")


def test_wrong_type() -> None:
    error = config_error(
        """\
        server:
          host: 127.0.0.1
          port: eighty
        """
    )
    assert (error.location, error.key) == (f"{SOURCE}:3", "server.port")
    assert "valid integer" in error.detail


def test_missing_targets() -> None:
    error = config_error(
        """\
        upstreams:
          main:
            balance: round_robin
        """
    )
    assert (error.location, error.key) == (f"{SOURCE}:2", "upstreams.main.targets")
    assert error.detail == "Field required"


def test_empty_targets() -> None:
    error = config_error(
        """\
        upstreams:
          main:
            targets: []
        """
    )
    assert (error.location, error.key) == (f"{SOURCE}:3", "upstreams.main.targets")
    assert "at least 1 item" in error.detail


@pytest.mark.parametrize(
    "target",
    [
        "ftp://127.0.0.1:21",
        "127.0.0.1:3000",
        "https://api.example.com/v1",  # https is a target (issue 10), a path still is not
        "http://api.example.com/v1",
        "http://two words:80",
        "asgi:module_without_attribute",
        "asgi:too:many:colons",
    ],
)
def test_bad_target_url(target: str) -> None:
    error = config_error(
        f"""\
        upstreams:
          main:
            targets:
              - "http://127.0.0.1:3000"
              - "{target}"
        """
    )
    assert error.key == "upstreams.main.targets"
    assert error.location == f"{SOURCE}:3"
    assert repr(target) in error.detail


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        ("http://127.0.0.1:99999", "the port must be a number from 1 to 65535"),
        ("http://backend:http", "the port must be a number from 1 to 65535"),
        ("http://:80", "expected http://host:port"),
    ],
)
def test_bad_target_host_or_port(target: str, problem: str) -> None:
    error = config_error(
        f"""\
        upstreams:
          main:
            targets: ["{target}"]
        """
    )
    assert (error.location, error.key) == (f"{SOURCE}:3", "upstreams.main.targets")
    assert problem in error.detail


def test_credentials_in_a_target_are_rejected_without_echoing_them() -> None:
    error = config_error(
        """\
        upstreams:
          main:
            targets: ["http://deploy:hunter2@10.0.0.5:3000"]
        """
    )
    assert (error.location, error.key) == (f"{SOURCE}:3", "upstreams.main.targets")
    assert "credentials in a target URL are not supported" in error.detail
    assert "hunter2" not in str(error)


def test_good_targets_are_accepted() -> None:
    config = parse(
        """\
        upstreams:
          main:
            targets:
              - http://127.0.0.1:3000
              - http://backend
              - http://backend.internal:8080/
              - asgi:onegate.dev.demo:app
        """
    )
    assert len(config.upstreams["main"].targets) == 4


def test_route_referencing_an_unknown_upstream() -> None:
    error = config_error(GOOD.replace("upstream: main", "upstream: mian"))
    assert error.key == "routes[1].upstream"
    assert error.location == f"{SOURCE}:14"
    assert error.detail == "unknown upstream 'mian' (known: ai-agents, main)"


def test_duplicate_route_names() -> None:
    error = config_error(GOOD.replace("name: main", "name: ai"))
    assert (error.location, error.key) == (f"{SOURCE}:12", "routes[1].name")
    assert error.detail == "duplicate route name 'ai'"


def test_route_match_needs_exactly_one_path_kind() -> None:
    error = config_error(GOOD.replace("match: {prefix: /api}", "match: {prefix: /api, path: /x}"))
    assert (error.location, error.key) == (f"{SOURCE}:13", "routes[1].match")
    assert "exactly one of 'prefix' or 'path'" in error.detail


@pytest.mark.parametrize(
    ("text", "line"),
    [
        pytest.param("server:\n  port: 8080\n upstreams: {}\n", 3, id="bad-indent"),
        pytest.param("server:\n\tport: 8080\n", 2, id="tab"),
        pytest.param("routes:\n  - name: a\n    match: {prefix: /a\n", 4, id="unclosed-flow"),
        pytest.param('server:\n  host: "127.0.0.1\n', 3, id="unclosed-quote"),
    ],
)
def test_yaml_syntax_error_names_the_line(text: str, line: int) -> None:
    error = config_error(text)
    assert error.location == f"{SOURCE}:{line}"
    assert error.key is None
    assert str(error).startswith(f"{SOURCE}:{line}: invalid YAML: ")


def test_top_level_must_be_a_mapping() -> None:
    error = config_error("- server\n- routes\n")
    assert str(error) == f"{SOURCE}:1: the top level must be a mapping"


def test_bad_cidr_in_trusted_proxies() -> None:
    error = config_error(
        """\
        server:
          trusted_proxies:
            - 10.0.0.0/8
            - 10.0.0.300/8
        """
    )
    # The error points at the very entry, not just at the list.
    assert (error.location, error.key) == (f"{SOURCE}:4", "server.trusted_proxies[1]")
    assert error.detail == "'10.0.0.300/8' is not an IP network"


def test_several_errors_are_all_reported_one_per_line_in_file_order() -> None:
    error = config_error(
        """\
        routes:
          - name: a
            match: {prefix: /a}
            upstream: main
            timeout: 5
        server:
          port: eighty
          colour: blue
          workers: none
        """
    )
    lines = str(error).splitlines()
    assert [(p.location, p.key) for p in error.problems] == [
        (f"{SOURCE}:5", "routes[0].timeout"),
        (f"{SOURCE}:7", "server.port"),
        (f"{SOURCE}:8", "server.colour"),
        (f"{SOURCE}:9", "server.workers"),
    ]
    assert lines == [p.line() for p in error.problems]
    assert not any("more)" in line for line in lines)
    assert lines[0].startswith(f"{SOURCE}:5: routes[0].timeout: unknown key 'timeout'; did you")


def test_error_is_one_line() -> None:
    error = config_error(GOOD.replace("upstream: main", "upstream: nope"))
    assert "\n" not in str(error)


# --- environment overrides -------------------------------------------------------------------


def test_environment_replaces_targets() -> None:
    config = parse(GOOD, {"ONEGATE_UPSTREAM_MAIN_URL": "http://10.0.0.5:3000"})
    assert config.upstreams["main"].targets == ["http://10.0.0.5:3000"]
    assert config.upstreams["ai-agents"].targets == ["http://127.0.0.1:8000"]


def test_environment_takes_a_comma_separated_list() -> None:
    environ = {"ONEGATE_UPSTREAM_MAIN_URL": " http://10.0.0.5:3000 ,http://10.0.0.6:3000,"}
    config = parse(GOOD, environ)
    assert config.upstreams["main"].targets == ["http://10.0.0.5:3000", "http://10.0.0.6:3000"]


def test_environment_names_use_underscores_for_dashes() -> None:
    config = parse(GOOD, {"ONEGATE_UPSTREAM_AI_AGENTS_URL": "asgi:onegate.dev.legacy:ai_app"})
    assert config.upstreams["ai-agents"].targets == ["asgi:onegate.dev.legacy:ai_app"]


def test_environment_override_supplies_missing_targets() -> None:
    config = parse(
        "upstreams:\n  main: {}\n", {"ONEGATE_UPSTREAM_MAIN_URL": "http://10.0.0.5:3000"}
    )
    assert config.upstreams["main"].targets == ["http://10.0.0.5:3000"]


def test_environment_naming_no_upstream_is_an_error_listing_the_valid_names() -> None:
    # A typo (AI instead of AI_AGENTS) would otherwise leave the file's targets in place.
    error = config_error(GOOD, {"ONEGATE_UPSTREAM_AI_URL": "http://10.0.0.5:3000"})
    assert (error.location, error.key) == (f"environment ({SOURCE})", "ONEGATE_UPSTREAM_AI_URL")
    assert error.detail == (
        "names no upstream of this configuration; valid: ONEGATE_UPSTREAM_MAIN_URL (main), "
        "ONEGATE_UPSTREAM_AI_AGENTS_URL (ai-agents)"
    )


def test_environment_naming_an_upstream_when_there_are_none_is_an_error() -> None:
    error = config_error("server: {port: 8080}\n", {"ONEGATE_UPSTREAM_MAIN_URL": "http://h:1"})
    assert error.key == "ONEGATE_UPSTREAM_MAIN_URL"
    assert error.detail.endswith("valid: no upstreams")


def test_other_onegate_variables_are_not_taken_for_upstreams() -> None:
    environ = {"ONEGATE_UPSTREAM_MAIN_TIMEOUT": "5", "ONEGATE_CONFIG": "x", "UPSTREAM_X_URL": "y"}
    assert set(parse(GOOD, environ).upstreams) == {"main", "ai-agents"}


def test_empty_environment_override_is_an_error() -> None:
    error = config_error(GOOD, {"ONEGATE_UPSTREAM_MAIN_URL": " , "})
    assert error.key == "ONEGATE_UPSTREAM_MAIN_URL"
    assert error.location == f"environment ({SOURCE})"
    assert str(error) == f"environment ({SOURCE}): ONEGATE_UPSTREAM_MAIN_URL: is empty"


def test_bad_url_from_the_environment_names_the_variable() -> None:
    error = config_error(GOOD, {"ONEGATE_UPSTREAM_MAIN_URL": "ftp://10.0.0.5"})
    assert (error.location, error.key) == (f"environment ({SOURCE})", "ONEGATE_UPSTREAM_MAIN_URL")
    assert "'ftp://10.0.0.5': expected http://host:port" in error.detail


def test_credentials_from_the_environment_are_rejected_without_echoing_them() -> None:
    error = config_error(GOOD, {"ONEGATE_UPSTREAM_MAIN_URL": "http://svc:t0ken@10.0.0.5:3000"})
    assert error.key == "ONEGATE_UPSTREAM_MAIN_URL"
    assert "credentials in a target URL are not supported" in error.detail
    assert "t0ken" not in str(error)


# --- masked view -----------------------------------------------------------------------------


WITH_SECRETS = (
    GOOD
    + """\
auth:
  issuers:
    - name: partners
      type: api_key
      store: postgresql://onegate:hunter2@db.internal:5432/keys
    - name: staff
      type: jwt
      issuer: https://login.example.com
      audiences: [api]
      algorithms: [HS256]
      keys:
        - kid: k1
          secret_env: STAFF_JWT_SECRET
"""
)


def test_masked_hides_url_credentials() -> None:
    config = Config(parse(WITH_SECRETS))
    masked = config.masked()
    partners = masked["auth"]["issuers"][0]
    assert partners["store"] == "postgresql://********@db.internal:5432/keys"
    assert "hunter2" not in repr(masked)
    # Only a copy is masked: the live configuration keeps the real URL.
    issuer = config.gateway.auth.issuers[0]
    assert isinstance(issuer, ApiKeyIssuer)
    assert issuer.store.endswith("onegate:hunter2@db.internal:5432/keys")


def test_masked_shows_the_names_of_secret_variables() -> None:
    # The variable's name says where the secret is; only a value would be the secret.
    masked = Config(parse(WITH_SECRETS)).masked()
    key = masked["auth"]["issuers"][1]["keys"][0]
    assert key["secret_env"] == "STAFF_JWT_SECRET"
    assert key["kid"] == "k1"


@pytest.mark.parametrize("key", ["secret", "password", "token", "api_key", "private_key"])
def test_masked_hides_the_values_of_secret_looking_keys(key: str) -> None:
    assert masked({key: "s3cr3t", f"{key}_env": "VAR"}) == {key: "********", f"{key}_env": "VAR"}


def test_masked_keeps_everything_else() -> None:
    config = Config(parse(GOOD))
    masked = config.masked()
    assert masked == config.gateway.model_dump(mode="json")
    assert masked["routes"][0]["name"] == "ai"
    assert masked["upstreams"]["main"]["targets"] == ["http://127.0.0.1:3000"]


def test_masked_shows_environment_overrides() -> None:
    environ = {"ONEGATE_UPSTREAM_MAIN_URL": "http://10.0.0.7:3000,http://10.0.0.8:3000"}
    masked = Config(parse(GOOD, environ)).masked()
    assert masked["upstreams"]["main"]["targets"] == [
        "http://10.0.0.7:3000",
        "http://10.0.0.8:3000",
    ]


def test_a_file_that_is_not_utf8_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "onegate.yaml"
    path.write_bytes(b"server:\n  host: caf\xe9\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert str(caught.value) == f"{path}: the file is not UTF-8"


def test_the_digest_is_that_of_the_bytes_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "onegate.yaml"
    path.write_bytes(GOOD.replace("\n", "\r\n").encode())
    config = load_config(path, {})
    assert config.digest == hashlib.sha256(path.read_bytes()).hexdigest()
