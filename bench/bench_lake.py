"""Lake storage on the benchmark fleet: bytes per reading per column of table ``readings``,
beside each column's empirical entropy (so the distance to the floor is visible).

Run: ``.venv/bin/python bench/bench_lake.py --devices 10 --days 1``

The entropy column is the order-0 entropy of the first differences of the stored integer
values within each (device, channel) series (a floor for a coder that sees one column at a
time; columns that follow others, like apparent power, can go lower jointly).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fleet

from wattlake.lake import tables
from wattlake.schema import READINGS_TABLE, TABLES


def entropy_bytes(values: np.ndarray, series: np.ndarray) -> float:
    """Return the order-0 entropy of within-series first differences [bytes per value]."""
    diffs = np.diff(values)
    diffs = diffs[series[1:] == series[:-1]]
    _, counts = np.unique(diffs, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum() / 8)


def column_ints(column: pa.ChunkedArray) -> np.ndarray:
    array = column.combine_chunks()
    if pa.types.is_decimal(array.type):
        words = np.frombuffer(array.buffers()[1], dtype=np.int64).reshape(-1, 2)
        return words[array.offset : array.offset + len(array), 0]
    if pa.types.is_timestamp(array.type):
        return array.cast(pa.int64()).to_numpy()
    if pa.types.is_string(array.type):
        return array.dictionary_encode().indices.to_numpy()
    return array.to_numpy(zero_copy_only=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--days", type=int, default=1)
    args = parser.parse_args()
    spec = fleet.FleetSpec(devices=args.devices, days=args.days)
    meters = fleet.make_meters(spec)
    definition = TABLES[READINGS_TABLE]
    schema = tables.iceberg_schema(definition)
    total_bytes, total_rows = 0, 0
    per_column: dict[str, float] = {}
    entropy: dict[str, float] = {}
    for day in range(spec.days):
        stored = tables.to_stored(READINGS_TABLE, fleet.day_table(spec, meters, day))
        for _, part in tables.sorted_by_day(READINGS_TABLE, stored):
            data, metadata = tables.encode_parquet(definition, schema, part)
            total_bytes += len(data)
            total_rows += part.num_rows
            for g in range(metadata.num_row_groups):
                group = metadata.row_group(g)
                for i in range(group.num_columns):
                    c = group.column(i)
                    per_column[c.path_in_schema] = (
                        per_column.get(c.path_in_schema, 0) + c.total_compressed_size
                    )
            series = column_ints(part["device_id"]) * 16 + column_ints(part["channel"])
            for name in part.column_names:
                entropy[name] = (
                    entropy.get(name, 0.0)
                    + entropy_bytes(column_ints(part[name]), series) * part.num_rows
                )
    print(f"fleet: {args.devices} devices x {args.days} day(s), {total_rows} readings")
    print(f"{'column':20s} {'bytes/reading':>14s} {'entropy':>8s}  encoding")
    encodings = dict(definition.encodings)
    for name in definition.schema.names:
        print(
            f"{name:20s} {per_column[name] / total_rows:14.3f} {entropy[name] / total_rows:8.3f}"
            f"  {encodings.get(name, 'dictionary')}"
        )
    print(f"{'file total':20s} {total_bytes / total_rows:14.3f} (target <= 8)")


if __name__ == "__main__":
    main()
