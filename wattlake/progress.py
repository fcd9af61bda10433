"""How long library calls report progress: one optional callback, ``on_progress(done, total)``.

The convention, for every call that can take more than a second (import, compaction, rollups,
history backfill, the drain at a stop, any job):

- take a keyword-only argument ``on_progress: ProgressCallback | None = None``;
- call it with ``(done, total)``: ``done`` counts units of work finished so far (rows, files,
  days, messages: say which in the docstring), ``total`` is how many there are in all, or
  ``None`` while that is not known;
- call it at least once at the start (``done=0``) and once at the end (``done == total``), and in
  between no more often than is cheap (every batch, file or day, not every row);
- never print or log from it: the caller decides what to show. The CLI passes a callback that
  draws a ``rich`` progress bar on a terminal (``wattlake.cli.output.progress``) and passes
  nothing, or a no-op, in pipes and with ``--format json``.

The library module imports only ``ProgressCallback`` from here (no ``rich``, no CLI).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

ProgressCallback: TypeAlias = Callable[[int, int | None], None]
"""``on_progress(done, total)``: units finished so far, and in all (``None``: not known yet)."""


def no_progress(done: int, total: int | None) -> None:
    """Ignore a progress report (the default of every ``on_progress``)."""
