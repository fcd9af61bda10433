"""Daily energy of the benchmark fleet from rollups and from raw readings, in one run.

Run: ``.venv/bin/python bench/bench_rollup.py [--days 365] [--devices 10] [--repeat 3]``.
Generates the fleet (bench/fleet.py) into a fresh local lake, runs the rollup job once, then
times ``wattlake.query.energy.energy_over_edges`` (the source choice behind ``energy``) for daily
buckets of every device over the whole range in UTC: once reading rollups, once forced to the
raw readings (rollups reported stale); then ``energy.energy_for`` (the library call of ``wattlake
energy --every day``) in UTC and Europe/Warsaw. Prints the best of R runs of each and the
rollup job's own rate. ``--baseline REV`` also times ``device_energy`` of
``wattlake/query/rollups.py`` as it was at git revision REV (a revision before the one entry point
of ``wattlake/query/energy.py``, which took its place), in the same run on the same lake,
alternating the two, and checks that both give identical results.

``--raw-baseline REV`` times the raw path (``energy_over_edges`` with the rollups reported
stale: what ``energy``/``cost``/``pv`` and the rollup job use when rollups cannot answer) of the
whole ``wattlake`` package as it was at git revision REV beside the current one, each in a
fresh process on the same lake (with the environment that revision's ``wattlake`` command sets
for itself, ``wattlake.cli.PROCESS_DEFAULTS``), alternated, best of R; prints wall and
process-CPU seconds, readings per second and the load average, and checks that the results are
identical bit for bit. ``--raw-only`` skips the rollup job and the rollup timings.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import fleet
import numpy as np
from timing import as_cli_process, best_of, user_environ

from wattlake.config import Settings
from wattlake.energy.buckets import bucket_edges_ms, zone
from wattlake.jobs.rollup import RollupOptions, run_rollup
from wattlake.lake import tables
from wattlake.lake.storage import Lake
from wattlake.query import energy as answers
from wattlake.schema import READINGS_TABLE


def module_at(rev: str, folder: str) -> ModuleType:
    """Return ``wattlake/query/rollups.py`` as it was at git revision ``rev``, imported."""
    root = Path(__file__).resolve().parent.parent
    source = subprocess.run(
        ["git", "show", f"{rev}:wattlake/query/rollups.py"],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(folder) / "rollups_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("rollups_baseline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["rollups_baseline"] = module
    spec.loader.exec_module(module)
    return module


def device_energy(
    settings: Settings, start_ms: int, end_ms: int, tz: Any
) -> tuple[Any, list[Any], str]:
    """Return what ``wattlake energy --every day`` computes for every device: edges, the energy
    of each device channel and the source."""
    answer = answers.energy_for(settings, answers.EnergyRequest(start_ms, end_ms, tz, "day"))
    return answer.edges, answer.series, answer.source


def same(a: list[Any], b: list[Any]) -> bool:
    """Return whether two lists of SeriesEnergy are identical, bit for bit."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if (x.series.device_id, x.series.channel, x.method) != (
            y.series.device_id,
            y.series.channel,
            y.method,
        ):
            return False
        for name in ("import_wh", "export_wh", "covered_s", "interpolated_wh"):
            if not np.array_equal(getattr(x, name), getattr(y, name)):
                return False
        u, v = x.counter_minus_power_wh, y.counter_minus_power_wh
        if (u is None) != (v is None) or (u is not None and not np.array_equal(u, v)):
            return False
    return True


def raw_worker(data_dir: str, days: int, devices: int, repeat: int, out: str) -> None:
    """Time the raw path of the ``wattlake`` package on ``sys.path`` (run in its own process);
    write the timings as JSON on stdout and the results to ``out``."""
    from wattlake.config import Settings as WorkerSettings
    from wattlake.energy.buckets import bucket_edges_ms as worker_edges
    from wattlake.energy.buckets import zone as worker_zone
    from wattlake.query import energy as worker_answers

    spec = fleet.FleetSpec(devices=devices, days=days)
    if os.environ.get("BENCH_GROUP_ROWS"):  # the raw path's readings per group, if it has one
        from wattlake.query import raw as worker_raw

        if hasattr(worker_raw, "GROUP_ROWS"):
            worker_raw.GROUP_ROWS = int(os.environ["BENCH_GROUP_ROWS"])
    settings = WorkerSettings.load(overrides={"data_dir": data_dir}, environ={})
    edges = worker_edges(spec.start_ms, spec.end_ms, "day", worker_zone("UTC"))
    stale = replace(worker_answers.lake_sources(settings), rollups=lambda a, b, d: None)
    walls, cpus = [], []
    results: Any = None
    for _ in range(repeat):
        results = None  # the last run's series are not kept while the next one reads
        began, cpu = time.perf_counter(), time.process_time()
        results, source = worker_answers.energy_over_edges(stale, edges)
        walls.append(time.perf_counter() - began)
        cpus.append(time.process_time() - cpu)
        assert source == "readings"
    with open(out, "wb") as f:
        pickle.dump(
            [
                (
                    r.series.device_id,
                    r.series.channel,
                    r.method,
                    r.import_wh,
                    r.export_wh,
                    r.covered_s,
                    r.interpolated_wh,
                    r.counter_minus_power_wh,
                )
                for r in results
            ],
            f,
        )
    import resource

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"wall": walls, "cpu": cpus, "peak_mb": peak_mb}))


def job_worker(data_dir: str, out: str) -> None:
    """Time a full run of the rollup job of the ``wattlake`` package on ``sys.path`` (its own
    process); write the timing as JSON on stdout and the energy_15min rows to ``out``."""
    from wattlake.config import Settings as WorkerSettings
    from wattlake.jobs.rollup import RollupOptions as WorkerOptions
    from wattlake.jobs.rollup import run_rollup as worker_run
    from wattlake.lake import tables as worker_tables
    from wattlake.lake.storage import Lake as WorkerLake

    settings = WorkerSettings.load(overrides={"data_dir": data_dir}, environ={})
    lake = WorkerLake.from_settings(settings)
    began, cpu = time.perf_counter(), time.process_time()
    worker_run(lake, WorkerOptions.from_settings(settings), full=True)
    wall, cpu = time.perf_counter() - began, time.process_time() - cpu
    rows = worker_tables.read_table(lake, "energy_15min")
    rows = rows.sort_by([(c, "ascending") for c in ("device_id", "channel", "start", "site")])
    exact = {  # floats as their shortest exact text, so NaN compares equal
        name: column.cast("string") if column.type == "double" else column
        for name, column in zip(rows.column_names, rows.columns, strict=True)
    }
    with open(out, "wb") as f:
        pickle.dump({name: column.to_pylist() for name, column in exact.items()}, f)
    print(json.dumps({"wall": wall, "cpu": cpu}))


def compare_job(args: argparse.Namespace, data_dir: str, readings: int, folder: str) -> None:
    """Print a full rollup job run's figures at ``args.job_baseline`` and now, alternated,
    one process per run, and whether their energy_15min rows are identical."""
    best, peak, _, dumps = run_alternated("job", args.job_baseline, data_dir, args.repeat, folder)
    identical = dumps["before"] == dumps["after"]
    print_pair("rollup job, full run", args.job_baseline, best, peak, readings)
    print_speed_up(best, f"identical energy_15min: {identical}")


def run_alternated(
    worker: str,
    rev: str,
    data_dir: str,
    repeat: int,
    folder: str,
    more: Sequence[str] = (),
    env_after: Mapping[str, str] | None = None,
) -> tuple[dict[str, tuple[float, float]], dict[str, float], dict[str, float], dict[str, Any]]:
    """Run ``--{worker}-worker`` with the package at ``rev`` ("before") and now ("after"),
    alternated, ``repeat`` times each, one process per run; return the best (wall, CPU) of
    each, its peak RSS [MB] if the worker reports one, the best wall time of a process's
    first run, and what its last run dumped."""
    here = Path(__file__).resolve()
    packages = (("before", package_at(rev, folder)), ("after", str(here.parent.parent)))
    best: dict[str, tuple[float, float]] = {}
    peak: dict[str, float] = {}
    dumps: dict[str, Any] = {}
    first: dict[str, float] = {}
    paths = {label: os.pathsep.join([package, str(here.parent)]) for label, package in packages}
    # Each side's process starts as its own ``wattlake`` command would (wattlake.cli).
    starts = {label: cli_defaults(path) for label, path in paths.items()}
    for _ in range(repeat):
        for label, _package in packages:
            out = str(Path(folder) / f"{worker}-{label}.pickle")
            env = {**starts[label], **user_environ(), "PYTHONPATH": paths[label]}
            if label == "after":
                env.update(env_after or {})
            command = [sys.executable, str(here), f"--{worker}-worker", data_dir, "--out", out]
            run = subprocess.run(
                [*command, *more], cwd=folder, env=env, check=True, capture_output=True, text=True
            )
            timing = json.loads(run.stdout.strip().splitlines()[-1])
            walls, cpus = timing["wall"], timing["cpu"]  # one run's, or a list of runs'
            if not isinstance(walls, list):
                walls, cpus = [walls], [cpus]
            wall, cpu = min(zip(walls, cpus, strict=True))
            first[label] = min(first.get(label, walls[0]), walls[0])
            if "peak_mb" in timing:
                peak[label] = max(peak.get(label, 0.0), timing["peak_mb"])
            if label not in best or wall < best[label][0]:
                best[label] = (wall, cpu)
            with open(out, "rb") as f:
                dumps[label] = pickle.load(f)
    return best, peak, first, dumps


def cli_defaults(python_path: str) -> dict[str, str]:
    """Return the environment a ``wattlake`` command of the package on ``python_path`` sets
    for its process (``wattlake.cli.PROCESS_DEFAULTS``; none before it had them)."""
    probe = "import json, wattlake.cli as c; print(json.dumps(getattr(c, 'PROCESS_DEFAULTS', {})))"
    found = subprocess.run(
        [sys.executable, "-c", probe],
        env={**user_environ(), "PYTHONPATH": python_path},
        cwd=python_path.split(os.pathsep)[0],  # not this checkout's package (first on sys.path)
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(found.stdout))


def print_pair(
    title: str,
    rev: str,
    best: dict[str, tuple[float, float]],
    peak: dict[str, float],
    readings: int,
) -> None:
    """Print the best wall and CPU time of the baseline ``rev`` and of now, as readings/s."""
    print(f"{title}, load average {os.getloadavg()}:")
    for label in ("before", "after"):
        wall, cpu = best[label]
        name = rev if label == "before" else "now"
        rss = f", peak RSS {peak[label]:,.0f} MB" if label in peak else ""
        print(
            f"  {name:>10}: {wall:6.3f} s wall, {cpu:6.3f} s CPU = "
            f"{readings / wall / 1e6:6.2f} M readings/s (per CPU-s {readings / cpu / 1e6:6.2f} M)"
            f"{rss}"
        )


def print_speed_up(best: dict[str, tuple[float, float]], verdict: str) -> None:
    """Print how much faster now is than the baseline, then ``verdict``."""
    print(
        f"  speed-up {best['before'][0] / best['after'][0]:.2f}x wall, "
        f"{best['before'][1] / best['after'][1]:.2f}x CPU; {verdict}"
    )


def package_at(rev: str, folder: str) -> str:
    """Return a folder holding the ``wattlake`` package as it was at git revision ``rev``."""
    root = Path(__file__).resolve().parent.parent
    target = Path(folder) / f"wattlake-{rev}"
    target.mkdir()
    archive = subprocess.run(
        ["git", "archive", rev, "wattlake"], cwd=root, check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return str(target)


def compare_raw(args: argparse.Namespace, data_dir: str, readings: int, folder: str) -> None:
    """Print the raw path's figures at ``args.raw_baseline`` and now, alternated, one process
    per run, and whether their results are identical."""
    more = ["--days", str(args.days), "--devices", str(args.devices), "--repeat", "2"]
    after = {"BENCH_GROUP_ROWS": str(args.group_rows)} if args.group_rows else None
    best, peak, first, dumps = run_alternated(
        "raw", args.raw_baseline, data_dir, args.repeat, folder, more, after
    )
    identical = len(dumps["before"]) == len(dumps["after"]) and all(
        x[:3] == y[:3]
        and all(
            (u is None and v is None)
            or (u is not None and v is not None and u.tobytes() == v.tobytes())
            for u, v in zip(x[3:], y[3:], strict=True)
        )
        for x, y in zip(dumps["before"], dumps["after"], strict=True)
    )
    print_pair(
        "raw path (energy_over_edges, rollups stale)", args.raw_baseline, best, peak, readings
    )
    then, now = first["before"], first["after"]
    print(
        f"  first call of a process (best of {args.repeat}; it plans the scan): "
        f"{args.raw_baseline} {then:.3f} s = {readings / then / 1e6:.2f} M/s, "
        f"now {now:.3f} s = {readings / now / 1e6:.2f} M/s"
    )
    print_speed_up(best, f"identical results: {identical}")


def generate(lake: Lake, spec: fleet.FleetSpec) -> int:
    """Append the fleet's readings to ``lake``, a week per commit; return how many."""
    import pyarrow as pa

    readings = 0
    batch = []
    for day in fleet.day_tables(spec):
        batch.append(day)
        if len(batch) == 7:
            readings += sum(t.num_rows for t in batch)
            tables.append(lake, READINGS_TABLE, pa.concat_tables(batch))
            batch = []
    if batch:
        readings += sum(t.num_rows for t in batch)
        tables.append(lake, READINGS_TABLE, pa.concat_tables(batch))
    return readings


def main() -> None:
    if "--job-worker" in sys.argv:
        worker = argparse.ArgumentParser()
        worker.add_argument("--job-worker")
        worker.add_argument("--out")
        j = worker.parse_args()
        job_worker(j.job_worker, j.out)
        return
    if "--raw-worker" in sys.argv:
        worker = argparse.ArgumentParser()
        worker.add_argument("--raw-worker")
        worker.add_argument("--days", type=int)
        worker.add_argument("--devices", type=int)
        worker.add_argument("--repeat", type=int)
        worker.add_argument("--out")
        w = worker.parse_args()
        raw_worker(w.raw_worker, w.days, w.devices, w.repeat, w.out)
        return
    as_cli_process()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--baseline", help="git revision whose query/rollups.py to time beside the current one"
    )
    parser.add_argument(
        "--raw-baseline", help="git revision whose raw path to time beside the current one"
    )
    parser.add_argument(
        "--job-baseline", help="git revision whose rollup job (full run) to time beside now's"
    )
    parser.add_argument(
        "--group-rows",
        type=int,
        help="readings per group of days of the current raw path (query.raw.GROUP_ROWS)",
    )
    parser.add_argument(
        "--lake",
        help="folder of the generated lake, kept: reused when it holds the same fleet (raw-only)",
    )
    parser.add_argument(
        "--raw-only", action="store_true", help="skip the rollup job and the rollup timings"
    )
    args = parser.parse_args()
    spec = fleet.FleetSpec(devices=args.devices, days=args.days)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.lake or str(Path(tmp) / "lake")
        settings = Settings.load(overrides={"data_dir": data_dir}, environ={})
        lake = Lake.from_settings(settings)
        began = time.perf_counter()
        marker = Path(data_dir) / f"bench-fleet-{args.devices}x{args.days}.txt"
        if marker.exists():
            readings = int(marker.read_text())
        else:
            readings = generate(lake, spec)
            if args.lake:
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.write_text(str(readings))
        load_s = time.perf_counter() - began
        print(f"fleet: {args.devices} devices x {args.days} days = {readings:,} readings")
        print(f"generated and appended in {load_s:.1f} s")
        if args.raw_baseline:
            compare_raw(args, data_dir, readings, tmp)
        if args.job_baseline:
            compare_job(args, data_dir, readings, tmp)
        if args.raw_only:
            return

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
        fresh = answers.lake_sources(settings)
        stale = replace(fresh, rollups=lambda a, b, d: None)

        def from_rollups() -> None:
            _, source = answers.energy_over_edges(answers.lake_sources(settings), edges)
            assert source == "rollups"

        def from_readings() -> None:
            _, source = answers.energy_over_edges(stale, edges)
            assert source == "readings"

        rollup_s = best_of(args.repeat, from_rollups)
        raw_s = best_of(max(1, min(args.repeat, 2)), from_readings)
        a, _ = answers.energy_over_edges(fresh, edges)
        b, _ = answers.energy_over_edges(stale, edges)
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
                _, results, source = device_energy(settings, start_ms, end_ms, local)
                assert source == "rollups" and len(results) >= args.devices

            call_s = best_of(args.repeat, command_call)
            print(
                f"  energy --every day ({tz_name}) via energy.energy_for: {call_s:7.3f} s "
                "(target < 0.5 s for a year)"
            )

        if args.baseline:
            old = module_at(args.baseline, tmp)
            for tz_name in ("UTC", "Europe/Warsaw"):
                local = zone(tz_name)
                mine = device_energy(settings, start_ms, end_ms, local)
                theirs = old.device_energy(settings, None, start_ms, end_ms, "day", local)
                best = {"before": float("inf"), "after": float("inf")}
                for _ in range(args.repeat):  # alternated, so load changes hit both alike
                    for label in ("before", "after"):
                        began = time.perf_counter()
                        if label == "before":
                            old.device_energy(settings, None, start_ms, end_ms, "day", local)
                        else:
                            device_energy(settings, start_ms, end_ms, local)
                        best[label] = min(best[label], time.perf_counter() - began)
                print(
                    f"  energy --every day ({tz_name}), rollups.py at {args.baseline} "
                    f"{best['before']:.3f} s -> now {best['after']:.3f} s "
                    f"({best['before'] / best['after']:.1f}x); identical results: "
                    f"{same(theirs[1], mine[1])}"
                )


if __name__ == "__main__":
    main()
