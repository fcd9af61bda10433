"""The Iceberg table layer: exact decimals, day partitions, commits with properties."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from wattlake.errors import BadInputError
from wattlake.lake import tables
from wattlake.lake.storage import Lake
from wattlake.schema import DECIMALS, MEASUREMENT_COLUMNS, READINGS_TABLE, readings_to_table

DAY_MS = 86_400_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def _values_at_resolution(column: str, n: int) -> list[float]:
    """Return ``n`` values of ``column`` that are exact at its resolution, edges included."""
    precision, scale = DECIMALS[column]
    rng = np.random.default_rng(len(column))
    # The largest magnitude inside the decimal that float64 (15 significant digits) holds.
    top = min(10 ** (precision - 1), 10**15) - 1
    units = rng.integers(-top, top, n)
    units[:4] = [0, 1, -1, top]
    return [float(f"{u}e-{scale}") for u in units]


def test_every_measured_field_round_trips_exactly_at_its_resolution(lake: Lake) -> None:
    n = 1000
    rows = [
        {
            "ts": T0 + i * 10_000,
            "received_at": T0 + i * 10_000 + 7,
            "device_id": "m1",
            "channel": i % 3,
            "source": "generic",
        }
        for i in range(n)
    ]
    expected = {c: _values_at_resolution(c, n) for c in MEASUREMENT_COLUMNS}
    for column, values in expected.items():
        for row, value in zip(rows, values, strict=True):
            row[column] = value
    rows[5]["power_w"] = None  # nulls stay null
    expected["power_w"][5] = None  # type: ignore[call-overload]
    tables.append(lake, READINGS_TABLE, readings_to_table(rows))
    back = tables.read_table(lake, READINGS_TABLE).sort_by(
        [("channel", "ascending"), ("ts", "ascending")]
    )
    order = sorted(range(n), key=lambda i: (i % 3, i))
    for column in MEASUREMENT_COLUMNS:
        assert back[column].type == pa.float64()
        assert back[column].to_pylist() == [expected[column][i] for i in order], column


def test_values_are_rounded_to_their_resolution_and_out_of_range_refused(tmp_path) -> None:
    lake = Lake.open(str(tmp_path / "lake"))
    row = {
        "ts": T0,
        "received_at": T0,
        "device_id": "m1",
        "channel": 0,
        "source": "generic",
        "power_w": 12.3456,
        "pf": 0.98765,
        "energy_wh": 1.00049,
    }
    tables.append(lake, READINGS_TABLE, readings_to_table([row]))
    back = tables.read_table(lake, READINGS_TABLE).to_pylist()[0]
    assert (back["power_w"], back["pf"], back["energy_wh"]) == (12.35, 0.988, 1.0)
    with pytest.raises(BadInputError):
        tables.append(lake, READINGS_TABLE, readings_to_table([{**row, "power_w": 1e13}]))


def test_one_file_per_day_sorted_and_the_summary_property_kept(tmp_path) -> None:
    lake = Lake.open(str(tmp_path / "lake"))
    rows = [
        {
            "ts": T0 + (i % 2) * DAY_MS + (1000 - i) * 1000,
            "received_at": T0,
            "channel": 0,
            "device_id": f"d{i % 5}",
            "source": "generic",
            "power_w": float(i),
        }
        for i in range(1000)
    ]
    files = tables.append(lake, READINGS_TABLE, readings_to_table(rows), {"wattlake.wal.x": "7"})
    assert len(files) == 2
    table = tables.open_table(lake, READINGS_TABLE)
    assert tables.last_property(table, "wattlake.wal.x") == "7"
    tables.append(lake, READINGS_TABLE, readings_to_table(rows[:1]))
    assert tables.last_property(tables.open_table(lake, READINGS_TABLE), "wattlake.wal.x") == "7"
    for task in tables.scan_files(lake, READINGS_TABLE):
        import pyarrow.parquet as pq

        data = pq.read_table(tables.local_path(task.file.file_path), filesystem=lake.fs)
        keys = list(zip(data["device_id"].to_pylist(), data["ts"].to_pylist(), strict=True))
        assert keys == sorted(keys)
