"""How the readings table's data files are encoded (issue 27): the noisy bench fleet's readings
round-trip exactly through the real write path and back through pyarrow and DuckDB, and the
files carry the chosen Parquet encodings and zstd levels (by default every file at the table's
level 3; with the large-file property set to 17, a large file at 17 and at most 8 bytes per
reading, a stream's small file still at 3)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from pyiceberg.schema import Schema

from bench.fleet import FleetSpec, day_tables
from wattlake.lake import tables
from wattlake.lake.storage import Lake
from wattlake.query.engine import connect
from wattlake.schema import MEASUREMENT_COLUMNS, READINGS_TABLE, TABLES

# 4 meters x 2 channels x 8,640 readings: one file above LARGE_FILE_ROWS.
SPEC = FleetSpec(devices=4, days=1, noise="noisy")
KEY = ["device_id", "channel", "ts"]


@pytest.fixture(scope="module")
def noisy_day() -> pa.Table:
    (day,) = day_tables(SPEC)
    assert day.num_rows >= tables.LARGE_FILE_ROWS
    return day.sort_by([(k, "ascending") for k in KEY])


@pytest.fixture
def local_lake(tmp_path: Path) -> Lake:
    return Lake.open(str(tmp_path / "lake"))


def _measurements(table: pa.Table) -> dict[str, list[float | None]]:
    return {c: table[c].cast(pa.float64()).to_pylist() for c in MEASUREMENT_COLUMNS}


def _sizes(schema: Schema, day_part: pa.Table, level: int) -> list[int]:
    """Return the compressed bytes of each column of ``day_part`` written at zstd ``level``."""
    _, meta = tables.encode_parquet(TABLES[READINGS_TABLE], schema, day_part, level)
    group = meta.row_group(0)
    return [group.column(i).total_compressed_size for i in range(group.num_columns)]


def test_noisy_readings_round_trip_exactly_through_pyarrow_and_duckdb(
    local_lake: Lake, noisy_day: pa.Table
) -> None:
    (written,) = tables.append(local_lake, READINGS_TABLE, noisy_day)
    assert written.record_count == noisy_day.num_rows
    expected = _measurements(noisy_day)
    # Every value is a multiple of its reported resolution, stored as a decimal at the
    # column's resolution: the double read back is the same double.
    on_disk = pq.read_table(tables.local_path(written.file_path), filesystem=local_lake.fs)
    back = tables.from_stored(on_disk).sort_by([(k, "ascending") for k in KEY])
    assert (
        back["ts"].cast(pa.int64()).to_pylist()
        == pc.multiply(noisy_day["ts"].cast(pa.int64()), 1000).to_pylist()
    )
    assert _measurements(back) == expected
    columns = ", ".join(MEASUREMENT_COLUMNS)
    duck = (
        connect(local_lake)
        .sql(f"SELECT {columns} FROM raw_readings ORDER BY device_id, channel, ts")
        .to_arrow_table()
    )
    assert duck.num_rows == noisy_day.num_rows
    assert _measurements(duck) == expected


@pytest.mark.parametrize("large_file_level", [None, "17"])
def test_files_carry_the_chosen_encodings_and_zstd_levels(
    tmp_path: Path, noisy_day: pa.Table, large_file_level: str | None
) -> None:
    definition = TABLES[READINGS_TABLE]
    chosen = dict(definition.encodings)
    small = noisy_day.slice(0, 2_000)  # a stream flush: below LARGE_FILE_ROWS
    large = 3 if large_file_level is None else int(large_file_level)
    for i, (part, level) in enumerate(((noisy_day, large), (small, 3))):
        local_lake = Lake.open(str(tmp_path / f"lake{i}"))
        table = tables.open_table(local_lake, READINGS_TABLE)
        assert tables.LARGE_FILE_LEVEL_PROPERTY not in table.properties  # opt-in
        if large_file_level is not None:
            with table.transaction() as tx:
                tx.set_properties({tables.LARGE_FILE_LEVEL_PROPERTY: large_file_level})
        (written,) = tables.append(local_lake, READINGS_TABLE, part)
        metadata = pq.read_metadata(tables.local_path(written.file_path), filesystem=local_lake.fs)
        group = metadata.row_group(0)
        on_disk = {c.path_in_schema: c for c in map(group.column, range(group.num_columns))}
        assert {c.compression for c in on_disk.values()} == {"ZSTD"}
        for name, column in on_disk.items():
            used = set(column.encodings) - {"RLE"}
            if name in chosen and name != "receive_lag_ms":  # the lag: a dictionary when few
                assert used == {chosen[name]}, name
            elif name not in chosen:
                assert used & {"RLE_DICTIONARY", "PLAIN_DICTIONARY"}, name
        # Parquet does not record the zstd level; it shows in the bytes.
        stored = tables.to_stored(READINGS_TABLE, part)
        ((_, day_part),) = tables.sorted_by_day(READINGS_TABLE, stored)

        schema = table.schema()
        sizes = [c.total_compressed_size for c in on_disk.values()]
        assert sizes == _sizes(schema, day_part, level)
        assert _sizes(schema, day_part, 17) != _sizes(schema, day_part, 3)
        if level == 17 and part is noisy_day:
            # The target on the noisy fleet: at most 8 bytes per reading, file total.
            assert written.file_size_in_bytes / part.num_rows <= 8.0
