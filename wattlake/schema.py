"""The canonical reading: one row of table ``readings``, defined once for every stage.

Units live in the column names. Timestamps are UTC milliseconds in storage.
"""

from __future__ import annotations

from typing import Any, Final

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
