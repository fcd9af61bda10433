"""The simulator's payload generator: determinism, physics, fault rates and payload shapes."""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from wattlake.devices.sim import loads
from wattlake.devices.sim.simulator import (
    Faults,
    Fleet,
    FleetConfig,
    SimFormat,
    SimMessage,
    Simulator,
    split_energy_wh,
)
from wattlake.errors import UsageError
from wattlake.schema import COLUMNS

START_S = datetime(2026, 6, 21, 0, 0, tzinfo=UTC).timestamp()


def generate(config: FleetConfig, rounds: int, step_s: float = 1.0) -> list[SimMessage]:
    fleet = Fleet(config)
    return [m for batch in fleet.rounds(START_S, step_s, rounds) for m in batch]


def strict_json(payload: bytes) -> Any:
    def refuse(token: str) -> None:
        raise ValueError(token)

    return json.loads(payload, parse_constant=refuse)


# -- determinism -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(SimFormat))
def test_the_same_seed_gives_byte_identical_payloads(fmt: SimFormat) -> None:
    faults = Faults(
        reboot_rate=0.02,
        offline_rate=0.02,
        offline_s=5,
        duplicate_rate=0.05,
        late_rate=0.05,
        late_s=3,
        malformed_rate=0.05,
        clock_skew_rate=0.5,
    )
    config = FleetConfig(fmt=fmt, devices=4, seed=42, faults=faults, pv_kwp=4, ev_share=0.5)
    first = [(m.topic, m.payload) for m in generate(config, 60)]
    again = [(m.topic, m.payload) for m in generate(config, 60)]
    other = [(m.topic, m.payload) for m in generate(FleetConfig(fmt=fmt, devices=4, seed=43), 60)]
    assert first == again
    assert first != other
    assert len(first) > 60


def test_a_device_publishes_the_same_whatever_the_rest_of_the_fleet() -> None:
    faults = Faults(duplicate_rate=0.1, malformed_rate=0.1, reboot_rate=0.05, offline_rate=0.05)
    whole = generate(FleetConfig(fmt=SimFormat.shelly_gen2, devices=8, seed=3, faults=faults), 50)
    part = generate(
        FleetConfig(fmt=SimFormat.shelly_gen2, devices=2, first_device=5, seed=3, faults=faults),
        50,
    )
    assert {m.topic.split("/")[0] for m in part} == {
        "shellyproem50-sim0005",
        "shellyproem50-sim0006",
    }
    of_part = [(m.topic, m.payload) for m in whole if m.topic.split("/")[0].endswith(("5", "6"))]
    assert [(m.topic, m.payload) for m in part] == of_part


def test_load_shapes_depend_only_on_household_and_time() -> None:
    house = loads.Household.draw(7, ev=True, heat_pump=True, pv_kwp=5)
    times = [START_S + i * 97.0 for i in range(2000)]
    forward = [loads.sample(house, t) for t in times]
    backward = [loads.sample(house, t) for t in reversed(times)]
    assert forward == backward[::-1]


# -- physics -----------------------------------------------------------------------------------


def test_energy_of_one_segment_by_hand() -> None:
    # 0 -> 100 W over an hour: a triangle of 50 Wh.
    assert split_energy_wh(0.0, 100.0, 3600.0) == pytest.approx((50.0, 0.0))
    # 100 -> -100 W over an hour crosses zero half way: 25 Wh in, 25 Wh out.
    assert split_energy_wh(100.0, -100.0, 3600.0) == pytest.approx((25.0, 25.0))
    # -300 -> 100 W over an hour: zero at 45 min; export 300*0.75/2, import 100*0.25/2.
    assert split_energy_wh(-300.0, 100.0, 3600.0) == pytest.approx((12.5, 112.5))
    # Export only, half an hour at -100..-300 W: 100 Wh out.
    assert split_energy_wh(-100.0, -300.0, 1800.0) == pytest.approx((0.0, 100.0))


def generic_series(messages: list[SimMessage]) -> dict[tuple[str, int], list[dict[str, Any]]]:
    series: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for m in messages:
        doc = strict_json(m.payload)
        for reading in doc if isinstance(doc, list) else [doc]:
            device = m.topic.split("/")[1]
            series.setdefault((device, reading["channel"]), []).append(reading)
    return series


def trapezoid_wh(readings: list[dict[str, Any]]) -> tuple[float, float]:
    imported = exported = 0.0
    for a, b in itertools.pairwise(readings):
        i, e = split_energy_wh(a["power_w"], b["power_w"], b["ts"] - a["ts"])
        imported += i
        exported += e
    return imported, exported


def test_counters_are_the_integral_of_the_published_power() -> None:
    # From 01:00 to 06:00 UTC at 50 °N in June the PV channel starts at 0 and the grid
    # channel goes from import to export: both counters move.
    config = FleetConfig(fmt=SimFormat.generic, devices=3, seed=5, pv_kwp=6.0, batch=4)
    fleet = Fleet(config)
    messages = [
        m for batch in fleet.rounds(START_S + 3600, 30.0, 600) for m in batch
    ]  # 5 h, a reading per channel every 15 s
    for (_device, channel), readings in generic_series(messages).items():
        imported, exported = trapezoid_wh(readings)
        assert readings[-1]["energy_wh"] - readings[0]["energy_wh"] == pytest.approx(
            imported, abs=0.01
        )
        assert readings[-1]["returned_energy_wh"] - readings[0][
            "returned_energy_wh"
        ] == pytest.approx(exported, abs=0.01)
        assert exported > 10.0  # PV exported in the morning on every channel
        if channel == 0:
            assert imported > 10.0


def test_gen1_counters_are_wh_totals_and_watt_minutes_since_boot() -> None:
    config = FleetConfig(fmt=SimFormat.shelly_gen1, devices=1, seed=3)
    values: dict[str, list[float]] = {}
    for m in generate(config, 121, step_s=30.0):  # one hour, a value every 30 s
        parts = m.topic.split("/")
        if len(parts) == 5 and parts[3] == "0":
            values.setdefault(parts[4], []).append(float(m.payload))
    powers = values["power"]
    imported = sum(split_energy_wh(a, b, 30.0)[0] for a, b in itertools.pairwise(powers))
    total = values["total"]
    assert total[-1] - total[0] == pytest.approx(imported, abs=0.1)
    assert values["energy"][0] == 0  # watt-minutes since the (simulated) boot
    assert values["energy"][-1] / 60 == pytest.approx(imported, abs=1 / 60)


def test_pv_is_negative_at_noon_and_zero_at_night() -> None:
    house = loads.Household.draw(11, pv_kwp=5.0)
    noon = START_S + 12 * 3600
    assert loads.pv_power_w(house, noon) > 0.85 * 5000 * 0.9 * (1 - 0.8)
    for hour in (0, 1, 2, 22, 23):
        assert loads.pv_power_w(house, START_S + hour * 3600) == 0.0
    config = FleetConfig(fmt=SimFormat.shelly_gen2, devices=1, seed=11, pv_kwp=8.0)
    fleet = Fleet(config)
    night = json.loads(fleet.round(START_S + 1800, 60.0)[-1].payload)["params"]
    day = json.loads(fleet.round(noon, 60.0)[-1].payload)["params"]
    assert night["em1:1"]["act_power"] == 0.0  # the PV inverter's channel
    assert night["em1:0"]["act_power"] > 0  # the home draws from the grid at night
    assert day["em1:1"]["act_power"] < -1000
    assert day["em1:0"]["act_power"] < 0  # and exports at noon


def test_a_household_day_has_a_base_load_peaks_and_spikes() -> None:
    house = loads.Household.draw(2, ev=True, heat_pump=False)
    day = [loads.sample(house, START_S + 86400 * 3 + i * 60.0) for i in range(1440)]
    power = [s.consumption_w for s in day]
    assert min(power) > 30.0  # never below the always-on load
    assert max(power) > 1500.0  # kettle, cooking or the car
    night = sum(power[120:300]) / 180  # 02:00-05:00
    evening = sum(power[1140:1320]) / 180  # 19:00-22:00
    assert evening > night
    assert {s.fridge_w for s in day} == {house.fridge_w, 2.0}  # compressor cycles


def test_a_heat_pump_runs_more_in_winter_and_local_time_moves_habits() -> None:
    house = loads.Household.draw(4, heat_pump=True)
    january = datetime(2026, 1, 15, tzinfo=UTC).timestamp()
    july = datetime(2026, 7, 15, tzinfo=UTC).timestamp()

    def running_share(start_s: float) -> float:
        minutes = [loads.heat_pump_power_w(house, start_s + i * 60.0) for i in range(1440)]
        return sum(1 for p in minutes if p > 0) / 1440

    assert running_share(january) > 0.6 > 0.2 > running_share(july)
    shifted = loads.Household.draw(4, pv_kwp=5.0, utc_offset_s=2 * 3600)
    noon_utc = START_S + 12 * 3600
    assert loads.pv_power_w(shifted, noon_utc - 2 * 3600) > loads.pv_power_w(shifted, noon_utc)


# -- faults ------------------------------------------------------------------------------------


def faulty(fmt: SimFormat, **rates: float) -> tuple[Fleet, list[SimMessage]]:
    config = FleetConfig(fmt=fmt, devices=50, seed=9, faults=Faults(**rates))
    fleet = Fleet(config)
    messages = [m for batch in fleet.rounds(START_S, 10.0, 100) for m in batch]
    return fleet, messages


def near(observed: float, expected: float) -> bool:
    return abs(observed - expected) <= max(5.0, 4 * math.sqrt(expected))


def test_duplicates_are_sent_twice_and_counted() -> None:
    fleet, messages = faulty(SimFormat.shelly_gen2, duplicate_rate=0.05)
    repeats = sum(
        1 for a, b in itertools.pairwise(messages) if (a.topic, a.payload) == (b.topic, b.payload)
    )
    assert repeats == fleet.stats.duplicates
    assert near(fleet.stats.duplicates, 0.05 * 5000)


def test_late_messages_arrive_after_later_ones_with_their_true_time() -> None:
    fleet, messages = faulty(SimFormat.shelly_gen2, late_rate=0.05, late_s=30.0)
    last_ts: dict[str, float] = {}
    out_of_order = 0
    for m in messages:
        if m.topic.endswith("/events/rpc"):
            ts = json.loads(m.payload)["params"]["ts"]
            if ts < last_ts.get(m.topic, 0.0):
                out_of_order += 1
                assert m.kind == "late"
            last_ts[m.topic] = max(ts, last_ts.get(m.topic, 0.0))
    assert fleet.stats.late == sum(m.kind == "late" for m in messages)
    # A late message follows later ones, unless the device's messages before it were late too.
    assert 0.9 * fleet.stats.late <= out_of_order <= fleet.stats.late
    assert near(fleet.stats.late, 0.05 * 5000)


def test_malformed_payloads_are_broken_and_counted() -> None:
    for fmt in (SimFormat.shelly_gen2, SimFormat.generic, SimFormat.shelly_gen1):
        fleet, messages = faulty(fmt, malformed_rate=0.05)
        bad = [m for m in messages if m.kind == "malformed"]
        assert len(bad) == fleet.stats.malformed
        data = fleet.stats.data_messages
        assert near(len(bad), 0.05 * data)
        assert set(fleet.stats.malformed_by_kind) == {"truncated", "nan", "wrong-type"}
        for m in bad:
            if fmt is SimFormat.shelly_gen1:
                assert m.payload in (b"", b"nan", b"true")
                continue
            try:
                doc = strict_json(m.payload)
            except ValueError:
                continue  # truncated JSON or a NaN literal
            ts = doc["params"]["ts"] if fmt is SimFormat.shelly_gen2 else doc["power_w"]
            assert isinstance(ts, str)  # the wrong type


def test_offline_gaps_say_false_then_true_and_stay_silent_between() -> None:
    fleet, messages = faulty(SimFormat.shelly_gen2, offline_rate=0.01, offline_s=100.0)
    offline = Counter(m.topic for m in messages if m.payload == b"false")
    assert sum(offline.values()) == fleet.stats.offline_gaps
    assert near(fleet.stats.offline_gaps, 0.01 * 5000 * 0.9)  # ~10 % of rounds are offline
    silent: set[str] = set()
    for m in messages:
        device = m.topic.split("/")[0]
        if m.topic.endswith("/online"):
            (silent.add if m.payload == b"false" else silent.discard)(device)
        else:
            assert device not in silent


def test_gen1_reboots_reset_watt_minutes_and_send_minus_one() -> None:
    fleet, messages = faulty(SimFormat.shelly_gen1, reboot_rate=0.01)
    minus_one_totals = sum(1 for m in messages if m.topic.endswith("/total") and m.payload == b"-1")
    assert minus_one_totals == 2 * fleet.stats.reboots  # both channels, one cycle
    assert near(fleet.stats.reboots, 0.01 * 5000)
    announces = sum(1 for m in messages if m.topic.endswith("/announce"))
    assert announces == 50 + fleet.stats.reboots
    # After a reboot the watt-minutes start again from 0; the Wh totals carry on.
    energy: dict[str, list[str]] = {}
    for m in messages:
        if m.topic.endswith("/emeter/0/energy") or m.topic.endswith("/emeter/0/total"):
            energy.setdefault(m.topic, []).append(m.payload.decode())
    for topic, series in energy.items():
        for before, reboot, after in zip(series, series[1:], series[2:], strict=False):
            if reboot == "-1" and before != "-1" and after != "-1":
                if topic.endswith("/total"):
                    assert float(after) >= float(before)
                else:
                    # Watt-minutes of the 10 s since the reboot (at most ~20 kW), not the total.
                    assert int(after) <= 20_000 * 10 / 60


def test_gen2_reboots_keep_counters_and_resend_full_status() -> None:
    fleet, messages = faulty(SimFormat.shelly_gen2, reboot_rate=0.01)
    full = sum(1 for m in messages if b'"NotifyFullStatus"' in m.payload)
    # One on first connect, one after each reboot, and one every 600 s (in a 1000 s run).
    assert 50 + fleet.stats.reboots < full <= 50 + fleet.stats.reboots + 50
    assert near(fleet.stats.reboots, 50)
    rebooted: set[str] = set()
    last_energy: dict[str, float] = {}
    for m in messages:
        device = m.topic.split("/")[0]
        if m.topic.endswith("/online"):
            rebooted.add(device)
            continue
        doc = json.loads(m.payload)
        assert (doc["method"] == "NotifyFullStatus") >= (device in rebooted)
        rebooted.discard(device)
        energy = doc["params"].get("em1data:0", {}).get("total_act_energy")
        if energy is not None:  # the import counter never goes back
            assert energy >= last_energy.get(device, 0.0)
            last_energy[device] = energy


def test_clock_skew_shifts_device_time_of_a_share_of_devices() -> None:
    config = FleetConfig(
        fmt=SimFormat.generic, devices=200, seed=1, faults=Faults(clock_skew_rate=0.2)
    )
    fleet = Fleet(config)
    skews = set()
    for m in fleet.round(START_S, 1.0):
        skew = strict_json(m.payload)["ts"] - START_S
        if skew != 0:
            assert 60.0 <= abs(skew) <= 120.0
            skews.add(m.topic)
    assert len(skews) == fleet.stats.skewed_devices
    assert near(len(skews), 40)
    assert fleet.stats.clock_skew == len(skews)


# -- payload shapes ----------------------------------------------------------------------------


def fixture_docs(fixtures_dir: Path) -> dict[str, dict[str, Any]]:
    components: dict[str, dict[str, Any]] = {}
    for path in (fixtures_dir / "shelly").glob("gen2-*.json"):
        doc = json.loads(path.read_text())
        assert set(doc) == {"src", "dst", "method", "params"}
        components.update({k: v for k, v in doc["params"].items() if k != "ts"})
    return components


def test_gen2_payloads_have_the_fixture_shapes(fixtures_dir: Path) -> None:
    expected = fixture_docs(fixtures_dir)
    for fmt in (SimFormat.shelly_gen2, SimFormat.shelly_gen2_3em):
        messages = generate(FleetConfig(fmt=fmt, devices=1, seed=1), 3)
        rpc = [m for m in messages if m.topic.endswith("/events/rpc")]
        first = json.loads(rpc[0].payload)
        assert set(first) == {"src", "dst", "method", "params"}
        assert first["method"] == "NotifyFullStatus"
        assert first["dst"] == f"{first['src']}/events"
        assert rpc[0].topic == f"{first['src']}/events/rpc"
        assert isinstance(first["params"]["ts"], float)
        meters = {k: v for k, v in first["params"].items() if ":" in k}
        assert meters, "no meter component"
        for name, component in meters.items():
            assert set(component) == set(expected[name]), name
        later = json.loads(rpc[1].payload)
        assert later["method"] == "NotifyStatus"
        for name, component in later["params"].items():
            if name != "ts":
                assert set(component) <= set(expected[name]) and "id" in component


def test_gen1_payloads_have_the_fixture_topics(fixtures_dir: Path) -> None:
    for fmt, fixture in (
        (SimFormat.shelly_gen1, "gen1-shellyem.jsonl"),
        (SimFormat.shelly_gen1_3em, "gen1-shellyem3.jsonl"),
    ):
        lines = [json.loads(line) for line in (fixtures_dir / "shelly" / fixture).open()]
        fixture_quantities = {
            line["topic"].split("/")[4] for line in lines if line["topic"].count("/") == 4
        }
        fixture_announce = (
            next(
                json.loads(line["payload"]) for line in lines if line["topic"].endswith("announce")
            )
            if fmt is SimFormat.shelly_gen1
            else None
        )
        messages = generate(FleetConfig(fmt=fmt, devices=1, seed=1), 2)
        quantities = {m.topic.split("/")[4] for m in messages if "/emeter/" in m.topic}
        assert fixture_quantities <= quantities
        assert quantities <= fixture_quantities | {
            "energy",
            "returned_energy",
            "current",
            "reactive_power",
        }
        for m in messages:
            if "/emeter/" in m.topic:
                assert math.isfinite(float(m.payload))
        announce = next(m for m in messages if m.topic.endswith("/announce"))
        assert announce.topic == f"shellies/{json.loads(announce.payload)['id']}/announce"
        if fixture_announce is not None:
            assert set(json.loads(announce.payload)) == set(fixture_announce)
        online = [m for m in messages if m.topic.endswith("/online")]
        assert [m.payload for m in online] == [b"true"]


def test_generic_payloads_use_canonical_column_names() -> None:
    one = generate(FleetConfig(fmt=SimFormat.generic, devices=2, seed=1), 4)
    assert all(
        m.topic.startswith("wattlake/meter-sim") and m.topic.endswith("/readings") for m in one
    )
    readings = [strict_json(m.payload) for m in one]
    assert all(isinstance(r, dict) and set(r) <= set(COLUMNS) for r in readings)
    batched = generate(FleetConfig(fmt=SimFormat.generic, devices=2, seed=1, batch=10), 4)
    arrays = [strict_json(m.payload) for m in batched]
    assert all(isinstance(a, list) and len(a) == 10 for a in arrays)
    assert len(batched) == 2 * 4


# -- bad configurations ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: Faults(reboot_rate=1.5), "reboot rate"),
        (lambda: Faults(duplicate_rate=0.6, late_rate=0.6), "together"),
        (lambda: FleetConfig(fmt=SimFormat.shelly_gen2, batch=5), "several readings"),
        (lambda: FleetConfig(devices=0), "at least 1 device"),
        (lambda: FleetConfig(fmt="shelly-gen9"), "shelly-gen9"),  # type: ignore[arg-type]
        (
            lambda: Simulator(
                _Broker(), config=FleetConfig(fmt=SimFormat.shelly_gen1), backfill_days=1
            ),
            "device time",
        ),
    ],
)
def test_bad_configurations_are_usage_errors(make: Any, words: str) -> None:
    with pytest.raises(UsageError, match=words) as caught:
        make()
    assert "--" not in str(caught.value)  # library errors name no command-line flag


class _Broker:
    host = "127.0.0.1"
    port = 1
