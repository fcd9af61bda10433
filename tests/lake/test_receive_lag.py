"""The receive time stored as a lag behind ts (``receive_lag_ms``): every reader gives
``received_at`` back exactly, a lake written before the lag existed keeps working, and the
tables write zstd at the level of their ``write.parquet.compression-level`` property."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.types import DecimalType

from wattlake.jobs.compact import compact
from wattlake.lake import tables
from wattlake.lake.catalog import forget_catalogs
from wattlake.lake.storage import Lake
from wattlake.query.engine import connect
from wattlake.schema import (
    DECIMALS,
    MEASUREMENT_COLUMNS,
    READINGS_TABLE,
    RECEIVE_LAG_COLUMN,
    TABLE_TS_TYPE,
    TABLES,
    TableDefinition,
    readings_to_table,
)

DAY1 = 1_767_225_600_000  # 2026-01-01T00:00:00Z [ms]
YEAR_MS = 365 * 86_400_000
MS = pa.timestamp("ms", tz="UTC")


def _readings(ts_ms: np.ndarray, received_ms: np.ndarray, device: str) -> pa.Table:
    n = len(ts_ms)
    return pa.table(
        {
            "ts": pa.array(ts_ms, MS),
            "received_at": pa.array(received_ms, MS),
            "device_id": pa.array([device] * n),
            "channel": pa.array(np.zeros(n, dtype=np.int16)),
            "power_w": pa.array(np.arange(n, dtype=np.float64) / 10),
            "source": pa.array(["generic"] * n),
        }
    )


def _received(lake: Lake, view: str = "raw_readings") -> dict[tuple[str, int], list[int]]:
    """Return the receive times [µs] of each (device, ts [µs]), as the view gives them."""
    rows = (
        connect(lake)
        .sql(f"SELECT device_id, epoch_us(ts), epoch_us(received_at) FROM {view} ORDER BY ALL")
        .fetchall()
    )
    out: dict[tuple[str, int], list[int]] = {}
    for device, ts, received in rows:
        out.setdefault((device, ts), []).append(received)
    return out


def _data_files(lake: Lake) -> list[pa.Table]:
    return [
        pq.read_table(tables.local_path(t.file.file_path), filesystem=lake.fs)
        for t in tables.scan_files(lake, READINGS_TABLE)
    ]


def test_received_at_round_trips_through_write_view_and_compaction(lake: Lake) -> None:
    rng = np.random.default_rng(7)
    ts = DAY1 + np.arange(300) * 10_000
    stream = _readings(ts, ts + rng.integers(80, 400, ts.size), "stream")
    ahead = _readings(ts, ts - rng.integers(1, 5_000, ts.size), "clock-ahead")  # negative lag
    old = _readings(ts, np.full(ts.size, DAY1 + YEAR_MS + 123), "import")  # a year-old import
    # A receive time from another writer that is not a whole ms after ts (stored form, µs).
    odd = tables.to_stored(READINGS_TABLE, _readings(ts[:5], ts[:5], "odd"))
    odd = odd.set_column(
        1, "received_at", pa.array(ts[:5] * 1000 + 1_234_567, pa.int64()).cast(TABLE_TS_TYPE)
    ).drop_columns([RECEIVE_LAG_COLUMN])
    for part in (stream, ahead, old):  # two appends each: compaction has work
        tables.append(lake, READINGS_TABLE, part.slice(0, 150))
        tables.append(lake, READINGS_TABLE, part.slice(150))
    tables.append(lake, READINGS_TABLE, odd)
    expected = {
        ("stream", t * 1000): [r * 1000]
        for t, r in zip(ts, stream["received_at"].cast(pa.int64()).to_numpy(), strict=True)
    }
    expected |= {
        ("clock-ahead", t * 1000): [r * 1000]
        for t, r in zip(ts, ahead["received_at"].cast(pa.int64()).to_numpy(), strict=True)
    }
    expected |= {("import", t * 1000): [(DAY1 + YEAR_MS + 123) * 1000] for t in ts}
    expected |= {("odd", t * 1000): [t * 1000 + 1_234_567] for t in ts[:5]}

    files = _data_files(lake)
    assert all(f[RECEIVE_LAG_COLUMN].null_count == 0 for f in files if f.num_rows > 5)
    assert _received(lake) == expected
    assert _received(lake, "readings") == expected
    back = tables.read_table(lake, READINGS_TABLE)  # pyiceberg's reader, as with delete files
    assert RECEIVE_LAG_COLUMN not in back.column_names
    got = {
        (d, t): [r]
        for d, t, r in zip(
            back["device_id"].to_pylist(),
            back["ts"].cast(pa.int64()).to_pylist(),
            back["received_at"].cast(pa.int64()).to_pylist(),
            strict=True,
        )
    }
    assert got == expected

    assert compact(lake)
    (compacted,) = _data_files(lake)
    # The new form: received_at only where the lag cannot say it (not a whole ms after ts).
    assert compacted["received_at"].null_count == compacted.num_rows - 5
    lags = dict(
        zip(
            compacted["device_id"].to_pylist(),
            compacted[RECEIVE_LAG_COLUMN].to_pylist(),
            strict=False,
        )
    )
    assert lags["odd"] is None and lags["clock-ahead"] < 0 and lags["import"] > YEAR_MS - 86_400_000
    assert _received(lake) == expected


# -- a lake written before the receive lag existed --------------------------------------------

# The previous version also stored active power with 12 digits (INT64 in Parquet).
OLD_DECIMALS = {**DECIMALS, "power_w": (12, 2)}
OLD_STORED = pa.schema(
    [
        pa.field("ts", TABLE_TS_TYPE, nullable=False),
        pa.field("received_at", TABLE_TS_TYPE, nullable=False),
        pa.field("device_id", pa.string(), nullable=False),
        pa.field("channel", pa.int32(), nullable=False),
        *(pa.field(name, pa.decimal128(*OLD_DECIMALS[name])) for name in MEASUREMENT_COLUMNS),
        pa.field("source", pa.string(), nullable=False),
    ]
)


@pytest.fixture
def old_lake(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lake]:
    """A lake whose readings table and first data file are in the previous stored form
    (received_at required, in µs; no receive_lag_ms; no compression-level property)."""
    new = TABLES[READINGS_TABLE]
    old = TableDefinition(
        READINGS_TABLE,
        OLD_STORED,
        "ts",
        new.sort_columns,
        tuple((c, e) for c, e in new.encodings if c != RECEIVE_LAG_COLUMN),
    )
    properties = {
        k: v for k, v in tables.TABLE_PROPERTIES.items() if k != tables.COMPRESSION_LEVEL_PROPERTY
    }
    with monkeypatch.context() as patch:
        patch.setitem(TABLES, READINGS_TABLE, old)
        patch.setattr(tables, "TABLE_PROPERTIES", properties)
        table = tables.open_table(lake, READINGS_TABLE)
        assert table.schema().find_field("received_at").required
        ts = np.array([DAY1 + 10_000, DAY1 + 20_000, DAY1 + 30_000])
        received = np.array([DAY1 + 10_500, DAY1 + 90_000, DAY1 + 30_100])
        stored = pa.table(
            {
                "ts": pa.array(ts * 1000, pa.int64()).cast(TABLE_TS_TYPE),
                "received_at": pa.array(received * 1000, pa.int64()).cast(TABLE_TS_TYPE),
                "device_id": ["m1"] * 3,
                "channel": pa.array([0, 0, 0], pa.int32()),
                **{
                    c: pa.array([None, None, None], OLD_STORED.field(c).type)
                    for c in MEASUREMENT_COLUMNS
                },
                "source": ["old"] * 3,
            },
            schema=OLD_STORED,
        )
        files = tables.write_data_files(table, READINGS_TABLE, stored)
        tables.commit(table, files)
    forget_catalogs()
    yield lake


def test_a_lake_of_the_previous_form_reads_dedups_and_compacts_into_the_new_form(
    old_lake: Lake,
) -> None:
    lake = old_lake
    (old_file,) = _data_files(lake)
    assert RECEIVE_LAG_COLUMN not in old_file.column_names
    # Read before any write of the new version: the views fill the lag column with nulls.
    assert _received(lake, "readings") == {
        ("m1", (DAY1 + 10_000) * 1000): [(DAY1 + 10_500) * 1000],
        ("m1", (DAY1 + 20_000) * 1000): [(DAY1 + 90_000) * 1000],
        ("m1", (DAY1 + 30_000) * 1000): [(DAY1 + 30_100) * 1000],
    }
    table = tables.open_table(lake, READINGS_TABLE)  # evolved by the new version
    assert not table.schema().find_field("received_at").required
    assert table.schema().find_field(RECEIVE_LAG_COLUMN).field_id == len(OLD_STORED) + 1
    assert table.properties[tables.COMPRESSION_LEVEL_PROPERTY] == "3"
    # New copies of two old readings: one received earlier than the old copy, one later.
    tables.append(
        lake,
        READINGS_TABLE,
        readings_to_table(
            [
                {
                    "ts": DAY1 + 20_000,
                    "received_at": DAY1 + 20_200,
                    "device_id": "m1",
                    "channel": 0,
                    "power_w": 2.0,
                    "source": "new",
                },
                {
                    "ts": DAY1 + 30_000,
                    "received_at": DAY1 + 40_000,
                    "device_id": "m1",
                    "channel": 0,
                    "power_w": 3.0,
                    "source": "new",
                },
                {
                    "ts": DAY1 + 40_000,
                    "received_at": DAY1 + 40_090,
                    "device_id": "m1",
                    "channel": 0,
                    "power_w": 4.0,
                    "source": "new",
                },
            ]
        ),
    )
    expected = [
        (DAY1 + 10_000, DAY1 + 10_500, "old"),
        (DAY1 + 20_000, DAY1 + 20_200, "new"),  # the new copy came first
        (DAY1 + 30_000, DAY1 + 30_100, "old"),
        (DAY1 + 40_000, DAY1 + 40_090, "new"),
    ]
    query = "SELECT epoch_ms(ts), epoch_ms(received_at), source FROM readings ORDER BY ts"
    assert connect(lake).sql(query).fetchall() == expected
    raw = "SELECT count(*), count(received_at) FROM raw_readings"
    assert connect(lake).sql(raw).fetchall() == [(6, 6)]

    (result,) = compact(lake)
    assert (result.files_read, result.rows_read, result.rows_written) == (2, 6, 4)
    (compacted,) = _data_files(lake)
    assert compacted["received_at"].null_count == 4
    assert compacted[RECEIVE_LAG_COLUMN].to_pylist() == [500, 200, 100, 90]
    assert compacted["source"].to_pylist() == ["old", "new", "old", "new"]
    assert connect(lake).sql(query).fetchall() == expected
    # The table keeps its 12-digit power (Iceberg cannot narrow a column): new files follow it.
    assert table.schema().find_field("power_w").field_type == DecimalType(12, 2)
    assert compacted.schema.field("power_w").type == pa.decimal128(12, 2)
    power = "SELECT power_w FROM readings ORDER BY ts"
    assert connect(lake).sql(power).fetchall() == [(None,), (2.0,), (None,), (4.0,)]


def test_a_streams_lags_take_a_dictionary_and_an_imports_keep_byte_stream_split(
    lake: Lake,
) -> None:
    ts = DAY1 + np.arange(8_000) * 10_000  # one UTC day: one file per append
    stream_received = ts + np.random.default_rng(5).integers(80, 400, ts.size)
    import_received = np.full(ts.size, ts[-1] + 5_000)  # one receive time for the whole file
    tables.append(lake, READINGS_TABLE, _readings(ts, stream_received, "s"))
    tables.append(lake, READINGS_TABLE, _readings(ts, import_received, "i"))
    table = tables.open_table(lake, READINGS_TABLE)
    assert table.schema().find_field("power_w").field_type == DecimalType(9, 2)
    used = {}
    for task in tables.scan_files(lake, READINGS_TABLE):
        path = tables.local_path(task.file.file_path)
        device = pq.read_table(path, filesystem=lake.fs, columns=["device_id"])["device_id"][0]
        group = pq.read_metadata(path, filesystem=lake.fs).row_group(0)
        names = [group.column(i).path_in_schema for i in range(group.num_columns)]
        used[device.as_py()] = set(group.column(names.index(RECEIVE_LAG_COLUMN)).encodings)
    assert "RLE_DICTIONARY" in used["s"] and "BYTE_STREAM_SPLIT" not in used["s"]
    assert "BYTE_STREAM_SPLIT" in used["i"] and "RLE_DICTIONARY" not in used["i"]
    # Either way the receive times come back exactly.
    assert _received(lake) == {
        **{("i", int(t) * 1000): [int(r) * 1000] for t, r in zip(ts, import_received, strict=True)},
        **{("s", int(t) * 1000): [int(r) * 1000] for t, r in zip(ts, stream_received, strict=True)},
    }


def test_data_files_are_written_at_the_tables_zstd_level(lake: Lake) -> None:
    ts = DAY1 + np.arange(20_000) * 10_000 // 4
    rng = np.random.default_rng(3)
    readings = _readings(ts, ts + rng.integers(80, 400, ts.size), "m1")
    readings = readings.set_column(
        4, "power_w", pa.array(np.round(rng.normal(500, 200, ts.size), 1))
    )
    (written,) = tables.append(lake, READINGS_TABLE, readings)
    table = tables.open_table(lake, READINGS_TABLE)
    assert table.properties[tables.COMPRESSION_LEVEL_PROPERTY] == "3"
    metadata = pq.read_metadata(tables.local_path(written.file_path), filesystem=lake.fs)
    on_disk = [metadata.row_group(0).column(i) for i in range(metadata.num_columns)]
    assert {c.compression for c in on_disk} == {"ZSTD"}

    definition = TABLES[READINGS_TABLE]
    stored = tables.to_stored(READINGS_TABLE, readings)
    (day_part,) = [p for _, p in tables.sorted_by_day(READINGS_TABLE, stored)]

    def sizes(level: int | None) -> list[int]:
        _, meta = tables.encode_parquet(definition, table.schema(), day_part, level)
        group = meta.row_group(0)
        return [group.column(i).total_compressed_size for i in range(group.num_columns)]

    assert [c.total_compressed_size for c in on_disk] == sizes(3)
    assert sizes(3) != sizes(1)  # the level shows in the bytes (Parquet does not record it)
