"""Long work shows a progress bar with rate and ETA on a terminal, and nothing in a pipe."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from wattlake.cli.output import progress

WATTLAKE = str(Path(sys.executable).parent / "wattlake")
T0_S = 1_767_225_600


def big_csv(path: Path, rows: int) -> Path:
    lines = "".join(f"{T0_S + i},meter,0,{i % 500}\n" for i in range(rows))
    path.write_text("ts,device_id,channel,power_w\n" + lines)
    return path


def run_on_a_terminal(args: list[str], cwd: Path) -> tuple[int, str]:
    """Run ``args`` with stdout and stderr on a pseudo-terminal; return exit code and output."""
    parent, child = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTLAKE_")}
    env.update(TERM="xterm", COLUMNS="160")
    process = subprocess.Popen(args, stdout=child, stderr=child, cwd=cwd, env=env)
    os.close(child)
    chunks = []
    while True:
        try:
            chunk = os.read(parent, 65536)
        except OSError:  # the terminal closed: the process ended
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(parent)
    return process.wait(timeout=120), b"".join(chunks).decode("utf-8", "replace")


def test_import_on_a_terminal_shows_rows_of_the_total_rate_and_eta(tmp_path: Path) -> None:
    path = big_csv(tmp_path / "many.csv", 30_000)
    code, output = run_on_a_terminal(
        [WATTLAKE, "import", str(path), "--data-dir", str(tmp_path / "lake")], tmp_path
    )
    assert code == 0, output
    assert "importing many.csv" in output
    assert "30000/30000" in output
    assert "rows/s" in output
    assert "ETA" in output
    assert "many.csv: 30000 row(s) read, 30000 stored" in output


def test_import_in_a_pipe_prints_only_its_summary(tmp_path: Path) -> None:
    path = big_csv(tmp_path / "many.csv", 30_000)
    done = subprocess.run(
        [WATTLAKE, "import", str(path), "--data-dir", str(tmp_path / "lake")],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("WATTLAKE_")},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"many.csv: 30000 row(s) read, 30000 stored; lake {tmp_path / 'lake'}"
    ]


def test_progress_is_silent_when_quiet_or_not_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for quiet in (True, False):  # capsys: stderr is not a terminal either way
        with progress("work", quiet=quiet) as on_progress:
            on_progress(0, 10)
            on_progress(10, 10)
    assert capsys.readouterr() == ("", "")
