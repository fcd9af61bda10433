"""The README's examples print what the README shows, and it documents the main commands' options.

Every ```console block of README.md is run in order in one folder (so the examples share one
lake, ``./wattlake-data``): a line ``$ ./run wattlake ARGS`` runs the installed ``wattlake`` with
those arguments; the lines after it are what it prints (stdout and stderr as a terminal shows
them), where ``…`` stands for anything (paths that differ between machines).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer.main

from wattlake.cli.app import app

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
IMPORT_DOC = ROOT / "docs" / "import.md"
WATTLAKE = str(Path(sys.executable).parent / "wattlake")
MAIN_COMMANDS = (
    "demo",
    "up",
    "serve",
    "import",
    "query",
    "energy",
    "cost",
    "pv",
    "forecast",
    "simulate",
    "ingest",
    "jobs run",
)
COMMON = {"--data-dir", "--config", "--help"}


def history_csv() -> str:
    """Return the README's history.csv: meter-1 each minute of 2026-01-05, two broken rows."""
    rows = ["ts,device_id,channel,power_w"]
    for minute in range(24 * 60 + 1):
        hour, rest = divmod(minute, 60)
        ts = f"2026-01-05T{hour:02d}:{rest:02d}:00Z" if hour < 24 else "2026-01-06T00:00:00Z"
        rows.append(f"{ts},meter-1,0,{400 if 7 <= hour < 22 else 200}")
    rows.insert(401, "2026-01-05T06:40:30Z,meter-1,0,high")  # row 401: text for a number
    rows.insert(602, ",meter-1,0,300")  # row 602: no time
    return "\n".join(rows) + "\n"


def console_blocks(text: str) -> list[list[str]]:
    return [m.group(1).splitlines() for m in re.finditer(r"```console\n(.*?)```", text, re.S)]


def examples(text: str) -> list[tuple[str, list[str]]]:
    """Return (command line, expected output lines) for every example, in README order."""
    found: list[tuple[str, list[str]]] = []
    for block in console_blocks(text):
        for line in block:
            if line.startswith("$ "):
                found.append((line[2:], []))
            else:
                found[-1][1].append(line)
    return found


def matches(expected: str, actual: str) -> bool:
    pattern = ".*".join(re.escape(part) for part in expected.split("…"))
    return re.fullmatch(pattern, actual) is not None


def test_the_readme_shows_the_head_of_its_history_file() -> None:
    shown = re.search(r"```csv\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert shown is not None
    lines = shown.group(1).splitlines()
    assert lines == history_csv().splitlines()[: len(lines)]


def declared_files(text: str) -> dict[str, str]:
    """Return the files a page declares with ``<!-- file: NAME -->`` before a fenced block."""
    pattern = r"<!-- file: (\S+) -->\n```\w*\n(.*?)```"
    return {m.group(1): m.group(2) for m in re.finditer(pattern, text, re.S)}


def test_every_readme_example_prints_what_the_readme_shows(tmp_path: Path) -> None:
    (tmp_path / "history.csv").write_text(history_csv())
    cases = examples(README.read_text(encoding="utf-8"))
    assert len(cases) >= 8
    run_examples(cases, tmp_path)


def test_every_import_doc_example_prints_what_the_page_shows(tmp_path: Path) -> None:
    text = IMPORT_DOC.read_text(encoding="utf-8")
    for name, content in declared_files(text).items():
        (tmp_path / name).write_text(content)
    cases = examples(text)
    assert len(cases) >= 7
    run_examples(cases, tmp_path)


def run_examples(cases: list[tuple[str, list[str]]], tmp_path: Path) -> None:
    """Run each example's command in ``tmp_path`` and compare what it prints."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTLAKE_")}
    env.update(HOME=str(tmp_path), COLUMNS="200")
    for command, expected in cases:
        words = shlex.split(command)
        assert words[:2] == ["./run", "wattlake"], command
        done = subprocess.run(
            [WATTLAKE, *words[2:]],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=120,
        )
        actual = done.stdout.rstrip("\n").splitlines()
        assert len(actual) == len(expected), f"{command}\n{done.stdout}"
        for want, got in zip(expected, actual, strict=True):
            assert matches(want.rstrip(), got.rstrip()), f"{command}\nwant {want}\ngot  {got}"


def main_command_options() -> dict[str, set[str]]:
    root = typer.main.get_command(app)
    assert isinstance(root, click.Group)
    found = {}
    for path in MAIN_COMMANDS:
        command: click.Command = root
        for name in path.split():
            assert isinstance(command, click.Group)
            command = command.commands[name]
        found[path] = {
            opt
            for param in command.params
            if isinstance(param, click.Option) and not param.hidden
            for opt in param.opts
            if opt.startswith("--")
        } - COMMON
    return found


@pytest.mark.parametrize("command", MAIN_COMMANDS)
def test_every_option_of_the_main_commands_is_in_the_readme(command: str) -> None:
    text = README.read_text(encoding="utf-8")
    section = re.search(rf"^- \*\*{command}\*\*:(.*?)(?=^- \*\*|^\S)", text, re.S | re.M)
    assert section is not None, f"README has no options paragraph for {command}"
    missing = {
        o
        for o in main_command_options()[command]
        if not re.search(rf"(?<![\w-]){o}(?![\w-])", section.group(1))
    }
    assert missing == set()


def test_every_command_of_wattlake_help_is_in_the_readme() -> None:
    # Each command `wattlake --help` lists, and each subcommand of a group, is named in a
    # `wattlake …` span of the README (a group's subcommands as `wattlake token create|list`).
    root = typer.main.get_command(app)
    assert isinstance(root, click.Group)
    spans = [
        re.split(r"[\s|\\]+", span)
        for span in re.findall(r"`wattlake ([^`]+)`", README.read_text(encoding="utf-8"))
    ]
    missing = []
    for name, command in root.commands.items():
        if command.hidden:
            continue
        named = [words for words in spans if words[0] == name]
        if not named:
            missing.append(name)
        elif isinstance(command, click.Group):
            missing += [
                f"{name} {sub}"
                for sub, c in command.commands.items()
                if not c.hidden and not any(sub in words[1:] for words in named)
            ]
    assert missing == []
