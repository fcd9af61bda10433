"""The settings registry: precedence, errors that name their source, and documentation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from wattlake.config import REGISTRY, Settings, settings_markdown
from wattlake.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_when_nothing_is_set(tmp_path: Path) -> None:
    settings = Settings.load(overrides={"data_dir": str(tmp_path)}, environ={})
    assert settings["stream.flush_interval_s"] == 60.0
    assert settings["stream.buffer_max_bytes"] == 5 * 1024 * 1024
    assert settings.origins["stream.flush_interval_s"] == "default"


def test_precedence_default_file_env_flag(tmp_path: Path) -> None:
    (tmp_path / "wattlake.toml").write_text(
        "[stream]\nflush_interval_s = 10\nbuffer_max_rows = 7\n[broker]\nport = 1999\n"
    )
    env = {"WATTLAKE_DATA_DIR": str(tmp_path), "WATTLAKE_STREAM__FLUSH_INTERVAL_S": "5"}
    settings = Settings.load(environ=env, overrides={"broker.port": 2001})
    assert settings["stream.buffer_max_rows"] == 7  # file beats default
    assert settings["stream.flush_interval_s"] == 5.0  # environment beats file
    assert settings["broker.port"] == 2001  # flag beats everything
    assert settings.origins["stream.buffer_max_rows"].endswith("wattlake.toml")
    assert settings.origins["stream.flush_interval_s"] == "WATTLAKE_STREAM__FLUSH_INTERVAL_S"


def test_explicit_config_file(tmp_path: Path) -> None:
    config = tmp_path / "other.toml"
    config.write_text('data_dir = "/somewhere"\n[energy]\ntz = "Europe/Warsaw"\n')
    settings = Settings.load(config_file=config, environ={})
    assert settings.data_dir == "/somewhere"
    assert settings["energy.tz"] == "Europe/Warsaw"


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="WATTLAKE_BROKER__PORT"):
        Settings.load(environ={"WATTLAKE_BROKER__PORT": "many"})


def test_unknown_setting_in_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "wattlake.toml"
    config.write_text("[stream]\nflush_every = 3\n")
    with pytest.raises(ConfigError, match=r"stream\.flush_every"):
        Settings.load(config_file=config, environ={})


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        Settings.load(config_file=tmp_path / "nope.toml", environ={})


def test_booleans_and_integers_are_checked() -> None:
    setting = REGISTRY["ingest.qos"]
    assert setting.coerce("1", "x") == 1
    with pytest.raises(ConfigError):
        setting.coerce(1.5, "x")
    with pytest.raises(ConfigError):
        setting.coerce(True, "x")


def test_every_setting_is_documented() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    missing = [name for name in REGISTRY if f"`{name}`" not in doc]
    assert not missing, f"undocumented settings {missing}: run `wattlake config docs`"
    assert settings_markdown() in doc, (
        "docs/configuration.md is stale: regenerate it with "
        "`wattlake config docs > docs/configuration.md`"
    )
    readme = (ROOT / "README.md").read_text()
    assert "docs/configuration.md" in readme


def test_config_show_reports_origins(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "wattlake", "config", "show", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
        env={"WATTLAKE_ENERGY__TZ": "Asia/Kolkata", "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
    )
    assert '"setting": "energy.tz", "value": "Asia/Kolkata"' in out.stdout
