"""The raw energy path's reader gives exactly the readings the ``readings`` view and its
bracketing SQL give: duplicates across files (earliest received wins), unsorted and
overlapping files, a series silent around the range, brackets many days away, devices."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from wattlake.lake import tables
from wattlake.lake.storage import Lake
from wattlake.query.engine import connect
from wattlake.query.raw import read_bracketed
from wattlake.query.readings import bracketed_readings
from wattlake.schema import READING_SCHEMA, READINGS_TABLE, SERIES_COLUMNS

DAY = 86_400_000
T0 = 1_767_225_600_000  # 2026-01-01 UTC


def _rows(
    device: str,
    channel: int,
    ts: np.ndarray,
    seed: int,
    *,
    counters: bool = True,
    power: bool = True,
    received_lag_ms: int = 100,
) -> pa.Table:
    rng = np.random.default_rng(seed)
    n = ts.size
    nan = np.full(n, np.nan)
    columns = {
        "ts": pa.array(ts, pa.timestamp("ms", tz="UTC")),
        "received_at": pa.array(ts + received_lag_ms, pa.timestamp("ms", tz="UTC")),
        "device_id": pa.array([device] * n),
        "channel": pa.array(np.full(n, channel, dtype=np.int16)),
        "power_w": pa.array(np.round(rng.normal(500, 200, n), 1) if power else nan),
        "voltage_v": pa.array(np.round(rng.normal(230, 1, n), 1)),
        "energy_wh": pa.array(np.round(1000 + np.arange(n) * 1.5, 2) if counters else nan),
        "returned_energy_wh": pa.array(np.round(np.arange(n) * 0.25, 2) if counters else nan),
        "source": pa.array(["test"] * n),
    }
    return pa.Table.from_arrays(
        [columns[f.name] if f.name in columns else pa.nulls(n, f.type) for f in READING_SCHEMA],
        schema=READING_SCHEMA,
    )


def _every(start_ms: int, end_ms: int, step_ms: int) -> np.ndarray:
    return np.arange(start_ms, end_ms, step_ms, dtype=np.int64)


@pytest.fixture
def filled(lake: Lake) -> Lake:
    # Device a: two channels over 20 days, one append per 5 days (files per day each).
    for part in range(4):
        days = (T0 + part * 5 * DAY, T0 + (part + 1) * 5 * DAY)
        tables.append(
            lake,
            READINGS_TABLE,
            pa.concat_tables(
                [
                    _rows("a", 0, _every(*days, 600_000), part),
                    _rows("a", 1, _every(*days, 900_000), 10 + part),
                ]
            ),
        )
    # Resent copies of part of day 7 (later received, other values) and an earlier received
    # copy of other readings: the earliest received copy wins.
    late = _rows(
        "a", 0, _every(T0 + 7 * DAY, T0 + 7 * DAY + 3_600_000, 600_000), 99, received_lag_ms=5000
    )
    early = _rows(
        "a", 1, _every(T0 + 8 * DAY, T0 + 8 * DAY + 7_200_000, 900_000), 98, received_lag_ms=10
    )
    tables.append(lake, READINGS_TABLE, pa.concat_tables([late, early]))
    # An unsorted file inside the range (rows in reverse order).
    extra = _rows("c", 0, _every(T0 + 9 * DAY + 1, T0 + 9 * DAY + 3_600_000, 300_000), 5)
    tables.append(lake, READINGS_TABLE, extra.take(pa.array(np.arange(extra.num_rows)[::-1])))
    # Device b: readings on days 0-1 and 18-19 only (silent around a range in the middle);
    # its counters stop on day 1, power only afterwards.
    tables.append(lake, READINGS_TABLE, _rows("b", 0, _every(T0, T0 + 2 * DAY, 3_600_000), 7))
    tables.append(
        lake,
        READINGS_TABLE,
        _rows("b", 0, _every(T0 + 18 * DAY, T0 + 20 * DAY, 3_600_000), 8, counters=False),
    )
    # Device d: counters only, far before the range; power only in it.
    tables.append(
        lake, READINGS_TABLE, _rows("d", 2, _every(T0, T0 + DAY, 3_600_000), 9, power=False)
    )
    tables.append(
        lake,
        READINGS_TABLE,
        _rows("d", 2, _every(T0 + 9 * DAY, T0 + 10 * DAY, 3_600_000), 3, counters=False),
    )
    return lake


@pytest.mark.parametrize(
    ("first_day", "last_day", "devices"),
    [
        (8, 10, None),
        (8.5, 9.25, None),
        (0, 20, None),
        (-3, 2, None),
        (19, 25, None),
        (30, 31, None),
        (8, 10, ["b"]),
        (8, 10, ["a", "d"]),
        (8, 10, []),
    ],
)
def test_the_file_reader_gives_what_the_view_gives(
    filled: Lake, first_day: float, last_day: float, devices: list[str] | None
) -> None:
    start, end = T0 + int(first_day * DAY), T0 + int(last_day * DAY)
    expected = bracketed_readings(connect(filled), start, end, device_ids=devices)
    got = read_bracketed(filled, start, end, device_ids=devices)
    assert got is not None
    assert got.schema == expected.schema
    assert got.to_pylist() == expected.to_pylist()
    narrow = read_bracketed(filled, start, end, device_ids=devices, columns=SERIES_COLUMNS)
    assert narrow is not None
    assert narrow.column_names == list(SERIES_COLUMNS)
    assert narrow.to_pylist() == expected.select(list(SERIES_COLUMNS)).to_pylist()
