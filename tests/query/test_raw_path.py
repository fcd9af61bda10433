"""The raw energy path read straight into series (:func:`wattlake.query.raw.read_series`) gives
exactly what the Arrow path gives (:func:`read_bracketed`, then :func:`split_series`), and the
same energy, on a lake with duplicates across files, overlapping and unsorted files, gaps, a
counter reset, absent values (nulls) and readings less than a millisecond apart."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pytest

from tests.query.test_read_bracketed import DAY, T0, _every, _rows, filled  # noqa: F401
from wattlake.energy.buckets import bucket_edges_ms, zone
from wattlake.energy.series import Series, SeriesEnergy, split_series
from wattlake.lake import tables
from wattlake.lake.storage import Lake
from wattlake.query.energy import EnergySources, energy_over_edges
from wattlake.query.engine import connect
from wattlake.query.raw import (
    _read_files,
    _sort_rows,
    _window_groups,
    read_bracketed,
    read_series,
)
from wattlake.query.readings import bracketed_readings
from wattlake.schema import READINGS_TABLE, SERIES_COLUMNS


@pytest.fixture
def troubled(filled: Lake) -> Lake:  # noqa: F811
    """``filled`` plus: a counter reset and nulls in a counter, gaps, and two readings 400 µs
    apart (the same ms: the first one stays)."""
    ts = _every(T0 + 8 * DAY, T0 + 11 * DAY, 60_000)
    ts = ts[(ts < T0 + 9 * DAY) | (ts >= T0 + 9 * DAY + 7_200_000)]  # a two-hour gap
    rows = _rows("e", 1, ts, 21)
    energy = np.asarray(rows["energy_wh"].to_numpy(zero_copy_only=False)).copy()
    energy[ts >= T0 + 9 * DAY + 43_200_000] -= 900.0  # the meter restarts near zero
    absent = np.zeros(ts.size, dtype=np.bool_)
    absent[100:130] = True  # the counter unavailable for half an hour
    rows = rows.set_column(
        rows.schema.get_field_index("energy_wh"),
        "energy_wh",
        pa.array(energy, pa.float64(), mask=absent),
    )
    power = np.asarray(rows["power_w"].to_numpy(zero_copy_only=False)).copy()
    power[200:210] = -power[200:210]  # export for ten minutes
    rows = rows.set_column(
        rows.schema.get_field_index("power_w"),
        "power_w",
        pa.array(power, pa.float64(), mask=np.arange(ts.size) % 97 == 5),
    )
    tables.append(filled, READINGS_TABLE, rows)
    close = rows.slice(500, 1)
    us = close.schema.field("ts").with_type(pa.timestamp("us", tz="UTC"))
    later = pa.array([int(ts[500]) * 1000 + 400], pa.int64()).cast(us.type)
    close = close.cast(close.schema.set(0, us)).set_column(0, us, later)
    tables.append(filled, READINGS_TABLE, close)
    return filled


RANGES = [(8, 10), (8.5, 9.25), (0, 20), (-3, 2), (19, 25), (9.1, 9.6)]


def _same_series(got: list[Series], expected: list[Series]) -> None:
    assert [(s.device_id, s.channel) for s in got] == [(s.device_id, s.channel) for s in expected]
    for g, e in zip(got, expected, strict=True):
        for name in ("ts_ms", "power_w", "energy_wh", "returned_energy_wh"):
            a, b = getattr(g, name), getattr(e, name)
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), (g.device_id, name)


# The ranges and options of one test run over one lake (building the lake is most of the time).
def test_series_read_directly_are_those_split_from_the_table(troubled: Lake) -> None:
    for (first_day, last_day), devices in itertools.product(RANGES, [None, ["a", "e"], ["b"]]):
        start, end = T0 + int(first_day * DAY), T0 + int(last_day * DAY)
        table = read_bracketed(troubled, start, end, device_ids=devices, columns=SERIES_COLUMNS)
        assert table is not None
        got = read_series(troubled, start, end, device_ids=devices)
        assert got is not None, (first_day, last_day, devices)
        _same_series(got, split_series(table))


def _same_energy(got: list[SeriesEnergy], expected: list[SeriesEnergy]) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert (g.series.device_id, g.series.channel, g.method, g.events) == (
            e.series.device_id,
            e.series.channel,
            e.method,
            e.events,
        )
        for name in ("import_wh", "export_wh", "covered_s", "interpolated_wh"):
            assert getattr(g, name).tobytes() == getattr(e, name).tobytes(), name
        u, v = g.counter_minus_power_wh, e.counter_minus_power_wh
        assert (u is None) == (v is None)
        assert u is None or v is None or u.tobytes() == v.tobytes()


def test_the_raw_path_through_series_gives_the_energy_of_the_table_path(troubled: Lake) -> None:
    for (first_day, last_day), every in itertools.product(RANGES, ["hour", "day"]):
        _energy_of_both_paths(troubled, first_day, last_day, every)


def _energy_of_both_paths(troubled: Lake, first_day: float, last_day: float, every: str) -> None:
    start, end = T0 + int(first_day * DAY), T0 + int(last_day * DAY)
    edges = bucket_edges_ms(start, end, every, zone("Europe/Warsaw"))

    def table(a: int, b: int, device: str | None) -> pa.Table:
        found = read_bracketed(troubled, a, b, device_ids=None if device is None else [device])
        assert found is not None
        return found

    def series(a: int, b: int, device: str | None) -> list[Series]:
        found = read_series(troubled, a, b, device_ids=None if device is None else [device])
        assert found is not None
        return found

    arrow = EnergySources(rollups=lambda a, b, d: None, readings=table)
    direct = replace(arrow, series=series)
    events = set()
    for device, channel in [(None, None), ("e", 1), ("a", 0)]:
        expected, source = energy_over_edges(arrow, edges, device_id=device, channel=channel)
        got, direct_source = energy_over_edges(direct, edges, device_id=device, channel=channel)
        assert source == direct_source == "readings"
        _same_energy(got, expected)
        events |= {e.kind for r in expected for e in r.events}
    if first_day <= 8 and last_day >= 10:  # reset and unavailable counter in the range
        assert {"reset", "unavailable"} <= events


def test_stream_files_of_a_day_in_any_order_need_no_receive_times(lake: Lake) -> None:
    # Flushes of one day appended latest first, no copies: the runs of each file are put in
    # time order without reading the receive times, as the view orders them.
    day = T0 + 3 * DAY
    for hour in (18, 6, 12, 0):
        start = day + hour * 3_600_000
        flush = pa.concat_tables(
            [
                _rows(device, channel, _every(start, start + 6 * 3_600_000, 60_000), hour)
                for device, channel in (("g", 0), ("g", 1), ("h", 0))
            ]
        )
        tables.append(lake, READINGS_TABLE, flush)
    days = [tables.local_path(t.file.file_path) for t in tables.scan_files(lake, READINGS_TABLE)]

    def no_receive_times(columns: list[str]) -> pa.Table:
        raise AssertionError("the receive times were read")

    stored = _read_files(lake, days, None, list(SERIES_COLUMNS))
    rows = _sort_rows(stored, no_receive_times)
    assert rows.pieces is not None
    start, end = day + 3_600_000, day + 20 * 3_600_000
    expected = bracketed_readings(connect(lake), start, end)
    table = read_bracketed(lake, start, end)
    assert table is not None and table.to_pylist() == expected.to_pylist()
    got = read_series(lake, start, end)
    assert got is not None
    _same_series(got, split_series(table.select(list(SERIES_COLUMNS))))


def test_series_read_a_few_days_at_a_time_are_those_read_at_once(troubled: Lake) -> None:
    # One reading per group: the window is cut between every two of its days the range allows
    # (the brackets before the range in the first group, those after it in the last).
    for first_day, last_day in RANGES:
        start, end = T0 + int(first_day * DAY), T0 + int(last_day * DAY)
        table = read_bracketed(troubled, start, end, columns=SERIES_COLUMNS)
        assert table is not None
        for group_rows in (1, 20_000):
            got = read_series(troubled, start, end, group_rows=group_rows)
            assert got is not None, (first_day, last_day, group_rows)
            _same_series(got, split_series(table))
    assert _window_groups({d: 1 for d in range(10, 20)}, 12 * DAY + 5, 15 * DAY, 1) == [
        [10, 11, 12],
        [13],
        [14],
        [15, 16, 17, 18, 19],
    ]


def test_decimals_of_every_width_read_as_their_units() -> None:
    """Data files read back as decimal128; the writer's memory holds decimal64 (or 32)."""
    from decimal import Decimal

    from wattlake.query.raw import _chunk_ints

    values = [Decimal("1.25"), Decimal("-3.10"), Decimal("7.00")]
    for kind in (pa.decimal128(12, 2), pa.decimal64(9, 2), pa.decimal32(9, 2)):
        assert _chunk_ints(pa.array(values, kind).slice(1)).tolist() == [-310, 700]
