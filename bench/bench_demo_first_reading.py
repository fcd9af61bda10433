"""How soon after the demo's start-up message is the first reading queryable?

Starts ``wattlake demo`` (3 devices, one publish a second, no dashboard) on a fresh data dir,
notes when it prints its start-up line, then runs the ``wattlake query`` it printed until
``readings`` holds a row. Prints the seconds from the start-up line to the first answer with a
row, for the demo as it is (first flush after 1 s, doubling) and, as the baseline in the same
run, with the first flush at the flush interval (``stream.first_flush_s = 0``, the old way).

    .venv/bin/python bench/bench_demo_first_reading.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def first_reading_s(env_extra: dict[str, str], timeout_s: float = 150.0) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "lake"
        command = [sys.executable, "-m", "wattlake", "demo", "--no-web", "--broker-port", "0"]
        command += ["--data-dir", str(data_dir)]
        env = {**os.environ, **env_extra}
        demo = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
        assert demo.stderr is not None
        try:
            for line in demo.stderr:
                if line.startswith("wattlake demo:"):
                    break
            started = time.monotonic()
            query = [sys.executable, "-m", "wattlake", "query", "--format", "csv"]
            query += ["--data-dir", str(data_dir), "SELECT count(*) AS n FROM readings"]
            while time.monotonic() - started < timeout_s:
                out = subprocess.run(query, capture_output=True, text=True).stdout.split()
                if len(out) > 1 and out[1].isdigit() and int(out[1]) > 0:
                    return time.monotonic() - started
                time.sleep(0.2)
            return float("nan")
        finally:
            demo.send_signal(signal.SIGINT)
            try:
                demo.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                demo.kill()
                demo.communicate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    cases = {
        "demo (first flush 1 s, doubling)": {},
        "baseline: first flush at the interval (60 s)": {"WATTLAKE_STREAM__FIRST_FLUSH_S": "0"},
    }
    for name, env in cases.items():
        figures = [first_reading_s(env) for _ in range(args.runs)]
        print(
            f"{name}: first reading queryable {statistics.median(figures):.1f} s after the "
            f"start-up line (median of {args.runs}; runs: "
            + ", ".join(f"{f:.1f}" for f in figures)
            + ")"
        )


if __name__ == "__main__":
    main()
