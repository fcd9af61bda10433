"""Integration rate of the energy kernel against a plain trapezoid and DuckDB's window LAG.

Run: ``.venv/bin/python bench/bench_energy.py [--readings N] [--repeat R] [--before REV]``. One
series of N readings about 1 s apart (sorted), a household-like load with some export, a few long
gaps, and hourly buckets in Europe/Warsaw; the kernel splits every interval at the bucket edges,
handles the gaps and keeps import and export apart. Prints the best of R runs of each path.

It then times one series through ``series_energy`` (the path ``wattlake energy`` takes) with
counters on every reading, a counter reset and an outlier — method ``auto`` (counters, shaped by
power, power where the counter does not count) and method ``trapezoid`` — here and, in the same
run, in the code of git revision ``--before`` (default: the commit before issue 12's energy
changes), checked out into a temporary folder and run in a child process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
from timing import as_cli_process, best_of

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


BEFORE_ISSUE_12 = "b17e256"
ROOT = Path(__file__).resolve().parent.parent


def series_timings(n: int, repeat: int) -> dict[str, float]:
    """Return readings/s of series_energy with counters (auto) and on power (trapezoid)."""
    from wattlake.energy.series import Series, series_energy

    ts, power = make_series(n)
    dt_h = np.diff(ts) / 3_600_000.0
    imported = np.concatenate(([5_000.0], 5_000.0 + np.cumsum(np.maximum(power[1:], 0) * dt_h)))
    imported[n // 2 :] -= imported[n // 2] - 2.0  # a reset half-way
    imported[n // 3] += 400.0  # an outlier that comes back
    nan = np.full(n, np.nan)
    series = Series("bench", 0, ts, power, np.round(imported, 2), nan)
    edges = bucket_edges_ms(int(ts[0]), int(ts[-1]) + 1, "hour", zone("Europe/Warsaw"))
    out = {}
    for method in ("auto", "trapezoid"):
        seconds = best_of(repeat, lambda m=method: series_energy(series, edges, method=m))
        out[method] = n / seconds
    return out


def before_timings(rev: str, n: int, repeat: int) -> dict[str, float]:
    """Run :func:`series_timings` in the code of ``rev`` (a child process) and return it."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", rev, "wattlake"], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        env = {**os.environ, "PYTHONPATH": f"{tmp}{os.pathsep}{Path(__file__).parent}"}
        child = subprocess.run(
            [sys.executable, __file__, "--series-only", "--readings", str(n), "--repeat",
             str(repeat)],
            env=env, cwd=tmp, check=True, capture_output=True, text=True,
        )  # fmt: skip
        return dict(json.loads(child.stdout.splitlines()[-1]))


def main() -> None:
    as_cli_process()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--readings", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--series-readings", type=int, default=2_000_000)
    parser.add_argument("--before", default=BEFORE_ISSUE_12)
    parser.add_argument("--series-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.series_only:
        print(json.dumps(series_timings(args.readings, args.repeat)))
        return
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

    m = args.series_readings
    # Alternate (now, before, now, before) and keep the best of each: the machine is shared.
    runs_now, runs_before = [], []
    for _ in range(2):
        runs_now.append(series_timings(m, args.repeat))
        runs_before.append(before_timings(args.before, m, args.repeat))
    now = {k: max(r[k] for r in runs_now) for k in runs_now[0]}
    before = {k: max(r[k] for r in runs_before) for k in runs_before[0]}
    print(f"series_energy on {m:,} readings with counters, hourly buckets (M readings/s):")
    for method, label in (("auto", "counters (auto)"), ("trapezoid", "power (trapezoid)")):
        print(
            f"  {label:18s} before ({args.before}): {before[method] / 1e6:6.2f}   "
            f"now: {now[method] / 1e6:6.2f}   now / before: {now[method] / before[method]:.2f}"
        )


if __name__ == "__main__":
    main()
