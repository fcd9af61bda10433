"""``wattlake import``: history files through the generic decoder into the lake, end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from wattlake.cli import main

T0_S = 1_767_225_600  # 2026-01-01T00:00:00Z [s]


def wattlake(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the CLI in this process as a user would; return exit code, stdout and stderr."""
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def query(capsys: pytest.CaptureFixture[str], data_dir: Path, sql: str) -> list[dict[str, Any]]:
    code, out, err = wattlake(capsys, "query", sql, "--format", "json", "--data-dir", str(data_dir))
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


READINGS_SQL = (
    "SELECT device_id, channel, epoch_ms(ts) AS ts_ms, power_w, energy_wh, source "
    "FROM readings ORDER BY device_id, channel, ts"
)


def test_csv_with_iso_naive_and_epoch_times(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "lake"
    path = tmp_path / "history.csv"
    path.write_text(
        "ts,device_id,channel,power_w,energy_wh\n"
        "2026-01-01T00:00:00Z,meter-1,0,100.5,1000\n"
        "2026-01-01T01:00:00+01:00,meter-1,0,200,1001.5\n"  # the same instant as 00:00Z + 0 s
        "2026-01-01 00:00:30,meter-1,1,50,\n"  # naive: UTC
        f"{T0_S + 60},meter-2,0,-25.25,7\n"
    )
    code, _, err = wattlake(capsys, "import", str(path), "--data-dir", str(data_dir))
    assert code == 0, err
    assert err.splitlines() == [f"history.csv: 4 row(s) read, 4 stored; lake {data_dir}"]
    rows = query(capsys, data_dir, "SELECT count(*) AS n FROM raw_readings")
    assert rows == [{"n": 4}]
    assert query(capsys, data_dir, READINGS_SQL) == [
        # the first two rows share (device, channel, ts): the readings view keeps one
        {"device_id": "meter-1", "channel": 0, "ts_ms": T0_S * 1000, "power_w": 100.5,
         "energy_wh": 1000.0, "source": "generic"},
        {"device_id": "meter-1", "channel": 1, "ts_ms": T0_S * 1000 + 30_000, "power_w": 50.0,
         "energy_wh": None, "source": "generic"},
        {"device_id": "meter-2", "channel": 0, "ts_ms": (T0_S + 60) * 1000, "power_w": -25.25,
         "energy_wh": 7.0, "source": "generic"},
    ]  # fmt: skip


def test_bad_csv_rows_become_dead_letters_with_their_row_and_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "lake"
    path = tmp_path / "history.csv"
    path.write_text(
        "ts,device_id,power_w,voltage_v\n"
        f"{T0_S},meter-1,1,\n"
        f"{T0_S + 1},meter-1,high,\n"
        f",meter-1,2,230\n"
        "yesterday,meter-1,3,\n"
        f"{T0_S + 4},meter-1,4,231\n"
    )
    code, _, err = wattlake(capsys, "import", str(path), "--data-dir", str(data_dir))
    assert code == 0, err
    [line] = err.splitlines()  # one summary line per file
    assert line.startswith(
        "history.csv: 5 row(s) read, 2 stored, 3 rejected "
        "(1 bad-timestamp, 1 bad-type, 1 missing-timestamp)"
    )
    assert query(capsys, data_dir, "SELECT count(*) AS n FROM readings") == [{"n": 2}]
    letters = query(
        capsys,
        data_dir,
        "SELECT error_code, error_message, raw_text FROM dead_letters ORDER BY error_code",
    )
    assert [(x["error_code"], x["error_message"]) for x in letters] == [
        (
            "bad-timestamp",
            "history.csv row 4: ts 'yesterday' is neither ISO 8601 nor epoch seconds",
        ),
        ("bad-type", "history.csv row 2: power_w is 'high', not a number"),
        ("missing-timestamp", "history.csv row 3: ts is empty"),
    ]
    assert "high" in letters[1]["raw_text"]


@pytest.mark.parametrize(
    ("name", "content", "args", "expected"),
    [
        ("a.csv", "when,device_id,power_w\n1,m,2\n", [], "it has unknown column(s) when"),
        ("a.csv", "device_id,power_w\nm,2\n", [], "it has no ts column"),
        ("a.csv", "ts,power_w\n1767225600,2\n", [], "has no device_id column"),
        ("a.csv", "", [], "a.csv is empty"),
        ("a.csv", "ts,device_id,power_w\n", ["--input-format", "parquet"], "not a Parquet file"),
        ("a.jsonl", "ts,device_id\n1,m\n", [], "its first line is not a JSON object"),
        (
            "em.csv",
            "timestamp,total_act_energy\n1767225600,2\n",
            [],
            "looks like a Shelly energy export",
        ),
        ("em.csv", "ts,power_w\n1,2\n", ["--input-format", "shelly-csv", "--device", "x"],
         "is not a Shelly energy export"),
        ("a.txt", "ts\n", [], "Cannot tell the format of a.txt"),
    ],
)  # fmt: skip
def test_a_file_of_the_wrong_kind_or_shape_is_refused_before_anything_is_written(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    content: str,
    args: list[str],
    expected: str,
) -> None:
    data_dir = tmp_path / "lake"
    path = tmp_path / name
    path.write_text(content)
    code, out, err = wattlake(capsys, "import", str(path), *args, "--data-dir", str(data_dir))
    assert code == 2
    assert out == ""
    [line] = err.splitlines()
    assert expected in line
    assert not data_dir.exists(), "nothing is written for a refused file"


def test_binary_and_parquet_files_given_as_csv_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parquet = tmp_path / "history.csv"
    pq.write_table(pa.table({"ts": [1], "device_id": ["m"]}), parquet)
    code, _, err = wattlake(capsys, "import", str(parquet), "--data-dir", str(tmp_path / "l"))
    assert (code, err.strip()) == (
        2,
        "Error: history.csv is a Parquet file, not CSV; import it as parquet.",
    )
    binary = tmp_path / "noise.csv"
    binary.write_bytes(bytes(range(256)) * 4)
    code, _, err = wattlake(capsys, "import", str(binary), "--data-dir", str(tmp_path / "l"))
    assert (code, err.strip()) == (2, "Error: noise.csv is not a text CSV file.")


def test_old_format_spelling_still_works_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "history.data"
    path.write_text(json.dumps({"ts": T0_S, "device_id": "m", "power_w": 1}) + "\n")
    code, _, err = wattlake(
        capsys, "import", str(path), "--format", "jsonl", "--data-dir", str(tmp_path / "lake")
    )
    assert code == 0, err
    assert err.splitlines()[0] == (
        "Warning: --format is deprecated here and will be removed; use --input-format instead."
    )
    assert "1 stored" in err


def test_the_checked_columns_are_the_generic_formats_fields() -> None:
    from wattlake.devices.generic import FIELDS
    from wattlake.gateway.files import READING_COLUMNS

    assert set(READING_COLUMNS) == set(FIELDS)


def test_progress_reports_rows_done_of_the_total(tmp_path: Path) -> None:
    from wattlake.config import Settings
    from wattlake.gateway.files import FileFormat, FileRows
    from wattlake.stream.file_import import import_file

    path = tmp_path / "many.csv"
    path.write_text(
        "ts,device_id,power_w\n" + "".join(f"{T0_S + i},m,{i}\n" for i in range(25_000))
    )
    calls: list[tuple[int, int | None]] = []
    settings = Settings.load(overrides={"data_dir": str(tmp_path / "lake")})
    summary = import_file(
        settings, FileRows(path, FileFormat.csv), on_progress=lambda d, t: calls.append((d, t))
    )
    assert summary.stored == 25_000
    assert calls[0] == (0, 25_000)
    assert calls[-1] == (25_000, 25_000)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert len(calls) >= 3


def test_a_query_export_imports_again(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    path = tmp_path / "history.jsonl"
    path.write_text(
        "\n".join(json.dumps({"ts": T0_S + i, "device_id": "m", "power_w": i}) for i in range(5))
    )
    assert wattlake(capsys, "import", str(path), "--data-dir", str(first))[0] == 0
    code, out, err = wattlake(
        capsys, "query", "SELECT * FROM readings", "--format", "csv", "--data-dir", str(first)
    )
    assert code == 0, err
    export = tmp_path / "export.csv"
    export.write_text(out)
    code, _, err = wattlake(capsys, "import", str(export), "--data-dir", str(second))
    assert code == 0, err
    sql = "SELECT epoch_ms(ts) AS ts_ms, power_w FROM readings ORDER BY ts"
    assert query(capsys, second, sql) == query(capsys, first, sql)
    assert len(query(capsys, second, sql)) == 5


def test_jsonl_keeps_lines_that_are_not_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "lake"
    path = tmp_path / "history.jsonl"
    path.write_text(
        json.dumps({"ts": "2026-01-01T00:00:00+00:00", "power_w": 5.5, "channel": 2})
        + "\n{broken\n\n"
        + json.dumps({"ts": T0_S + 10, "power_w": 6})
        + "\n"
    )
    code, _, err = wattlake(
        capsys, "import", str(path), "--device", "meter-3", "--data-dir", str(data_dir)
    )
    assert code == 0, err
    rows = query(capsys, data_dir, READINGS_SQL)
    assert [(r["device_id"], r["channel"], r["ts_ms"], r["power_w"]) for r in rows] == [
        ("meter-3", 0, (T0_S + 10) * 1000, 6.0),
        ("meter-3", 2, T0_S * 1000, 5.5),
    ]
    letters = query(capsys, data_dir, "SELECT error_code, raw_text FROM dead_letters")
    assert letters == [{"error_code": "invalid-json", "raw_text": "{broken"}]


def test_parquet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = tmp_path / "lake"
    path = tmp_path / "history.parquet"
    n = 50
    table = pa.table(
        {
            "ts": pa.array([(T0_S + i) * 1000 for i in range(n)], pa.timestamp("ms", tz="UTC")),
            "device_id": ["meter-4"] * n,
            "channel": pa.array([i % 2 for i in range(n)], pa.int16()),
            "power_w": [float(i) for i in range(n)],
            "voltage_v": [230.0 if i % 3 else None for i in range(n)],
        }
    )
    pq.write_table(table, path)
    code, _, err = wattlake(capsys, "import", str(path), "--data-dir", str(data_dir))
    assert code == 0, err
    sql = (
        "SELECT count(*) AS n, sum(power_w) AS p, count(voltage_v) AS v, "
        "min(epoch_ms(ts)) AS first, max(epoch_ms(ts)) AS last, sum(channel) AS ch FROM readings"
    )
    assert query(capsys, data_dir, sql) == [
        {
            "n": n,
            "p": float(sum(range(n))),
            "v": sum(1 for i in range(n) if i % 3),
            "first": T0_S * 1000,
            "last": (T0_S + n - 1) * 1000,
            "ch": n // 2,
        }
    ]


def test_shelly_csv_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = tmp_path / "lake"
    path = tmp_path / "em1data.csv"
    path.write_text(
        "timestamp,total_act_energy,total_act_ret_energy,avg_voltage,avg_current\n"
        f"{T0_S},2.5,0.5,230.5,1.25\n"
        f"{T0_S + 60},0,1,231,\n"
    )
    args = ["import", str(path), "--input-format", "shelly-csv", "--device", "pro-em"]
    args += ["--channel", "1"]
    code, _, err = wattlake(capsys, *args, "--data-dir", str(data_dir))
    assert code == 0, err
    sql = (
        "SELECT device_id, channel, epoch_ms(ts) AS ts_ms, power_w, voltage_v, current_a "
        "FROM readings ORDER BY ts"
    )
    assert query(capsys, data_dir, sql) == [
        # (2.5 - 0.5) Wh in 60 s is a mean of 120 W over the minute that starts at ts
        {"device_id": "pro-em", "channel": 1, "ts_ms": T0_S * 1000, "power_w": 120.0,
         "voltage_v": 230.5, "current_a": 1.25},
        {"device_id": "pro-em", "channel": 1, "ts_ms": (T0_S + 60) * 1000, "power_w": -60.0,
         "voltage_v": 231.0, "current_a": None},
    ]  # fmt: skip


def test_a_file_with_no_usable_row_is_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "history.csv"
    path.write_text("ts,device_id,power_w\nnever,m,1\n")
    code, _, err = wattlake(capsys, "import", str(path), "--data-dir", str(tmp_path / "lake"))
    assert code == 2
    [line] = err.splitlines()
    assert line.startswith(
        "Error: No row could be imported (history.csv: 1 row(s) read, 0 stored, 1 rejected "
        f"(1 bad-timestamp); lake {tmp_path / 'lake'}; first rejected: history.csv row 1: ts "
        "'never' is neither ISO 8601 nor epoch seconds (all are in dead_letters: "
    )
    assert line.endswith(' query "SELECT * FROM dead_letters")).')


def test_a_large_import_flushes_at_the_buffer_limits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory stays bounded: the buffer is written whenever it reaches its row limit."""
    monkeypatch.setenv("WATTLAKE_STREAM__BUFFER_MAX_ROWS", "20000")
    data_dir = tmp_path / "lake"
    path = tmp_path / "many.csv"
    lines = ["ts,device_id,channel,power_w"]
    lines += [f"{T0_S + i},meter,0,{i % 500}" for i in range(60_000)]  # 17 h of seconds
    path.write_text("\n".join(lines) + "\n")
    code, _, err = wattlake(capsys, "import", str(path), "--data-dir", str(data_dir))
    assert code == 0, err
    files = sorted(data_dir.glob("tables/readings/data/ts_day=*/*.parquet"))
    assert max(pq.read_metadata(f).num_rows for f in files) <= 20_000
    assert len(files) >= 3, "one file per flush and day: 60,000 rows in flushes of 20,000"
    assert query(capsys, data_dir, "SELECT count(*) AS n FROM readings") == [{"n": 60_000}]
