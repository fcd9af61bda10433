"""Quick start: loading the command line pulls in no heavy library (a module check, not a timing),
and a ``wattlake`` process sets its memory defaults.

The figures are measured in bench/bench_startup.py and bench/bench_pages.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

HEAVY = ("pandas", "pyarrow", "duckdb", "numpy", "pyiceberg", "pydantic", "paho", "msgspec")


def loaded_after(code: str) -> list[str]:
    """Return which of HEAVY a fresh interpreter has loaded after running ``code``."""
    report = f"import json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    probe = f"{code}\n{report}"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def test_importing_the_cli_loads_no_heavy_library() -> None:
    assert loaded_after("import wattlake.cli.app") == []


def test_help_and_version_load_no_heavy_library() -> None:
    for argv in (["--help"], ["--version"], ["query", "--help"], ["import", "--help"]):
        code = (
            f"from wattlake.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass"
        )
        assert loaded_after(code) == [], argv


def test_every_commands_help_loads_no_heavy_library() -> None:
    """Each command imports what it needs when it runs, not when its help is shown."""
    import click
    import typer.main

    from wattlake.cli.app import app

    def paths(prefix: list[str], command: click.Command) -> list[list[str]]:
        if isinstance(command, click.Group):
            return [p for n, c in command.commands.items() for p in paths([*prefix, n], c)]
        return [prefix]

    every = paths([], typer.main.get_command(app))
    calls = "".join(
        f"try:\n    main({[*argv, '--help']!r})\nexcept SystemExit:\n    pass\n" for argv in every
    )
    assert len(every) > 20
    assert (
        loaded_after(
            f"import sys\nsys.stdout = open('/dev/null', 'w')\n"
            f"from wattlake.cli import main\n{calls}sys.stdout = sys.__stdout__"
        )
        == []
    )


def process_state(environ: dict[str, str]) -> tuple[bool, str | None]:
    """Return whether numpy advises huge pages in a ``wattlake`` process, and the mimalloc purge
    delay in its environment (``environ`` added to a clean one)."""
    code = (
        "import os\nfrom wattlake.cli import main\ntry:\n    main(['--version'])\n"
        "except SystemExit:\n    pass\nimport json, numpy\n"
        "print(json.dumps([numpy._core.multiarray._get_madvise_hugepage(),"
        " os.environ.get('MIMALLOC_PURGE_DELAY')]))"
    )
    ours = ("NUMPY_MADVISE_HUGEPAGE", "MIMALLOC_PURGE_DELAY")
    env = {k: v for k, v in os.environ.items() if k not in ours} | environ
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=env,
    )
    advice, delay = json.loads(done.stdout.strip().splitlines()[-1])
    return bool(advice), delay


def test_a_wattlake_process_sets_its_memory_defaults_unless_told_otherwise() -> None:
    """Small pages from numpy and a mimalloc purge delay of a second: fresh memory costs more
    than it saves in a command that reads a long range once (docs/lake.md); the user's own
    settings win."""
    assert process_state({}) == (False, "1000")
    told = {"NUMPY_MADVISE_HUGEPAGE": "1", "MIMALLOC_PURGE_DELAY": "10"}
    assert process_state(told) == (True, "10")


def imported_by(argv: list[str], data_dir: str) -> set[str]:
    """Return the modules ``wattlake argv`` imports (from ``-X importtime``)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "wattlake", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "WATTLAKE_DATA_DIR": data_dir},
    )
    assert done.returncode == 0, done.stderr
    return {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }


def test_a_short_query_imports_neither_pandas_nor_sqlalchemy(tmp_path: object) -> None:
    """``query`` on a lake whose tables did not change since the last command reads the catalog
    with sqlite3 and the plans from the plan cache: no sqlalchemy, pyiceberg or pandas."""
    from pathlib import Path

    from wattlake.lake import tables
    from wattlake.lake.storage import Lake
    from wattlake.schema import READINGS_TABLE, readings_to_table

    root = str(Path(str(tmp_path)) / "lake")
    row = {"ts": 1_767_225_600_000, "device_id": "m", "channel": 0, "power_w": 1.0, "source": "x"}
    tables.append(Lake.open(root), READINGS_TABLE, readings_to_table([row]))
    avoided = {"pandas", "sqlalchemy", "pyiceberg"}
    assert imported_by(["query", "select 1"], root) & avoided == set()
    count = ["query", "select count(*) from readings"]
    imported_by(count, root)  # plans the table and keeps its plan
    assert imported_by(count, root) & avoided == set()
