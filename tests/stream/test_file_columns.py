"""The column path of ``wattlake import`` stores exactly what the row path (one generic message
per row) stores, hands over to the row path at the first block that fails a check, and writes
big files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from wattlake.config import Settings
from wattlake.gateway.files import FileFormat, FileRows
from wattlake.lake import tables
from wattlake.lake.storage import Lake
from wattlake.schema import DEAD_LETTERS_TABLE, READINGS_TABLE
from wattlake.stream import file_columns, file_import
from wattlake.stream.file_columns import ColumnImport

T0_S = 1_767_225_600  # 2026-01-01T00:00:00Z [s]
COMPARED = [
    "ts",
    "device_id",
    "channel",
    "power_w",
    "apparent_power_va",
    "reactive_power_var",
    "voltage_v",
    "current_a",
    "pf",
    "freq_hz",
    "energy_wh",
    "returned_energy_wh",
    "source",
]


def _import(
    tmp_path: Path, name: str, rows: FileRows, *, columns: bool, mp: pytest.MonkeyPatch
) -> tuple[file_import.ImportSummary, Lake]:
    settings = Settings.load(overrides={"data_dir": str(tmp_path / name)}, environ={})
    with mp.context() as m:
        if not columns:
            m.setattr(file_import, "import_columns", lambda *a, **k: ColumnImport(0, False))
        summary = file_import.import_file(settings, rows)
    return summary, Lake.from_settings(settings)


def _stored(lake: Lake) -> list[dict[str, object]]:
    table = tables.read_table(lake, READINGS_TABLE).select(COMPARED)
    order = sorted(
        range(table.num_rows),
        key=lambda i: (
            str(table["device_id"][i]),
            int(table["channel"][i].as_py()),
            table["ts"][i].value,
            repr(table["power_w"][i]),
        ),
    )
    return table.take(pa.array(order, pa.int64())).to_pylist()


def _fleet_like(n: int) -> pa.Table:
    rng = np.random.default_rng(7)
    ts = T0_S * 1000 + np.arange(n, dtype=np.int64) * 10_000 + rng.integers(0, 3, n) * 10
    power = np.round(rng.normal(300, 500, n), 1)
    power[::17] = np.nan  # absent power
    return pa.table(
        {
            "ts": pa.array(ts, pa.timestamp("ms", tz="UTC")),
            "received_at": pa.array(ts + 200, pa.timestamp("ms", tz="UTC")),
            "device_id": pa.array([f"m-{i % 3}" for i in range(n)]),
            "channel": pa.array((np.arange(n) % 2).astype(np.int16)),
            "power_w": pa.array(power, from_pandas=True),
            "voltage_v": pa.array(np.round(rng.normal(230, 2, n), 1)),
            "pf": pa.array(np.round(rng.uniform(-1, 1, n), 2)),
            "energy_wh": pa.array(np.round(1000 + np.arange(n) * 0.37, 2)),
            "source": pa.array(["shelly-gen2"] * n),
        }
    )


def test_parquet_column_path_stores_what_the_row_path_stores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "fleet.parquet"
    pq.write_table(_fleet_like(3000), path)
    rows = FileRows(path, FileFormat.parquet)
    fast, fast_lake = _import(tmp_path, "fast", rows, columns=True, mp=monkeypatch)
    slow, slow_lake = _import(tmp_path, "slow", rows, columns=False, mp=monkeypatch)
    assert (fast.rows_read, fast.stored, fast.rejected) == (3000, 3000, 0)
    assert fast.line().replace("fast", "slow") == slow.line()
    assert _stored(fast_lake) == _stored(slow_lake)


@pytest.mark.parametrize(
    "times",
    [
        ["2026-01-01T00:00:00.123Z", "2026-01-01T00:00:10.5Z", "2026-01-01T00:00:20Z"],
        ["2026-01-01T01:00:00+01:00", "2026-01-01T03:00:10.25+02:00", "2026-01-01T00:00:20Z"],
        ["2026-01-01 00:00:00", "2026-01-01T00:00:10.001", "2026-01-01T00:00:20"],
        [str(T0_S), f"{T0_S + 10.0005}", f"{T0_S + 20.25}"],
    ],
)
def test_csv_column_path_stores_what_the_row_path_stores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, times: list[str]
) -> None:
    path = tmp_path / "history.csv"
    path.write_text(
        "ts,device_id,channel,power_w,energy_wh,received_at\n"
        f"{times[0]},meter-1,0,100.5,1000,x\n"
        f"{times[1]},meter-1,1,-0.0,,x\n"
        f"{times[2]},007,2.0,1e3,1001.25,x\n"
    )
    rows = FileRows(path, FileFormat.csv)
    fast, fast_lake = _import(tmp_path, "fast", rows, columns=True, mp=monkeypatch)
    slow, slow_lake = _import(tmp_path, "slow", rows, columns=False, mp=monkeypatch)
    assert (fast.rows_read, fast.stored) == (slow.rows_read, slow.stored) == (3, 3)
    assert _stored(fast_lake) == _stored(slow_lake)


def test_a_bad_block_hands_over_to_the_row_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(file_columns, "CSV_BLOCK_BYTES", 4096)
    lines = [f"{T0_S + i},meter-1,0,{i}.5" for i in range(2000)]
    lines[1500] = f"{T0_S + 1500},meter-1,0,lots"  # text in a number column
    lines[1700] = ",meter-1,0,1"  # no time
    path = tmp_path / "history.csv"
    path.write_text("ts,device_id,channel,power_w\n" + "\n".join(lines) + "\n")
    rows = FileRows(path, FileFormat.csv)
    taken = file_columns.import_columns(
        Lake.from_settings(
            Settings.load(overrides={"data_dir": str(tmp_path / "probe")}, environ={})
        ),
        rows,
        ("ts", "device_id", "channel", "power_w"),
        (T0_S + 10_000) * 1000,
    )
    assert 0 < taken.rows < 1500 and not taken.complete
    fast, fast_lake = _import(tmp_path, "fast", rows, columns=True, mp=monkeypatch)
    slow, slow_lake = _import(tmp_path, "slow", rows, columns=False, mp=monkeypatch)
    assert (fast.rows_read, fast.stored, fast.rejected) == (2000, 1998, 2)
    assert fast.rejected_by_reason == slow.rejected_by_reason
    assert fast.first_problems == slow.first_problems
    assert _stored(fast_lake) == _stored(slow_lake)
    dead = tables.read_table(fast_lake, DEAD_LETTERS_TABLE)
    assert sorted(dead["error_code"].to_pylist()) == sorted(slow.rejected_by_reason)


def test_import_writes_one_file_per_day(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = _fleet_like(30_000)  # 30,000 readings 10 s apart: 3.5 days
    path = tmp_path / "fleet.csv"
    pa_csv.write_csv(table.drop_columns(["received_at", "source"]), path)
    summary, lake = _import(
        tmp_path, "lake", FileRows(path, FileFormat.csv), columns=True, mp=monkeypatch
    )
    assert summary.stored == 30_000
    plan = tables.scan_files(lake, READINGS_TABLE)
    assert len(plan) == 4
    assert sum(t.file.record_count for t in plan) == 30_000


@pytest.mark.parametrize("cell", ["NA", "null", "nan", "inf", " 5", "1,5"])
def test_cells_the_row_path_refuses_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cell: str
) -> None:
    path = tmp_path / "history.csv"
    path.write_text(f'ts,device_id,channel,power_w\n{T0_S},m,0,1.5\n{T0_S + 10},m,0,"{cell}"\n')
    rows = FileRows(path, FileFormat.csv)
    fast, fast_lake = _import(tmp_path, "fast", rows, columns=True, mp=monkeypatch)
    slow, slow_lake = _import(tmp_path, "slow", rows, columns=False, mp=monkeypatch)
    assert (fast.stored, fast.rejected_by_reason) == (slow.stored, slow.rejected_by_reason)
    assert _stored(fast_lake) == _stored(slow_lake)


@pytest.mark.parametrize("file_format", [FileFormat.parquet, FileFormat.csv])
def test_a_value_too_large_for_the_lake_is_one_dead_letter_and_the_rest_is_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, file_format: FileFormat
) -> None:
    n = 3000
    power = np.arange(n, dtype=np.float64) + 0.5
    power[2100] = 1e20  # active power keeps 7 digits before the point
    energy = np.round(1000 + np.arange(n) * 0.37, 2)
    energy[2500] = 1e300
    table = pa.table(
        {
            "ts": pa.array(T0_S + np.arange(n, dtype=np.int64) * 10),
            "device_id": pa.array(["meter-1"] * n),
            "power_w": pa.array(power),
            "energy_wh": pa.array(energy),
        }
    )
    path = tmp_path / f"history.{file_format.value}"
    if file_format is FileFormat.parquet:
        pq.write_table(table, path, row_group_size=500)
        monkeypatch.setattr(file_columns, "BLOCK_ROWS", 500)
    else:
        pa_csv.write_csv(table, path)
        monkeypatch.setattr(file_columns, "CSV_BLOCK_BYTES", 4096)
    rows = FileRows(path, file_format)
    fast, fast_lake = _import(tmp_path, "fast", rows, columns=True, mp=monkeypatch)
    slow, slow_lake = _import(tmp_path, "slow", rows, columns=False, mp=monkeypatch)
    assert (fast.rows_read, fast.stored, fast.rejected) == (n, n - 2, 2)
    assert fast.rejected_by_reason == slow.rejected_by_reason == {"out-of-range": 2}
    assert _stored(fast_lake) == _stored(slow_lake)
    dead = tables.read_table(fast_lake, DEAD_LETTERS_TABLE).to_pylist()
    assert sorted(d["error_message"].split()[0] for d in dead) == ["energy_wh", "power_w"]
