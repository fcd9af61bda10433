"""The canonical reading: one row of table ``readings``, defined once for every stage.

Units live in the column names. Timestamps are UTC milliseconds in memory and microseconds in
the lake's Iceberg tables (defined below with their decimal resolutions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

import pyarrow as pa

TS_TYPE: Final = pa.timestamp("ms", tz="UTC")

READING_SCHEMA: Final[pa.Schema] = pa.schema(
    [
        pa.field("ts", TS_TYPE, nullable=False),
        pa.field("received_at", TS_TYPE, nullable=False),
        pa.field("device_id", pa.string(), nullable=False),
        pa.field("channel", pa.int16(), nullable=False),
        pa.field("power_w", pa.float64()),
        pa.field("apparent_power_va", pa.float64()),
        pa.field("reactive_power_var", pa.float64()),
        pa.field("voltage_v", pa.float64()),
        pa.field("current_a", pa.float64()),
        pa.field("pf", pa.float64()),
        pa.field("freq_hz", pa.float64()),
        pa.field("energy_wh", pa.float64()),
        pa.field("returned_energy_wh", pa.float64()),
        pa.field("source", pa.string(), nullable=False),
    ]
)

COLUMNS: Final[tuple[str, ...]] = tuple(READING_SCHEMA.names)
MEASUREMENT_COLUMNS: Final[tuple[str, ...]] = (
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
DEDUP_KEY: Final[tuple[str, str, str]] = ("device_id", "channel", "ts")
# What the energy maths reads of a reading: the series key, time, power and both counters.
SERIES_COLUMNS: Final[tuple[str, ...]] = (
    "ts",
    "device_id",
    "channel",
    "power_w",
    "energy_wh",
    "returned_energy_wh",
)

# A reading inside the pipeline before it becomes Arrow: a dict keyed by column name, with
# ``ts`` and ``received_at`` as integer epoch milliseconds. Missing measurement keys mean null.
Reading = dict[str, Any]


def readings_to_table(readings: list[Reading]) -> pa.Table:
    """Build an Arrow table in the canonical schema from reading dicts.

    Raises:
        pyarrow.ArrowInvalid: a value does not fit its column's type.
    """
    columns = {name: [r.get(name) for r in readings] for name in COLUMNS}
    return pa.Table.from_pydict(columns, schema=READING_SCHEMA)


def empty_table() -> pa.Table:
    """Return a table with the canonical schema and no rows."""
    return READING_SCHEMA.empty_table()


# -- The lake's Iceberg tables ----------------------------------------------------------------
# Measured values are stored as Iceberg decimals: the finest resolution any supported device
# format reports (Shelly Gen1 sends power, voltage and pf with 2 decimals, Gen2 energy counters
# with 2 decimals, Gen1 counters in watt-minutes), read back as float64. A value is rounded to
# its resolution on write; a value already at that resolution round-trips exactly.
# column -> (precision, scale): resolution 10**-scale in the column's unit. Active power has 9
# digits (up to 9,999,999.99 W, far above any supported meter): Parquet stores it as INT32, which
# compresses better than INT64 (bench_lake: 1.39 against 1.47 bytes per reading). Lakes made
# before keep their 12 digits (Iceberg cannot narrow a column); their files are written at 12.
DECIMALS: Final[dict[str, tuple[int, int]]] = {
    "power_w": (9, 2),
    "apparent_power_va": (12, 2),
    "reactive_power_var": (12, 2),
    "voltage_v": (9, 2),
    "current_a": (12, 3),
    "pf": (6, 3),
    "freq_hz": (8, 3),
    "energy_wh": (18, 3),
    "returned_energy_wh": (18, 3),
}

# Timestamps in the tables are microseconds (Iceberg's timestamptz); in memory they stay ms.
TABLE_TS_TYPE: Final = pa.timestamp("us", tz="UTC")
# Table ``readings`` stores the receive time as a lag behind ``ts`` [ms] (received_at - ts; it may
# be negative, and is large for an import of old readings): a few bits per reading where µs
# timestamps take about 20. Files written before the lag existed hold ``received_at`` instead
# (now optional, null in new files; also kept where a receive time is not a whole number of ms
# after ``ts``). Every reader gives back ``coalesce(received_at, ts + receive_lag_ms)``.
RECEIVE_LAG_COLUMN: Final = "receive_lag_ms"

READINGS_TABLE: Final = "readings"
DEAD_LETTERS_TABLE: Final = "dead_letters"
ENERGY_15MIN_TABLE: Final = "energy_15min"
POWER_1MIN_TABLE: Final = "power_1min"
POWER_1H_TABLE: Final = "power_1h"


def _field(name: str, type_: pa.DataType, nullable: bool = True) -> pa.Field:
    return pa.field(name, type_, nullable=nullable)


# Arrow schemas of the stored tables (what a data file holds). Field order is the column order.
READINGS_STORED: Final[pa.Schema] = pa.schema(
    [
        _field("ts", TABLE_TS_TYPE, False),
        _field("received_at", TABLE_TS_TYPE),
        _field("device_id", pa.string(), False),
        _field("channel", pa.int32(), False),
        *(_field(name, pa.decimal128(*DECIMALS[name])) for name in MEASUREMENT_COLUMNS),
        _field("source", pa.string(), False),
        # Last, so that a table made before it (field ids 1-14) and a new one number it alike.
        _field(RECEIVE_LAG_COLUMN, pa.int64()),
    ]
)

DEAD_LETTERS_STORED: Final[pa.Schema] = pa.schema(
    [
        _field("received_at", TABLE_TS_TYPE, False),
        _field("stream", pa.string(), False),
        _field("topic", pa.string(), False),
        _field("error_code", pa.string(), False),
        _field("error_message", pa.string(), False),
        _field("attempts", pa.int32(), False),
        _field("payload", pa.binary(), False),
        # The payload as text when it is UTF-8, else null.
        _field("raw_text", pa.string()),
    ]
)

# Rollups (filled by jobs/rollup.py, see RollupSpec): energy per UTC bucket, per device and
# channel (``site``/``role`` empty) or per site and role; power statistics per bucket.
ENERGY_BUCKETS_STORED: Final[pa.Schema] = pa.schema(
    [
        _field("start", TABLE_TS_TYPE, False),
        _field("device_id", pa.string()),
        _field("channel", pa.int32()),
        _field("site", pa.string()),
        _field("role", pa.string()),
        _field("import_wh", pa.float64()),
        _field("export_wh", pa.float64()),
        _field("interpolated_wh", pa.float64()),
        _field("coverage_s", pa.float64()),
        _field("samples", pa.int64()),
        # Counter import minus power import where both exist (null otherwise), and the method
        # (``counter``, ``trapezoid`` or both joined by ``+``) the raw path used that day [Wh].
        _field("counter_minus_power_wh", pa.float64()),
        _field("method", pa.string()),
    ]
)

POWER_STATS_STORED: Final[pa.Schema] = pa.schema(
    [
        _field("start", TABLE_TS_TYPE, False),
        _field("device_id", pa.string(), False),
        _field("channel", pa.int32(), False),
        _field("min_power_w", pa.float64()),
        _field("max_power_w", pa.float64()),
        _field("mean_power_w", pa.float64()),
        _field("samples", pa.int64()),
    ]
)


DELTA_COLUMNS: Final = ("ts", "received_at", "energy_wh", "returned_energy_wh")
# The receive lag [bytes per reading, bench/fleet.py, one page per column chunk, zstd 3]:
# BYTE_STREAM_SPLIT is small both for a stream (random 80-400 ms: 1.20; DELTA_BINARY_PACKED
# 1.27, a dictionary 1.13) and for an import, whose one receive time makes the lag fall with
# ts (0.30; DELTA_BINARY_PACKED 0.21; a dictionary overflows to PLAIN: 2.08). Voltage takes a
# dictionary (0.25, BYTE_STREAM_SPLIT 0.27): at most 50,000 values from 0 to 500 V fit one.
# A file whose lags take fewer than LAG_DICTIONARY_BELOW distinct values (a stream's) stores
# them as a dictionary instead (1.13): an import's are all distinct and keep BYTE_STREAM_SPLIT.
LAG_DICTIONARY_BELOW: Final = 1 << 12
SPLIT_COLUMNS: Final = (
    "power_w",
    "apparent_power_va",
    "reactive_power_var",
    "current_a",
    RECEIVE_LAG_COLUMN,
)


# What a rollup aggregates: the raw energy path per bucket (import, export, coverage ... per
# device channel, and the balance of each configured site), or min, max and mean power.
RollupKind = Literal["energy", "power"]
ENERGY_ROLLUP: Final = "energy"
POWER_ROLLUP: Final = "power"
_MINUTE_MS: Final = 60_000


@dataclass(frozen=True, slots=True)
class RollupSpec:
    """How a rollup table is computed: ``kind`` of aggregate per UTC bucket of ``bucket_ms``
    [ms] over the readings of table ``source``. Which function computes a kind is the rollup
    job's choice (:mod:`wattlake.jobs.rollup`): this module stays free of the energy maths."""

    kind: RollupKind
    bucket_ms: int
    source: str = READINGS_TABLE


@dataclass(frozen=True, slots=True)
class TableDefinition:
    """One Iceberg table of the lake: its stored columns, day partition, sort order, the
    DuckDB view over its stored rows and, for a rollup, how it is computed."""

    name: str
    schema: pa.Schema
    # The timestamp column whose UTC day partitions the table.
    day_column: str
    sort_columns: tuple[str, ...]
    # Parquet encoding per column (measured on bench/fleet.py, see docs/lake.md): time and
    # counters DELTA_BINARY_PACKED, noisy measurements BYTE_STREAM_SPLIT; columns not named
    # here use a dictionary.
    encodings: tuple[tuple[str, str], ...] = ()
    # (column, n): a file with fewer than n distinct values of the column stores it as a
    # dictionary instead of its encoding above.
    dictionary_below: tuple[tuple[str, int], ...] = ()
    # The DuckDB view over the stored rows (:mod:`wattlake.query.engine`); empty: ``name``.
    view: str = ""
    # How the rollup job fills the table; None for a table that is not a rollup.
    rollup: RollupSpec | None = None

    def __post_init__(self) -> None:
        if not self.view:
            object.__setattr__(self, "view", self.name)


TABLES: Final[dict[str, TableDefinition]] = {
    t.name: t
    for t in (
        TableDefinition(
            READINGS_TABLE,
            READINGS_STORED,
            "ts",
            ("device_id", "channel", "ts"),
            (
                *((c, "DELTA_BINARY_PACKED") for c in DELTA_COLUMNS),
                *((c, "BYTE_STREAM_SPLIT") for c in SPLIT_COLUMNS),
            ),
            ((RECEIVE_LAG_COLUMN, LAG_DICTIONARY_BELOW),),
            # The views ``raw_readings`` and ``readings`` read this one.
            view="raw_readings_stored",
        ),
        TableDefinition(
            DEAD_LETTERS_TABLE,
            DEAD_LETTERS_STORED,
            "received_at",
            (),
            view="dead_letters_stored",  # read by the view ``dead_letters``
        ),
        TableDefinition(
            ENERGY_15MIN_TABLE,
            ENERGY_BUCKETS_STORED,
            "start",
            ("site", "device_id", "channel", "start"),
            (("start", "DELTA_BINARY_PACKED"),),
            rollup=RollupSpec(ENERGY_ROLLUP, 15 * _MINUTE_MS),
        ),
        TableDefinition(
            POWER_1MIN_TABLE,
            POWER_STATS_STORED,
            "start",
            ("device_id", "channel", "start"),
            (("start", "DELTA_BINARY_PACKED"),),
            rollup=RollupSpec(POWER_ROLLUP, _MINUTE_MS),
        ),
        TableDefinition(
            POWER_1H_TABLE,
            POWER_STATS_STORED,
            "start",
            ("device_id", "channel", "start"),
            (("start", "DELTA_BINARY_PACKED"),),
            rollup=RollupSpec(POWER_ROLLUP, 60 * _MINUTE_MS),
        ),
    )
}
# The rollup tables and how each is computed, in TABLES order.
ROLLUPS: Final[dict[str, RollupSpec]] = {
    t.name: t.rollup for t in TABLES.values() if t.rollup is not None
}
