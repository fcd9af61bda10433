"""The SQL endpoint's sandbox: user SQL reads the lake's views and nothing else (issue 22).

Every probe goes through the real HTTP API with a read token, on a local lake and on a lake in
the real S3 server, with secrets planted where DuckDB might look: the server's working folder
and its ``.tmp`` (DuckDB's default temporary folder), beside the lake, in the lake folder (or
the state folder of an S3 lake), a Parquet file no snapshot names in a table's data folder, the
tokens file and the catalog. Each probe answers one refusal shape (400, one sentence) and never
the planted text; the same text run on the sandboxed connection itself fails too, so the
SELECT-only rule in front is not the only wall.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from tests.conftest import S3_ACCESS_KEY, S3_SECRET_KEY, S3Server, make_bucket
from wattlake.config import Settings
from wattlake.gateway.tokens import TokenStore, tokens_path
from wattlake.lake import tables
from wattlake.lake.catalog import default_sql_uri
from wattlake.lake.storage import Lake
from wattlake.query.engine import connect
from wattlake.schema import READINGS_TABLE, readings_to_table
from wattlake.web.app import create_app
from wattlake.web.sql import sandboxed

SECRET = "PLANTED-SECRET-7f3a"
DAY1 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@dataclass(frozen=True)
class Served:
    """An app over a lake, a read token, and where the secrets were planted."""

    client: TestClient
    token: str
    lake: Lake
    # Placeholders of the probes -> paths (absolute, or as DuckDB would name an S3 object).
    places: dict[str, str]
    # Text of the sensitive files that must never come back.
    contents: list[str]


def _readings() -> pa.Table:
    times = [DAY1 + day * 86_400_000 + i * 10_000 for day in range(2) for i in range(300)]
    rows = [
        {"ts": t, "received_at": t + 90, "device_id": f"m{i % 2}", "channel": i % 3,
         "power_w": 100.0 + i, "source": "generic"}
        for i, t in enumerate(times)
    ]  # fmt: skip
    return readings_to_table(rows)


def _plant(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "planted.txt"
    path.write_text(f"{SECRET}\n", encoding="utf-8")
    return path


def _serve(settings: Settings, places: dict[str, str]) -> Served:
    lake = Lake.from_settings(settings)
    tables.append(lake, READINGS_TABLE, _readings())
    token = TokenStore.from_settings(settings).create("read")[0]
    task = tables.scan_files(lake, READINGS_TABLE)[0]
    catalog = default_sql_uri(lake).removeprefix("sqlite:///")
    places |= {
        "tokens": str(tokens_path(settings)),
        "catalog": catalog,
        "state_dir": str(Path(catalog).parent),
        "data_file": task.file.file_path.removeprefix("file://"),
    }
    token_hash = json.loads(Path(places["tokens"]).read_text())["tokens"][0]["sha256"]
    contents = [SECRET, token_hash, "SQLite format"]
    return Served(TestClient(create_app(settings)), token, lake, places, contents)


@pytest.fixture(scope="module")
def local_served(tmp_path_factory: pytest.TempPathFactory) -> Served:
    root = tmp_path_factory.mktemp("sandbox-local")
    lake_dir = root / "lake"
    settings = Settings.load(overrides={"data_dir": str(lake_dir)}, environ={})
    places = {"lake_root": str(lake_dir), "beside": str(_plant(root))}
    served = _serve(settings, places)
    places["in_lake"] = str(_plant(lake_dir))
    # Parquet files in the lake folder and in a table's data folder that no table names (the
    # old sandbox allowed any Parquet file under the lake).
    secret = pa.table({"secret": [SECRET]})
    for key, path in (
        ("lake_parquet", lake_dir / "planted.parquet"),
        ("unlisted_parquet", Path(places["data_file"]).parent / "planted.parquet"),
    ):
        pq.write_table(secret, path)
        places[key] = str(path)
    return served


@pytest.fixture(scope="module")
def s3_served(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("sandbox-s3")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(root / "home"))  # the catalog and tokens live in local state
        mp.delenv("XDG_STATE_HOME", raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
        mp.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        bucket = make_bucket(s3_server.endpoint_url)
        values = {"data_dir": f"s3://{bucket}/lake", "lake.s3_endpoint_url": s3_server.endpoint_url}
        settings = Settings.load(overrides=values, environ={})
        places = {"lake_root": f"s3://{bucket}/lake", "beside": str(_plant(root))}
        served = _serve(settings, places)
        places["in_lake"] = str(_plant(Path(places["state_dir"])))
        lake = served.lake
        data_folder = places["data_file"].removeprefix("s3://").rsplit("/", 1)[0]
        for key, path in (
            ("lake_parquet", lake.path("planted.parquet")),
            ("unlisted_parquet", f"{data_folder}/planted.parquet"),
        ):
            with lake.fs.open_output_stream(path) as out:
                pq.write_table(pa.table({"secret": [SECRET]}), out)
            places[key] = f"s3://{path}"
        yield served


@pytest.fixture(params=["local", "s3"])
def served(request: pytest.FixtureRequest) -> Served:
    served: Served = request.getfixturevalue(f"{request.param}_served")
    return served


@pytest.fixture
def cwd_secret() -> Path:
    """A secret in the server's working folder's ``.tmp``, DuckDB's default temporary folder
    (each test runs in its own working folder)."""
    return _plant(Path.cwd() / ".tmp")


# Each probe reaches for something outside the views. {cwd} is the server's working folder,
# {cwd_name} its name; the other placeholders are Served.places.
PROBES: dict[str, str] = {
    # The hole: DuckDB's own temporary folder, by every path form.
    "read_text cwd .tmp": "SELECT * FROM read_text('{cwd}/.tmp/planted.txt')",
    "read_text relative": "SELECT * FROM read_text('.tmp/planted.txt')",
    "read_text dot-dot": "SELECT * FROM read_text('.tmp/../.tmp/planted.txt')",
    "read_text up and back": "SELECT * FROM read_text('../{cwd_name}/.tmp/planted.txt')",
    "read_text file url": "SELECT * FROM read_text('file://{cwd}/.tmp/planted.txt')",
    "read_text double slash": "SELECT * FROM read_text('{cwd}//.tmp/planted.txt')",
    "read_text temp setting": (
        "SELECT * FROM read_text(current_setting('temp_directory') || '/planted.txt')"
    ),
    "read_blob": "SELECT * FROM read_blob('{cwd}/.tmp/planted.txt')",
    "read_csv": "SELECT * FROM read_csv('.tmp/planted.txt', header = false)",
    "read_csv_auto": "SELECT * FROM read_csv_auto('{cwd}/.tmp/planted.txt')",
    "sniff_csv": "SELECT * FROM sniff_csv('{cwd}/.tmp/planted.txt')",
    "read_json": "SELECT * FROM read_json('{tokens}')",
    "read_json_auto": "SELECT * FROM read_json_auto('{tokens}')",
    "read_ndjson": "SELECT * FROM read_ndjson('{tokens}')",
    "read_json_objects": "SELECT * FROM read_json_objects('{tokens}')",
    "read_parquet planted": "SELECT * FROM read_parquet('{lake_parquet}')",
    "parquet_metadata": "SELECT * FROM parquet_metadata('{lake_parquet}')",
    "read_parquet unlisted": "SELECT * FROM read_parquet('{unlisted_parquet}')",
    "read_parquet data and more": (
        "SELECT * FROM read_parquet(['{data_file}', '{unlisted_parquet}'], union_by_name = true)"
    ),
    "glob data folder": "SELECT * FROM glob('{data_file}/../*.parquet')",
    "glob temp": "SELECT * FROM glob('.tmp/*')",
    "glob temp setting": "SELECT * FROM glob(current_setting('temp_directory') || '/*')",
    "glob lake": "SELECT * FROM glob('{lake_root}/*')",
    "glob everything": "SELECT * FROM glob('/**')",
    "from path": "SELECT * FROM '{cwd}/.tmp/planted.txt'",
    "from relative csv": "SELECT * FROM '.tmp/planted.csv'",
    "from absolute csv": "SELECT * FROM '{cwd}/.tmp/planted.csv'",
    "from tokens": "SELECT * FROM '{tokens}'",
    "from parquet": "SELECT * FROM '{lake_parquet}'",
    "tokens file": "SELECT * FROM read_text('{tokens}')",
    "catalog file": "SELECT * FROM read_blob('{catalog}')",
    "state folder": "SELECT * FROM glob('{state_dir}/*')",
    "beside the lake": "SELECT * FROM read_text('{beside}')",
    "in the lake folder": "SELECT * FROM read_text('{in_lake}')",
    "http": "SELECT * FROM read_text('https://example.com/')",
    "s3 url": "SELECT * FROM read_text('s3://wattlake-none/x.txt')",
    "query() wrapper": "SELECT * FROM query('SELECT * FROM read_text(''.tmp/planted.txt'')')",
    "copy to": "COPY (SELECT 1) TO '{cwd}/escape.csv'",
    "copy view to": "COPY readings TO '{cwd}/escape.parquet'",
    "copy from": "COPY readings FROM '{cwd}/.tmp/planted.txt'",
    "export database": "EXPORT DATABASE '{cwd}/escape-export'",
    "attach file": "ATTACH '{cwd}/escape.duckdb' AS escape",
    "attach catalog": "ATTACH '{catalog}' AS cat (TYPE sqlite)",
    "install": "INSTALL httpfs",
    "load": "LOAD httpfs",
    "set external access": "SET enable_external_access = true",
    "set temp directory": "SET temp_directory = '{cwd}/.tmp'",
    "set allowed directories": "SET allowed_directories = ['/']",
    "set lock": "SET lock_configuration = false",
    "reset temp directory": "RESET temp_directory",
    "pragma": "PRAGMA enable_external_access = true",
    "two statements": "SELECT 1; SELECT * FROM read_text('{cwd}/.tmp/planted.txt')",
    "set then read": (
        "SET enable_external_access = true; SELECT * FROM read_text('{cwd}/.tmp/planted.txt')"
    ),
    "select then copy": "SELECT 1; COPY (SELECT 1) TO '{cwd}/escape.csv'",
}


def _probe_text(template: str, served: Served) -> str:
    cwd = Path.cwd()
    return template.format(cwd=cwd, cwd_name=cwd.name, **served.places)


@pytest.mark.parametrize("name", PROBES)
def test_probe_is_refused(served: Served, cwd_secret: Path, name: str) -> None:
    (cwd_secret.parent / "planted.csv").write_text(f"{SECRET}\n", encoding="utf-8")
    text = _probe_text(PROBES[name], served)
    headers = {"Authorization": f"Bearer {served.token}"}
    r = served.client.post("/api/sql", json={"query": text}, headers=headers)
    assert r.status_code == 400, (text, r.text)
    body = r.json()
    assert set(body) == {"error", "status"} and body["status"] == 400
    sentence = body["error"]
    assert isinstance(sentence, str) and "\n" not in sentence
    assert sentence.endswith((".", ")")), sentence
    for content in served.contents:
        assert content not in r.text
    # The engine refuses it too, not only the SELECT-only rule in front of it.
    con = sandboxed(served.lake)
    with pytest.raises(duckdb.Error):
        con.execute(text).fetchall()
    con.close()
    assert not list(Path.cwd().glob("escape*")), "nothing was written"


def test_sandbox_allows_only_the_views_files(served: Served) -> None:
    """DuckDB's own view of the sandbox: no temporary folder, no allowed folder, only the data
    files the views read by path (a local lake's; none on S3), all of it locked."""
    headers = {"Authorization": f"Bearer {served.token}"}

    def ask(text: str) -> list[dict[str, object]]:
        r = served.client.post("/api/sql", json={"query": text}, headers=headers)
        assert r.status_code == 200, r.text
        rows: list[dict[str, object]] = r.json()["rows"]
        return rows

    names = ("temp_directory", "enable_external_access", "lock_configuration")
    settings = ask("SELECT " + ", ".join(f"current_setting('{n}') AS {n}" for n in names))
    assert settings == [
        {"temp_directory": "", "enable_external_access": False, "lock_configuration": True}
    ]
    assert ask("SELECT len(current_setting('allowed_directories')) AS n") == [{"n": 0}]
    allowed = ask("SELECT unnest(current_setting('allowed_paths')) AS path")
    plan = [t.file.file_path for t in tables.scan_files(served.lake, READINGS_TABLE)]
    if served.lake.is_local:
        assert sorted(r["path"] for r in allowed) == sorted(tables.local_path(p) for p in plan)
        # A view's file by its path holds the rows the view shows.
        by_path = ask(f"SELECT count(*) AS n FROM read_parquet('{served.places['data_file']}')")
        assert by_path[0]["n"] == 300
    else:
        assert allowed == []
        # No view names a file: DuckDB's local file system is off (current_setting shows '').
        con = sandboxed(served.lake)
        with pytest.raises(duckdb.PermissionException, match="LocalFileSystem has been disabled"):
            con.execute(f"SELECT * FROM read_text('{served.places['beside']}')")
        con.close()


def test_views_still_answer(served: Served, cwd_secret: Path) -> None:
    """Queries over the views give what an unlocked connection gives, a sort included."""
    headers = {"Authorization": f"Bearer {served.token}"}
    queries = [
        "SELECT device_id, channel, count(*) AS n, sum(power_w) AS w FROM readings "
        "GROUP BY ALL ORDER BY ALL",
        "SELECT count(*) AS n FROM raw_readings",
        "SELECT count(*) AS n FROM dead_letters",
        "SELECT count(*) AS n FROM energy_15min",
        "SELECT a.device_id, count(*) AS n FROM readings a JOIN readings b USING (device_id, ts) "
        "GROUP BY ALL ORDER BY ALL",
        "SELECT ts, power_w FROM readings ORDER BY power_w DESC, ts LIMIT 5",
        # A sort of 2M rows, held in memory (there is no folder to spill to).
        "SELECT count(*) AS n, max(h) AS h FROM (SELECT md5(x::VARCHAR) AS h FROM range(2000000) "
        "t(x) ORDER BY h OFFSET 1)",
    ]
    plain = connect(served.lake)
    for text in queries:
        r = served.client.post("/api/sql", json={"query": text}, headers=headers)
        assert r.status_code == 200, (text, r.text)
        got = [list(row.values()) for row in r.json()["rows"]]
        want = [[v if isinstance(v, int | float | str) else str(v) for v in row]
                for row in plain.execute(text).fetchall()]  # fmt: skip
        assert got == want, text
    plain.close()


def test_duckdb_allows_its_temp_folder_unless_there_is_none(tmp_path: Path) -> None:
    """Why the sandbox empties temp_directory first: DuckDB (2.0) adds its temporary folder to
    the allowed directories when external access is switched off, and it cannot be taken out
    afterwards."""
    secret = _plant(tmp_path / ".tmp")
    default = duckdb.connect()
    default.execute("SET enable_external_access = false")
    assert default.execute("SELECT current_setting('allowed_directories')").fetchone() == (
        [f"{tmp_path}/.tmp/"],
    )
    assert default.execute(f"SELECT content FROM read_text('{secret}')").fetchone() == (
        f"{SECRET}\n",
    )
    with pytest.raises(duckdb.InvalidInputException, match="allowed_directories"):
        default.execute("SET allowed_directories = []")
    emptied = duckdb.connect()
    emptied.execute("SET temp_directory = ''")
    emptied.execute("SET enable_external_access = false")
    assert emptied.execute("SELECT current_setting('allowed_directories')").fetchone() == ([],)
    with pytest.raises(duckdb.PermissionException):
        emptied.execute(f"SELECT content FROM read_text('{secret}')").fetchall()
