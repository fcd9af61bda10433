"""Tariffs: zones at boundaries, DST days, holidays, price changes, cost, compare, shifting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wattlake.energy.buckets import parse_time_ms, zone
from wattlake.energy.integrate import integrate_power
from wattlake.energy.tariffs import (
    builtin_tariff_names,
    compare_tariffs,
    cost_rows,
    load_tariff,
    parse_tariff,
    shift_savings,
    tariff_cost,
    tariff_segments,
    zone_at,
)
from wattlake.errors import UsageError

WAW = zone("Europe/Warsaw")
S = 1000
M = 60_000
H = 3_600_000


def constant_load(start_ms: int, end_ms: int, power_w: float = 1000.0):  # type: ignore[no-untyped-def]
    ts = np.arange(start_ms, end_ms + 1, M)
    p = np.full(ts.size, power_w)

    def over(edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r = integrate_power(ts, p, edges)
        return r.import_wh, r.export_wh

    return over


def test_every_builtin_loads() -> None:
    assert builtin_tariff_names() == [
        "pl-g11",
        "pl-g12",
        "pl-g12w",
        "pl-g13",
        "uk-economy7",
        "us-pge-e-tou-c",
    ]
    for name in builtin_tariff_names():
        assert load_tariff(name).name == name


def test_g12_zone_boundaries_are_half_open() -> None:
    t = load_tariff("pl-g12")
    at = [
        parse_time_ms(f"2026-06-01T{h}", WAW)
        for h in ("05:59:59", "06:00", "12:59", "13:00", "14:59", "15:00", "21:59", "22:00")
    ]
    assert zone_at(t, at) == ["night", "day", "day", "night", "night", "day", "day", "night"]


def test_interval_across_a_tariff_boundary_is_split_exactly() -> None:
    t = load_tariff("pl-g12")
    start, end = parse_time_ms("2026-06-01T21:30", WAW), parse_time_ms("2026-06-01T22:30", WAW)
    # one interval of 1 h at 1200 W across 22:00: 600 Wh day, 600 Wh night
    seg = tariff_segments(t, start, end)
    r = integrate_power([start, end], [1200.0, 1200.0], seg.edges_ms, max_gap_s=7200)
    cost = tariff_cost(t, seg, r.import_wh, r.export_wh)
    by_zone = {z.zone: z.import_wh for z in cost.zones}
    assert by_zone == pytest.approx({"day": 600.0, "night": 600.0})
    # 2026 prices: 0.6 kWh * 1.12 + 0.6 kWh * 0.66 = 1.068 PLN
    assert sum(z.import_cost for z in cost.zones) == pytest.approx(1.068)


def test_g12_on_the_23_hour_day() -> None:
    t = load_tariff("pl-g12")
    start, end = parse_time_ms("2026-03-29", WAW), parse_time_ms("2026-03-30", WAW)
    seg = tariff_segments(t, start, end)
    imp, exp = constant_load(start, end)(seg.edges_ms)
    cost = tariff_cost(t, seg, imp, exp)
    # night: 00-06 is 5 real hours (02:00-03:00 skipped) + 13-15 + 22-24 = 9 h; day 14 h at 1 kW
    assert {z.zone: z.import_wh for z in cost.zones} == pytest.approx({"night": 9000, "day": 14000})


def test_g12_on_the_25_hour_day() -> None:
    t = load_tariff("pl-g12")
    start, end = parse_time_ms("2026-10-25", WAW), parse_time_ms("2026-10-26", WAW)
    seg = tariff_segments(t, start, end)
    imp, exp = constant_load(start, end)(seg.edges_ms)
    cost = tariff_cost(t, seg, imp, exp)
    # night: 00-06 is 7 real hours (02:00-03:00 twice) + 2 + 2 = 11 h; day 14 h
    assert {z.zone: z.import_wh for z in cost.zones} == pytest.approx(
        {"night": 11000, "day": 14000}
    )


def test_g12w_public_holiday_is_offpeak_all_day() -> None:
    t = load_tariff("pl-g12w")
    # 2026-11-11 (Independence Day) is a Wednesday: all 24 h off-peak
    start, end = parse_time_ms("2026-11-11", WAW), parse_time_ms("2026-11-12", WAW)
    seg = tariff_segments(t, start, end)
    imp, _ = constant_load(start, end)(seg.edges_ms)
    cost = tariff_cost(t, seg, imp, np.zeros_like(imp))
    assert {z.zone: z.import_wh for z in cost.zones} == pytest.approx({"offpeak": 24000, "peak": 0})
    # the Thursday after is a working day: 8 h + 2 h off-peak, 14 h peak
    start, end = end, parse_time_ms("2026-11-13", WAW)
    seg = tariff_segments(t, start, end)
    imp, _ = constant_load(start, end)(seg.edges_ms)
    cost = tariff_cost(t, seg, imp, np.zeros_like(imp))
    assert {z.zone: z.import_wh for z in cost.zones} == pytest.approx(
        {"offpeak": 10000, "peak": 14000}
    )


def test_g13_afternoon_peak_moves_with_the_season() -> None:
    t = load_tariff("pl-g13")
    winter = [parse_time_ms(f"2026-01-14T{h}", WAW) for h in ("16:30", "20:30", "21:30")]
    summer = [parse_time_ms(f"2026-07-15T{h}", WAW) for h in ("16:30", "20:30", "21:30")]
    assert zone_at(t, winter) == ["afternoon-peak", "afternoon-peak", "offpeak"]
    assert zone_at(t, summer) == ["offpeak", "afternoon-peak", "afternoon-peak"]


def test_pge_peak_every_day_and_summer_season() -> None:
    t = load_tariff("us-pge-e-tou-c")
    la = zone("America/Los_Angeles")
    # a Saturday in July at 17:00 and a Sunday in January at 17:00 and 10:00
    at = [
        parse_time_ms(x, la) for x in ("2026-07-18T17:00", "2026-01-18T17:00", "2026-01-18T10:00")
    ]
    assert zone_at(t, at) == ["summer-peak", "winter-peak", "winter-offpeak"]


def test_economy7_keeps_gmt_in_summer() -> None:
    t = load_tariff("uk-economy7")
    london = zone("Europe/London")
    at = [
        parse_time_ms(x, london)
        for x in ("2026-07-01T00:30", "2026-07-01T07:30", "2026-07-01T08:00")
    ]
    assert zone_at(t, at) == ["day", "night", "day"]


def test_price_change_mid_period(tmp_path: Path) -> None:
    path = tmp_path / "flat.toml"
    path.write_text(
        """
name = "flat"
currency = "EUR"
timezone = "Europe/Warsaw"
default_zone = "all"
[[prices]]
valid_from = "2026-01-01"
import_per_kwh = { all = 0.10 }
fixed_per_day = 1.0
[[prices]]
valid_from = "2026-06-02"
import_per_kwh = { all = 0.20 }
fixed_per_day = 2.0
""",
        encoding="utf-8",
    )
    t = load_tariff(str(path))
    start, end = parse_time_ms("2026-06-01", WAW), parse_time_ms("2026-06-03", WAW)
    seg = tariff_segments(t, start, end)
    imp, exp = constant_load(start, end)(seg.edges_ms)
    cost = tariff_cost(t, seg, imp, exp)
    # 24 kWh at 0.10 + 24 kWh at 0.20 = 7.2 EUR; fixed 1 + 2 = 3 EUR
    assert cost.zones[0].import_cost == pytest.approx(7.2)
    assert cost.fixed_cost == pytest.approx(3.0)
    assert cost.total == pytest.approx(10.2)
    rows = cost_rows(cost)
    assert [r["zone"] for r in rows] == ["all", "fixed", "total"]
    assert rows[-1]["cost"] == pytest.approx(10.2)
    with pytest.raises(UsageError, match="no prices before"):
        tariff_segments(t, parse_time_ms("2025-12-31", WAW), end)


def test_export_credit_and_monthly_fixed_charge() -> None:
    t = load_tariff("pl-g11")
    start, end = parse_time_ms("2026-02-01", WAW), parse_time_ms("2026-03-01", WAW)
    seg = tariff_segments(t, start, end)
    # a full month: the whole monthly charge, 34 PLN
    assert seg.fixed_cost == pytest.approx(34.0)
    imp, exp = constant_load(start, end, -500.0)(seg.edges_ms)
    cost = tariff_cost(t, seg, imp, exp)
    # 28 days * 12 kWh = 336 kWh exported at 0.28 = 94.08 PLN credit
    assert cost.zones[0].export_credit == pytest.approx(94.08)
    assert cost.total == pytest.approx(34.0 - 94.08)


def test_compare_and_shift() -> None:
    start, end = parse_time_ms("2026-06-01", WAW), parse_time_ms("2026-06-02", WAW)  # a Monday
    tariffs = [load_tariff(n) for n in ("pl-g11", "pl-g12")]
    rows = compare_tariffs(tariffs, constant_load(start, end), start, end)
    # G11: 24 kWh * 0.98 = 23.52; G12: 14 kWh * 1.12 + 10 kWh * 0.66 = 22.28 -> G12 first
    assert [r["tariff"] for r in rows] == ["pl-g12", "pl-g11"]
    assert rows[0]["energy_cost"] == pytest.approx(22.28)
    t = tariffs[1]
    seg = tariff_segments(t, start, end)
    imp, _ = constant_load(start, end)(seg.edges_ms)
    shift = shift_savings(t, seg, imp, 0.2)
    # 20 % of 14 kWh day energy moves to night: 2.8 kWh * (1.12 - 0.66) = 1.288
    assert shift["shifted_wh"] == pytest.approx(2800.0)
    assert shift["savings"] == pytest.approx(1.288)
    with pytest.raises(UsageError):
        shift_savings(t, seg, imp, 1.5)


def test_bad_tariff_files_say_what_to_fix() -> None:
    with pytest.raises(UsageError, match="not valid TOML"):
        parse_tariff("name = ")
    with pytest.raises(UsageError, match="does not follow"):
        parse_tariff('name = "x"\ncurrency = "EUR"')
    text = """
name = "x"
currency = "EUR"
timezone = "UTC"
default_zone = "a"
[[rules]]
zone = "b"
hours = ["22:00-06:00"]
[[prices]]
valid_from = "2026-01-01"
import_per_kwh = { a = 0.1 }
"""
    with pytest.raises(UsageError, match="lack an import price for zone"):
        parse_tariff(text)
    with pytest.raises(UsageError, match="No tariff named"):
        load_tariff("no-such-tariff")
