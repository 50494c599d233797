"""The ``onegate`` command.

Errors the operator can fix are printed as one line naming the file, line and key, with exit
status 2; tracebacks are for bugs only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
import yaml

from onegate.errors import ConfigError
from onegate.gateway.config import Config, load_config

app = typer.Typer(
    help="onegate: one endpoint in front of every backend.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Validate and inspect configuration.", no_args_is_help=True)
dev_app = typer.Typer(help="Development helpers.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(dev_app, name="dev")

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Config file (default: $ONEGATE_CONFIG, else built-in)."),
]


def fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"onegate: {message}", err=True)
    raise typer.Exit(code)


def _load(path: Path | None) -> Config:
    try:
        return load_config(path)
    except ConfigError as error:
        fail(str(error))


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Override server.host.")] = None,
    port: Annotated[int | None, typer.Option(help="Override server.port.")] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Worker processes (default: one per core).")
    ] = None,
) -> None:
    """Start the gateway."""
    from onegate.gateway.server import serve as run_server

    loaded = _load(config)
    try:
        run_server(loaded, host=host, port=port, workers=workers)
    except ConfigError as error:
        fail(str(error))


@config_app.command("validate")
def config_validate(file: Annotated[Path, typer.Argument(help="Config file to check.")]) -> None:
    """Check a config file; print one line per problem found and exit non-zero."""
    loaded = _load(file)
    try:
        from onegate.gateway.runtime import Runtime

        Runtime(loaded)
    except ConfigError as error:
        fail(str(error))
    gateway = loaded.gateway
    typer.echo(f"{file}: ok ({len(gateway.routes)} routes, {len(gateway.upstreams)} upstreams)")


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
        str | None, typer.Option(help="Gateway base URL (default: from server.host/port).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds per probe.")] = 5.0,
) -> None:
    """Probe every route through the gateway and directly; exit 1 if anything fails."""
    from onegate.check import render_json, render_table, run_check

    loaded = _load(config)
    server = loaded.gateway.server
    base = gateway or f"http://{server.host}:{server.port}"
    report = run_check(loaded, base, timeout=timeout)
    if as_json:
        typer.echo(render_json(report))
    else:
        render_table(report)
    raise typer.Exit(0 if report.ok else 1)


@dev_app.command(
    "legacy-backends",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def legacy_backends(ctx: typer.Context) -> None:
    """Start the three stand-in legacy backends (main :3000, fastapi :8001, ai :8000)."""
    from onegate.dev.legacy import main as legacy_main

    legacy_main(list(ctx.args))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


# --- onegate keys: API keys of the api_key issuers ------------------------------------------

keys_app = typer.Typer(
    help="Create, list, revoke and rotate API keys (stored hashed).", no_args_is_help=True
)
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
    key_id: Annotated[str, typer.Argument(help="The key's id (the part after og_).")],
    issuer: IssuerOption = None,
    config: ConfigOption = None,
) -> None:
    """Revoke a key; gateways refuse it within the issuer's cache_seconds."""
    from onegate.auth.keyadmin import KeyAdminError, issuer_store, revoke

    loaded = _load(config)
    try:
        with issuer_store(loaded.gateway.auth, loaded.directory or Path.cwd(), issuer) as store:
            record = revoke(store, key_id)
    except KeyAdminError as error:
        fail(str(error))
    typer.echo(f"revoked {record.key_id} ({record.subject})")


@keys_app.command("rotate")
def keys_rotate(
    key_id: Annotated[str, typer.Argument(help="The key to replace.")],
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
            created, old = rotate(store, key_id, overlap=seconds)
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
