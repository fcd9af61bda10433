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

Checks come in two steps. :meth:`FileRows.check` reads only the header (CSV), the first line
(JSONL) or the schema (Parquet) and refuses a file of the wrong kind or shape, before anything is
written. Then each row that cannot be a reading (no ``ts``, text in a number column) is yielded
as a :class:`RowProblem` with its row number (the first row after a header is row 1), so that it
can be kept as a dead letter while the valid rows go on.
"""

from __future__ import annotations

import csv
import enum
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from wattlake.errors import BadInputError, UsageError

if TYPE_CHECKING:
    from wattlake.devices.base import RawMessage

GENERIC_TOPIC: Final = "wattlake/{device_id}/readings"
SHELLY_TS_COLUMNS: Final = ("timestamp (UTC)", "timestamp", "ts")
# Columns the lake sets itself (a query export carries them): dropped, set again on import.
LAKE_SET_COLUMNS: Final = ("received_at", "source")
# Shelly export column -> canonical column, for the statistics that map one to one.
SHELLY_CSV_MAP: Final = {"avg_voltage": "voltage_v", "avg_current": "current_a"}
# Columns of a readings file: the generic format's fields (a test keeps the two equal).
TEXT_COLUMNS: Final = ("ts", "device_id")
NUMBER_COLUMNS: Final = (
    "channel",
    "power_w",
    "apparent_power_va",
    "reactive_power_var",
    "voltage_v",
    "current_a",
    "pf",
    "freq_hz",
    "energy_wh",
    "returned_energy_wh",
)
READING_COLUMNS: Final = TEXT_COLUMNS + NUMBER_COLUMNS


class FileFormat(enum.StrEnum):
    """Formats ``wattlake import`` reads."""

    csv = "csv"
    jsonl = "jsonl"
    parquet = "parquet"
    shelly_csv = "shelly-csv"


def guess_format(path: Path) -> FileFormat:
    """Return the format a file's name suggests.

    Raises:
        UsageError: the suffix is not one wattlake knows.
    """
    suffix = path.suffix.lower()
    by_suffix = {".csv": FileFormat.csv, ".jsonl": FileFormat.jsonl, ".ndjson": FileFormat.jsonl}
    by_suffix[".parquet"] = FileFormat.parquet
    if suffix not in by_suffix:
        known = ", ".join(f.value for f in FileFormat)
        raise UsageError(
            f"Cannot tell the format of {path.name} from its name; say which it is ({known})."
        )
    return by_suffix[suffix]


@dataclass(frozen=True, slots=True)
class RowProblem:
    """A row that cannot be a reading: kept as a dead letter, the other rows go on."""

    row: int
    reason: str
    text: str
    message: RawMessage


@dataclass(frozen=True, slots=True)
class FileShape:
    """What :meth:`FileRows.check` found: the file's columns and how many rows it has."""

    columns: tuple[str, ...]
    rows: int | None


@dataclass(frozen=True, slots=True)
class FileRows:
    """Messages made from a file's rows, one per row, in file order."""

    path: Path
    file_format: FileFormat
    device_id: str | None = None
    channel: int = 0
    period_s: float = 60.0

    def check(self) -> FileShape:
        """Read the header, first line or schema, and refuse a file of the wrong kind or shape.

        Raises:
            UsageError: the file does not exist, or rows need a device id and none was given.
            BadInputError: the file is not of its format, or its columns are not readings.
        """
        if not self.path.is_file():
            raise UsageError(f"{self.path} does not exist or is not a file.")
        try:
            if self.file_format is FileFormat.parquet:
                columns = _parquet_columns(self.path)
            elif self.file_format is FileFormat.jsonl:
                columns = _jsonl_columns(self.path)
            else:
                columns = _csv_columns(self.path)
        except OSError as exc:
            raise BadInputError(f"Cannot read {self.path}: {exc.strerror or exc}.") from exc
        if self.file_format is FileFormat.shelly_csv:
            self._check_shelly(columns)
        else:
            self._check_readings(columns)
        return FileShape(columns, _count_rows(self.path, self.file_format))

    def _check_readings(self, columns: tuple[str, ...]) -> None:
        name, kind = self.path.name, self.file_format.value
        if "total_act_energy" in columns:
            raise BadInputError(
                f"{name} looks like a Shelly energy export, not a {kind} file of readings; "
                "import it as shelly-csv with the device id."
            )
        unknown = [c for c in columns if c not in READING_COLUMNS and c not in LAKE_SET_COLUMNS]
        if "ts" not in columns or unknown:
            what = f"unknown column(s) {', '.join(unknown[:6])}" if unknown else "no ts column"
            raise BadInputError(
                f"{name} is not a {kind} file of readings: it has {what}; its columns must be "
                f"among {', '.join(READING_COLUMNS)} (see docs/import.md)."
            )
        if "device_id" not in columns and self.device_id is None:
            raise UsageError(f"{name} has no device_id column; give the device id of its rows.")

    def _check_shelly(self, columns: tuple[str, ...]) -> None:
        if self.device_id is None:
            raise UsageError("A Shelly CSV export does not name its device; give its device id.")
        if not any(c in columns for c in SHELLY_TS_COLUMNS) or "total_act_energy" not in columns:
            raise BadInputError(
                f"{self.path.name} is not a Shelly energy export: it needs a timestamp "
                "column and total_act_energy."
            )

    def messages(self, received_at_ms: int) -> Iterator[RawMessage | RowProblem]:
        """Yield one generic-format message per row, or a :class:`RowProblem` for a bad row.

        Call :meth:`check` first: this does not check the file's shape again.

        Raises:
            BadInputError: the file cannot be read (it changed, or a line is not text).
        """
        import msgspec

        from wattlake.devices.base import RawMessage

        encoder = msgspec.json.Encoder()
        for number, row in enumerate(self._rows(), start=1):
            if isinstance(row, bytes):  # not even a JSON object: kept as it is
                device = self.device_id or "unknown"
                message = RawMessage(GENERIC_TOPIC.format(device_id=device), row, received_at_ms)
                text = f"{self.path.name} row {number}: not a JSON object"
                yield RowProblem(number, "invalid-json", text, message)
                continue
            row = _canonical(row)
            if self.device_id is not None:
                row["device_id"] = self.device_id
            device = str(row.get("device_id") or "unknown")
            message = RawMessage(
                GENERIC_TOPIC.format(device_id=device), encoder.encode(row), received_at_ms
            )
            problem = _row_problem(row)
            if problem is not None:
                reason, text = problem
                yield RowProblem(number, reason, f"{self.path.name} row {number}: {text}", message)
            else:
                yield message

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
        except UnicodeDecodeError as exc:
            raise BadInputError(f"{self.path.name} is not a text file: {exc.reason}.") from exc
        except (OSError, csv.Error) as exc:
            raise BadInputError(f"Cannot read {self.path}: {exc}.") from exc

    def _shelly_rows(self) -> Iterator[dict[str, Any]]:
        with self.path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = reader.fieldnames or []
            ts_column = next((c for c in SHELLY_TS_COLUMNS if c in fields), "ts")
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
    import msgspec

    with path.open("rb") as fh:
        for raw in fh:
            if not raw.strip():
                continue
            try:
                row = msgspec.json.decode(raw)
            except msgspec.DecodeError:
                row = None
            yield row if isinstance(row, dict) else raw.rstrip(b"\r\n")


def _row_problem(row: dict[str, Any]) -> tuple[str, str] | None:
    """Return (reason, text) when a file row cannot be a reading, else None."""
    ts = row.get("ts")
    if ts is None or (type(ts) is str and not ts.strip()):
        return "missing-timestamp", "ts is empty"
    if type(ts) is str:
        try:
            datetime.fromisoformat(ts.strip())
        except ValueError:
            return "bad-timestamp", f"ts {ts[:40]!r} is neither ISO 8601 nor epoch seconds"
    if not row.get("device_id"):
        return "missing-device", "device_id is empty"
    for column, value in row.items():  # type() checks: this runs once per row
        if column in _NUMBER_SET and value is not None:
            kind = type(value)
            if not (kind is int or (kind is float and math.isfinite(value))):
                return "bad-type", f"{column} is {str(value)[:40]!r}, not a number"
    return None


_NUMBER_SET: Final = frozenset(NUMBER_COLUMNS)


def _csv_columns(path: Path) -> tuple[str, ...]:
    with path.open("rb") as fh:
        head = fh.read(65_536)
    if head.startswith(b"PAR1"):
        raise BadInputError(f"{path.name} is a Parquet file, not CSV; import it as parquet.")
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a character cut at the end of the sample
            raise BadInputError(f"{path.name} is not a text CSV file.") from exc
        text = head[: exc.start].decode("utf-8-sig")
    first = text.splitlines()[0] if text.strip() else ""
    if not first.strip():
        raise BadInputError(f"{path.name} is empty: a CSV file needs a header row.")
    try:
        header = next(csv.reader([first]))
    except csv.Error as exc:
        raise BadInputError(f"{path.name} has no readable CSV header: {exc}.") from exc
    return tuple(c.strip() for c in header)


def _jsonl_columns(path: Path) -> tuple[str, ...]:
    import msgspec

    with path.open("rb") as fh:
        head = fh.read(4)
        if head.startswith(b"PAR1"):
            raise BadInputError(
                f"{path.name} is a Parquet file, not JSON lines; import it as parquet."
            )
        fh.seek(0)
        for raw in fh:
            if raw.strip():
                try:
                    first = msgspec.json.decode(raw)
                except msgspec.DecodeError:
                    first = None
                if not isinstance(first, dict):
                    raise BadInputError(
                        f"{path.name} is not JSON lines of readings: its first line is not a "
                        "JSON object."
                    )
                return tuple(str(k) for k in first)
    raise BadInputError(f"{path.name} is empty.")


def _parquet_columns(path: Path) -> tuple[str, ...]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, pa.ArrowIOError) as exc:
        raise BadInputError(f"{path.name} is not a Parquet file.") from exc
    return tuple(schema.names)


def _count_rows(path: Path, file_format: FileFormat) -> int | None:
    """Return the number of data rows (for progress), counting lines of a text file."""
    if file_format is FileFormat.parquet:
        import pyarrow.parquet as pq

        return int(pq.read_metadata(path).num_rows)
    lines = 0
    last = b"\n"
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    lines += last != b"\n"  # a last line without its newline
    return max(0, lines - (file_format is not FileFormat.jsonl))


def _parquet_rows(path: Path) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

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
