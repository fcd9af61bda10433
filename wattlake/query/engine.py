"""DuckDB views over the lake: ``readings`` (deduplicated), ``raw_readings``,
``curated_readings`` and ``dead_letters``."""

from __future__ import annotations

import io

import duckdb
import pyarrow as pa
import pyarrow.json as pa_json

from wattlake.config import Settings
from wattlake.lake.catalog import DEDUP_WINDOW, parquet_view, sql_string
from wattlake.lake.storage import CURATED_READINGS, ERRORS, RAW_READINGS, Lake
from wattlake.schema import COLUMNS, READING_SCHEMA

_COLUMN_LIST = ", ".join(COLUMNS)


def connect(lake: Lake) -> duckdb.DuckDBPyConnection:
    """Return an in-memory DuckDB connection with the lake's views defined.

    ``raw_readings`` is what the stream delivered and compaction has not yet taken;
    ``curated_readings`` is what compaction wrote; ``readings`` is both, with each
    (device_id, channel, ts) once: delivery is at-least-once, so the earliest received copy wins.
    """
    con = duckdb.connect()
    parquet_view(con, "raw_readings", lake, lake.list_files(RAW_READINGS, ".parquet"))
    parquet_view(con, "curated_readings", lake, lake.list_files(CURATED_READINGS, ".parquet"))
    con.execute(
        f"""
        CREATE VIEW readings AS
        SELECT {_COLUMN_LIST} FROM (
            SELECT * FROM curated_readings UNION ALL SELECT * FROM raw_readings
        )
        QUALIFY row_number() OVER ({DEDUP_WINDOW}) = 1
        """
    )
    _dead_letter_view(con, lake)
    return con


def _dead_letter_view(con: duckdb.DuckDBPyConnection, lake: Lake) -> None:
    files = lake.list_files(ERRORS, ".jsonl")
    if files and lake.is_local:
        listing = ", ".join(sql_string(f) for f in files)
        con.execute(
            "CREATE VIEW dead_letters AS SELECT * FROM read_json("
            f"[{listing}], format = 'newline_delimited', union_by_name = true)"
        )
    elif files:
        lines = b"".join(lake.read_bytes(f) for f in files)
        con.register("dead_letters_table", pa_json.read_json(io.BytesIO(lines)))
        con.execute("CREATE VIEW dead_letters AS SELECT * FROM dead_letters_table")
    else:
        con.execute(
            "CREATE VIEW dead_letters AS SELECT NULL::INTEGER AS attempts, NULL::VARCHAR AS "
            "error_code, NULL::VARCHAR AS error_message, NULL::VARCHAR AS topic, "
            "NULL::VARCHAR AS raw_base64, NULL::VARCHAR AS raw_text WHERE false"
        )


def load_readings(
    settings: Settings, *, device_id: str | None, start_ms: int, end_ms: int
) -> pa.Table:
    """Return deduplicated readings sorted by device, channel and ts.

    The range [``start_ms``, ``end_ms``) is widened by ``energy.max_gap_s`` on both sides so that
    intervals crossing its edges can be interpolated.
    """
    margin_ms = int(settings["energy.max_gap_s"] * 1000)
    con = connect(Lake.from_settings(settings))
    query = (
        "SELECT * FROM readings WHERE ts >= epoch_ms(?) AND ts < epoch_ms(?)"
        + (" AND device_id = ?" if device_id is not None else "")
        + " ORDER BY device_id, channel, ts"
    )
    params: list[object] = [start_ms - margin_ms, end_ms + margin_ms]
    if device_id is not None:
        params.append(device_id)
    table = con.sql(query, params=params).to_arrow_table()
    return table.cast(READING_SCHEMA)
