"""Integration rate of the energy kernel against a plain trapezoid and DuckDB's window LAG.

Run: ``.venv/bin/python bench/bench_energy.py [--readings N] [--repeat R]``. One series of N
readings about 1 s apart (sorted), a household-like load with some export, a few long gaps, and
hourly buckets in Europe/Warsaw; the kernel splits every interval at the bucket edges, handles the
gaps and keeps import and export apart. Prints the best of R runs of each path.
"""

from __future__ import annotations

import argparse

import duckdb
import numpy as np
import pyarrow as pa
from timing import best_of

from wattlake.energy.buckets import bucket_edges_ms, zone
from wattlake.energy.integrate import integrate_power, plain_trapezoid_wh


def make_series(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    step_ms = rng.integers(900, 1100, n)
    step_ms[rng.integers(0, n, 20)] += 600_000  # twenty 10-minute gaps
    ts = 1_767_222_000_000 + np.cumsum(step_ms)
    t_h = (ts / 3_600_000.0) % 24
    # daily shape 300..2300 W with PV export around noon (negative), plus noise
    power = 1300 + 1000 * np.sin(t_h / 24 * 2 * np.pi) - 2500 * np.exp(-((t_h - 12.5) ** 2) / 4)
    power += rng.normal(0, 150, n)
    return ts.astype(np.int64), power


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--readings", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n = args.readings
    ts, power = make_series(n)
    tz = zone("Europe/Warsaw")
    edges = bucket_edges_ms(int(ts[0]), int(ts[-1]) + 1, "hour", tz)

    plain_s = best_of(args.repeat, lambda: plain_trapezoid_wh(ts, power))
    kernel_s = best_of(args.repeat, lambda: integrate_power(ts, power, edges))
    result = integrate_power(ts, power, edges)

    con = duckdb.connect()
    con.register("r", pa.table({"ts": ts, "power_w": power}))
    sql = """
        SELECT date_trunc('hour', make_timestamp(ts * 1000)) AS hour,
               sum((power_w + prev_w) / 2 * (ts - prev_ts)) / 3600000.0 AS energy_wh
        FROM (SELECT ts, power_w, lag(power_w) OVER w AS prev_w, lag(ts) OVER w AS prev_ts
              FROM r WINDOW w AS (ORDER BY ts))
        WHERE prev_ts IS NOT NULL AND ts - prev_ts <= 300000
        GROUP BY 1
    """
    duck_repeat = max(1, min(args.repeat, 2))
    duck_s = best_of(duck_repeat, lambda: con.execute(sql).fetchall())

    print(f"readings: {n:,}  hourly buckets: {edges.size - 1:,}  gaps: {result.gap_start_ms.size}")
    print(
        f"plain vectorised trapezoid (no buckets, no gaps): {n / plain_s / 1e6:7.1f} M readings/s"
    )
    print(
        f"wattlake kernel (edges, gaps, import/export):     {n / kernel_s / 1e6:7.1f} M readings/s"
    )
    print(f"DuckDB window LAG trapezoid, hourly GROUP BY:     {n / duck_s / 1e6:7.1f} M readings/s")
    print(f"kernel / plain: {plain_s / kernel_s:.2f}   kernel / DuckDB: {duck_s / kernel_s:.1f}")
    print(f"import {result.import_wh.sum():,.1f} Wh  export {result.export_wh.sum():,.1f} Wh")


if __name__ == "__main__":
    main()
