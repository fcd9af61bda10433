"""Start-up time of the ``wattlake`` command, against ``python -c pass`` measured in the same run.

Each figure is a whole process, started as the installed ``wattlake`` script starts it, timed
from outside: one warm-up, then ``--runs`` counted runs of the command and the baseline in turn
(A B A B …, so that a machine whose speed drifts affects both alike). Printed per command: the
median, min and max wall time, and the median of the command's own start-up (its run minus the
baseline run beside it), which is the figure the target (< 0.25 s) is about.

    .venv/bin/python bench/bench_startup.py                      # this tree
    PYTHONPATH=/tmp/wl-before .venv/bin/python bench/bench_startup.py   # another checkout

With ``PYTHONPATH`` set, the command imports that checkout's ``wattlake`` (a ``git worktree``
of an older commit, for a before/after comparison).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

COMMANDS: tuple[tuple[str, ...], ...] = (("--help",), ("--version",), ("query", "--help"))
ENTRY = "import sys; from wattlake.cli import main; sys.argv[0] = 'wattlake'; sys.exit(main())"
BASELINE = (sys.executable, "-c", "pass")


def wall_s(argv: tuple[str, ...] | list[str]) -> float:
    """Return the wall time of one run of ``argv`` [s] (its output is thrown away)."""
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ)
    return time.perf_counter() - start


def measure(args: tuple[str, ...], runs: int) -> dict[str, float]:
    """Time ``wattlake args`` and the baseline in turn; return medians and spread [s]."""
    command = [sys.executable, "-c", ENTRY, *args]
    wall_s(command), wall_s(BASELINE)  # warm-up: the file cache, .pyc files
    pairs = [(wall_s(command), wall_s(BASELINE)) for _ in range(runs)]
    own = [a - b for a, b in pairs]
    times = [a for a, _ in pairs]
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "baseline_median_s": statistics.median(b for _, b in pairs),
        "own_median_s": statistics.median(own),
    }


def main() -> None:
    """Print one line per command."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="counted runs per command")
    options = parser.parse_args()
    where = os.environ.get("PYTHONPATH") or "this tree"
    print(f"wattlake start-up ({where}), {options.runs} runs each, baseline: python -c pass")
    print(f"{'command':<24} {'median':>8} {'min':>8} {'max':>8} {'baseline':>9} {'own':>8}")
    for args in COMMANDS:
        figures = measure(args, options.runs)
        print(
            f"{'wattlake ' + ' '.join(args):<24} {figures['median_s']:>7.3f}s "
            f"{figures['min_s']:>7.3f}s {figures['max_s']:>7.3f}s "
            f"{figures['baseline_median_s']:>8.3f}s {figures['own_median_s']:>7.3f}s"
        )


if __name__ == "__main__":
    main()
