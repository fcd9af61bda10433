"""Sites and channel roles: parsing and validation, the balance against hand-derived answers,
role assignments with valid_from, and phase netting on a three-phase meter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from wattlake.config import Settings
from wattlake.energy.buckets import bucket_edges_ms, parse_time_ms, zone
from wattlake.energy.series import site_energy
from wattlake.energy.sites import parse_sites
from wattlake.errors import ConfigError
from wattlake.query.reports import site_grid_energy, site_rows
from wattlake.schema import readings_to_table

UTC = zone("UTC")
M = 60_000
H = 3_600_000
DAY = parse_time_ms("2026-06-01", UTC)


def ch(device: str, channel: int, role: str, **extra: Any) -> dict[str, Any]:
    return {"device": device, "channel": channel, "role": role, **extra}


def series(
    device: str, channel: int, power_w: float | None, *, hours: int = 1, counter: bool = False
) -> list[dict[str, Any]]:
    """Constant power, one reading a minute from 00:00 for ``hours`` hours (end included)."""
    rows = []
    for i in range(hours * 60 + 1):
        row: dict[str, Any] = {
            "ts": DAY + i * M,
            "received_at": DAY + i * M,
            "device_id": device,
            "channel": channel,
            "source": "generic",
        }
        if power_w is not None:
            row["power_w"] = power_w
        if counter:
            assert power_w is None
        rows.append(row)
    return rows


def counters(device: str, channel: int, import_w: float, export_w: float) -> list[dict[str, Any]]:
    rows = series(device, channel, None)
    for i, row in enumerate(rows):
        row["energy_wh"] = 100.0 + import_w * i / 60
        row["returned_energy_wh"] = 50.0 + export_w * i / 60
    return rows


HOME = {
    "timezone": "UTC",
    "tariff": "pl-g11",
    "channels": [
        ch("em", 0, "grid"),
        ch("em", 1, "solar"),
        ch("bat", 0, "battery"),
        ch("em", 2, "circuit", name="kitchen", parent="em:0"),
        ch("em", 3, "circuit", name="oven", parent="em:2"),  # inside the kitchen: not added
        ch("em", 4, "ignore"),
    ],
}


def test_sites_are_read_from_wattlake_toml(tmp_path: Path) -> None:
    (tmp_path / "wattlake.toml").write_text(
        '[energy]\ntz = "Europe/Warsaw"\n\n[sites.flat]\ntimezone = "Europe/Warsaw"\n'
        'tariff = "pl-g12"\n\n[[sites.flat.channels]]\ndevice = "em"\nchannel = 0\n'
        'role = "grid"\n',
        encoding="utf-8",
    )
    settings = Settings.load(overrides={"data_dir": str(tmp_path)}, environ={})
    assert settings["energy.tz"] == "Europe/Warsaw"
    sites = parse_sites(settings.tables["sites"], known_devices={"em"})
    assert sites["flat"].tariff == "pl-g12"
    assert [(c.key, c.role) for c in sites["flat"].channels] == [("em:0", "grid")]


@pytest.mark.parametrize(
    ("tables", "known", "message"),
    [
        ({"a": {"channels": [ch("em", 0, "fridge")]}}, None, "role 'fridge', which does not"),
        ({"a": {"channels": [ch("nope", 0, "grid")]}}, {"em"}, "device 'nope' is unknown"),
        (
            {"a": {"channels": [ch("em", 0, "grid")]}, "b": {"channels": [ch("em", 0, "grid")]}},
            None,
            "channel em:0 is already in site a",
        ),
        ({"a": {"phases": "both", "channels": []}}, None, "phases = 'both' is unknown"),
        ({"a": {"timezone": "Mars/Olympus"}}, None, "unknown time zone"),
        ({"a": {"channels": [ch("em", 1, "circuit", parent="em:9")]}}, None, "parent em:9"),
        ({"a": {"channels": [ch("em", 0, "grid", color="red")]}}, None, "not valid"),
    ],
)
def test_bad_sites_are_clear_config_errors(
    tables: dict[str, Any], known: set[str] | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_sites(tables, known_devices=known)


def home_rows(powers: dict[tuple[str, int], float]) -> list[dict[str, Any]]:
    site = parse_sites({"home": HOME})["home"]
    readings = [r for (device, channel), p in powers.items() for r in series(device, channel, p)]
    energy = site_energy(
        readings_to_table(readings), site, bucket_edges_ms(DAY, DAY + H, "hour", UTC)
    )
    assert energy.warnings == ()
    return site_rows(energy, UTC)


def test_balance_with_solar_charging_the_battery() -> None:
    # grid +500 W, PV 2 kW (negative on its clamp), battery charging 1 kW, kitchen 600 W of which
    # the oven 200 W, an ignored channel at 9 kW. consumption = 500 + 2000 - 1000 = 1500 Wh;
    # untracked = 1500 - 600 = 900 Wh (the oven is inside the kitchen);
    # self-consumption (2000 - 0) / 2000 = 1; self-sufficiency (1500 - 500) / 1500 = 2/3.
    (row,) = home_rows(
        {
            ("em", 0): 500.0,
            ("em", 1): -2000.0,
            ("bat", 0): 1000.0,
            ("em", 2): 600.0,
            ("em", 3): 200.0,
            ("em", 4): 9000.0,
        }
    )
    assert row["grid_import_wh"] == 500.0
    assert row["grid_export_wh"] == 0.0
    assert row["solar_wh"] == 2000.0
    assert (row["battery_charge_wh"], row["battery_discharge_wh"]) == (1000.0, 0.0)
    assert row["consumption_wh"] == 1500.0
    assert (row["circuit_kitchen_wh"], row["circuit_oven_wh"]) == (600.0, 200.0)
    assert row["untracked_wh"] == 900.0
    assert row["consumption_wh"] == row["circuit_kitchen_wh"] + row["untracked_wh"]
    assert (row["self_consumption"], row["self_sufficiency"]) == (1.0, 0.6667)
    assert (row["coverage"], row["phase_netting"]) == (1.0, "per_phase")


def test_balance_with_export_and_battery_discharge() -> None:
    # grid -1000 W (export), PV 2 kW, battery discharging 500 W, kitchen 1 kW, oven 0:
    # consumption = 2000 + 500 - 1000 = 1500; untracked 500; self-consumption (2000-1000)/2000.
    (row,) = home_rows(
        {("em", 0): -1000.0, ("em", 1): -2000.0, ("bat", 0): -500.0, ("em", 2): 1000.0}
    )
    assert (row["grid_import_wh"], row["grid_export_wh"]) == (0.0, 1000.0)
    assert (row["battery_charge_wh"], row["battery_discharge_wh"]) == (0.0, 500.0)
    assert (row["consumption_wh"], row["untracked_wh"]) == (1500.0, 500.0)
    assert (row["self_consumption"], row["self_sufficiency"]) == (0.5, 1.0)


def test_circuits_above_consumption_warn() -> None:
    site = parse_sites({"s": {"channels": [ch("em", 0, "grid"), ch("em", 1, "circuit")]}})["s"]
    readings = series("em", 0, 100.0) + series("em", 1, 400.0)
    energy = site_energy(
        readings_to_table(readings), site, bucket_edges_ms(DAY, DAY + H, "hour", UTC)
    )
    (row,) = site_rows(energy, UTC)
    assert row["untracked_wh"] == -300.0
    (warning,) = energy.warnings
    assert "circuits add up to more than the consumption" in warning


def test_a_role_from_valid_from_does_not_rewrite_the_past() -> None:
    # Channel em:1 was a circuit (300 W) on day 1; a battery replaced it from day 2 (charging
    # 300 W). Day 1: consumption = grid 1000, circuit 300, untracked 700. Day 2: consumption =
    # 1000 - 300 (charge) = 700, no circuit, untracked 700.
    site = parse_sites(
        {
            "s": {
                "channels": [
                    ch("em", 0, "grid"),
                    ch("em", 1, "circuit", name="garage"),
                    ch("em", 1, "battery", valid_from="2026-06-02"),
                ]
            }
        }
    )["s"]
    readings = series("em", 0, 1000.0, hours=48) + series("em", 1, 300.0, hours=48)
    edges = bucket_edges_ms(DAY, DAY + 48 * H, "day", UTC)
    first, second = site_rows(site_energy(readings_to_table(readings), site, edges), UTC)
    assert (first["consumption_wh"], first["circuit_garage_wh"], first["untracked_wh"]) == (
        24_000.0,
        7_200.0,
        16_800.0,
    )
    assert first["battery_charge_wh"] == 0.0
    assert (second["battery_charge_wh"], second["circuit_garage_wh"]) == (7_200.0, 0.0)
    assert (second["consumption_wh"], second["untracked_wh"]) == (16_800.0, 16_800.0)


THREE_PHASE = {
    "channels": [ch("3em", 0, "grid"), ch("3em", 1, "grid"), ch("3em", 2, "grid")],
}


@pytest.mark.parametrize(
    ("phases", "expected"), [("per_phase", (1000.0, 800.0)), ("net", (200.0, 0.0))]
)
def test_phase_netting_on_a_three_phase_meter(phases: str, expected: tuple[float, float]) -> None:
    # Phase 0 imports 1 kW while phase 1 exports 800 W and phase 2 is idle, for an hour:
    # billed per phase that is 1000 Wh import and 800 Wh export; netted at each instant 200 Wh.
    site = parse_sites({"s": {**THREE_PHASE, "phases": phases}})["s"]
    readings = series("3em", 0, 1000.0) + series("3em", 1, -800.0) + series("3em", 2, 0.0)
    energy = site_energy(
        readings_to_table(readings), site, bucket_edges_ms(DAY, DAY + H, "hour", UTC)
    )
    (row,) = site_rows(energy, UTC)
    assert (row["grid_import_wh"], row["grid_export_wh"]) == expected
    assert row["phase_netting"] == phases
    over = site_grid_energy(readings_to_table(readings), site)
    imp, exp = over(bucket_edges_ms(DAY, DAY + H, "hour", UTC))
    assert (float(imp.sum()), float(exp.sum())) == pytest.approx(expected)


def test_net_with_only_counters_falls_back_to_per_phase_and_says_so() -> None:
    site = parse_sites({"s": {**THREE_PHASE, "phases": "net"}})["s"]
    readings = counters("3em", 0, 1000.0, 0.0) + counters("3em", 1, 0.0, 800.0)
    readings += counters("3em", 2, 0.0, 0.0)
    energy = site_energy(
        readings_to_table(readings), site, bucket_edges_ms(DAY, DAY + H, "hour", UTC)
    )
    (row,) = site_rows(energy, UTC)
    assert (row["grid_import_wh"], row["grid_export_wh"]) == (1000.0, 800.0)
    assert row["phase_netting"] == "per_phase (no power samples to net)"
    assert "per_phase" in energy.warnings[0]


def test_a_provisioned_meter_without_readings_may_be_in_a_site(tmp_path: Path) -> None:
    # The lake has seen only "em"; "pro-em-new" was just registered (wattlake device add) and has
    # sent nothing yet. Before: refused as unknown, the lake being the only list of devices.
    from wattlake.gateway.registry import Registry
    from wattlake.lake import tables
    from wattlake.lake.storage import Lake
    from wattlake.query.sites import configured_sites
    from wattlake.schema import READINGS_TABLE

    data_dir, security = tmp_path / "lake", tmp_path / "security"
    row = {
        "ts": 0,
        "received_at": 0,
        "device_id": "em",
        "channel": 0,
        "power_w": 5.0,
        "source": "x",
    }
    tables.append(Lake.open(str(data_dir)), READINGS_TABLE, readings_to_table([row]))
    Registry(security).add("pro-em-new", auth="password")
    site = (
        '[sites.home]\ntimezone = "UTC"\n'
        '[[sites.home.channels]]\ndevice = "em"\nchannel = 0\nrole = "grid"\n'
        '[[sites.home.channels]]\ndevice = "{}"\nchannel = 0\nrole = "solar"\n'
    )
    config = tmp_path / "wattlake.toml"
    config.write_text(site.format("pro-em-new"), encoding="utf-8")
    overrides = {"data_dir": str(data_dir), "security.dir": str(security)}
    settings = Settings.load(config_file=config, overrides=overrides, environ={})
    sites = configured_sites(settings)
    assert [c.key for c in sites["home"].channels] == ["em:0", "pro-em-new:0"]
    config.write_text(site.format("ghost"), encoding="utf-8")
    settings = Settings.load(config_file=config, overrides=overrides, environ={})
    with pytest.raises(ConfigError, match="device 'ghost' is unknown"):
        configured_sites(settings)
