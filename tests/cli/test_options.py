"""Messages name options that really exist; --format means output format only."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import click
import typer.main

from wattlake.cli.app import app

PACKAGE = Path(__file__).resolve().parents[2] / "wattlake"
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*")


def commands() -> Iterator[tuple[str, click.Command]]:
    """Yield every command of the CLI with its path (``jobs run`` …)."""
    root = typer.main.get_command(app)

    def walk(prefix: str, command: click.Command) -> Iterator[tuple[str, click.Command]]:
        yield prefix, command
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                yield from walk(f"{prefix} {name}".strip(), sub)

    yield from walk("", root)


def all_options() -> set[str]:
    names = {"--help"}
    for _, command in commands():
        for param in command.params:
            names.update(o for o in param.opts + param.secondary_opts if o.startswith("--"))
    return names


def string_literals(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value


def test_every_option_named_in_help_texts_exists() -> None:
    known = all_options()
    missing = []
    for path, command in commands():
        texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
        for text in texts:
            missing += [(path, o) for o in OPTION.findall(text) if o not in known]
    assert missing == []


def test_every_option_named_in_a_message_exists() -> None:
    known = all_options()
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for line, text in string_literals(path):
            for option in OPTION.findall(text):
                if option not in known:
                    missing.append(f"{path.relative_to(PACKAGE.parent)}:{line} {option}")
    assert missing == []


def test_format_is_the_output_format_wherever_it_is_shown() -> None:
    """A visible --format takes table, csv or json; input kinds have their own options."""
    for path, command in commands():
        for param in command.params:
            if "--format" in getattr(param, "opts", []) and not getattr(param, "hidden", False):
                assert isinstance(param.type, click.Choice), path
                assert set(param.type.choices) <= {"table", "csv", "json"}, path
