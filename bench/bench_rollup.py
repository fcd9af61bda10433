"""Daily energy of the benchmark fleet from rollups and from raw readings, in one run.

Run: ``.venv/bin/python bench/bench_rollup.py [--days 365] [--devices 10] [--repeat 3]``.
Generates the fleet (bench/fleet.py) into a fresh local lake, runs the rollup job once, then
times ``wattlake.query.rollups.energy_buckets`` (the call behind ``energy``) for daily buckets of
every device over the whole range in UTC: once reading rollups, once forced to the raw readings
(rollups reported stale); then ``rollups.device_energy`` (the library call of ``wattlake
energy --every day``) in UTC and Europe/Warsaw. Prints the best of R runs of each and the
rollup job's own rate.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import fleet
import numpy as np
from timing import best_of

from wattlake.config import Settings
from wattlake.energy.buckets import bucket_edges_ms, zone
from wattlake.jobs.rollup import RollupOptions, run_rollup
from wattlake.lake import tables
from wattlake.lake.storage import Lake
from wattlake.query import rollups
from wattlake.schema import READINGS_TABLE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    spec = fleet.FleetSpec(devices=args.devices, days=args.days)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.load(overrides={"data_dir": str(Path(tmp) / "lake")}, environ={})
        lake = Lake.from_settings(settings)
        began = time.perf_counter()
        readings = 0
        batch = []
        for day in fleet.day_tables(spec):
            batch.append(day)
            if len(batch) == 7:
                readings += sum(t.num_rows for t in batch)
                import pyarrow as pa

                tables.append(lake, READINGS_TABLE, pa.concat_tables(batch))
                batch = []
        if batch:
            import pyarrow as pa

            readings += sum(t.num_rows for t in batch)
            tables.append(lake, READINGS_TABLE, pa.concat_tables(batch))
        load_s = time.perf_counter() - began
        print(f"fleet: {args.devices} devices x {args.days} days = {readings:,} readings")
        print(f"generated and appended in {load_s:.1f} s")

        began = time.perf_counter()
        run = run_rollup(lake, RollupOptions.from_settings(settings))
        job_s = time.perf_counter() - began
        print(f"rollup job, first run: {job_s:.1f} s ({readings / job_s / 1e6:.2f} M readings/s)")
        began = time.perf_counter()
        run_rollup(lake)
        print(f"rollup job, nothing new: {time.perf_counter() - began:.3f} s; days {len(run.days)}")

        tz = zone("UTC")
        start_ms, end_ms = spec.start_ms, spec.end_ms
        edges = bucket_edges_ms(start_ms, end_ms, "day", tz)
        fresh = rollups.lake_sources(settings)
        stale = replace(fresh, rollups=lambda a, b, d: None)

        def from_rollups() -> None:
            _, source = rollups.energy_over_edges(rollups.lake_sources(settings), edges)
            assert source == "rollups"

        def from_readings() -> None:
            _, source = rollups.energy_over_edges(stale, edges)
            assert source == "readings"

        rollup_s = best_of(args.repeat, from_rollups)
        raw_s = best_of(max(1, min(args.repeat, 2)), from_readings)
        a, _ = rollups.energy_over_edges(fresh, edges)
        b, _ = rollups.energy_over_edges(stale, edges)
        worst = max(
            float(np.max(np.abs(x.import_wh - y.import_wh) / np.maximum(1.0, np.abs(y.import_wh))))
            for x, y in zip(a, b, strict=True)
        )
        print(f"daily energy, {args.devices} devices x {args.days} days, UTC days:")
        print(f"  from rollups:  {rollup_s:7.3f} s   (target < 0.5 s for a year)")
        print(
            f"  from readings: {raw_s:7.3f} s = {readings / raw_s / 1e6:6.2f} M readings/s "
            "(target >= 10 M/s)"
        )
        print(
            f"  rollups / readings speed-up: {raw_s / rollup_s:.0f}x; largest relative "
            f"difference in import: {worst:.2e}"
        )

        # What `wattlake energy --every day` calls (the command's library call, issue 13):
        # edges, the source choice, the rollup read and the per-series sums, in two zones.
        for tz_name in ("UTC", "Europe/Warsaw"):
            local = zone(tz_name)

            def command_call(local: object = local) -> None:
                _, results, source = rollups.device_energy(
                    settings,
                    None,
                    start_ms,
                    end_ms,
                    "day",
                    local,  # type: ignore[arg-type]
                )
                assert source == "rollups" and len(results) >= args.devices

            call_s = best_of(args.repeat, command_call)
            print(
                f"  energy --every day ({tz_name}) via rollups.device_energy: {call_s:7.3f} s "
                "(target < 0.5 s for a year)"
            )


if __name__ == "__main__":
    main()
