"""The demo's three homes (grid + circuit, grid + PV, grid + PV + battery): their simulated
meters, described by the site tables the simulator writes, give figures that add up."""

from __future__ import annotations

import tomllib

import numpy as np
import pytest

from wattlake.devices.sim import loads
from wattlake.devices.sim.simulator import (
    DEMO_HOMES,
    FleetConfig,
    SimDevice,
    SimFormat,
    site_tables,
    sites_toml,
)
from wattlake.energy.buckets import bucket_edges_ms, parse_time_ms, zone
from wattlake.energy.series import site_energy
from wattlake.energy.sites import parse_sites
from wattlake.query.reports import site_rows
from wattlake.schema import readings_to_table

UTC = zone("UTC")
DAY = parse_time_ms("2026-06-01", UTC)
STEP_S = 30


@pytest.fixture(scope="module")
def fleet() -> tuple[FleetConfig, list[dict], dict[str, float]]:
    config = FleetConfig(fmt=SimFormat.generic, devices=3, seed=3, homes=DEMO_HOMES)
    rows: list[dict] = []
    truth: dict[str, float] = {}
    for index in range(3):
        device = SimDevice(config, index)
        consumption = []
        for k in range(24 * 3600 // STEP_S + 1):
            ts_s = DAY / 1000 + k * STEP_S
            samples = device.measure(ts_s)
            consumption.append(loads.sample(device.house, ts_s).consumption_w)
            for channel, sample in enumerate(samples):
                rows.append(
                    {
                        "ts": int(ts_s * 1000),
                        "received_at": int(ts_s * 1000),
                        "device_id": device.device_id,
                        "channel": channel,
                        "power_w": sample.power_w,
                        "energy_wh": sample.energy_wh,
                        "returned_energy_wh": sample.returned_energy_wh,
                        "source": "generic",
                    }
                )
        c = np.array(consumption)
        truth[f"home-{index}"] = float(((c[:-1] + c[1:]) / 2).sum() * STEP_S / 3600)
    return config, rows, truth


def test_site_tables_round_trip_through_toml() -> None:
    config = FleetConfig(fmt=SimFormat.generic, devices=3, seed=3, homes=DEMO_HOMES)
    tables = site_tables(config, timezone="Europe/Warsaw", tariff="pl-g11")
    text = sites_toml(tables)
    assert tomllib.loads(text)["sites"] == tables
    sites = parse_sites(tomllib.loads(text)["sites"])
    roles = {name: [c.role for c in s.channels] for name, s in sites.items()}
    assert roles == {
        "home-0": ["grid", "circuit"],
        "home-1": ["grid", "solar"],
        "home-2": ["grid", "solar", "battery"],
    }


def test_the_three_homes_add_up(fleet: tuple[FleetConfig, list[dict], dict[str, float]]) -> None:
    config, rows, truth = fleet
    table = readings_to_table(rows)
    sites = parse_sites(site_tables(config))
    edges = bucket_edges_ms(DAY, DAY + 86_400_000, "day", UTC)
    got = {}
    for name, site in sites.items():
        energy = site_energy(table, site, edges)
        assert energy.warnings == ()
        (row,) = site_rows(energy, UTC)
        got[name] = row
        circuits = sum(v for k, v in row.items() if k.startswith("circuit_"))
        # consumption = circuits + untracked to the watt-hour (rounding to 1 mWh apart)
        assert row["consumption_wh"] == pytest.approx(circuits + row["untracked_wh"], abs=0.002)
        # and equals what the household drew (trapezoid of its appliances) within 1 Wh:
        # the meters publish power rounded to 0.1 W
        assert row["consumption_wh"] == pytest.approx(truth[name], abs=1.0)
        assert row["coverage"] == 1.0
    assert got["home-0"]["untracked_wh"] > 0 and got["home-0"]["solar_wh"] == 0.0
    assert got["home-1"]["solar_wh"] > 1000 and got["home-1"]["grid_export_wh"] > 0
    assert got["home-2"]["battery_charge_wh"] > 0 and got["home-2"]["battery_discharge_wh"] > 0
    assert 0 < got["home-2"]["self_sufficiency"] <= 1


def test_the_demo_fleet_decoded_from_its_payloads_adds_up() -> None:
    # The demo's format (Shelly Gen2), its three homes, 2 hours around noon: every payload
    # through the decoders, then each home's balance from the site tables.
    import pyarrow as pa

    from wattlake.devices.base import RawMessage
    from wattlake.devices.router import DecoderRouter
    from wattlake.devices.sim.simulator import Fleet

    config = FleetConfig(devices=3, seed=4, homes=DEMO_HOMES)
    fleet, router = Fleet(config), DecoderRouter()
    start_s, step_s = DAY / 1000 + 11 * 3600, 10.0
    readings: list[dict] = []
    for i in range(2 * 360 + 2):
        batch = fleet.round(start_s + i * step_s, step_s)
        for message in batch:
            raw = RawMessage(message.topic, message.payload, round((start_s + i * step_s) * 1000))
            out = router.decode(raw)
            if isinstance(out, pa.Table):
                out = out.to_pylist()
            readings.extend(out)
    table = readings_to_table(readings)
    channels = {(r["device_id"], r["channel"]) for r in readings}
    assert len(channels) == 2 + 2 + 3  # the battery home's meter has a third channel
    edges = bucket_edges_ms(DAY + 11 * 3_600_000 + 60_000, DAY + 13 * 3_600_000, "hour", UTC)
    for name, site in parse_sites(site_tables(config)).items():
        energy = site_energy(table, site, edges)
        for row in site_rows(energy, UTC):
            circuits = sum(v for k, v in row.items() if k.startswith("circuit_"))
            assert row["consumption_wh"] == pytest.approx(circuits + row["untracked_wh"], abs=0.002)
            assert row["untracked_wh"] >= 0, name
            assert row["coverage"] == 1.0, name
