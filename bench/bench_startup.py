"""Start-up time of the ``wattlake`` command, against ``python -c pass`` measured in the same run.

Each figure is a whole process, started as the installed ``wattlake`` script starts it, timed
from outside: one warm-up, then ``--runs`` counted runs of the command and the baseline in turn
(A B A B …, so that a machine whose speed drifts affects both alike). Printed per command: the
median wall time and the median CPU time (user + system, from the kernel's accounting of the
finished child: on a shared, busy machine the wall time includes waiting for a core, the CPU
time does not), each beside the baseline's, and the median of the command's own start-up (its
CPU time minus the baseline run's beside it), which is the figure the target (< 0.25 s) is about.

    .venv/bin/python bench/bench_startup.py                                 # this tree
    .venv/bin/python bench/bench_startup.py --source /tmp/wl-before         # another checkout
    .venv/bin/python bench/bench_startup.py --data-dir /tmp/lake             # and questions

With ``--data-dir DIR`` (a lake, e.g. 5 devices x 14 days of ``bench/fleet.py`` imported and
rolled up) it also times the short questions of issue 27 on it: ``query "select 1"``, a count
of the readings and a daily ``energy`` over ``--start``/``--end`` (the plan cache beside the
catalog is warm after the warm-up run, as for a user who asks again).

With ``--source DIR`` (repeatable) the command imports ``wattlake`` (and any other package
found there first, e.g. an unpacked older wheel of typer) from DIR, e.g. a ``git worktree`` of
an older commit for a before/after comparison; the editable install's finder is switched off
for that run (``PYTHONPATH`` alone is not enough: the finder still maps ``wattlake.cli``).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

COMMANDS: tuple[tuple[str, ...], ...] = (("--help",), ("--version",), ("query", "--help"))
ENTRY = "import sys; from wattlake.cli import main; sys.argv[0] = 'wattlake'; sys.exit(main())"
FROM_SOURCE = """import sys
def _editable(f): return "editable" in (f.__module__ if isinstance(f, type) else type(f).__module__)
sys.meta_path[:] = [f for f in sys.meta_path if not _editable(f)]
sys.path_hooks[:] = [h for h in sys.path_hooks if "editable" not in getattr(h, "__module__", "")]
sys.path_importer_cache.clear()
sys.path[0:0] = {sources!r}
"""
BASELINE = (sys.executable, "-c", "pass")


def run_s(argv: tuple[str, ...] | list[str]) -> tuple[float, float]:
    """Return the wall and CPU time of one run of ``argv`` [s] (its output is thrown away)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def measure(args: tuple[str, ...], runs: int, sources: list[str]) -> dict[str, float]:
    """Time ``wattlake args`` and the baseline in turn; return medians [s]."""
    entry = (FROM_SOURCE.format(sources=sources) + ENTRY.replace("; ", "\n")) if sources else ENTRY
    command = [sys.executable, "-c", entry, *args]
    run_s(command), run_s(BASELINE)  # warm-up: the file cache, .pyc files
    pairs = [(run_s(command), run_s(BASELINE)) for _ in range(runs)]
    return {
        "wall_s": statistics.median(a[0] for a, _ in pairs),
        "baseline_wall_s": statistics.median(b[0] for _, b in pairs),
        "cpu_s": statistics.median(a[1] for a, _ in pairs),
        "baseline_cpu_s": statistics.median(b[1] for _, b in pairs),
        "own_cpu_s": statistics.median(a[1] - b[1] for a, b in pairs),
    }


def main() -> None:
    """Print one line per command."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="counted runs per command")
    parser.add_argument(
        "--source", action="append", default=[], help="import wattlake from this folder first"
    )
    parser.add_argument("--data-dir", help="also time questions over the lake in this folder")
    parser.add_argument("--start", default="2026-01-01", help="energy question: first day")
    parser.add_argument("--end", default="2026-01-15", help="energy question: end day")
    options = parser.parse_args()
    commands = list(COMMANDS)
    if options.data_dir:
        os.environ["WATTLAKE_DATA_DIR"] = options.data_dir
        commands += [
            ("query", "select 1"),
            ("query", "select count(*) from readings"),
            ("energy", "--start", options.start, "--end", options.end, "--every", "day"),
        ]
    where = ", ".join(options.source) or "this tree"
    print(f"wattlake start-up ({where}), {options.runs} runs each, baseline: python -c pass")
    print("medians [s]: wall (baseline), CPU (baseline), own start-up = CPU - baseline CPU")
    print(f"{'command':<40} {'wall':>7} {'(base)':>7} {'cpu':>7} {'(base)':>7} {'own':>7}")
    for args in commands:
        f = measure(args, options.runs, options.source)
        name = "wattlake " + " ".join(args)
        print(
            f"{name[:40]:<40} {f['wall_s']:>7.3f} {f['baseline_wall_s']:>7.3f} "
            f"{f['cpu_s']:>7.3f} {f['baseline_cpu_s']:>7.3f} {f['own_cpu_s']:>7.3f}"
        )


if __name__ == "__main__":
    main()
