"""The catalog (the Glue Data Catalog's role): how the lake's tables are read as SQL views."""

from __future__ import annotations

import duckdb
import pyarrow.dataset as ds

from wattlake.lake.storage import Lake
from wattlake.schema import COLUMNS, READING_SCHEMA

_COLUMN_LIST = ", ".join(COLUMNS)


def sql_string(text: str) -> str:
    """Quote ``text`` as an SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


# Which copy of a duplicated reading is kept: the first received.
DEDUP_WINDOW = "PARTITION BY device_id, channel, ts ORDER BY received_at, source"


def parquet_view(con: duckdb.DuckDBPyConnection, name: str, lake: Lake, files: list[str]) -> None:
    """Create view ``name`` with the canonical columns over Parquet ``files`` of ``lake``."""
    if not files:
        con.register(f"{name}_empty", READING_SCHEMA.empty_table())
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM {name}_empty")
    elif lake.is_local:
        listing = ", ".join(sql_string(f) for f in files)
        con.execute(
            f"CREATE VIEW {name} AS SELECT {_COLUMN_LIST} "
            f"FROM read_parquet([{listing}], union_by_name = true)"
        )
    else:
        dataset = ds.dataset(files, schema=READING_SCHEMA, format="parquet", filesystem=lake.fs)
        con.register(f"{name}_dataset", dataset)
        con.execute(f"CREATE VIEW {name} AS SELECT {_COLUMN_LIST} FROM {name}_dataset")
