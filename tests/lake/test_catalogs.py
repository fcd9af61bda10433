"""The lake's tables in other catalogs: PostgreSQL (a private Debian server) and an Iceberg REST
catalog (SeaweedFS's, compatible with Amazon S3 Tables, signed with SigV4)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.conftest import Postgres, S3Server, ephemeral_port_range, make_bucket, quiet_ports
from wattlake.lake import tables
from wattlake.lake.catalog import forget_catalogs
from wattlake.lake.storage import CATALOG_FILE, CatalogConfig, Lake
from wattlake.query.engine import connect
from wattlake.schema import READINGS_TABLE, readings_to_table

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def readings(count: int, start_ms: int = T0) -> list[dict[str, object]]:
    return [
        {"ts": start_ms + 10_000 * i, "received_at": start_ms + 10_000 * i + 5,
         "device_id": "m1", "channel": 0, "power_w": 100.0 + i, "energy_wh": 1000.0 + i,
         "source": "generic"}
        for i in range(count)
    ]  # fmt: skip


def exercise(lake: Lake) -> None:
    """Append twice (one commit with a WAL position), read back, travel back in time."""
    tables.append(lake, READINGS_TABLE, readings_to_table(readings(3)))
    first = tables.open_table(lake, READINGS_TABLE).current_snapshot()
    assert first is not None
    position = {"wattlake.wal.test": '{"segment": 7, "messages": 3}'}
    tables.append(lake, READINGS_TABLE, readings_to_table(readings(2, T0 + 86_400_000)), position)
    forget_catalogs()  # as a new process would: everything comes from the catalog again
    table = tables.open_table(lake, READINGS_TABLE)
    assert len(table.snapshots()) == 2
    assert tables.last_property(table, "wattlake.wal.test") == position["wattlake.wal.test"]
    con = connect(lake)
    assert con.sql("SELECT count(*), sum(power_w) FROM readings").fetchall() == [(5, 504.0)]
    days = con.sql("SELECT DISTINCT CAST(ts AS DATE) FROM readings ORDER BY 1").fetchall()
    assert [str(d) for (d,) in days] == ["2026-01-01", "2026-01-02"]
    past = connect(lake, as_of_ms=first.timestamp_ms)
    assert past.sql("SELECT count(*) FROM readings").fetchall() == [(3,)]


def test_postgresql_catalog(postgres: Postgres, tmp_path: Path) -> None:
    catalog = CatalogConfig(type="sql", uri=postgres.url)
    lake = Lake.open(str(tmp_path / "lake"), catalog=catalog)
    try:
        exercise(lake)
    finally:
        forget_catalogs()  # its connection pool must not outlive the server
    assert not (tmp_path / "lake" / CATALOG_FILE).exists()  # not the SQLite default
    import sqlalchemy as sa

    engine = sa.create_engine(postgres.url)
    with engine.connect() as con:
        names = con.execute(sa.text("SELECT table_name FROM iceberg_tables")).scalars().all()
    engine.dispose()
    assert READINGS_TABLE in names
    data = list((tmp_path / "lake" / "tables" / READINGS_TABLE / "data").rglob("*.parquet"))
    assert len(data) == 2  # the data stays in the lake; only the catalog moved


def create_table_bucket(server: S3Server) -> str:
    """Create an S3 Tables table bucket on the test server; return its name."""
    import boto3

    client = boto3.client("s3tables", endpoint_url=server.endpoint_url, region_name="us-east-1")
    arn = client.create_table_bucket(name=f"tables-{uuid.uuid4().hex[:10]}")["arn"]
    return str(arn).rsplit("/", 1)[-1]


def test_rest_catalog_of_s3_tables(s3_env: S3Server) -> None:
    pytest.importorskip("boto3", reason="SigV4 signing of a REST catalog needs boto3")
    table_bucket = create_table_bucket(s3_env)
    catalog = CatalogConfig(
        type="rest",
        uri=s3_env.iceberg_url,
        warehouse=f"s3://{table_bucket}",
        rest_signing_name="s3tables",
    )
    bucket = make_bucket(s3_env.endpoint_url)
    lake = Lake.open(f"s3://{bucket}/lake", s3_endpoint_url=s3_env.endpoint_url, catalog=catalog)
    exercise(lake)
    location = tables.open_table(lake, READINGS_TABLE).location()
    assert location.startswith(f"s3://{table_bucket}/")  # the catalog chose where tables live


def test_the_test_servers_ports_stay_outside_the_ephemeral_range() -> None:
    # A port the kernel may hand out as the source port of any connection can be taken before
    # a server binds it (SeaweedFS then exits at start): tests/conftest.py never picks one.
    low, high = ephemeral_port_range()
    ports = quiet_ports(50, grpc=True)
    assert len(set(ports) | {p + 10_000 for p in ports}) == 100
    assert all(not low <= p <= high and not low <= p + 10_000 <= high for p in ports)
