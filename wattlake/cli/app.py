"""The ``wattlake`` Typer application: one module per command group, registered here.

A command module only parses, calls its stage and prints; heavy libraries (pyarrow, duckdb,
pandas) are imported inside the commands that need them, so that every command starts quickly.
"""

from __future__ import annotations

import importlib
from typing import Annotated

import typer

app = typer.Typer(
    name="wattlake",
    help="Self-hosted, real-time energy monitoring: meters over MQTT into a data lake.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

# Each module has ``register(app)``; the order is the order of ``wattlake --help``.
COMMAND_MODULES = (
    "demo",
    "simulate",
    "ingest",
    "importing",
    "query",
    "energy",
    "pv",
    "jobs",
    "settings",
    "device",
    "broker",
    "up",
    "token",
    "serve",
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            number = version("wattlake")
        except PackageNotFoundError:  # run from a source tree that is not installed
            number = "unknown"
        typer.echo(f"wattlake {number}")
        raise typer.Exit()


@app.callback()
def _options(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_version, is_eager=True
        ),
    ] = False,
) -> None:
    """Self-hosted, real-time energy monitoring: meters over MQTT into a data lake."""


def _register() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(f"wattlake.cli.{name}").register(app)


_register()
