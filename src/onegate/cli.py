"""The ``onegate`` command.

Errors the operator can fix are printed as one line naming the file, line and key, with exit
status 2; tracebacks are for bugs only.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import json
import os
import re
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import yaml

from onegate import __version__
from onegate.errors import ConfigError
from onegate.gateway.config import Config, load_config


def _typer(help: str, **options: Any) -> typer.Typer:
    # Plain help (rich_markup_mode=None): typer's rich help shows a flag as "--json <bool>", as if
    # it took a value; click's plain help shows it as the flag it is.
    return typer.Typer(help=help, no_args_is_help=True, rich_markup_mode=None, **options)


app = _typer(
    "onegate: one endpoint in front of every backend.",
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = _typer("Validate and inspect configuration.")
dev_app = _typer("Development helpers.")
app.add_typer(config_app, name="config")
app.add_typer(dev_app, name="dev")

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Config file (default: $ONEGATE_CONFIG, else built-in)."),
]


class LogFormatChoice(enum.StrEnum):
    """The values of ``server.log_format``, as ``--log-format`` choices."""

    auto = "auto"
    json = "json"
    text = "text"


class StandIn(enum.StrEnum):
    """The stand-in legacy backends, as ``dev legacy-backends --only`` choices."""

    main = "main"
    fastapi = "fastapi"
    ai = "ai"


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"onegate {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """onegate: one endpoint in front of every backend."""


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``onegate: message`` (each line of it, for several problems) and exit."""
    for line in message.splitlines() or [""]:
        typer.echo(f"onegate: {line}", err=True)
    raise typer.Exit(code)


def _load(path: Path | None) -> Config:
    try:
        return load_config(path)
    except ConfigError as error:
        fail(str(error))


def _port_in_use(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on right now, or None.

    Tried before the app and its workers start, so that a taken port is one line naming it
    rather than a traceback from each worker. SO_REUSEADDR as the server itself sets it, so
    that connections of a previous run in TIME_WAIT are not taken for a listener.
    """
    if port == 0:
        return None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return None  # the server reports an unresolvable host in its own words
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is already in use (another onegate?); use --port"
            return f"cannot listen on {host}:{port}: {exc.strerror}"
    return None


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Override server.host.")] = None,
    port: Annotated[int | None, typer.Option(help="Override server.port.")] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Worker processes (default: one per core).")
    ] = None,
    log_format: Annotated[
        LogFormatChoice | None,
        typer.Option(
            case_sensitive=False,
            help="Override server.log_format: json, text, or auto (text on a terminal).",
        ),
    ] = None,
) -> None:
    """Start the gateway."""
    from onegate.gateway.server import serve as run_server

    loaded = _load(config)
    server = loaded.gateway.server
    busy = _port_in_use(host or server.host, server.port if port is None else port)
    if busy is not None:
        fail(busy)
    try:
        run_server(
            loaded,
            host=host,
            port=port,
            workers=workers,
            log_format=None if log_format is None else log_format.value,
        )
    except ConfigError as error:
        fail(str(error))


@config_app.command("validate")
def config_validate(
    file: Annotated[
        Path | None,
        typer.Argument(help="Config file to check (default: --config, $ONEGATE_CONFIG)."),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Check a config file; print one line per problem found and exit non-zero.

    Environment variables the file names for secrets (secret_env) need not be set here: each
    one that is not is reported as "not set here", and the check goes on without it.
    """
    if file is not None and config is not None and file != config:
        fail(f"two files given ({file} and --config {config}); check one at a time")
    loaded = _load(file or config)
    unset = _unset_secret_variables(loaded)
    try:
        from onegate.gateway.runtime import Runtime

        with _stand_in_secrets([variable for variable, _ in unset]):
            Runtime(loaded)
    except ConfigError as error:
        fail(str(error))
    gateway = loaded.gateway
    shown = loaded.path or "built-in configuration"
    typer.echo(f"{shown}: ok ({len(gateway.routes)} routes, {len(gateway.upstreams)} upstreams)")
    for _, note in unset:
        typer.echo(note)


def _unset_secret_variables(loaded: Config) -> list[tuple[str, str]]:
    """``(variable, note)`` for every ``*_env`` setting whose variable is not set, the note
    located like an error (``file:line: key: VAR is not set here ...``)."""
    found: list[tuple[str, str]] = []

    def walk(value: object, loc: tuple[str | int, ...]) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if str(key).endswith("_env") and isinstance(item, str):
                    if not os.environ.get(item):
                        note = f"{item} is not set here (the gateway will need it)"
                        found.append((item, loaded.error(note, *loc, str(key)).line()))
                else:
                    walk(item, (*loc, str(key)))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, (*loc, index))

    walk(loaded.gateway.model_dump(mode="json"), ())
    return found


@contextlib.contextmanager
def _stand_in_secrets(variables: list[str]) -> Iterator[None]:
    """Set ``variables`` to a placeholder while the gateway is built, then unset them.

    The placeholder is 64 bytes, long enough for every HMAC algorithm's key-length check, so
    only the other settings are judged. This process exits right after; nothing else reads it.
    """
    for variable in variables:
        os.environ[variable] = "not-set-here-" + "x" * 51
    try:
        yield
    finally:
        for variable in variables:
            os.environ.pop(variable, None)


@config_app.command("show")
def config_show(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of YAML.")] = False,
) -> None:
    """Print the effective configuration (defaults and environment applied, secrets masked)."""
    data = _load(config).masked()
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        typer.echo(yaml.safe_dump(data, sort_keys=False).rstrip())


@app.command()
def check(
    config: ConfigOption = None,
    gateway: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="Gateway base URL, e.g. http://127.0.0.1:9000 for `serve --port 9000` "
            "(default: from server.host and server.port).",
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Port the gateway was served on (with --port)."),
    ] = None,
    header: Annotated[
        list[str] | None,
        typer.Option(
            "--header",
            "-H",
            metavar="NAME:VALUE",
            help="NAME:VALUE sent on every probe through the gateway (repeatable).",
        ),
    ] = None,
    bearer_env: Annotated[
        str | None,
        typer.Option(
            "--bearer-env",
            metavar="VAR",
            help="Environment variable holding a token (JWT or API key), sent through the "
            "gateway as Authorization: Bearer.",
        ),
    ] = None,
    direct_header: Annotated[
        list[str] | None,
        typer.Option(
            "--direct-header",
            metavar="NAME:VALUE",
            help="NAME:VALUE sent on every direct probe, for a backend that checks its own "
            "credentials (repeatable).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds per probe.")] = 5.0,
) -> None:
    """Probe every route through the gateway and directly; exit 1 if anything fails."""
    from onegate.check import render_json, render_table, run_check

    headers = _headers(header or [], "--header")
    if bearer_env is not None:
        token = os.environ.get(bearer_env, "").strip()
        if not token:
            fail(f"--bearer-env {bearer_env}: the variable is not set or empty")
        if any(name.lower() == "authorization" for name in headers):
            fail("--bearer-env and --header Authorization: give the credential once")
        headers["Authorization"] = f"Bearer {token}"
    loaded = _load(config)
    if gateway is not None and port is not None:
        fail("--gateway and --port: give the port in the --gateway URL instead")
    base = gateway or _local_url(loaded.gateway.server.host, port or loaded.gateway.server.port)
    report = run_check(
        loaded,
        base,
        timeout=timeout,
        headers=headers,
        direct_headers=_headers(direct_header or [], "--direct-header"),
    )
    if as_json:
        typer.echo(render_json(report))
    else:
        render_table(report)
    raise typer.Exit(0 if report.ok else 1)


_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def _headers(values: list[str], option: str) -> dict[str, str]:
    """``NAME:VALUE`` options as headers; a malformed one stops the command, naming the option
    but never echoing the value (it is usually a credential)."""
    headers: dict[str, str] = {}
    for value in values:
        name, colon, content = value.partition(":")
        name, content = name.strip(), content.strip()
        if not colon or not _HEADER_NAME.match(name):
            fail(f"{option} {name or value[:20]!r}...: expected NAME:VALUE, e.g. X-Api-Key:og_...")
        if any(c in content for c in "\r\n\0"):
            fail(f"{option} {name}: the value may not contain line breaks")
        headers[name] = content
    return headers


def _local_url(host: str, port: int) -> str:
    """Where a local client reaches a gateway listening on ``host``: a wildcard address
    (0.0.0.0, ::) is reached on loopback."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@dev_app.command("legacy-backends")
def legacy_backends(
    main_port: Annotated[int, typer.Option(min=1, max=65535, help="Next.js stand-in.")] = 3000,
    fastapi_port: Annotated[
        int, typer.Option(min=1, max=65535, help="FastAPI (payments, ML) stand-in.")
    ] = 8001,
    ai_port: Annotated[int, typer.Option(min=1, max=65535, help="AI-agents stand-in.")] = 8000,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    only: Annotated[
        list[StandIn] | None,
        typer.Option(
            metavar="<main|fastapi|ai>",
            help="Start only this stand-in (repeatable), e.g. to stop one backend on its own.",
        ),
    ] = None,
) -> None:
    """Start the three stand-in legacy backends (main :3000, fastapi :8001, ai :8000)."""
    from onegate.dev.legacy import main as legacy_main

    legacy_main(
        [
            f"--main-port={main_port}",
            f"--fastapi-port={fastapi_port}",
            f"--ai-port={ai_port}",
            f"--host={host}",
            *(f"--only={name.value}" for name in only or ()),
        ]
    )


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


# --- onegate keys: API keys of the api_key issuers ------------------------------------------

keys_app = _typer("Create, list, revoke and rotate API keys (stored hashed).")
app.add_typer(keys_app, name="keys")

IssuerOption = Annotated[
    str | None,
    typer.Option("--issuer", "-i", help="api_key issuer (default: the only one configured)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@keys_app.command("create")
def keys_create(
    subject: Annotated[str, typer.Option(help="Who the key authenticates (service, partner).")],
    scope: Annotated[
        list[str] | None, typer.Option("--scope", "-s", help="A granted scope (repeatable).")
    ] = None,
    tenant: Annotated[str | None, typer.Option(help="Tenant the key acts for.")] = None,
    name: Annotated[str | None, typer.Option(help="Label (default: the subject).")] = None,
    expires_in: Annotated[
        str | None, typer.Option("--expires-in", help="Lifetime: 90s, 15m, 24h, 30d, 2w.")
    ] = None,
    issuer: IssuerOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a key and print it. It is shown this once: only its hash is stored."""
    from onegate.auth.keyadmin import KeyAdminError, create, describe, issuer_store, parse_duration

    loaded = _load(config)
    try:
        lifetime = parse_duration(expires_in) if expires_in is not None else None
        with issuer_store(loaded.gateway.auth, loaded.directory or Path.cwd(), issuer) as store:
            created = create(
                store, subject=subject, scopes=scope or [], tenant=tenant, name=name,
                expires_in=lifetime,
            )  # fmt: skip
    except KeyAdminError as error:
        fail(str(error))
    if as_json:
        typer.echo(json.dumps({"key": created.key.token, **describe(created.record)}))
        return
    typer.echo(f"key id: {created.record.key_id}")
    typer.echo(f"key:    {created.key.token}")
    typer.echo("Store the key now: it cannot be shown again.", err=True)


@keys_app.command("list")
def keys_list(
    issuer: IssuerOption = None, config: ConfigOption = None, as_json: JsonOption = False
) -> None:
    """List keys: ids, subjects, scopes, expiry and status (never secrets or hashes)."""
    from onegate.auth.keyadmin import KeyAdminError, describe, issuer_store, table

    loaded = _load(config)
    try:
        with issuer_store(loaded.gateway.auth, loaded.directory or Path.cwd(), issuer) as store:
            rows = [describe(record) for record in store.list()]
    except KeyAdminError as error:
        fail(str(error))
    typer.echo(json.dumps(rows) if as_json else table(rows))


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[
        str, typer.Argument(help="The key's id (the part after og_), or the whole og_... key.")
    ],
    issuer: IssuerOption = None,
    config: ConfigOption = None,
) -> None:
    """Revoke a key; gateways refuse it within the issuer's cache_seconds."""
    from onegate.auth.keyadmin import KeyAdminError, issuer_store, revoke

    loaded = _load(config)
    try:
        with issuer_store(loaded.gateway.auth, loaded.directory or Path.cwd(), issuer) as store:
            record = revoke(store, _key_id(key_id))
    except KeyAdminError as error:
        fail(str(error))
    typer.echo(f"revoked {record.key_id} ({record.subject})")


@keys_app.command("rotate")
def keys_rotate(
    key_id: Annotated[
        str, typer.Argument(help="The key to replace: its id, or the whole og_... key.")
    ],
    overlap: Annotated[
        str, typer.Option(help="How long the old key keeps working: 90s, 15m, 24h, 30d.")
    ] = "24h",
    issuer: IssuerOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Issue a new key with the same grants; the old one expires after the overlap."""
    from onegate.auth.keyadmin import KeyAdminError, describe, issuer_store, parse_duration, rotate

    loaded = _load(config)
    try:
        seconds = parse_duration(overlap)
        with issuer_store(loaded.gateway.auth, loaded.directory or Path.cwd(), issuer) as store:
            created, old = rotate(store, _key_id(key_id), overlap=seconds)
    except KeyAdminError as error:
        fail(str(error))
    if as_json:
        new = {"key": created.key.token, **describe(created.record)}
        typer.echo(json.dumps({"new": new, "old": describe(old)}))
        return
    typer.echo(f"key id: {created.record.key_id}")
    typer.echo(f"key:    {created.key.token}")
    typer.echo(f"old key {old.key_id} now expires at {describe(old)['expires_at']}")
    typer.echo("Store the key now: it cannot be shown again.", err=True)


def _key_id(value: str) -> str:
    """The key id in ``value``: an id as listed, or a whole ``og_<id>_<secret>`` key (or its
    ``og_<id>`` start), so the key a partner reports can be revoked as it is."""
    value = value.strip()
    if value.startswith("og_"):
        return value[3:].split("_", 1)[0]
    return value
