"""One behaviour suite for every lake backend: a local folder and a real S3 server (SeaweedFS)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.fs as pafs
import pytest

from wattlake.devices.base import RawMessage
from wattlake.lake import tables
from wattlake.lake.storage import Lake, LakeUrlError
from wattlake.query.engine import ViewFilter, connect
from wattlake.schema import DEAD_LETTERS_TABLE, READINGS_TABLE, readings_to_table
from wattlake.stream.deadletters import DeadLetter, dead_letters_table

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def rows(*specs: tuple[int, float, int]) -> list[dict[str, object]]:
    return [
        {"ts": ts, "received_at": rec, "device_id": "m1", "channel": 0, "power_w": p,
         "source": "generic"}
        for ts, p, rec in specs
    ]  # fmt: skip


def test_objects_written_are_listed_and_read_back(lake: Lake) -> None:
    lake.write_bytes("errors/x/date=2026-01-01/a.jsonl", b'{"a": 1}\n')
    lake.write_bytes("errors/x/date=2026-01-02/b.jsonl", b'{"a": 2}\n')
    files = lake.list_files("errors", ".jsonl")
    assert [f.rsplit("/", 1)[1] for f in files] == ["a.jsonl", "b.jsonl"]
    assert lake.read_bytes(files[1]) == b'{"a": 2}\n'
    assert lake.list_files("nothing-here") == []


def test_no_temporary_object_is_left_behind(lake: Lake) -> None:
    lake.write_table("raw/readings/date=2026-01-01/hour=00/f.parquet", readings_to_table(rows()))
    everything = lake.fs.get_file_info(pafs.FileSelector(lake.root, recursive=True))
    names = [i.base_name for i in everything if i.type == pafs.FileType.File]
    assert names == ["f.parquet"]


def test_readings_view_reads_the_tables_and_removes_duplicates(lake: Lake) -> None:
    first = readings_to_table(rows((T0, 10.0, T0 + 1), (T0 + 1000, 20.0, T0 + 1001)))
    again = readings_to_table(rows((T0 + 1000, 25.0, T0 + 5000)))
    tables.append(lake, READINGS_TABLE, first)
    tables.append(lake, READINGS_TABLE, again)
    con = connect(lake)
    # the earliest received copy wins
    assert con.sql("SELECT count(*), sum(power_w) FROM readings").fetchall() == [(2, 30.0)]
    assert con.sql("SELECT count(*) FROM raw_readings").fetchall() == [(3,)]
    before = tables.open_table(lake, READINGS_TABLE).snapshots()[0].timestamp_ms
    con = connect(lake, as_of_ms=before)  # time travel: only the first commit
    assert con.sql("SELECT count(*), sum(power_w) FROM raw_readings").fetchall() == [(2, 30.0)]
    pruned = connect(lake, view_filter=ViewFilter(start_ms=T0 + 86_400_000))
    assert pruned.sql("SELECT count(*) FROM raw_readings").fetchall() == [(0,)]


def test_dead_letters_view_reads_the_table(lake: Lake) -> None:
    letter = DeadLetter(RawMessage("t/events/rpc", b"{", T0), "invalid-json", "bad JSON")
    tables.append(lake, DEAD_LETTERS_TABLE, dead_letters_table([letter], "ingest"))
    con = connect(lake)
    assert con.sql(
        "SELECT error_code, topic, raw_base64, raw_text FROM dead_letters"
    ).fetchall() == [("invalid-json", "t/events/rpc", "ew==", "{")]


def test_unknown_url_scheme_is_refused() -> None:
    with pytest.raises(LakeUrlError, match="uses ftp://, where wattlake cannot keep a lake"):
        Lake.open("ftp://example/lake")


@pytest.mark.parametrize("bucket", ["abc", "my.bucket-1", "a" * 63, "2026-meters"])
def test_s3_bucket_names_s3_accepts_are_accepted(bucket: str) -> None:
    assert Lake.open(f"s3://{bucket}/lake/").url == f"s3://{bucket}/lake"


@pytest.mark.parametrize(
    "bucket", ["ab", "a" * 64, "Meters", "my_bucket", "-meters", "meters-", "a..b", "10.0.0.1"]
)
def test_s3_bucket_names_s3_refuses_are_refused(bucket: str) -> None:
    with pytest.raises(LakeUrlError, match="is not an S3 bucket name"):
        Lake.open(f"s3://{bucket}/lake")


def test_a_file_url_with_one_slash_is_a_local_folder(tmp_path: Path) -> None:
    lake = Lake.open(f"file:{tmp_path}/lake")
    assert (lake.is_local, lake.root) == (True, str(tmp_path / "lake"))
