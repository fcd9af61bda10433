"""History files into the lake through the same decoding and dead letters as live data.

The file's shape is checked before anything is written (:meth:`FileRows.check`). Parquet and
CSV files of readings are then read in columns (:mod:`wattlake.stream.file_columns`): a block of
rows that passes the generic format's checks as a whole becomes canonical readings without a
message per row, and these are appended to the lake in large data files (one commit per
``stream.buffer_max_rows`` readings, not per few thousand rows). From the first block that
does not pass (a row without ``ts``, text in a number column, a time out of range) on, rows go
one by one through the delivery
stream as messages of the generic format, exactly as live data: a row that cannot be a reading
becomes a dead letter with its row number, and the buffer is written whenever it reaches its
limits and at the end. JSON lines and Shelly exports always take the row path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from wattlake.config import Settings
from wattlake.devices.base import RawMessage
from wattlake.gateway.files import FileRows, RowProblem
from wattlake.lake.storage import Lake
from wattlake.progress import ProgressCallback, no_progress
from wattlake.stream.delivery import stream_from_settings
from wattlake.stream.file_columns import import_columns

IMPORT_BATCH = 10_000
"""Rows handed to the stream at once."""


@dataclass(slots=True)
class ImportSummary:
    """What one file's import did."""

    file_name: str
    lake_url: str
    rows_read: int = 0
    stored: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    first_problems: list[str] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        """Return the number of rows kept as dead letters."""
        return sum(self.rejected_by_reason.values())

    def line(self) -> str:
        """Return the one-line summary: rows read, stored, rejected by reason."""
        text = f"{self.file_name}: {self.rows_read} row(s) read, {self.stored} stored"
        if self.rejected:
            reasons = ", ".join(f"{n} {r}" for r, n in sorted(self.rejected_by_reason.items()))
            text += f", {self.rejected} rejected ({reasons})"
        return text + f"; lake {self.lake_url}"


def import_file(
    settings: Settings,
    rows: FileRows,
    *,
    on_progress: ProgressCallback | None = None,
    received_at_ms: int | None = None,
) -> ImportSummary:
    """Check ``rows``' file, then decode its rows into the lake; return what happened.

    ``on_progress(done, total)`` counts rows read (``total``: the file's row count).
    ``received_at_ms`` [epoch ms] is the receive time of every row (default: now); a caller
    that gives each file its own finds the file's rows in the lake by it.

    Raises:
        wattlake.errors.UsageError: the file is missing, or rows need a device id.
        wattlake.errors.BadInputError: the file is not of its format or its columns are not
            readings (nothing is written then).
        wattlake.errors.StorageError: the lake could not be written.
    """
    report = on_progress or no_progress
    shape = rows.check()
    lake = Lake.from_settings(settings)
    stream = stream_from_settings(settings, lake)
    summary = ImportSummary(rows.path.name, lake.url)
    report(0, shape.rows)
    if received_at_ms is None:
        received_at_ms = time.time_ns() // 1_000_000
    done = import_columns(
        lake,
        rows,
        shape.columns,
        received_at_ms,
        append_rows=settings["stream.buffer_max_rows"],
        on_progress=lambda n, _: report(n, shape.rows),
    )
    batch: list[RawMessage] = []
    read = 0
    items = () if done.complete else rows.messages(received_at_ms=received_at_ms)
    for item in items:
        read += 1
        if read <= done.rows:  # taken by the column path
            continue
        if isinstance(item, RowProblem):
            stream.reject(item.message, item.reason, item.text)
            if len(summary.first_problems) < 3:
                summary.first_problems.append(item.text)
            continue
        batch.append(item)
        if len(batch) >= IMPORT_BATCH:
            stream.accept(batch)
            batch = []
            report(read, shape.rows)
            if stream.flush_wanted():  # the buffer's byte and row limits bound memory
                stream.flush()
    stream.accept(batch)
    stream.flush()
    read = max(read, done.rows)  # the column path may have read the whole file
    report(read, max(read, shape.rows or 0))
    summary.rows_read = read
    summary.stored = stream.stats.readings + done.rows
    summary.rejected_by_reason = dict(stream.stats.dead_letters_by_reason)
    return summary
