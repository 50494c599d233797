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

from onegate.config import Config, load_config
from onegate.errors import ConfigError

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
        # Build once here so that a bad route or app reference fails before any worker starts.
        from onegate.gateway.runtime import Runtime

        Runtime(loaded)
    except ConfigError as error:
        fail(str(error))
    run_server(loaded, host=host, port=port, workers=workers)


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
