"""A stop drains by construction: the ingest takes messages until the embedded broker holds none
for it, however long that takes, then flushes; exact counts through a real broker."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tests.stream.support import Publisher, expected_keys, reading_message
from wattlake.config import Settings
from wattlake.gateway.broker import EmbeddedBroker
from wattlake.lake.storage import Lake
from wattlake.query.engine import connect
from wattlake.stream.ingest import DRAIN_MAX_S, IngestWorker


def keys_in(data_dir: Path) -> tuple[int, set[tuple[str, int]]]:
    con = connect(Lake.open(str(data_dir)))
    rows = con.sql("SELECT device_id, epoch_ms(ts) FROM readings").fetchall()
    con.close()
    return len(rows), {(d, int(t)) for d, t in rows}


COUNT = 20_000


def stop_with_backlog(
    data_dir: Path, *, wal_max_bytes: int, flush_interval_s: float, abort: bool
) -> tuple[IngestWorker, int]:
    """Publish COUNT messages through an embedded broker to a draining ingest, then stop it
    (and abort the drain at once if ``abort``); return the worker and what the broker still
    holds for it afterwards."""
    settings = Settings.load(
        overrides={
            "data_dir": str(data_dir),
            "stream.wal_max_bytes": wal_max_bytes,
            "stream.flush_interval_s": flush_interval_s,
        },
        environ={},
    )
    with EmbeddedBroker() as broker:
        worker = IngestWorker(
            settings, broker.url, mqtt5=False, drain=True, broker_backlog=broker.pending_for
        )
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, args=(stop,))
        thread.start()
        assert worker.ready.wait(30)
        # Every message in flight at once: the broker acknowledges each only once the ingest has
        # it in its WAL, so the backlog it holds is what the publisher has not heard back about.
        messages = [reading_message(i) for i in range(COUNT)]
        publisher = Publisher(broker.url, messages, name="pub", max_inflight=COUNT)
        publisher.start()
        deadline = time.monotonic() + 120
        while (broker.pending_for(worker.client_id) or 0) + worker.health.acked < COUNT:
            assert time.monotonic() < deadline, "the broker did not receive every message"
            time.sleep(0.01)
        stop.set()  # every message is in the broker or the WAL: each must be accounted for
        if abort:
            worker.abort.set()
        thread.join(30 if abort else 300)
        assert not thread.is_alive()
        if not abort:
            publisher.wait()  # the drain took all: every message acknowledged to the publisher
        publisher.close()
        return worker, broker.pending_for(worker.client_id)


def test_a_stop_with_a_big_backlog_in_the_broker_delivers_all_of_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "lake"
    # A small WAL limit and a late flush make the ingest much slower than the publisher, so the
    # broker still holds thousands of messages when the stop comes.
    worker, pending = stop_with_backlog(
        data_dir, wal_max_bytes=512 * 1024, flush_interval_s=3.0, abort=False
    )
    assert pending == 0
    state = worker.drain_state
    assert state.done and not state.aborted and not state.gave_up
    assert state.first_left > 0, "the broker held nothing at the stop: the test proves nothing"
    rows, keys = keys_in(data_dir)
    assert rows == COUNT
    assert keys == expected_keys(COUNT)
    assert worker.undelivered() == (0, 0)
    assert DRAIN_MAX_S  # the old time limit is no part of this path


def test_an_abort_during_the_drain_returns_at_once_and_the_wal_keeps_what_was_taken(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "lake"
    worker, _ = stop_with_backlog(
        data_dir, wal_max_bytes=256 * 1024, flush_interval_s=30.0, abort=True
    )
    assert worker.drain_state.aborted
    left = worker.drain_state.left  # what the broker held when the worker gave up
    messages, readings = worker.undelivered()
    assert messages > 0 and readings == messages  # one reading per message here
    assert left > 0
    assert messages + left >= COUNT - keys_in(data_dir)[0]
