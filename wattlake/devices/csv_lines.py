"""CSV over MQTT: readings as comma-separated lines, for loggers that cannot write JSON.

Topic ``wattlake/<device_id>/csv``; the payload is UTF-8 CSV text (RFC 4180 quoting) whose
first line names the columns and each further line is one reading. Column names are the
generic format's (:data:`wattlake.devices.generic.FIELDS`): ``ts`` (epoch seconds, or ISO 8601
with an offset; empty or absent: the receive time), ``device_id`` (empty or absent: the
topic's), ``channel`` (empty or absent: 0) and any measurement column (``power_w`` [W],
``energy_wh`` [Wh] …; empty: unknown). For example::

    ts,channel,power_w,energy_wh
    1733616000,0,412.5,1203344.0
    1733616000,1,-96.0,88120.5

A payload without a reading line, an unknown column, a value that is not a number, a
non-finite number, a row with more or fewer fields than the header or a bad time refuses the
whole message (a dead letter keeps its bytes); the router refuses a message naming another
device (``identity-mismatch``). The device's own topics are ``wattlake/<id>/…``, as for the
generic format, so its ACLs are the same.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Final

from wattlake.devices.base import RawMessage
from wattlake.devices.descriptor import DeviceFormat, Enrolment, Route
from wattlake.devices.generic import FIELDS, topic_device, ts_ms
from wattlake.devices.status import StatusRegistry
from wattlake.errors import DecodeError
from wattlake.schema import MEASUREMENT_COLUMNS, Reading

SOURCE: Final = "csv"
LEAF: Final = "csv"
MAX_CHANNEL: Final = 32_767


def _number(column: str, text: str, line: int) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise DecodeError(
            "bad-type", f"line {line}: {column} {text[:40]!r} is not a number"
        ) from exc
    if not math.isfinite(value):
        raise DecodeError("not-finite", f"line {line}: {column} is {text[:40]!r}")
    return value


def _channel(text: str, line: int) -> int:
    if not text:
        return 0
    if not text.isdigit() or int(text) > MAX_CHANNEL:
        raise DecodeError("bad-type", f"line {line}: channel {text[:40]!r} is not 0..32767")
    return int(text)


def _ts(text: str, received_at_ms: int, line: int) -> int:
    if not text:
        return received_at_ms
    try:
        seconds: float | str = float(text)
    except ValueError:
        seconds = text  # ISO 8601 text: ts_ms checks it
    try:
        return ts_ms(seconds, received_at_ms)
    except DecodeError as exc:
        raise DecodeError(exc.reason, f"line {line}: {exc}") from exc


class CsvDecoder:
    """Decode CSV messages: a header line of canonical column names, one reading per line."""

    source = SOURCE

    def __init__(self, status: StatusRegistry | None = None) -> None:
        self.status = status or StatusRegistry()

    def decode(self, message: RawMessage) -> list[Reading]:
        """Return one reading per data line of the message.

        Raises:
            DecodeError: ``unknown-topic``, ``invalid-csv``, ``unknown-field``, ``bad-type``,
                ``not-finite`` or ``bad-timestamp``.
        """
        device_id = topic_device(message.topic, LEAF)
        try:
            rows = list(csv.reader(io.StringIO(message.payload.decode("utf-8"))))
        except (UnicodeDecodeError, csv.Error) as exc:
            raise DecodeError("invalid-csv", f"payload is not UTF-8 CSV text: {exc}") from exc
        rows = [row for row in rows if row]
        if len(rows) < 2:
            what = "a header line and no reading" if rows else "no header line"
            raise DecodeError("invalid-csv", f"payload has {what}")
        header = [name.strip() for name in rows[0]]
        unknown = [name for name in header if name not in FIELDS]
        if unknown or len(set(header)) != len(header):
            what = f"unknown column {unknown[0][:40]!r}" if unknown else "a repeated column"
            raise DecodeError("unknown-field", f"header has {what}; use {', '.join(FIELDS)}")
        self.status.seen(device_id, SOURCE, message.received_at_ms)
        readings: list[Reading] = []
        for line, row in enumerate(rows[1:], start=2):
            if len(row) != len(header):
                raise DecodeError(
                    "invalid-csv", f"line {line} has {len(row)} fields, the header {len(header)}"
                )
            values = dict(zip(header, (v.strip() for v in row), strict=True))
            reading: Reading = {
                "ts": _ts(values.get("ts", ""), message.received_at_ms, line),
                "received_at": message.received_at_ms,
                "device_id": values.get("device_id") or device_id,
                "channel": _channel(values.get("channel", ""), line),
                "source": SOURCE,
            }
            for column in MEASUREMENT_COLUMNS:
                if values.get(column):
                    reading[column] = _number(column, values[column], line)
            readings.append(reading)
        return readings


def instructions(enrolment: Enrolment) -> list[str]:
    """Return where and how a CSV logger publishes (MQTT over TLS)."""
    device_id = enrolment.device_id
    return [
        f"CSV logger {device_id}: publish CSV (a header line of column names, then one reading",
        f"  a line) to wattlake/{device_id}/{LEAF} on mqtts://{enrolment.broker_host}:"
        f"{enrolment.tls_port} with client id {device_id},",
        "  the certificate and key written to the security folder."
        if enrolment.cert_pem
        else f"  user {device_id} and password {enrolment.password}",
    ]


def render(device_id: str, readings: list[Reading]) -> tuple[str, bytes]:
    """Return the topic and CSV payload of ``device_id``'s ``readings`` (``ts`` [ms] written as
    epoch seconds)."""
    columns = ["ts", "channel", *(c for c in MEASUREMENT_COLUMNS if any(c in r for r in readings))]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for reading in readings:
        row = {**reading, "ts": reading["ts"] / 1000}
        writer.writerow(["" if row.get(c) is None else row[c] for c in columns])
    return f"wattlake/{device_id}/{LEAF}", out.getvalue().encode()


FORMAT: Final = DeviceFormat(
    name="csv",
    title="CSV logger",
    routes=(Route(f"wattlake/+/{LEAF}", 1),),
    decoder=CsvDecoder,
    instructions=instructions,
    topic_root="wattlake",
    render=render,
)
