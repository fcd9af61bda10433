"""The demo's first lines: an earlier run's data or WAL is named, --fresh starts empty, and the
commands it prints run as printed."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

from wattlake.stream.wal import WriteAheadLog


def demo(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "wattlake", "demo", "--no-web", "--broker-port", "0"]
    command += ["--devices", "1", "--interval", "0.2", "--data-dir", str(data_dir), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


def printed_commands(stderr: str) -> list[str]:
    return [line.strip() for line in stderr.splitlines() if line.startswith("  ") and " --" in line]


def test_a_used_data_dir_is_named_and_fresh_starts_empty(tmp_path: Path) -> None:
    data_dir = tmp_path / "lake"
    first = demo(data_dir, "--duration", "2")
    assert first.returncode == 0, first.stderr
    assert "already holds" not in first.stderr
    assert '[sites."home-0"]' in (data_dir / "wattlake.toml").read_text()

    # An earlier run's data, and a WAL an ingest left behind.
    wal = WriteAheadLog(data_dir / "wal" / "other")
    wal.open()
    wal.close()
    second = demo(data_dir, "--duration", "1")
    assert second.returncode == 0, second.stderr
    first_lines = [line for line in second.stderr.splitlines() if "INFO" not in line][:2]
    assert any("already holds" in line and "--fresh" in line for line in first_lines), first_lines

    third = demo(data_dir, "--duration", "1", "--fresh")
    assert third.returncode == 0, third.stderr
    assert "Started from an empty data dir" in third.stderr
    assert "already holds" not in third.stderr
    assert (data_dir / "wattlake.toml").exists(), "--fresh keeps the settings file"


def test_the_printed_commands_run_as_printed(tmp_path: Path) -> None:
    data_dir = tmp_path / "lake"
    done = demo(data_dir, "--duration", "2")
    assert done.returncode == 0, done.stderr
    commands = printed_commands(done.stderr)
    assert len(commands) == 2, done.stderr  # the query, and the energy of a demo home
    for command in commands:
        argv = shlex.split(command)
        assert Path(argv[0]).name in ("run", "wattlake", "python", Path(sys.executable).name)
        ran = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert ran.returncode == 0, (command, ran.stderr)
        assert "Traceback" not in ran.stderr
    query = [*shlex.split(commands[0]), "--format", "json"]
    rows = subprocess.run(query, capture_output=True, text=True, timeout=120, check=True).stdout
    assert sum(json.loads(line)["readings"] for line in rows.splitlines()) > 0
