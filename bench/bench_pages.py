"""What fresh memory costs a process, with and without numpy's huge-page advice.

Run: ``.venv/bin/python bench/bench_pages.py [--gb 2] [--repeat 2]``. Each run is a new process
that fills ``--gb`` GB of fresh ``np.ones`` three times (freed in between), once with
``NUMPY_MADVISE_HUGEPAGE=1`` (numpy's default on Linux 4.6 and later) and once with ``0`` (what
a ``wattlake`` process sets, ``wattlake.cli.PROCESS_DEFAULTS``), alternated; prints the first
fill and the later ones. See the sixth pass in docs/lake.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def worker(gb: float) -> None:
    """Fill ``gb`` GB of fresh memory three times; print the seconds of each as JSON."""
    import numpy as np

    seconds = []
    for _ in range(3):
        began = time.perf_counter()
        filled = np.ones(int(gb * 1e9 / 8))
        seconds.append(time.perf_counter() - began)
        del filled
    print(json.dumps(seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gb", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.gb)
        return
    print(f"fresh np.ones of {args.gb:g} GB, three times per process, load {os.getloadavg()}")
    for _ in range(args.repeat):
        for advice in ("1", "0"):
            env = {**os.environ, "NUMPY_MADVISE_HUGEPAGE": advice}
            command = [sys.executable, str(Path(__file__)), "--worker", "--gb", str(args.gb)]
            done = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
            first, *later = json.loads(done.stdout)
            print(
                f"  huge-page advice {'on ' if advice == '1' else 'off'}: first {first:.2f} s, "
                f"then {', '.join(f'{s:.2f}' for s in later)} s"
            )


if __name__ == "__main__":
    main()
