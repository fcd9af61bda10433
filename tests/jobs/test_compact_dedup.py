"""Compaction's deduplication: one sort when no reading has copies, the earliest received copy
(then the first source by name) otherwise; the same rows as a plain lexicographic sort."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from wattlake.jobs.compact import deduplicate
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
