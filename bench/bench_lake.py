"""The lake's speed and storage on the benchmark fleet, in one run, beside the figures before
the Iceberg tables (the Hive-style layout, as issue 13 measured them).

Run: ``.venv/bin/python bench/bench_lake.py --devices 10 --days 7``

Steps, each on the same generated fleet (bench/fleet.py, fixed seed; ``--fleet noisy``, the
default, measures every quantity with its own noise as real meters do, ``--fleet quiet`` is the
fleet the figures before issue 27 were measured on; ``--storage-only`` runs only the
compaction lake and its storage table):

* import: the fleet as one Parquet file and as one CSV file (``ts`` ISO 8601 with ``Z``) through
  ``wattlake.stream.file_import.import_file`` (what ``wattlake import`` calls) into fresh lakes;
* compaction: a lake filled the way a running stream fills it (``--slices`` appends per day),
  then ``wattlake.jobs.compact.compact`` (what ``jobs run compact`` calls);
* storage: bytes per reading per column of the compacted data files, beside each column's
  empirical entropy (order-0 entropy of the first differences of the stored integers within
  each device channel, and of the values themselves: a floor for a coder that sees one column
  at a time; columns that follow others, like apparent power, can go lower jointly); the
  receive lag also as the Parquet import stores it (one receive time for the whole file);
* commit overhead: ``--flushes`` small appends as the stream writer makes them (one minute of
  the fleet each): time to write the data file vs. time to commit it;
* raw energy: daily energy of every device over the fleet's days from the raw readings, through
  ``wattlake.query.energy.energy_over_edges`` with rollups reported stale (what ``energy``
  does when rollups cannot answer).

Times are wall clock and process CPU (all threads), with the system part of the CPU (on the
shared VM this runs on, the kernel zeroing memory the process takes fresh: from 0.1 to over
1 s of a step, varying from run to run); on a shared machine the CPU figure is the steadier
one, and the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fleet
from timing import as_cli_process

from wattlake.config import Settings
from wattlake.energy.buckets import bucket_edges_ms, zone
from wattlake.gateway.files import FileFormat, FileRows
from wattlake.jobs.compact import compact
from wattlake.lake import tables
from wattlake.lake.storage import Lake
from wattlake.query import energy as answers
from wattlake.schema import READINGS_TABLE, TABLES
from wattlake.stream.file_import import import_file

T = TypeVar("T")
# Issue 13's figures for the Hive-style lake (10-device month at 10 s sampling, all fields).
BEFORE = {
    "import_parquet": 33_000.0,  # rows/s (the issue gives one import figure)
    "import_csv": 33_000.0,
    "compaction": 170_000.0,  # rows/s
    "bytes_per_reading": 17.0,
    "raw_energy": 0.35e6,  # readings/s (a month of daily energy in about 7 s)
}
TARGETS = {
    "import_parquet": ">= 1,000,000 rows/s",
    "import_csv": ">= 500,000 rows/s",
    "compaction": ">= 2,000,000 rows/s",
    "bytes_per_reading": "<= 8",
    "raw_energy": ">= 10,000,000 readings/s",
}


def timed(fn: Callable[[], T]) -> tuple[T, float, float]:
    """Return ``fn()``, its wall time and its process CPU time [s]; the system part of the
    CPU time is kept in ``SYSTEM_S[-1]`` (on this shared VM, the kernel zeroing fresh memory
    is a large and variable part of it)."""
    wall, cpu = time.perf_counter(), time.process_time()
    system = resource.getrusage(resource.RUSAGE_SELF).ru_stime
    result = fn()
    SYSTEM_S.append(resource.getrusage(resource.RUSAGE_SELF).ru_stime - system)
    return result, time.perf_counter() - wall, time.process_time() - cpu


SYSTEM_S: list[float] = []


def settings_for(root: Path) -> Settings:
    return Settings.load(overrides={"data_dir": str(root)}, environ={})


def entropy_bytes(values: np.ndarray, series: np.ndarray) -> float:
    """Return the order-0 entropy of within-series first differences [bytes per value]."""
    diffs = np.diff(values)
    diffs = diffs[series[1:] == series[:-1]]
    if diffs.size == 0:
        return 0.0
    _, counts = np.unique(diffs, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum() / 8)


def column_ints(column: pa.ChunkedArray) -> np.ndarray:
    array = column.combine_chunks()
    if pa.types.is_decimal(array.type):
        words = np.frombuffer(array.buffers()[1], dtype=np.int64).reshape(-1, 2)
        return words[array.offset : array.offset + len(array), 0]
    if pa.types.is_timestamp(array.type):
        return array.cast(pa.int64()).fill_null(0).to_numpy()
    if pa.types.is_string(array.type):
        return array.dictionary_encode().indices.to_numpy()
    return array.fill_null(0).to_numpy(zero_copy_only=False)


def write_csv(table: pa.Table, path: Path) -> None:
    """Write readings as ``wattlake import`` takes CSV: ISO 8601 ``ts`` with ``Z``."""
    text = pc.strftime(table["ts"], format="%Y-%m-%dT%H:%M:%S")  # ms unit: 3 decimals
    table = table.drop_columns(["received_at", "source"]).set_column(
        0, "ts", pc.binary_join_element_wise(text, "Z", "")
    )
    pa_csv.write_csv(table, path)


def value_entropy_bytes(values: np.ndarray) -> float:
    """Return the order-0 entropy of the values themselves [bytes per value]."""
    if values.size == 0:
        return 0.0
    _, counts = np.unique(values, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum() / 8)


def storage(
    lake: Lake,
) -> tuple[float, dict[str, float], dict[str, float], dict[str, float], dict[str, set[str]]]:
    """Return bytes per reading of the lake's readings files, per column, entropies (of
    within-series differences, and of values), and the encodings each column's data pages use."""
    total_bytes, rows = 0, 0
    encodings: dict[str, set[str]] = {}
    per_column: dict[str, float] = {}
    entropy: dict[str, float] = {}
    value_entropy: dict[str, float] = {}
    for task in tables.scan_files(lake, READINGS_TABLE):
        path = tables.local_path(task.file.file_path)
        metadata = pq.read_metadata(path, filesystem=lake.fs)
        total_bytes += task.file.file_size_in_bytes
        rows += metadata.num_rows
        for g in range(metadata.num_row_groups):
            group = metadata.row_group(g)
            for i in range(group.num_columns):
                c = group.column(i)
                name = c.path_in_schema
                per_column[name] = per_column.get(name, 0) + c.total_compressed_size
                # RLE is the levels' (and the dictionary indices') encoding; PLAIN beside a
                # dictionary is its dictionary page.
                used = set(c.encodings) - {"RLE"}
                if used & {"RLE_DICTIONARY", "PLAIN_DICTIONARY"}:
                    used = {"dictionary"}
                encodings.setdefault(name, set()).update(used)
        part = pq.read_table(path, filesystem=lake.fs)
        series = column_ints(part["device_id"]) * 16 + column_ints(part["channel"])
        for name in part.column_names:
            ints = column_ints(part[name])
            value = entropy_bytes(ints, series) * part.num_rows
            entropy[name] = entropy.get(name, 0.0) + value
            value = value_entropy_bytes(ints) * part.num_rows
            value_entropy[name] = value_entropy.get(name, 0.0) + value
    return (
        total_bytes / rows,
        {k: v / rows for k, v in per_column.items()},
        {k: v / rows for k, v in entropy.items()},
        {k: v / rows for k, v in value_entropy.items()},
        encodings,
    )


def main() -> None:
    as_cli_process()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--slices", type=int, default=4, help="appends per day (compaction)")
    parser.add_argument("--flushes", type=int, default=20, help="small appends (commit cost)")
    parser.add_argument(
        "--fleet", choices=fleet.FLEETS, default="noisy", help="the fleet's measurement noise"
    )
    parser.add_argument(
        "--storage-only", action="store_true", help="only the compacted lake's bytes per reading"
    )
    parser.add_argument(
        "--large-file-level",
        type=int,
        default=None,
        help="set the readings table's large-file zstd level (unset: the table's level, 3)",
    )
    args = parser.parse_args()

    def prepared(lake_dir: Path) -> Path:
        """Make the lake at ``lake_dir`` with the large-file level asked for, if any."""
        made = Lake.from_settings(settings_for(lake_dir))
        tables.ensure_tables(made)
        if args.large_file_level is not None:
            with tables.open_table(made, READINGS_TABLE).transaction() as tx:
                level = str(args.large_file_level)
                tx.set_properties({tables.LARGE_FILE_LEVEL_PROPERTY: level})
        return lake_dir

    spec = fleet.FleetSpec(devices=args.devices, days=args.days, noise=args.fleet)
    after: dict[str, tuple[float, float]] = {}  # name -> (wall figure, CPU figure)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        days = list(fleet.day_tables(spec))
        whole = pa.concat_tables(days)
        n = whole.num_rows
        print(f"{args.fleet} fleet: {args.devices} devices x {args.days} day(s) = {n:,} readings")
        print(f"load average at start: {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")
        tables.ensure_tables(Lake.from_settings(settings_for(root / "warm")))  # imports, once
        if not args.storage_only:
            pq.write_table(whole, root / "fleet.parquet", compression="zstd")
            write_csv(whole, root / "fleet.csv")
        imports = (
            ("import_parquet", root / "fleet.parquet", FileFormat.parquet),
            ("import_csv", root / "fleet.csv", FileFormat.csv),
        )
        for name, path, fmt in () if args.storage_only else imports:
            lake_dir = prepared(root / name)
            summary, wall, cpu = timed(
                lambda p=path, f=fmt, d=lake_dir: import_file(settings_for(d), FileRows(p, f))
            )
            assert summary.stored == n, summary.line()
            files = len(
                tables.scan_files(Lake.from_settings(settings_for(lake_dir)), READINGS_TABLE)
            )
            after[name] = (n / wall, n / cpu)
            print(
                f"{name}: {wall:.2f} s wall, {cpu:.2f} s CPU ({SYSTEM_S[-1]:.2f} s system); "
                f"{files} data files"
            )

        lake = Lake.from_settings(settings_for(prepared(root / "compact")))
        slice_ms = 86_400_000 // args.slices
        for day in days:
            ts = day["ts"].cast(pa.int64()).to_numpy()
            part = (ts - ts.min() // 86_400_000 * 86_400_000) // slice_ms
            for k in range(args.slices):
                tables.append(lake, READINGS_TABLE, day.filter(pa.array(part == k)))
        files_before = len(tables.scan_files(lake, READINGS_TABLE))
        results, wall, cpu = timed(lambda: compact(lake))
        rows = sum(r.rows_read for r in results)
        after["compaction"] = (rows / wall, rows / cpu)
        print(
            f"compaction: {files_before} files -> {len(tables.scan_files(lake, READINGS_TABLE))}; "
            f"{rows:,} rows in {wall:.2f} s wall, {cpu:.2f} s CPU ({SYSTEM_S[-1]:.2f} s system)"
        )

        per_reading, per_column, entropy, value_entropy, used = storage(lake)
        after["bytes_per_reading"] = (per_reading, per_reading)
        definition = TABLES[READINGS_TABLE]
        properties = tables.open_table(lake, READINGS_TABLE).properties
        level = properties.get(tables.COMPRESSION_LEVEL_PROPERTY, "pyarrow's default")
        # (getattr: the bench also runs on revisions before the property, e.g. git archive.)
        large = properties.get(getattr(tables, "LARGE_FILE_LEVEL_PROPERTY", ""), level)
        print(f"storage of the compacted lake (zstd level {level}, {large} for large files):")
        print(f"{'column':20s} {'bytes/reading':>14s} {'entropy':>8s} {'(values)':>8s}  encoding")
        for name in definition.schema.names:
            print(
                f"{name:20s} {per_column.get(name, 0.0):14.3f} {entropy.get(name, 0.0):8.3f}"
                f" {value_entropy.get(name, 0.0):8.3f}  {' + '.join(sorted(used.get(name, set())))}"
            )
        print(
            f"{'file total':20s} {per_reading:14.3f} {sum(entropy.values()):8.3f}"
            f" {sum(value_entropy.values()):8.3f}  (footers and headers included)"
        )
        if args.storage_only:
            return
        imported = Lake.from_settings(settings_for(root / "import_parquet"))
        _, import_columns, import_entropy, import_values, import_used = storage(imported)
        for name in ("received_at", "receive_lag_ms"):
            if name in import_columns:
                print(
                    f"{name:20s} {import_columns[name]:14.3f} {import_entropy[name]:8.3f}"
                    f" {import_values[name]:8.3f}  {' + '.join(sorted(import_used[name]))}"
                    " (Parquet import: one receive time per file)"
                )

        flush_lake = Lake.from_settings(settings_for(root / "flushes"))
        first_ts = days[0]["ts"].cast(pa.int64()).to_numpy()
        minute = days[0].filter(pa.array(first_ts < first_ts.min() + 60_000))
        minute_ts = minute["ts"].cast(pa.int64()).to_numpy()
        write_s, commit_s = [], []
        iceberg = tables.open_table(flush_lake, READINGS_TABLE)
        for k in range(args.flushes):
            ts_k = pa.array(minute_ts + k * 60_000, pa.timestamp("ms", tz="UTC"))
            stored = tables.to_stored(READINGS_TABLE, minute.set_column(0, "ts", ts_k))
            began = time.perf_counter()
            files = tables.write_data_files(iceberg, READINGS_TABLE, stored)
            written = time.perf_counter()
            iceberg = tables.commit(iceberg, files)
            write_s.append(written - began)
            commit_s.append(time.perf_counter() - written)
        print(
            f"stream flushes ({minute.num_rows} readings each, {args.flushes}x): write "
            f"{1000 * np.median(write_s):.0f} ms, commit {1000 * np.median(commit_s):.0f} ms "
            "(median per flush, wall)"
        )

        settings = settings_for(root / "compact")
        edges = bucket_edges_ms(spec.start_ms, spec.end_ms, "day", zone("UTC"))
        stale = replace(answers.lake_sources(settings), rollups=lambda a, b, d: None)
        (results_raw, source), wall, cpu = timed(lambda: answers.energy_over_edges(stale, edges))
        assert source == "readings" and results_raw
        after["raw_energy"] = (n / wall, n / cpu)
        print(f"raw energy: daily energy of every device, {wall:.2f} s wall, {cpu:.2f} s CPU")

    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    print()
    print(f"{'figure':22s} {'before':>12s} {'after (wall)':>14s} {'after (CPU)':>14s}  target")
    for name, (wall_value, cpu_value) in after.items():
        print(
            f"{name:22s} {BEFORE[name]:12,.0f} {wall_value:14,.2f} {cpu_value:14,.2f}  "
            f"{TARGETS[name]}"
            if name == "bytes_per_reading"
            else f"{name:22s} {BEFORE[name]:12,.0f} {wall_value:14,.0f} {cpu_value:14,.0f}  "
            f"{TARGETS[name]}"
        )


if __name__ == "__main__":
    main()
