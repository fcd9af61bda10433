"""Dynamic tariffs: prices per interval from a file, split at interval edges, priced exactly.

Every figure is derived by hand in the comments; energy comes from the same integration kernel
as zone tariffs (``integrate_power`` over the tariff's segment edges).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from wattlake.energy.buckets import parse_time_ms, zone
from wattlake.energy.dynamic_tariffs import read_prices
from wattlake.energy.integrate import integrate_power
from wattlake.energy.tariffs import (
    compare_tariffs,
    cost_rows,
    load_tariff,
    shift_savings,
    tariff_cost,
    tariff_segments,
)
from wattlake.errors import UsageError
from wattlake.lake import tables
from wattlake.lake.storage import Lake
from wattlake.schema import READINGS_TABLE, readings_to_table

WAW = zone("Europe/Warsaw")
M = 60_000
H = 3_600_000


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def cost_of(tariff_path: str, times: list[str], power_w: list[float], start: str, end: str):  # type: ignore[no-untyped-def]
    """Price one reading interval (or more) with gaps up to a day allowed."""
    t = load_tariff(tariff_path)
    ts = [parse_time_ms(x, WAW) for x in times]
    seg = tariff_segments(t, parse_time_ms(start, WAW), parse_time_ms(end, WAW))
    r = integrate_power(ts, power_w, seg.edges_ms, max_gap_s=90_000)
    return t, seg, r, tariff_cost(t, seg, r.import_wh, r.export_wh)


def test_a_negative_price_hour_pays_the_consumer(tmp_path: Path) -> None:
    prices = write(
        tmp_path / "prices.csv",
        "start,import_price_per_kwh\n"
        "2026-06-01T12:00+02:00,0.50\n"
        "2026-06-01T13:00+02:00,-0.20\n"
        "2026-06-01T14:00+02:00,0.40\n",
    )
    # one reading interval 12:30-13:30 at 1000 W: 500 Wh at 0.50, 500 Wh at -0.20
    # = 0.25 - 0.10 = 0.15
    _, seg, r, cost = cost_of(
        prices, ["2026-06-01T12:30", "2026-06-01T13:30"], [1000.0, 1000.0], "2026-06-01T12:30",
        "2026-06-01T13:30",
    )  # fmt: skip
    assert list(np.diff(seg.edges_ms)) == [30 * M, 30 * M]
    assert list(r.import_wh) == pytest.approx([500.0, 500.0])
    assert cost.total == pytest.approx(0.15)
    assert [row["zone"] for row in cost_rows(cost)] == ["dynamic", "fixed", "total"]
    assert cost.tariff.currency == "XXX"  # a plain CSV names no currency


def test_a_15_minute_price_change_inside_a_reading_interval(tmp_path: Path) -> None:
    prices = write(
        tmp_path / "q.csv",
        "start,import_price_per_kwh\n"
        "2026-06-01T10:00+02:00,0.40\n"
        "2026-06-01T10:15+02:00,0.80\n"
        "2026-06-01T10:30+02:00,0.20\n"
        "2026-06-01T10:45+02:00,0.60\n",
    )
    # Readings 10:10 at 600 W and 10:40 at 1200 W: power rises 20 W/min (trapezoid).
    # [10:10,10:15) mean 650 W x 5 min = 54.1667 Wh at 0.40 = 0.021667
    # [10:15,10:30) mean 850 W x 15 min = 212.5 Wh at 0.80 = 0.17
    # [10:30,10:40) mean 1100 W x 10 min = 183.333 Wh at 0.20 = 0.036667
    # total 450 Wh, cost 0.228333
    _, seg, r, cost = cost_of(
        prices, ["2026-06-01T10:10", "2026-06-01T10:40"], [600.0, 1200.0], "2026-06-01T10:10",
        "2026-06-01T10:40",
    )  # fmt: skip
    assert list(np.diff(seg.edges_ms)) == [5 * M, 15 * M, 10 * M]
    assert list(r.import_wh) == pytest.approx([650 / 12, 212.5, 1100 / 6])
    assert cost.total == pytest.approx(0.0216667 + 0.17 + 0.0366667, abs=1e-6)
    # Shifting half of the load into the day's cheapest interval (0.20):
    # 0.5 x (54.1667 Wh x (0.40 - 0.20) + 212.5 Wh x (0.80 - 0.20)) = 0.5 x 0.138333 = 0.069167
    shift = shift_savings(cost.tariff, seg, r.import_wh, 0.5)
    assert shift["shifted_wh"] == pytest.approx(0.5 * (650 / 12 + 212.5), abs=1e-3)
    assert shift["savings"] == pytest.approx(0.069167, abs=1e-4)


def warsaw_spring_day() -> str:
    # 2026-03-29: 00:00-02:00 at +01:00, then 03:00-24:00 at +02:00: 23 hours
    hours = [f"2026-03-29T{h:02d}:00+01:00" for h in (0, 1)]
    hours += [f"2026-03-29T{h:02d}:00+02:00" for h in range(3, 24)]
    return "start,import_price_per_kwh\n" + "".join(
        f"{t},{(k + 1) * 0.01:.2f}\n" for k, t in enumerate(hours)
    )


def test_the_23_hour_day(tmp_path: Path) -> None:
    write(tmp_path / "spring.csv", warsaw_spring_day())
    toml = write(
        tmp_path / "dyn.toml",
        'kind = "dynamic"\nname = "spot"\ncurrency = "PLN"\ntimezone = "Europe/Warsaw"\n'
        'prices_file = "spring.csv"\nfixed_per_day = 1.0\n',
    )
    # 1000 W all local day: 23 hours of 1 kWh at 0.01, 0.02 … 0.23 = 0.01 x 276 = 2.76;
    # the fixed charge of one whole (23-hour) day is 1.0
    t, seg, r, cost = cost_of(
        toml, ["2026-03-29", "2026-03-30"], [1000.0, 1000.0], "2026-03-29", "2026-03-30"
    )
    assert seg.edges_ms.size == 24 and set(np.diff(seg.edges_ms)) == {H}
    assert r.import_wh.sum() == pytest.approx(23_000.0)
    assert cost.fixed_cost == pytest.approx(1.0)
    assert cost.total == pytest.approx(2.76 + 1.0)
    # 00:00-13:00 local is 12 hours (02:00-03:00 does not exist): 12/23 of the day's charge
    half = tariff_segments(
        t, parse_time_ms("2026-03-29", WAW), parse_time_ms("2026-03-29T13:00", WAW)
    )
    assert half.fixed_cost == pytest.approx(12 / 23)


ENTSOE_HEADER = '"MTU (CET/CEST)","Day-ahead Price [EUR/MWh]","Currency","BZN|PL"\n'


def test_the_25_hour_day_from_an_entsoe_export(tmp_path: Path) -> None:
    # 2026-10-25: 02:00-03:00 happens twice (CEST, then CET); 25 hourly prices 10, 20 … 250
    # EUR/MWh = 0.01 … 0.25 EUR/kWh. 1000 W all day: 0.01 x (1 + … + 25) = 3.25 EUR.
    walls = [0, 1, 2, 2, *range(3, 24)]
    rows = [
        f'"25.10.2026 {h:02d}:00 - {"26" if h == 23 else "25"}.10.2026 {(h + 1) % 24:02d}:00",'
        f'"{(k + 1) * 10:.2f}","EUR","PL"\n'
        for k, h in enumerate(walls)
    ]
    tariff = load_tariff(write(tmp_path / "entsoe.csv", ENTSOE_HEADER + "".join(rows)))
    assert tariff.currency == "EUR" and tariff.timezone == "Europe/Brussels"
    edges = tariff.dynamic.edges_ms if tariff.dynamic else np.array([])
    assert edges.size == 26 and set(np.diff(edges)) == {H}
    assert edges[0] == parse_time_ms("2026-10-25", WAW)
    assert edges[-1] == parse_time_ms("2026-10-26", WAW)
    start, end = int(edges[0]), int(edges[-1])
    seg = tariff_segments(tariff, start, end)
    r = integrate_power([start, end], [1000.0, 1000.0], seg.edges_ms, max_gap_s=90_000)
    assert tariff_cost(tariff, seg, r.import_wh, r.export_wh).total == pytest.approx(3.25)


def test_export_is_priced_per_interval(tmp_path: Path) -> None:
    prices = write(
        tmp_path / "px.csv",
        "start,import_price_per_kwh,export_price_per_kwh\n"
        "2026-06-01T12:00+02:00,0.50,0.10\n"
        "2026-06-01T13:00+02:00,-0.20,-0.05\n",
    )
    # -2000 W (export) 12:00-14:00: 2 kWh credited at 0.10, 2 kWh at -0.05 (the seller pays):
    # credit 0.20 - 0.10 = 0.10, total -0.10
    _, _, r, cost = cost_of(
        prices, ["2026-06-01T12:00", "2026-06-01T14:00"], [-2000.0, -2000.0], "2026-06-01T12:00",
        "2026-06-01T14:00",
    )  # fmt: skip
    assert list(r.export_wh) == pytest.approx([2000.0, 2000.0])
    assert cost.zones[0].export_credit == pytest.approx(0.10)
    assert cost.total == pytest.approx(-0.10)


def test_a_gap_in_prices_is_refused_only_where_a_cost_needs_it(tmp_path: Path) -> None:
    t = load_tariff(
        write(
            tmp_path / "gap.csv",
            "start,import_price_per_kwh\n"
            "2026-06-01T10:00Z,0.5\n2026-06-01T11:00Z,0.5\n2026-06-01T13:00Z,0.5\n",
        )
    )
    utc = zone("UTC")
    ok = tariff_segments(
        t, parse_time_ms("2026-06-01T10:00", utc), parse_time_ms("2026-06-01T12:00", utc)
    )
    assert ok.edges_ms.size == 3
    with pytest.raises(UsageError, match=r"no price from 2026-06-01T12:00:00\+00:00 to "):
        tariff_segments(
            t, parse_time_ms("2026-06-01T10:00", utc), parse_time_ms("2026-06-01T14:00", utc)
        )
    with pytest.raises(UsageError, match=r"has prices from .* only"):
        tariff_segments(
            t, parse_time_ms("2026-06-01T09:00", utc), parse_time_ms("2026-06-01T11:00", utc)
        )
    overlapping = write(
        tmp_path / "overlap.csv",
        "start,end,import_price_per_kwh\n"
        "2026-06-01T10:00Z,2026-06-01T11:00Z,0.5\n2026-06-01T10:30Z,2026-06-01T11:30Z,0.6\n",
    )
    with pytest.raises(UsageError, match="intervals overlap"):
        load_tariff(overlapping)


# The same four hours of 2026-06-01 (00:00-04:00 CEST = 22:00Z-02:00Z), one negative, in every
# supported input: 0.1005, -0.0123, 0.0875, 0.2 per kWh.
PLAIN = (
    "start,import_price_per_kwh\n2026-06-01T00:00+02:00,0.1005\n2026-06-01T01:00+02:00,-0.0123\n"
    "2026-06-01T02:00+02:00,0.0875\n2026-06-01T03:00+02:00,0.2\n"
)
ENTSOE = ENTSOE_HEADER + (
    '"01.06.2026 00:00 - 01.06.2026 01:00","100.50","EUR","PL"\n'
    '"01.06.2026 01:00 - 01.06.2026 02:00","-12.30","EUR","PL"\n'
    '"01.06.2026 02:00 - 01.06.2026 03:00","87.50","EUR","PL"\n'
    '"01.06.2026 03:00 - 01.06.2026 04:00","200.00","EUR","PL"\n'
)
NORDPOOL = (
    "Delivery Start (CET);Delivery End (CET);SE3 (EUR)\n"
    "01.06.2026 00:00:00;01.06.2026 01:00:00;100,50\n"
    "01.06.2026 01:00:00;01.06.2026 02:00:00;-12,30\n"
    "01.06.2026 02:00:00;01.06.2026 03:00:00;87,50\n"
    "01.06.2026 03:00:00;01.06.2026 04:00:00;200,00\n"
)
OCTOPUS = json.dumps(
    {
        "count": 4,
        "results": [  # the API answers newest first, in p/kWh
            {"value_exc_vat": 19.05, "value_inc_vat": 20.0,
             "valid_from": "2026-06-01T01:00:00Z", "valid_to": "2026-06-01T02:00:00Z"},
            {"value_exc_vat": 8.33, "value_inc_vat": 8.75,
             "valid_from": "2026-06-01T00:00:00Z", "valid_to": "2026-06-01T01:00:00Z"},
            {"value_exc_vat": -1.17, "value_inc_vat": -1.23,
             "valid_from": "2026-05-31T23:00:00Z", "valid_to": "2026-06-01T00:00:00Z"},
            {"value_exc_vat": 9.57, "value_inc_vat": 10.05,
             "valid_from": "2026-05-31T22:00:00Z", "valid_to": "2026-05-31T23:00:00Z"},
        ],
    }
)  # fmt: skip


@pytest.mark.parametrize(
    ("name", "text", "currency"),
    [
        ("plain.csv", PLAIN, "XXX"),
        ("entsoe.csv", ENTSOE, "EUR"),
        ("nordpool.csv", NORDPOOL, "EUR"),
        ("agile.json", OCTOPUS, "GBP"),
    ],
)
def test_every_input_reads_to_the_same_prices(
    tmp_path: Path, name: str, text: str, currency: str
) -> None:
    tariff = load_tariff(write(tmp_path / name, text))
    assert tariff.dynamic is not None and tariff.currency == currency
    start = parse_time_ms("2026-06-01", WAW)
    assert list(tariff.dynamic.edges_ms) == [start + k * H for k in range(5)]
    assert list(tariff.dynamic.import_per_kwh) == pytest.approx([0.1005, -0.0123, 0.0875, 0.2])
    assert list(tariff.dynamic.export_per_kwh) == [0.0] * 4


def test_a_nordpool_export_of_several_areas_needs_one_picked(tmp_path: Path) -> None:
    text = "Delivery Start (CET),Delivery End (CET),SE3 (EUR),SE4 (EUR)\n"
    text += "01.06.2026 00:00,01.06.2026 01:00,10.0,20.0\n"
    with pytest.raises(UsageError, match="several areas"):
        load_tariff(write(tmp_path / "np.csv", text))
    assert read_prices(text, "np.csv", "nordpool", "SE4").import_per_kwh == [0.02]


def test_compare_prices_zone_and_dynamic_tariffs_alike(tmp_path: Path) -> None:
    write(tmp_path / "flat.csv", "start,import_price_per_kwh\n2026-06-01T00:00+02:00,1.0\n"
          "2026-06-01T01:00+02:00,0.5\n2026-06-01T02:00+02:00,0.5\n")  # fmt: skip
    dyn = write(
        tmp_path / "d.toml",
        'kind = "dynamic"\nname = "spot"\ncurrency = "PLN"\ntimezone = "Europe/Warsaw"\n'
        'prices_file = "flat.csv"\nimport_markup_per_kwh = 0.1\n',
    )
    start, end = parse_time_ms("2026-06-01", WAW), parse_time_ms("2026-06-01T03:00", WAW)
    ts = np.arange(start, end + 1, M)

    def over(edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r = integrate_power(ts, np.full(ts.size, 1000.0), edges)
        return r.import_wh, r.export_wh

    # 1 kWh an hour: (1.0 + 0.1) + 2 x (0.5 + 0.1) = 2.3 PLN
    rows = compare_tariffs([load_tariff(dyn), load_tariff("pl-g11")], over, start, end)
    spot = next(r for r in rows if r["tariff"] == "spot")
    assert spot["total"] == pytest.approx(2.3) and spot["import_wh"] == pytest.approx(3000.0)
    assert {r["currency"] for r in rows} == {"PLN"} and sorted(r["rank"] for r in rows) == [1, 2]


# -- through the CLI ---------------------------------------------------------------------------
DAY = parse_time_ms("2026-06-01", WAW)
DAY_PRICES = "start,import_price_per_kwh\n" + "".join(
    f"2026-06-01T{h:02d}:00+02:00,{-0.30 if h == 13 else 0.50}\n" for h in range(24)
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # one meter, 700 W all day on channel 0, a reading a minute
    root = tmp_path_factory.mktemp("dyn") / "lake"
    lake = Lake.open(str(root))
    rows = [
        {"ts": DAY + m * M, "received_at": DAY + m * M, "device_id": "em", "channel": 0,
         "power_w": 700.0, "source": "generic"}
        for m in range(24 * 60 + 1)
    ]  # fmt: skip
    tables.append(lake, READINGS_TABLE, readings_to_table(rows))
    (root / "prices.csv").write_text(DAY_PRICES, encoding="utf-8")
    (root / "spot.toml").write_text(
        'kind = "dynamic"\nname = "spot"\ncurrency = "PLN"\ntimezone = "Europe/Warsaw"\n'
        'prices_file = "prices.csv"\nfixed_per_day = 2.0\n',
        encoding="utf-8",
    )
    return root


def wattlake(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wattlake", *args, "--data-dir", str(data_dir), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def lines(out: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


DAY_ARGS = ("--start", "2026-06-01", "--end", "2026-06-02")


def test_cli_cost_under_a_price_file(data_dir: Path) -> None:
    prices = str(data_dir / "prices.csv")
    # 0.7 kWh an hour: 23 h at 0.50 and one at -0.30 = 0.7 x 11.2 = 7.84
    rows = lines(wattlake(data_dir, "cost", "--tariff", prices, "--tz", "Europe/Warsaw", *DAY_ARGS))
    total = next(r for r in rows if r["zone"] == "total")
    assert total["import_wh"] == pytest.approx(16_800.0) and total["cost"] == pytest.approx(7.84)
    # the bare file is in UTC: a UTC day reaches past its prices, one sentence and exit 2
    out = wattlake(data_dir, "cost", "--tariff", prices, *DAY_ARGS)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "has prices from 2026-05-31T22:00:00+00:00 to 2026-06-01T22:00:00+00:00 only" in (
        out.stderr
    )


def test_cli_compare_a_zone_tariff_with_a_dynamic_one(data_dir: Path) -> None:
    spot = str(data_dir / "spot.toml")
    rows = lines(wattlake(data_dir, "cost", "--tariff", spot, "--compare", "pl-g11", *DAY_ARGS))
    by_name = {r["tariff"]: r for r in rows}
    assert set(by_name) == {"spot", "pl-g11"}
    # 7.84 for the energy and the fixed 2.0 of one whole day
    assert by_name["spot"]["energy_cost"] == pytest.approx(7.84)
    assert by_name["spot"]["total"] == pytest.approx(9.84)
    assert by_name["pl-g11"]["import_wh"] == by_name["spot"]["import_wh"] == 16_800.0


def test_cli_tariffs_show_lists_the_price_intervals(data_dir: Path) -> None:
    show = [sys.executable, "-m", "wattlake", "tariffs", "show", str(data_dir / "spot.toml")]
    out = subprocess.run([*show, "--format", "json"], capture_output=True, text=True, timeout=60)
    rows = lines(out)
    assert len(rows) == 24
    assert rows[13]["start"] == "2026-06-01T13:00:00+02:00"
    assert rows[13]["import_per_kwh"] == -0.30 and rows[13]["fixed_per_day"] == 2.0


@pytest.mark.parametrize(
    ("name", "text", "sentence"),
    [
        ("short.csv", "start,import_price_per_kwh\n2026-06-01T00:00Z\n", "a price is missing"),
        ("naive.csv", "start,import_price_per_kwh\n2026-06-01T00:00,1\n", "has no UTC offset"),
        ("e.csv", ENTSOE_HEADER + '"01.06.2026 00:00 - 01.06.2026 01:00"\n', "has 1 columns"),
        ("n.csv", "Delivery Start (CET);Delivery End (CET);SE3 (EUR)\n01.06.2026 00:00\n", "has 1"),
        ("agile.json", '{"results": [{"valid_from": "x"}]}', "not an Octopus unit-rates answer"),
    ],
)
def test_a_malformed_price_file_is_one_sentence(
    tmp_path: Path, name: str, text: str, sentence: str
) -> None:
    with pytest.raises(UsageError, match=sentence):
        load_tariff(write(tmp_path / name, text))


def test_cli_cost_of_a_device_without_readings_says_what_the_lake_holds(data_dir: Path) -> None:
    # before: "No tariff named 'spot'" (the tariff was loaded again by its name), exit 2
    spot = str(data_dir / "spot.toml")
    out = wattlake(data_dir, "cost", "--tariff", spot, "--device", "other", *DAY_ARGS)
    assert out.returncode == 0, out.stderr
    assert "No readings of device other" in out.stderr and out.stdout == ""


def test_cli_cost_from_rollups_is_the_same(data_dir: Path, tmp_path: Path) -> None:
    # the query layer prices a dynamic tariff from energy_15min as from raw readings
    lake = tmp_path / "lake"
    shutil.copytree(data_dir, lake)
    assert wattlake(lake, "jobs", "run", "rollup").returncode == 0
    out = wattlake(lake, "cost", "--tariff", str(lake / "spot.toml"), *DAY_ARGS)
    total = next(r for r in lines(out) if r["zone"] == "total")
    assert "rollups" in out.stderr
    assert total["cost"] == pytest.approx(9.84) and total["import_wh"] == pytest.approx(16_800.0)
