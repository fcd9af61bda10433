"""A lake's identity is written once; a write-ahead log belongs to exactly one lake."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.conftest import Mosquitto, S3Server, make_bucket
from tests.stream.support import Publisher, reading_message
from wattlake.config import Settings
from wattlake.devices.base import RawMessage
from wattlake.errors import ConfigError
from wattlake.lake.identity import IDENTITY_FILE, ensure_identity, read_identity
from wattlake.lake.storage import Lake
from wattlake.query.engine import connect
from wattlake.stream.ingest import IngestWorker, wal_dir_from_settings
from wattlake.stream.wal import WriteAheadLog


def test_identity_is_made_once_and_never_rewritten(lake: Lake) -> None:
    assert read_identity(lake) is None
    first = ensure_identity(lake)
    content = lake.read_bytes(lake.path(IDENTITY_FILE))
    again = ensure_identity(lake)
    assert again == first == read_identity(lake)
    assert lake.read_bytes(lake.path(IDENTITY_FILE)) == content
    assert first.created_url == lake.url


def test_two_local_creators_agree_on_one_identity(tmp_path: Path) -> None:
    lake = Lake.open(str(tmp_path / "lake"))
    found: list[str] = []
    threads = [
        threading.Thread(target=lambda: found.append(ensure_identity(lake).lake_id))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(found)) == 1


def test_a_wal_refuses_another_lake(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path / "wal", lake_id="a" * 8, lake_url="s3://a/lake")
    wal.open()
    wal.close()
    other = WriteAheadLog(tmp_path / "wal", lake_id="b" * 8, lake_url="s3://b/lake")
    with pytest.raises(ConfigError, match=r"belongs to another lake \(s3://a/lake"):
        other.open()
    # The refused folder is not left locked.
    WriteAheadLog(tmp_path / "wal", lake_id="a" * 8).open()


def s3_settings(server: S3Server, bucket: str, **more: object) -> Settings:
    values = {
        "data_dir": f"s3://{bucket}/lake",
        "lake.s3_endpoint_url": server.endpoint_url,
        "stream.flush_interval_s": 0.2,
        **more,
    }
    return Settings.load(overrides=values, environ={})


def run_worker(settings: Settings, url: str, publish: list[tuple[str, bytes]]) -> IngestWorker:
    worker = IngestWorker(settings, url, client_id=f"identity-{settings.data_dir}", drain=True)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    try:
        assert worker.ready.wait(30)
        if publish:
            publisher = Publisher(url, publish, name="identity-publisher").start()
            publisher.wait()
            publisher.close()
    finally:
        stop.set()
        thread.join(60)
    return worker


def readings_in(settings: Settings) -> set[float]:
    con = connect(Lake.from_settings(settings))
    rows = con.sql("SELECT power_w FROM readings").fetchall()
    con.close()
    return {float(p) for (p,) in rows}


def test_lake_a_wal_never_lands_in_lake_b(
    s3_env: S3Server, mosquitto: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    settings_a = s3_settings(s3_env, make_bucket(s3_env.endpoint_url))
    settings_b = s3_settings(s3_env, make_bucket(s3_env.endpoint_url))
    lake_a, lake_b = Lake.from_settings(settings_a), Lake.from_settings(settings_b)
    id_a, id_b = ensure_identity(lake_a).lake_id, ensure_identity(lake_b).lake_id
    assert id_a != id_b
    wal_a = wal_dir_from_settings(settings_a, lake_a)
    assert wal_a == tmp_path / "home/.local/state/wattlake/wal" / id_a / "ingest"
    assert wal_dir_from_settings(settings_b, lake_b).parent.name == id_b

    # An ingest for lake A killed with 1,000 acknowledged readings in its WAL.
    wal = WriteAheadLog(wal_a, lake_id=id_a, lake_url=lake_a.url)
    wal.open()
    wal.append([RawMessage(t, p, 1_767_225_600_000) for t, p in map(reading_message, range(1000))])
    wal.sync()
    wal.close()

    # Lake B's ingest delivers only what was published for B.
    for_b = [reading_message(i) for i in range(5000, 5010)]
    run_worker(settings_b, mosquitto.url, for_b)
    assert readings_in(settings_b) == {float(i) for i in range(5000, 5010)}
    assert list(wal_a.glob("*.wal")), "lake A's WAL is untouched"

    # Pointed at lake A's WAL on purpose, lake B's ingest refuses to start.
    wrong = s3_settings(s3_env, settings_b.data_dir.split("/")[2], **{"stream.wal_dir": str(wal_a)})
    with pytest.raises(ConfigError, match=f"belongs to another lake .*{id_a}"):
        IngestWorker(wrong, mosquitto.url, client_id="identity-wrong").run(threading.Event())
    assert readings_in(settings_b) == {float(i) for i in range(5000, 5010)}

    # Lake A's own ingest delivers its WAL to lake A.
    run_worker(settings_a, mosquitto.url, [])
    assert readings_in(settings_a) == {float(i) for i in range(1000)}
    assert not list(wal_a.glob("*.wal"))
