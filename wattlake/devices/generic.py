"""The generic JSON format: canonical readings published by any device or script.

Topic ``wattlake/<device_id>/readings``; the payload is one reading object or an array of them
(device-side batching). Keys are the canonical column names (:data:`FIELDS`): ``ts``
(optional: epoch seconds as a number, or an ISO 8601 string with an offset; default the receive
time), ``device_id`` (optional; default the topic's), ``channel`` (default 0) and any
measurement column (``power_w``, ``energy_wh`` …, null or absent when unknown). Any other key
is refused. One bad reading refuses the whole message, so nothing is silently dropped (the stream
keeps the raw bytes as a dead letter). A reading's ``device_id`` is what it names; the router
refuses a message naming a device other than its publisher (``identity-mismatch``, see
:mod:`wattlake.devices.identity`).

Arrays of :data:`TABLE_MIN_READINGS` or more are decoded into typed structs by msgspec and
returned as an Arrow table in the canonical schema, built column by column and checked with
vectorized kernels; smaller messages become reading dicts.
"""

from __future__ import annotations

import io
import operator
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Final

import msgspec
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from wattlake.devices.base import Decoded, RawMessage
from wattlake.devices.descriptor import DeviceFormat, Enrolment, Route
from wattlake.devices.status import StatusRegistry
from wattlake.devices.validate import MAX_FUTURE_MS, MIN_TS_MS, timestamp_ms
from wattlake.errors import DecodeError
from wattlake.schema import (
    COLUMNS,
    MEASUREMENT_COLUMNS,
    READING_SCHEMA,
    TS_TYPE,
    Reading,
    readings_to_table,
)

SOURCE: Final = "generic"
LEAF: Final = "readings"
# Arrays at least this long come back as an Arrow table (fewer: reading dicts).
TABLE_MIN_READINGS: Final = 16

# msgspec validation message fragment -> reason code (anything else is bad-type).
VALIDATION_REASONS: Final = (("unknown field", "unknown-field"), ("out of range", "not-finite"))

Channel = Annotated[int, msgspec.Meta(ge=0, le=32_767)]


class GenericReading(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """One reading of the generic format; every name is a canonical column."""

    ts: float | str | None = None
    device_id: str | None = None
    channel: Channel = 0
    power_w: float | None = None
    apparent_power_va: float | None = None
    reactive_power_var: float | None = None
    voltage_v: float | None = None
    current_a: float | None = None
    pf: float | None = None
    freq_hz: float | None = None
    energy_wh: float | None = None
    returned_energy_wh: float | None = None


FIELDS: Final = GenericReading.__struct_fields__
_DECODER: Final = msgspec.json.Decoder(GenericReading | list[GenericReading])


class GenericDecoder:
    """Decode generic-format messages: one reading or an array of readings."""

    source = SOURCE

    def __init__(self, status: StatusRegistry | None = None) -> None:
        self.status = status or StatusRegistry()

    def decode(self, message: RawMessage) -> Decoded:
        """Return the message's readings: dicts, or an Arrow table for large arrays.

        Raises:
            DecodeError: ``unknown-topic``, ``invalid-json``, ``unknown-field`` (the message
                names the key), ``bad-type``, ``not-finite`` or ``bad-timestamp``.
        """
        device_id = topic_device(message.topic)
        rows = self._parse(message)
        self.status.seen(device_id, SOURCE, message.received_at_ms)
        if len(rows) >= TABLE_MIN_READINGS:
            return _table(rows, device_id, message.received_at_ms)
        return [_reading(r, device_id, message.received_at_ms) for r in rows]

    def decode_arrays(
        self, messages: list[RawMessage], one: Callable[[RawMessage], Decoded] | None = None
    ) -> tuple[pa.Table | None, list[tuple[RawMessage, DecodeError]]]:
        """Decode many array messages into one table: the per-table cost paid once.

        Returns the readings of every good message as one table (None if there are none),
        and each refused message with its error — the same errors :meth:`decode` raises.
        A message with ISO text times, or whose readings name a device other than the topic's,
        is decoded alone by ``one`` (default :meth:`decode`; the router passes its own, which
        checks identities).
        """
        one = one or self.decode
        bodies = _arrays_as_lines(messages)
        if bodies is not None and (table := _ndjson_table_or_none(messages, bodies)) is not None:
            self._seen(messages)
            return table, []
        failed: list[tuple[RawMessage, DecodeError]] = []
        tables: list[pa.Table] = []
        arrays: list[tuple[RawMessage, list[GenericReading]]] = []
        alone: list[RawMessage] = []
        for message in messages:
            try:
                rows = self._parse(message)
            except DecodeError as exc:
                failed.append((message, exc))
                continue
            if _names_others(rows, topic_device(message.topic)):
                alone.append(message)
            else:
                arrays.append((message, rows))
        while arrays:
            table, bad = _many_table(arrays)
            if table is not None:
                tables.append(table)
                break
            refused = {i for i, _ in bad}
            for i, error in bad:
                message = arrays[i][0]
                if error.reason != "iso-ts":
                    failed.append((message, error))
                    continue
                alone.append(message)  # ISO text times: the per-message path
            arrays = [item for i, item in enumerate(arrays) if i not in refused]
        self._seen([message for message, _ in arrays])
        for message in alone:
            try:
                decoded = one(message)
            except DecodeError as exc:
                failed.append((message, exc))
                continue
            tables.append(decoded if isinstance(decoded, pa.Table) else readings_to_table(decoded))
        tables = [t for t in tables if t.num_rows]
        return (pa.concat_tables(tables) if tables else None), failed

    def decode_ndjson(
        self, messages: list[RawMessage], one: Callable[[RawMessage], Decoded] | None = None
    ) -> tuple[pa.Table | None, list[tuple[RawMessage, DecodeError]]]:
        """Decode many newline-delimited messages in one pass of Arrow's JSON reader.

        Anything unusual in the batch (ISO times, a bad line, a wrong device, a value out of
        range) sends the whole batch through :meth:`decode_arrays`, which finds each bad
        message and says why. Returns what :meth:`decode_arrays` returns.
        """
        table = _ndjson_table_or_none(messages)
        if table is None:
            return self.decode_arrays(messages, one)
        self._seen(messages)
        return table, []

    def _seen(self, messages: list[RawMessage]) -> None:
        for message in messages:
            self.status.seen(topic_device(message.topic), SOURCE, message.received_at_ms)

    def _parse(self, message: RawMessage) -> list[GenericReading]:
        topic_device(message.topic)  # refuse a topic of another layout before parsing
        try:
            doc = _DECODER.decode(message.payload)
        except msgspec.ValidationError as exc:
            raise _validation_error(exc) from exc
        except msgspec.DecodeError as exc:
            if b"\n" not in message.payload.strip():
                raise DecodeError("invalid-json", f"payload is not JSON: {exc}") from exc
            doc = _ndjson_rows(message.payload)
        return [doc] if isinstance(doc, GenericReading) else doc


def _names_others(rows: list[GenericReading], device_id: str) -> bool:
    """Return True when a row names a device other than ``device_id``."""
    return any(r.device_id is not None and r.device_id != device_id for r in rows)


_LINE_DECODER: Final = msgspec.json.Decoder(GenericReading)


def _validation_error(exc: msgspec.ValidationError) -> DecodeError:
    text = str(exc)
    reason = next((r for part, r in VALIDATION_REASONS if part in text), "bad-type")
    return DecodeError(reason, f"generic reading: {text}")


def _ndjson_rows(payload: bytes) -> list[GenericReading]:
    """Decode newline-delimited readings, one object per line (blank lines allowed).

    Raises:
        DecodeError: naming the first bad line.
    """
    rows = []
    for number, line in enumerate(payload.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            rows.append(_LINE_DECODER.decode(line))
        except msgspec.ValidationError as exc:
            error = _validation_error(exc)
            raise DecodeError(error.reason, f"line {number}: {error}") from exc
        except msgspec.DecodeError as exc:
            raise DecodeError("invalid-json", f"line {number} is not JSON: {exc}") from exc
    return rows


# The generic fields as Arrow's JSON reader may find them; anything else is an error. Only
# ``ts`` is given to the reader: naming every field makes it fill absent ones row by row, which
# doubles its cost; the other columns are inferred, checked and cast here.
_NDJSON_TYPES: Final = {
    "ts": pa.float64(),
    "device_id": pa.string(),
    "channel": pa.int64(),
    **dict.fromkeys(MEASUREMENT_COLUMNS, pa.float64()),
}
_NDJSON_OPTIONS: Final = pa_json.ParseOptions(
    explicit_schema=pa.schema([("ts", pa.float64())]), unexpected_field_behavior="infer"
)
# One thread: the lake writer's process shares the machine with the MQTT side.
_NDJSON_READ: Final = pa_json.ReadOptions(use_threads=False)
# Inferred types that convert exactly to each wanted type.
_NDJSON_CASTS: Final = {
    pa.float64(): (pa.null(), pa.int64()),
    pa.string(): (pa.null(),),
    pa.int64(): (pa.null(),),
}


def _ndjson_column(raw: pa.Table, name: str) -> pa.ChunkedArray | pa.Array | None:
    """Return column ``name`` of an inferred table as its generic type, nulls when absent, or
    None when it was inferred as something that is not that type (text, lists, objects)."""
    wanted = _NDJSON_TYPES[name]
    if name not in raw.column_names:
        return _constant(None, raw.num_rows, wanted)
    values = raw[name]
    if values.type == wanted:
        return values
    if values.type in _NDJSON_CASTS[wanted]:
        try:
            return values.cast(wanted)
        except pa.ArrowInvalid:  # an integer too big to be a float exactly
            return None
    return None


def _arrays_as_lines(messages: list[RawMessage]) -> list[bytes] | None:
    """Return the bodies of JSON-array messages rewritten as newline-delimited objects, for
    Arrow's reader.

    The separators between objects become newlines. Where a separator occurs inside a text
    value the rewrite puts a raw newline into a JSON string, which no reader accepts, so a
    message the rewrite cannot take whole fails to parse and the batch takes the slow path.
    Returns None when a message is not a non-empty array.
    """
    out = []
    for message in messages:
        body = message.payload.strip()
        if len(body) < 4 or body[:1] != b"[" or body[-1:] != b"]":
            return None
        inner = body[1:-1]
        # The separator json.dumps writes, or the compact one: one plain replacement. Other
        # spacing (a pretty-printed array) leaves lines that do not parse: the slow path.
        out.append(inner.replace(b"}, {" if b"}, {" in inner else b"},{", b"}\n{").strip())
    return out


def _ndjson_table_or_none(
    messages: list[RawMessage], bodies: list[bytes] | None = None
) -> pa.Table | None:
    """Return :func:`_ndjson_table`, or None where a message's topic names no device."""
    try:
        return _ndjson_table(messages, bodies)
    except DecodeError:
        return None


def _ndjson_table(messages: list[RawMessage], bodies: list[bytes] | None = None) -> pa.Table | None:
    """Return the canonical table of newline-delimited messages (or of their ``bodies``, when
    those were rewritten), or None to take the slow path.

    One read of Arrow's JSON reader over all the messages; every check is vectorized.
    """
    payloads = [m.payload.strip() for m in messages] if bodies is None else bodies
    counts = np.fromiter((p.count(b"\n") + 1 for p in payloads), dtype=np.int64)
    try:
        raw = pa_json.read_json(
            io.BytesIO(b"\n".join(payloads)),
            read_options=_NDJSON_READ,
            parse_options=_NDJSON_OPTIONS,
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    n = raw.num_rows
    if n != int(counts.sum()) or not set(raw.column_names) <= _NDJSON_TYPES.keys():
        return None  # blank lines, pretty-printed objects or unknown fields: the slow path says
    columns: dict[str, Any] = {}
    for name in _NDJSON_TYPES:
        if (inferred := _ndjson_column(raw, name)) is None:
            return None
        columns[name] = inferred
    owner, received = _row_owners(messages, counts)
    device_ids = _row_devices(messages, owner)
    named = columns.pop("device_id")
    if (
        named.null_count < n
        and not pc.all(pc.or_kleene(pc.is_null(named), pc.equal(named, device_ids))).as_py()
    ):
        return None
    millis, out = _times_ms(columns.pop("ts").to_numpy(), received)
    if out.any():
        return None
    channel = pc.fill_null(columns["channel"], 0)
    if n and (pc.min(channel).as_py() < 0 or pc.max(channel).as_py() > 32_767):
        return None
    for column in MEASUREMENT_COLUMNS:
        values = columns[column]
        if values.null_count < n and not pc.all(pc.fill_null(pc.is_finite(values), True)).as_py():
            return None
    columns["channel"] = channel.cast(pa.int16())
    return _canonical(columns, millis, received, device_ids)


def _seconds_to_ms(seconds: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Return epoch seconds as rounded milliseconds; absurd times become inf, quietly (the
    range check refuses them)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.round(seconds * 1000.0)


def _row_owners(
    messages: list[RawMessage], counts: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Return, for each reading of a batch, the index of its message and that message's
    receive time [ms]; ``counts`` holds the readings per message."""
    owner = np.repeat(np.arange(len(messages)), counts)
    received = np.fromiter((m.received_at_ms for m in messages), np.int64, count=len(messages))
    return owner, received[owner]


def _row_devices(messages: list[RawMessage], owner: npt.NDArray[np.int64]) -> pa.Array:
    """Return each reading's device id, from its message's topic."""
    devices = pa.array([topic_device(m.topic) for m in messages], type=pa.string())
    return devices.take(pa.array(owner))


def _times_ms(
    seconds: npt.NDArray[np.float64], received: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Return each reading's time [ms] (NaN, an absent ``ts``, becomes the receive time) and
    whether it is out of range: before 2000, more than a day after receipt, or infinite."""
    millis = _seconds_to_ms(seconds)
    absent = np.isnan(millis)
    millis[absent] = received[absent]
    out = (millis < MIN_TS_MS) | (millis > received + MAX_FUTURE_MS) | np.isinf(millis)
    return millis, out


def _canonical(
    columns: dict[str, Any],
    millis: npt.NDArray[np.float64],
    received: npt.NDArray[np.int64],
    device_ids: pa.Array,
) -> pa.Table:
    """Complete a batch's measurement and channel ``columns`` into the canonical table."""
    columns["ts"] = pa.array(millis.astype(np.int64), type=TS_TYPE)
    columns["received_at"] = pa.array(received, type=TS_TYPE)
    columns["device_id"] = device_ids
    columns["source"] = _constant(SOURCE, len(millis), pa.string())
    return pa.Table.from_arrays([columns[name] for name in COLUMNS], schema=READING_SCHEMA)


def _many_table(
    items: list[tuple[RawMessage, list[GenericReading]]],
) -> tuple[pa.Table | None, list[tuple[int, DecodeError]]]:
    """Build one table from the rows of many messages, or say which messages to take out.

    Returns (table, []) or (None, [(message index, error)]); the error reason ``iso-ts`` marks
    a message with ISO text times, for the per-message path.
    """
    counts = np.fromiter((len(rows) for _, rows in items), dtype=np.int64, count=len(items))
    rows = [row for _, message_rows in items for row in message_rows]
    n = len(rows)
    if n == 0:  # only empty arrays: no readings, nothing refused
        return READING_SCHEMA.empty_table(), []
    messages = [m for m, _ in items]
    owner, received = _row_owners(messages, counts)
    raw_ts = [r.ts for r in rows]
    try:
        seconds = pa.array(raw_ts, type=pa.float64())
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        iso = {int(owner[i]) for i, t in enumerate(raw_ts) if isinstance(t, str)}
        return None, [(i, DecodeError("iso-ts", "ISO text times")) for i in sorted(iso)]
    bad: dict[int, DecodeError] = {}
    millis, out = _times_ms(seconds.to_numpy(zero_copy_only=False), received)
    for i in np.unique(owner[out]).tolist():
        first = int(np.argmax(out & (owner == i)))
        bad[i] = DecodeError("bad-timestamp", f"ts {raw_ts[first]!r} s is out of range")
    columns: dict[str, pa.Array] = {}
    # One tuple per column: attrgetter + zip is the cheapest way out of the structs.
    values = zip(*map(_MEASUREMENTS, rows), strict=True)
    for column, column_values in zip(MEASUREMENT_COLUMNS, values, strict=True):
        array = pa.array(column_values, type=pa.float64())
        columns[column] = array
        if array.null_count < n:
            finite = pc.fill_null(pc.is_finite(array), True).to_numpy(zero_copy_only=False)
            for i in np.unique(owner[~finite]).tolist():
                bad.setdefault(i, DecodeError("not-finite", f"{column} is not finite"))
    if bad:
        return None, sorted(bad.items())
    columns["channel"] = pa.array([r.channel for r in rows], type=pa.int16())
    return _canonical(columns, millis, received, _row_devices(messages, owner)), []


def topic_device(topic: str, leaf: str = LEAF) -> str:
    """Return the device id of ``wattlake/<device_id>/<leaf>`` (or ``<prefix>/<id>/<leaf>``).

    ``leaf`` is the last level (``readings``; the CSV format's ``csv``).

    Raises:
        DecodeError: ``unknown-topic`` for a topic that does not end in ``<device_id>/<leaf>``.
    """
    parts = topic.split("/")
    if len(parts) < 2 or parts[-1] != leaf or not parts[-2]:
        raise DecodeError("unknown-topic", f"topic {topic[:200]!r} is not wattlake/<device>/{leaf}")
    return parts[-2]


def ts_ms(value: float | str | None, received_at_ms: int) -> int:
    """Return a generic ``ts`` as epoch milliseconds; None means the receive time.

    Raises:
        DecodeError: ``bad-timestamp`` for text that is not ISO 8601 with an offset, or a time
            before 2000 or more than a day after ``received_at_ms``; ``not-finite``.
    """
    if value is None:
        return received_at_ms
    if not isinstance(value, str):
        return timestamp_ms(value, received_at_ms)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise DecodeError("bad-timestamp", f"ts {value[:40]!r} is not ISO 8601") from exc
    if moment.tzinfo is None:
        raise DecodeError("bad-timestamp", f"ts {value[:40]!r} has no UTC offset")
    return timestamp_ms(moment.timestamp(), received_at_ms)


def _reading(row: GenericReading, device_id: str, received_at_ms: int) -> Reading:
    reading: Reading = {
        "ts": ts_ms(row.ts, received_at_ms),
        "received_at": received_at_ms,
        "device_id": device_id if row.device_id is None else row.device_id,
        "channel": row.channel,
        "source": SOURCE,
    }
    # msgspec refuses numbers beyond float range and JSON has no NaN: every value is finite.
    for column, value in zip(MEASUREMENT_COLUMNS, _MEASUREMENTS(row), strict=True):
        if value is not None:
            reading[column] = value
    return reading


def _table(rows: list[GenericReading], device_id: str, received_at_ms: int) -> pa.Table:
    """Build the canonical table of ``rows`` column by column, checks vectorized.

    Raises:
        DecodeError: ``not-finite`` or ``bad-timestamp`` naming the first bad row.
    """
    n = len(rows)
    # One tuple per column: attrgetter + zip is the cheapest way out of the structs.
    values = list(zip(*map(_MEASUREMENTS, rows), strict=True))
    columns: dict[str, pa.Array] = {}
    present = []
    for column, column_values in zip(MEASUREMENT_COLUMNS, values, strict=True):
        if column_values.count(None) == n:
            columns[column] = _constant(None, n, pa.float64())
        else:
            columns[column] = array = pa.array(column_values, type=pa.float64())
            present.append(array)
    if present:
        # msgspec already refuses numbers out of float range; this keeps the promise explicit.
        finite = pc.is_finite(pa.chunked_array(present, type=pa.float64()))
        if not pc.all(finite).as_py():
            first = pc.index(finite, False).as_py()
            raise DecodeError("not-finite", f"reading {first % n}: a value is not finite")
    channels = [r.channel for r in rows]
    columns["ts"] = _ts_array([r.ts for r in rows], received_at_ms)
    columns["received_at"] = _constant(received_at_ms, n, TS_TYPE)
    columns["device_id"] = (
        pa.array([device_id if r.device_id is None else r.device_id for r in rows], pa.string())
        if _names_others(rows, device_id)
        else _constant(device_id, n, pa.string())
    )
    columns["channel"] = (
        _constant(0, n, pa.int16())
        if channels.count(0) == n
        else pa.array(channels, type=pa.int16())
    )
    columns["source"] = _constant(SOURCE, n, pa.string())
    return pa.Table.from_arrays([columns[name] for name in COLUMNS], schema=READING_SCHEMA)


_MEASUREMENTS: Final = operator.attrgetter(*MEASUREMENT_COLUMNS)


_CONSTANTS: dict[tuple[Any, str], pa.Array] = {}
CONSTANTS_MAX: Final = 4096


def _constant(value: Any, n: int, type_: pa.DataType) -> pa.Array:
    """Return an array of ``n`` times ``value``: a zero-copy slice of a cached one (arrays are
    immutable), grown by doubling; the cache holds at most ``CONSTANTS_MAX`` values."""
    key = (value, str(type_))
    array = _CONSTANTS.get(key)
    if array is None or len(array) < n:
        if len(_CONSTANTS) >= CONSTANTS_MAX:
            _CONSTANTS.clear()
        size = n if array is None else max(n, 2 * len(array))
        array = _CONSTANTS[key] = _repeat(value, size, type_)
    return array.slice(0, n)


def _repeat(value: Any, n: int, type_: pa.DataType) -> pa.Array:
    if value is None:
        return pa.nulls(n, type_)
    if isinstance(value, str) and type_ == pa.string():  # built from buffers, not n objects
        encoded = value.encode()
        offsets = np.arange(n + 1, dtype=np.int32) * len(encoded)
        return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(encoded * n))
    return pa.array([value] * n, type=type_)


def _ts_array(raw: list[float | str | None], received_at_ms: int) -> pa.Array:
    """Return the ``ts`` column [ms]: vectorized for numbers, per row for ISO text.

    Raises:
        DecodeError: ``bad-timestamp`` or ``not-finite`` naming the first bad row.
    """
    n = len(raw)
    if raw.count(None) == n:
        return _constant(received_at_ms, n, TS_TYPE)
    if str in set(map(type, raw)):  # ISO text among the times: parse row by row
        values: list[int] = []
        for i, t in enumerate(raw):
            try:
                values.append(ts_ms(t, received_at_ms))
            except DecodeError as exc:
                raise DecodeError(exc.reason, f"reading {i}: {exc}") from exc
        return pa.array(values, type=TS_TYPE)
    # None becomes NaN; msgspec never yields NaN from JSON, so NaN means "absent".
    seconds = np.array(raw, dtype=np.float64)
    with np.errstate(over="ignore"):  # an absurd time overflows to inf: refused just below
        millis = _seconds_to_ms(seconds)
    np.copyto(millis, float(received_at_ms), where=np.isnan(millis))
    low, high = millis.min(), millis.max()
    if not (low >= MIN_TS_MS and high <= received_at_ms + MAX_FUTURE_MS):
        bad = (millis < MIN_TS_MS) | (millis > received_at_ms + MAX_FUTURE_MS) | np.isinf(millis)
        first = int(np.argmax(bad))
        raise DecodeError("bad-timestamp", f"reading {first}: ts {raw[first]!r} s is out of range")
    return pa.array(millis.astype(np.int64), type=TS_TYPE)


def instructions(enrolment: Enrolment) -> list[str]:
    """Return where and how a generic client publishes (MQTT over TLS)."""
    device_id = enrolment.device_id
    return [
        f"Generic client {device_id}: publish to wattlake/{device_id}/{LEAF}",
        f"  on mqtts://{enrolment.broker_host}:{enrolment.tls_port} with client id {device_id},",
        "  the certificate and key written to the security folder."
        if enrolment.cert_pem
        else f"  user {device_id} and password {enrolment.password}",
    ]


_RENDER_ENCODER: Final = msgspec.json.Encoder()


def render(device_id: str, readings: list[Reading]) -> tuple[str, bytes]:
    """Return the topic and JSON payload of ``device_id``'s ``readings`` (``ts`` [ms] written as
    epoch seconds): one object for one reading, else an array."""
    rows = [{**r, "ts": r["ts"] / 1000} for r in readings]
    document = rows[0] if len(rows) == 1 else rows
    return f"wattlake/{device_id}/{LEAF}", _RENDER_ENCODER.encode(document)


FORMAT: Final = DeviceFormat(
    name=SOURCE,
    title="Generic client",
    routes=(Route(f"wattlake/+/{LEAF}", 1),),
    decoder=GenericDecoder,
    instructions=instructions,
    topic_root="wattlake",
    render=render,
)
