"""Cost against hand-derived answers (issue 12): dates in the tariff's zone, coverage and gaps on
every row, load shifting within the same kind of day, custom boundaries on the two DST days of
2026, and what each built-in tariff leaves out of the real bill."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from wattlake.energy.buckets import format_local, parse_time_ms, zone
from wattlake.energy.integrate import integrate_power
from wattlake.energy.sites import parse_sites
from wattlake.energy.tariffs import (
    builtin_tariff_names,
    load_tariff,
    parse_tariff,
    shift_savings,
    tariff_cost,
    tariff_segments,
)
from wattlake.query.reports import cost_period, cost_report
from wattlake.schema import readings_to_table

WAW = zone("Europe/Warsaw")
M = 60_000
H = 3_600_000


def one_kw(start_ms: int, end_ms: int, tariff_text: str) -> dict[str, float]:
    """Import per zone of a constant 1 kW over [start, end) [Wh]."""
    t = parse_tariff(tariff_text)
    seg = tariff_segments(t, start_ms, end_ms)
    r = integrate_power([start_ms, end_ms], [1000.0, 1000.0], seg.edges_ms, max_gap_s=1e9)
    return {
        z.zone: round(z.import_wh, 6) for z in tariff_cost(t, seg, r.import_wh, r.export_wh).zones
    }


def custom(hours: str) -> str:
    return f"""
name = "custom"
currency = "PLN"
timezone = "Europe/Warsaw"
default_zone = "d"
[[rules]]
zone = "x"
hours = [{hours}]
[[prices]]
valid_from = "2026-01-01"
import_per_kwh = {{ x = 1.0, d = 0.5 }}
"""


def day(text: str) -> tuple[int, int]:
    start = parse_time_ms(text, WAW)
    return start, start + 30 * H  # reaches past the day; buckets of the next day are not asked


def test_custom_boundary_inside_the_skipped_hour_moves_to_the_jump() -> None:
    # 2026-03-29, Warsaw: 02:00-03:00 does not exist. "02:30-03:30" runs from the jump (03:00)
    # to 03:30: 30 minutes, 500 Wh. Before: 0 Wh (02:30 was moved to 03:30).
    start, end = parse_time_ms("2026-03-29", WAW), parse_time_ms("2026-03-30", WAW)
    assert one_kw(start, end, custom('"02:30-03:30"'))["x"] == 500.0
    # "01:30-02:30" ends at the jump: 30 minutes (before: 60, to 03:30).
    assert one_kw(start, end, custom('"01:30-02:30"'))["x"] == 500.0
    # a zone wholly inside the skipped hour has no energy
    assert one_kw(start, end, custom('"02:10-02:50"'))["x"] == 0.0


def test_custom_boundary_inside_the_repeated_hour_holds_both_times() -> None:
    # 2026-10-25, Warsaw: 02:00-03:00 happens twice. "02:30-03:00" is 02:30-03:00 (+02:00) and
    # 02:30-03:00 (+01:00): 60 minutes, 1000 Wh. Before: 90 minutes (first 02:30 to 03:00).
    start, end = parse_time_ms("2026-10-25", WAW), parse_time_ms("2026-10-26", WAW)
    assert one_kw(start, end, custom('"02:30-03:00"'))["x"] == 1000.0
    # "02:00-02:30" likewise twice: 1000 Wh; "00:00-06:00" holds seven real hours.
    assert one_kw(start, end, custom('"02:00-02:30"'))["x"] == 1000.0
    assert one_kw(start, end, custom('"00:00-06:00"'))["x"] == 7000.0
    assert sum(one_kw(start, end, custom('"02:30-03:00"')).values()) == 25_000.0


def test_shifting_stays_within_the_season_and_day_type() -> None:
    # PG&E E-TOU-C, a July day at 1 kW: 5 kWh summer-peak (16-21), 19 kWh summer-offpeak.
    # 20 % of the peak moves to summer off-peak: 1 kWh, saving 1 * (0.62 - 0.50) = 0.12 USD.
    # Before: every summer zone was "dearer" than winter off-peak: 4.8 kWh shifted.
    t = load_tariff("us-pge-e-tou-c")
    la = zone("America/Los_Angeles")
    start, end = parse_time_ms("2026-07-01", la), parse_time_ms("2026-07-02", la)
    seg = tariff_segments(t, start, end)
    r = integrate_power([start, end], [1000.0, 1000.0], seg.edges_ms, max_gap_s=1e9)
    shift = shift_savings(t, seg, r.import_wh, 0.2)
    assert shift["shifted_wh"] == 1000.0
    assert shift["savings"] == pytest.approx(0.12)


def test_g13_weekday_peak_shifts_to_weekday_offpeak_only() -> None:
    # A working Monday and the weekend after are one range; the weekday's own off-peak is the
    # cheapest zone it can move to.
    t = load_tariff("pl-g13")
    start, end = parse_time_ms("2026-06-01", WAW), parse_time_ms("2026-06-02", WAW)
    seg = tariff_segments(t, start, end)
    assert seg.day_group is not None and len(seg.group_zones) == 1


def test_every_builtin_says_what_it_leaves_out_of_the_bill() -> None:
    for name in builtin_tariff_names():
        t = load_tariff(name)
        assert t.leaves_out and t.models, name
    pge = " ".join(load_tariff("us-pge-e-tou-c").leaves_out + load_tariff("us-pge-e-tou-c").models)
    for part in ("baseline credit", "Base Services Charge", "net-metering"):
        assert part in pge


def test_cost_dates_are_read_in_the_tariffs_zone() -> None:
    # A Warsaw day under G11 starts at Warsaw midnight (22:00 UTC in summer), not at 00:00 UTC.
    _, start, end = cost_period(load_tariff("pl-g11"), "2026-06-01", "2026-06-02")
    assert (format_local(start, zone("UTC")), end - start) == ("2026-05-31T22:00:00+00:00", 24 * H)
    _, start, _ = cost_period(load_tariff("pl-g11"), "2026-06-01", "2026-06-02", "UTC")
    assert format_local(start, zone("UTC")) == "2026-06-01T00:00:00+00:00"


def readings(device: str, channel: int, power: float, minutes: list[int], start: int) -> list[Any]:
    return [
        {
            "ts": start + m * M,
            "received_at": start + m * M,
            "device_id": device,
            "channel": channel,
            "power_w": power,
            "source": "generic",
        }
        for m in minutes
    ]


def test_cost_rows_carry_coverage_and_the_gaps_they_bridge() -> None:
    # G12 on 2026-06-01 (Warsaw): night 00-06, 13-15, 22-24; day otherwise. 1 kW read every
    # minute, except nothing from 07:00 to 09:00 (a two-hour gap in the day zone) and nothing
    # after 23:00. Day zone: 14 h, of which 2 h gap -> coverage 12/14; night 10 h, of which the
    # last hour has no readings -> 9/10. Gaps are skipped (not billed): day 12 kWh, night 9 kWh.
    t = load_tariff("pl-g12")
    tz, start, end = cost_period(t, "2026-06-01", "2026-06-02")
    minutes = [m for m in range(0, 23 * 60 + 1) if not 7 * 60 < m < 9 * 60]
    table = readings_to_table(readings("em", 0, 1000.0, minutes, start))
    report = cost_report(table, t, start, end, tz, min_coverage=0.95)
    night, day_row, fixed, total = report.rows
    assert (night["zone"], night["import_wh"], night["coverage"], night["gaps"]) == (
        "night",
        9000.0,
        0.9,
        1,
    )
    assert (day_row["zone"], day_row["import_wh"], day_row["coverage"], day_row["gaps"]) == (
        "day",
        12_000.0,
        round(12 / 14, 4),
        1,
    )
    assert fixed["coverage"] is None
    assert (total["coverage"], total["gaps"]) == (0.875, 2)
    assert [(g["start"], g["end"], g["length_s"]) for g in report.gaps] == [
        ("2026-06-01T07:00:00+02:00", "2026-06-01T09:00:00+02:00", 7200.0),
        ("2026-06-01T23:00:00+02:00", "2026-06-02T00:00:00+02:00", 3600.0),
    ]
    (warning,) = report.warnings
    assert warning.startswith("em channel 0: only 87.5% of the period is backed by readings")
    assert (night["device_id"], night["channel"], total["device_id"]) == ("em", 0, "em")


def test_cost_of_a_site_bills_the_grid_channel_only() -> None:
    # The simulator's wiring: channel 0 the grid (700 W), channel 1 the kitchen behind it
    # (300 W). Billing both channels would count the kitchen twice: 24 kWh instead of 16.8.
    t = load_tariff("pl-g11")
    tz, start, end = cost_period(t, "2026-06-01", "2026-06-02")
    minutes = list(range(24 * 60 + 1))
    rows = readings("em", 0, 700.0, minutes, start) + readings("em", 1, 300.0, minutes, start)
    table = readings_to_table(rows)
    site = parse_sites(
        {
            "home": {
                "timezone": "Europe/Warsaw",
                "tariff": "pl-g11",
                "channels": [
                    {"device": "em", "channel": 0, "role": "grid"},
                    {"device": "em", "channel": 1, "role": "circuit", "parent": "em:0"},
                ],
            }
        }
    )["home"]
    report = cost_report(table, t, start, end, tz, site=site)
    total = report.rows[-1]
    assert (total["import_wh"], total["coverage"], total["gaps"]) == (16_800.0, 1.0, 0)
    assert report.warnings == []
    # Without a site the channels are never summed (before: one total of 24 000 Wh, with a
    # warning): a row set per channel, each led by device_id and channel.
    each = cost_report(table, t, start, end, tz)
    assert [(r["device_id"], r["channel"], r["zone"], r["import_wh"]) for r in each.rows] == [
        ("em", 0, "all-day", 16_800.0),
        ("em", 0, "fixed", 0.0),
        ("em", 0, "total", 16_800.0),
        ("em", 1, "all-day", 7_200.0),
        ("em", 1, "fixed", 0.0),
        ("em", 1, "total", 7_200.0),
    ]
    assert each.warnings == []
    kitchen = cost_report(table, t, start, end, tz, channel=1)
    assert [(r["channel"], r["zone"], r["import_wh"]) for r in kitchen.rows][-1] == (
        1,
        "total",
        7_200.0,
    )
    assert np.isclose(report.coverage, 1.0)
