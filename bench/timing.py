"""Timing shared by the benchmark scripts."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    """Return the shortest of ``repeat`` runs of ``fn`` [s], the least disturbed by noise."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


_ADDED = "BENCH_CLI_DEFAULTS_ADDED"  # which variables as_cli_process added (not the user's)


def as_cli_process() -> None:
    """Re-run this script, if need be, with the environment a ``wattlake`` command sets for
    its own process (``wattlake.cli.PROCESS_DEFAULTS``, read before numpy is imported), so
    library calls are timed as the command makes them; variables already set are kept."""
    from wattlake.cli import PROCESS_DEFAULTS

    missing = {k: v for k, v in PROCESS_DEFAULTS.items() if k not in os.environ}
    if missing:
        added = ",".join(sorted(missing))
        os.execve(
            sys.executable, [sys.executable, *sys.argv], {**os.environ, **missing, _ADDED: added}
        )


def user_environ() -> dict[str, str]:
    """Return the environment without what :func:`as_cli_process` added (for a child process
    that should start as another revision's command would)."""
    added = set(filter(None, os.environ.get(_ADDED, "").split(",")))
    return {k: v for k, v in os.environ.items() if k not in added and k != _ADDED}
