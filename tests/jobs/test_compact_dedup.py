"""Compaction's deduplication: one sort when no reading has copies, the earliest received copy
(then the first source by name) otherwise; the same rows as a plain lexicographic sort."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from wattlake.jobs.compact import deduplicate, merge_order
from wattlake.lake import tables
from wattlake.schema import READINGS_TABLE


def _reference(stored: pa.Table) -> pa.Table:
    # The receive time is stored as a lag behind ts: sort by the time it gives back.
    received = stored.append_column("received", tables.received_at_us(stored))
    keys = tables._sort_keys(received, ("device_id", "channel", "ts", "received", "source"))
    order = np.lexsort(tuple(reversed(keys)))
    device, channel, ts = (k[order] for k in keys[:3])
    first = np.ones(len(order), dtype=bool)
    first[1:] = (device[1:] != device[:-1]) | (channel[1:] != channel[:-1]) | (ts[1:] != ts[:-1])
    return stored.take(order[first])


@pytest.mark.parametrize("copies", [0, 1, 50])
def test_deduplicate_keeps_what_a_full_sort_keeps(copies: int) -> None:
    rng = np.random.default_rng(copies)
    n = 5000
    ts = 1_767_225_600_000 + rng.permutation(n) * 10_000 + rng.integers(0, 3, n) * 10
    table = pa.table(
        {
            "ts": pa.array(ts, pa.timestamp("ms", tz="UTC")),
            "received_at": pa.array(ts + rng.integers(80, 400, n), pa.timestamp("ms", tz="UTC")),
            "device_id": pa.array([f"m-{i}" for i in rng.integers(0, 4, n)]),
            "channel": pa.array(rng.integers(0, 3, n).astype(np.int16)),
            "power_w": pa.array(np.round(rng.normal(0, 500, n), 1)),
            "source": pa.array(rng.choice(["generic", "shelly-gen2"], n)),
        }
    )
    if copies:
        again = table.slice(0, copies)
        later = pa.array(
            again["received_at"].cast(pa.int64()).to_numpy() + rng.integers(-100, 100, copies),
            pa.int64(),
        ).cast(pa.timestamp("ms", tz="UTC"))
        again = again.set_column(1, "received_at", later).set_column(
            4, "power_w", pa.array(rng.normal(0, 1, copies))
        )
        table = pa.concat_tables([table, again])
    stored = tables.to_stored(READINGS_TABLE, table)
    got = deduplicate(stored)
    assert got.num_rows == n
    assert got.to_pylist() == _reference(stored).to_pylist()


def _sorted_file(rng: np.random.Generator, devices: list[str], ts: np.ndarray) -> pa.Table:
    """Readings of ``devices`` x 2 channels at times ``ts`` [ms], sorted as a data file is."""
    times = np.sort(ts)
    n = len(devices) * 2 * len(times)
    table = pa.table(
        {
            "ts": pa.array(np.tile(times, len(devices) * 2), pa.timestamp("ms", tz="UTC")),
            "received_at": pa.array(
                np.tile(times, len(devices) * 2) + 100, pa.timestamp("ms", tz="UTC")
            ),
            "device_id": pa.array(np.repeat(sorted(devices), 2 * len(times)).tolist()),
            "channel": pa.array(np.tile(np.repeat([0, 1], len(times)), len(devices)), pa.int16()),
            "power_w": pa.array(np.round(rng.normal(0, 500, n), 1)),
            "source": pa.array(["generic"] * n),
        }
    )
    return tables.to_stored(READINGS_TABLE, table)


def _as_read(parts: list[pa.Table]) -> pa.Table:
    """The files one after the other, text as dictionaries, as compaction reads them."""
    encoded = [
        p.set_column(i, p.schema.field(i).name, p.column(i).dictionary_encode())
        if pa.types.is_string(p.schema.field(i).type)
        else p
        for p in parts
        for i in [p.schema.get_field_index("device_id")]
    ]
    encoded = [
        p.set_column(i, "source", p.column(i).dictionary_encode())
        for p in encoded
        for i in [p.schema.get_field_index("source")]
    ]
    return pa.concat_tables(encoded).unify_dictionaries()


@pytest.mark.parametrize("files", [1, 2, 5])
def test_sorted_files_are_merged_without_a_sort(files: int) -> None:
    rng = np.random.default_rng(files)
    start = 1_767_225_600_000
    # Each file a slice of the day in time, the devices not all in every file.
    parts = [
        _sorted_file(
            rng,
            ["m-b", "m-a", "m-c"][: 1 + k % 3],
            start + k * 3_600_000 + np.arange(50) * 10_000 + rng.integers(0, 9, 50),
        )
        for k in range(files)
    ]
    rng.shuffle(parts)  # files come in any order
    stored = _as_read(parts)
    order = merge_order(stored, [p.num_rows for p in parts])
    assert order is not None
    merged = tables.take_rows(stored, order)
    assert merged.to_pylist() == _reference(stored).to_pylist()
    assert merged.to_pylist() == deduplicate(stored).to_pylist()


def test_overlapping_or_repeated_readings_are_sorted_and_deduplicated() -> None:
    rng = np.random.default_rng(3)
    start = 1_767_225_600_000
    first = _sorted_file(rng, ["m-a", "m-b"], start + np.arange(50) * 10_000)
    overlapping = _sorted_file(rng, ["m-a"], start + 5_000 + np.arange(50) * 10_000)
    again = _sorted_file(rng, ["m-a"], start + np.arange(50) * 10_000)  # the same readings
    twice = pa.concat_tables([first.slice(0, 3), first.slice(2)])  # one reading twice in a file
    for parts in ([first, overlapping], [first, again], [twice]):
        stored = _as_read(parts)
        assert merge_order(stored, [p.num_rows for p in parts]) is None
        assert deduplicate(stored).to_pylist() == _reference(stored).to_pylist()


@pytest.mark.parametrize("runs", [1, 3, 5000])
def test_take_rows_is_take(runs: int) -> None:
    rng = np.random.default_rng(runs)
    n = 5000
    table = pa.table({"a": pa.array(rng.normal(size=n)), "b": pa.array(rng.integers(0, 9, n))})
    cuts = np.sort(rng.choice(np.arange(1, n), runs - 1, replace=False))
    pieces = np.split(np.arange(n), cuts)
    rng.shuffle(pieces)
    order = np.concatenate(pieces)
    assert tables.take_rows(table, order).equals(table.take(order))
