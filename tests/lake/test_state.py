"""The local state folder is defined once: with ``XDG_STATE_HOME`` set, the WAL, the catalog
and the tokens of a lake in S3 all move there, each in the folder of that lake's identity."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import S3Server, make_bucket
from wattlake.config import Settings
from wattlake.gateway.ca import security_dir
from wattlake.gateway.tokens import TOKENS_FILE_NAME, TokenStore, tokens_path
from wattlake.lake import tables
from wattlake.lake.catalog import forget_catalogs
from wattlake.lake.identity import read_identity
from wattlake.lake.storage import CATALOG_FILE, Lake
from wattlake.lake.tables import ensure_tables
from wattlake.schema import READINGS_TABLE, readings_to_table
from wattlake.state import state_dir
from wattlake.stream.ingest import wal_dir_from_settings

READING = {
    "ts": 1_767_225_600_000, "received_at": 1_767_225_600_005, "device_id": "m1", "channel": 0,
    "power_w": 100.0, "energy_wh": 1000.0, "source": "generic",
}  # fmt: skip


@pytest.fixture
def s3_settings(s3_env: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    bucket = make_bucket(s3_env.endpoint_url)
    return Settings.load(
        overrides={"data_dir": f"s3://{bucket}/lake", "lake.s3_endpoint_url": s3_env.endpoint_url},
        environ={},
    )


def test_an_s3_lakes_wal_catalog_and_tokens_follow_xdg_state_home(
    s3_settings: Settings, tmp_path: Path
) -> None:
    lake = Lake.from_settings(s3_settings)
    ensure_tables(lake)  # creates the identity and the SQLite catalog in local state
    forget_catalogs()
    identity = read_identity(lake)
    assert identity is not None
    root = tmp_path / "xdg-state" / "wattlake"
    assert state_dir() == root
    assert (root / "catalog" / identity.lake_id / CATALOG_FILE).is_file()
    wal = wal_dir_from_settings(s3_settings, lake)
    assert wal == root / "wal" / identity.lake_id / s3_settings["stream.name"]
    token, _ = TokenStore.from_settings(s3_settings).create("read")
    assert tokens_path(s3_settings) == root / "tokens" / identity.lake_id / TOKENS_FILE_NAME
    assert TokenStore(root / "tokens" / identity.lake_id / TOKENS_FILE_NAME).verify(token)
    assert security_dir() == root / "security"
    assert not (tmp_path / "home" / ".local").exists()  # nothing went to the old place


def test_tokens_shared_by_s3_lakes_before_keep_working(
    s3_settings: Settings, tmp_path: Path
) -> None:
    """Tokens made when every S3 lake shared ``~/.local/state/wattlake/tokens.json`` (whatever
    ``XDG_STATE_HOME`` said) are copied to the lake's own file the first time it is asked
    for; the shared file stays for the other lakes."""
    shared = TokenStore(tmp_path / "home" / ".local/state/wattlake" / TOKENS_FILE_NAME)
    token, _ = shared.create("admin")
    store = TokenStore.from_settings(s3_settings)
    assert store.path.is_relative_to(tmp_path / "xdg-state")
    assert store.verify(token) is not None
    assert shared.verify(token) is not None


def test_an_s3_lakes_catalog_kept_in_the_old_place_moves_with_its_tables(
    s3_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the catalog of an S3 lake stayed in ``~/.local/state`` with ``XDG_STATE_HOME``
    set; its tables must not vanish (nor a second, empty catalog begin) once it is honoured."""
    monkeypatch.delenv("XDG_STATE_HOME")  # where the old code kept it: ~/.local/state/wattlake
    lake = Lake.from_settings(s3_settings)
    tables.append(lake, READINGS_TABLE, readings_to_table([READING]))
    forget_catalogs()
    identity = read_identity(lake)
    assert identity is not None
    old = tmp_path / "home" / ".local/state/wattlake/catalog" / identity.lake_id
    assert (old / CATALOG_FILE).is_file()
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    assert tables.read_table(lake, READINGS_TABLE).num_rows == 1
    forget_catalogs()
    new = tmp_path / "xdg-state" / "wattlake" / "catalog" / identity.lake_id
    assert (new / CATALOG_FILE).is_file()
    assert not old.exists()
