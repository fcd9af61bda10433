"""Commands printed in hints run as printed: one ``command_prefix``, shared by every command."""

from __future__ import annotations

from pathlib import Path

import pytest

from wattlake.cli import demo, output

PROJECT = Path(output.__file__).resolve().parents[2]


def test_the_demo_prints_commands_with_the_shared_prefix() -> None:
    assert demo.command_prefix is output.command_prefix


def test_in_the_project_folder_the_prefix_is_the_run_script(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no wattlake on the PATH
    monkeypatch.chdir(PROJECT)
    assert output.command_prefix() == "./run wattlake"
    monkeypatch.chdir(tmp_path)
    assert output.command_prefix() == f"{PROJECT / 'run'} wattlake"
