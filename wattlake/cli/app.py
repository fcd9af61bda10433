"""The ``wattlake`` Typer application: one module per command group, registered here.

A command module only parses, calls its stage and prints; heavy libraries (pyarrow, duckdb,
pandas) are imported inside the commands that need them, so that every command starts quickly.
"""

from __future__ import annotations

import importlib

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
)


def _register() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(f"wattlake.cli.{name}").register(app)


_register()
