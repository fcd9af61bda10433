"""History files as another way in: each row becomes a message in the generic device format.

Rows then go through the same decoder, validation and dead-letter handling as live data
(``wattlake import``). Formats:

- ``csv``: a header row of canonical column names (``ts``, ``device_id``, ``channel``,
  ``power_w``, ``energy_wh`` …); ``ts`` as ISO 8601 (an offset or ``Z``; naive means UTC) or
  epoch seconds. ``received_at`` and ``source`` (as in an export of ``wattlake query``) are
  dropped: the lake sets them again.
- ``jsonl``: one JSON object per line with the same names.
- ``parquet``: a table with the same column names.
- ``shelly-csv``: the per-minute CSV a Shelly Gen2+ meter exports from its ``EM1Data``/``EMData``
  store (``timestamp (UTC)`` or ``timestamp`` in epoch seconds, then ``total_act_energy`` [Wh]
  and ``total_act_ret_energy`` [Wh] per interval, and voltage/current statistics). Each row is
  one interval: wattlake stores its average power, ``(import - export) * 3600 / period`` [W], at
  the interval's start, so that the ``left`` integration rule gives back the exported energies
  exactly; ``avg_voltage`` and ``avg_current`` go to ``voltage_v``/``current_a``.
"""

from __future__ import annotations

import csv
import enum
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import msgspec
import pyarrow.parquet as pq

from wattlake.devices.base import RawMessage
from wattlake.errors import BadInputError, UsageError

GENERIC_TOPIC: Final = "wattlake/{device_id}/readings"
SHELLY_TS_COLUMNS: Final = ("timestamp (UTC)", "timestamp", "ts")
# Columns the lake sets itself (a query export carries them): dropped, set again on import.
LAKE_SET_COLUMNS: Final = ("received_at", "source")
# Shelly export column -> canonical column, for the statistics that map one to one.
SHELLY_CSV_MAP: Final = {"avg_voltage": "voltage_v", "avg_current": "current_a"}


class FileFormat(enum.StrEnum):
    """Formats ``wattlake import`` reads."""

    csv = "csv"
    jsonl = "jsonl"
    parquet = "parquet"
    shelly_csv = "shelly-csv"


def guess_format(path: Path) -> FileFormat:
    """Return the format a file's name suggests.

    Raises:
        UsageError: the suffix is not one wattlake knows; the message says to pass --format.
    """
    suffix = path.suffix.lower()
    by_suffix = {".csv": FileFormat.csv, ".jsonl": FileFormat.jsonl, ".ndjson": FileFormat.jsonl}
    by_suffix[".parquet"] = FileFormat.parquet
    if suffix not in by_suffix:
        raise UsageError(f"Cannot tell the format of {path.name}; pass --format.")
    return by_suffix[suffix]


@dataclass(frozen=True, slots=True)
class FileRows:
    """Messages made from a file's rows, one per row, in file order."""

    path: Path
    file_format: FileFormat
    device_id: str | None = None
    channel: int = 0
    period_s: float = 60.0

    def messages(self, received_at_ms: int) -> Iterator[RawMessage]:
        """Yield one generic-format message per row.

        Raises:
            BadInputError: the file cannot be read at all (missing, not CSV/Parquet).
        """
        encoder = msgspec.json.Encoder()
        for row in self._rows():
            if isinstance(row, bytes):  # not even JSON: the decoder dead-letters it as it is
                device = self.device_id or "unknown"
                yield RawMessage(GENERIC_TOPIC.format(device_id=device), row, received_at_ms)
                continue
            row = _canonical(row)
            device = str(row.get("device_id") or self.device_id or "")
            if self.device_id is not None:
                row["device_id"] = self.device_id
            if not device:
                raise UsageError(f"{self.path.name} has rows without device_id; pass --device ID.")
            payload = encoder.encode(row)
            yield RawMessage(GENERIC_TOPIC.format(device_id=device), payload, received_at_ms)

    def _rows(self) -> Iterator[dict[str, Any] | bytes]:
        try:
            if self.file_format is FileFormat.parquet:
                yield from _parquet_rows(self.path)
            elif self.file_format is FileFormat.jsonl:
                yield from _jsonl_rows(self.path)
            elif self.file_format is FileFormat.csv:
                yield from _csv_rows(self.path)
            else:
                yield from self._shelly_rows()
        except FileNotFoundError as exc:
            raise UsageError(f"{self.path} does not exist.") from exc
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise BadInputError(f"Cannot read {self.path}: {exc}.") from exc

    def _shelly_rows(self) -> Iterator[dict[str, Any]]:
        if self.device_id is None:
            raise UsageError("A Shelly CSV export does not name its device; pass --device ID.")
        with self.path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = reader.fieldnames or []
            ts_column = next((c for c in SHELLY_TS_COLUMNS if c in fields), None)
            if ts_column is None or "total_act_energy" not in fields:
                raise BadInputError(
                    f"{self.path.name} is not a Shelly energy export: it needs a timestamp "
                    "column and total_act_energy."
                )
            for line in reader:
                row: dict[str, Any] = {
                    "ts": _number_or_text(line.get(ts_column)),
                    "channel": self.channel,
                    "power_w": _average_power_w(line, self.period_s),
                }
                for vendor, column in SHELLY_CSV_MAP.items():
                    if line.get(vendor) not in (None, ""):
                        row[column] = _number_or_text(line[vendor])
                yield row


def _canonical(row: dict[str, Any]) -> dict[str, Any]:
    """Make a file row a generic-format reading: lake-set columns out, naive ts as UTC."""
    for column in LAKE_SET_COLUMNS:
        row.pop(column, None)
    ts = row.get("ts")
    if isinstance(ts, str):
        row["ts"] = _utc_iso(ts)
    channel = row.get("channel")
    if isinstance(channel, float) and channel.is_integer():
        row["channel"] = int(channel)  # CSV cells arrive as floats; the format wants an int
    return row


def _utc_iso(text: str) -> str:
    """Return ISO 8601 ``text`` with an offset: a naive time is UTC. Anything else unchanged."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return text  # the decoder refuses it and says why
    return text if moment.tzinfo is not None else moment.replace(tzinfo=UTC).isoformat()


def _average_power_w(line: dict[str, str], period_s: float) -> Any:
    """Return the interval's mean power [W] from its import and export energy [Wh]."""
    imported = _number_or_text(line.get("total_act_energy"))
    exported = _number_or_text(line.get("total_act_ret_energy") or "0")
    if not isinstance(imported, float) or not isinstance(exported, float):
        return imported if not isinstance(imported, float) else exported  # the decoder refuses it
    return (imported - exported) * 3600.0 / period_s


def _number_or_text(value: str | None) -> Any:
    """Return a CSV cell as a float when it is one, None when empty, else the text unchanged."""
    if value is None or value.strip() == "":
        return None
    try:
        number = float(value)
    except ValueError:
        return value
    return number if math.isfinite(number) else value


def _csv_rows(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        for line in csv.DictReader(fh):
            row = {k: _number_or_text(v) for k, v in line.items() if k is not None}
            for text_column in ("device_id", "source"):
                if isinstance(row.get(text_column), float):
                    row[text_column] = str(line[text_column])
            yield {k: v for k, v in row.items() if v is not None}


def _jsonl_rows(path: Path) -> Iterator[dict[str, Any] | bytes]:
    with path.open("rb") as fh:
        for raw in fh:
            if not raw.strip():
                continue
            try:
                row = msgspec.json.decode(raw)
            except msgspec.DecodeError:
                row = None
            yield row if isinstance(row, dict) else raw.rstrip(b"\r\n")


def _parquet_rows(path: Path) -> Iterator[dict[str, Any]]:
    parquet = pq.ParquetFile(path)
    for batch in parquet.iter_batches(batch_size=65_536):
        for row in batch.to_pylist():
            for key, value in list(row.items()):
                if isinstance(value, datetime):
                    moment = value if value.tzinfo else value.replace(tzinfo=UTC)
                    row[key] = moment.isoformat()
                elif value is None:
                    del row[key]
            yield row
