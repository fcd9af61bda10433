"""The device and broker-config commands: site roles, revoke, Mosquitto files, systemd units."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wattlake.cli.app import app
from wattlake.cli.errors import exit_code_for
from wattlake.config import Settings
from wattlake.energy.sites import parse_sites
from wattlake.errors import WattlakeError


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("WATTLAKE_SECURITY__DIR", str(tmp_path / "security"))
    runner = CliRunner()

    def invoke(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, [*args, "--data-dir", str(tmp_path / "lake")])
        # The app is called without main(), which turns a WattlakeError into its exit code.
        exit_code = (
            exit_code_for(result.exception)
            if isinstance(result.exception, WattlakeError)
            else result.exit_code
        )
        assert exit_code == code, (result.output, result.exception)
        return result.output

    invoke("ca", "init", "--ip", "192.168.1.20")
    return invoke


def test_device_add_writes_site_roles_the_energy_stage_reads(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = run(
        "device", "add", "shellyproem50-1", "--site", "home", "--channel-roles", "0=grid,1=solar"
    )
    assert "192.168.1.20:8883" in out and "Shelly.PutTLSClientKey" in out
    run("device", "add", "shellyem-2", "--auth", "password", "--payload", "shelly-gen1", "--plain",
        "--site", "home", "--channel-roles", "0=circuit")  # fmt: skip
    settings = Settings.load(config_file=tmp_path / "lake" / "wattlake.toml", environ={})
    sites = parse_sites(settings.tables["sites"])
    roles = sorted((c.device_id, c.channel, c.role) for c in sites["home"].channels)
    assert roles == [("shellyem-2", 0, "circuit"), ("shellyproem50-1", 0, "grid"),
                     ("shellyproem50-1", 1, "solar")]  # fmt: skip
    run("device", "add", "x-3", "--site", "home", "--channel-roles", "0=sun", code=2)


def test_revoke_then_list_and_mosquitto_files(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run("device", "add", "meter-a")
    run("device", "revoke", "meter-a")
    rows = [json.loads(line) for line in run("device", "list", "--format", "json").splitlines()]
    assert rows == [{**rows[0], "device_id": "meter-a", "warning": "revoked"}]
    run("device", "revoke", "nobody", code=2)
    out_dir = tmp_path / "mosq"
    run("broker-config", "mosquitto", "--out", str(out_dir))
    conf = (out_dir / "mosquitto.conf").read_text()
    assert "require_certificate true" in conf and "use_identity_as_username true" in conf
    assert "pattern write %u/#" in (out_dir / "acl").read_text()
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in out_dir.iterdir())


def test_up_prints_systemd_units_for_both_arrangements(run) -> None:  # type: ignore[no-untyped-def]
    embedded = run("up", "--print-systemd")
    assert "ExecStart=" in embedded and "KillSignal=SIGTERM" in embedded
    assert "mosquitto" not in embedded.split("[Service]")[0]
    external = run("up", "--print-systemd", "--external-broker", "mqtt://127.0.0.1:1883")
    assert "Requires=mosquitto.service" in external
    assert "--external-broker mqtt://127.0.0.1:1883" in external
    assert "mosquitto.service.d/wattlake.conf" in external
