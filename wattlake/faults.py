"""The one fault-injection seam: crash tests have a process SIGKILL itself at a named step.

A test sets ``WATTLAKE_TEST_CRASH_AT`` (:data:`CRASH_ENV`) to one step name; the process that
reaches :func:`crash_point` with that name dies at once, as a kill -9 would have it. Unset
(always, outside tests) every crash point does nothing. The steps:

- ``files-written``: an append wrote its data files, nothing committed (lake/tables.py).
- ``commit-in-flight``: a commit wrote the table's new metadata, the catalog does not point to
  it yet (lake/tables.py, through lake/pyiceberg_compat.py).
- ``commit-done``: the lake writer committed a flush, its WAL not yet trimmed
  (stream/writer.py).
- ``wal-partly-trimmed``: the lake writer deleted some of a flush's WAL segments, not all
  (stream/writer.py).
- ``migrate-files-written``, ``migrate-committed``, ``migrate-moving``: a migration batch wrote
  its files, committed them, and is moving its held rows (jobs/migrate.py).
"""

from __future__ import annotations

import os
import signal
from typing import Final

CRASH_ENV: Final = "WATTLAKE_TEST_CRASH_AT"


def armed(step: str) -> bool:
    """Return True when the crash test asks the process to die at ``step``."""
    return os.environ.get(CRASH_ENV) == step


def crash_point(step: str) -> None:
    """Die at once (SIGKILL) when the crash test asks for ``step``."""
    if armed(step):
        os.kill(os.getpid(), signal.SIGKILL)
