"""Ingest metrics in Prometheus' text format, written to a file.

The worker rewrites the file every few seconds and at exit (atomically: a temporary file
renamed), so node_exporter's textfile collector, a cron check or a person with ``cat`` can see
what is wrong: is the lake writable, is the WAL, are messages still being acknowledged, how big
is the WAL. The web stage serves the same figures on ``/metrics``.

Every figure is counted once, where it happens: messages received and accepted per device
format, readings, dead letters, files and readings committed, and the flush and commit latency
histograms in the lake writer process (sent to the worker in its reports); WAL bytes and the
age of the oldest message the WAL still holds in the worker. Scheduled job runs and failures
are counted by the stack's job loop, which writes them with :func:`write_job_metrics`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Final, Self

from prometheus_client import CollectorRegistry, write_to_textfile
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

# How often the worker rewrites its metrics file [s].
WRITE_EVERY_S: Final = 5.0

# Upper bounds of the latency histograms' buckets [s] (the last, +Inf, is implied).
FLUSH_BUCKETS_S: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
COMMIT_BUCKETS_S: Final = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)


def observe(buckets_s: Sequence[float], counts: Sequence[int], seconds: float) -> list[int]:
    """Return histogram ``counts`` (one per bucket of ``buckets_s``, then +Inf; not
    cumulative) with one observation of ``seconds`` added."""
    out = list(counts) or [0] * (len(buckets_s) + 1)
    for i, bound in enumerate(buckets_s):
        if seconds <= bound:
            out[i] += 1
            return out
    out[-1] += 1
    return out


def add_counts(a: Sequence[int], b: Sequence[int]) -> list[int]:
    """Return two histograms' bucket counts added (an empty one is all zeros)."""
    if not a or not b:
        return list(a or b)
    return [x + y for x, y in zip(a, b, strict=True)]


def add_by_key(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    """Return two counters by label added."""
    return {k: a.get(k, 0) + b.get(k, 0) for k in {*a, *b}}


@dataclass(slots=True, kw_only=True)
class IngestCounters:
    """What a stream has done since it started, carried unchanged from the stream
    (:class:`~wattlake.stream.delivery.StreamStats`) through the writer's reports
    (:class:`~wattlake.stream.writer.WriterReport`) to the worker's figures
    (:class:`IngestFigures`): a new counter is a new field here, and :meth:`plus` and
    :meth:`counters` take it along."""

    messages: int = 0
    readings: int = 0
    dead_letters: int = 0
    files_written: int = 0
    rows_written: int = 0
    replayed: int = 0
    # Messages received and accepted (decoded, not dead letters) per device format.
    received_by_format: dict[str, int] = field(default_factory=dict)
    accepted_by_format: dict[str, int] = field(default_factory=dict)
    # Histograms (FLUSH_BUCKETS_S, COMMIT_BUCKETS_S): counts per bucket (not cumulative, +Inf
    # last) and the sum of observations [s].
    flush_counts: list[int] = field(default_factory=list)
    flush_sum_s: float = 0.0
    commit_counts: list[int] = field(default_factory=list)
    commit_sum_s: float = 0.0

    def counters(self) -> dict[str, Any]:
        """Return the counters (copies), by name: ``SomeCounters(**other.counters(), ...)``."""
        return {f.name: copy.copy(getattr(self, f.name)) for f in fields(IngestCounters)}

    def plus(self, earlier: IngestCounters) -> Self:
        """Return this object with the counters of ``earlier`` added (all else as is)."""
        added: dict[str, Any] = {}
        for f in fields(IngestCounters):
            mine, theirs = getattr(self, f.name), getattr(earlier, f.name)
            if isinstance(mine, dict):
                added[f.name] = add_by_key(mine, theirs)
            elif isinstance(mine, list):
                added[f.name] = add_counts(mine, theirs)
            else:
                added[f.name] = mine + theirs
        return replace(self, **added)


@dataclass(slots=True, kw_only=True)
class IngestFigures(IngestCounters):
    """One snapshot of what a worker has done (its counters) and how it is."""

    stream: str
    lake_writable: bool
    wal_writable: bool
    acknowledging: bool
    wal_bytes: int
    buffered_rows: int
    acknowledged: int
    wal_oldest_age_s: float = 0.0


class IngestCollector(Collector):
    """Turn the figures of one worker into Prometheus metrics at collection time."""

    def __init__(self, figures: Callable[[], IngestFigures]) -> None:
        self.figures = figures

    def collect(self) -> Iterator[Metric]:
        """Yield every metric, labelled by stream."""
        f = self.figures()
        gauges = {
            "lake_writable": ("1 while the lake takes writes", int(f.lake_writable)),
            "wal_writable": ("1 while the write-ahead log takes writes", int(f.wal_writable)),
            "acknowledging": ("1 while messages are taken and acknowledged", int(f.acknowledging)),
            "wal_bytes": ("Bytes held by the write-ahead log", f.wal_bytes),
            "buffered_readings": ("Readings waiting in the buffer", f.buffered_rows),
            "wal_oldest_age_seconds": (
                "Age of the oldest message the write-ahead log holds (not yet in the lake)",
                f.wal_oldest_age_s,
            ),
        }
        for name, (help_text, value) in gauges.items():
            gauge = GaugeMetricFamily(f"wattlake_ingest_{name}", help_text, labels=["stream"])
            gauge.add_metric([f.stream], value)
            yield gauge
        counters = {
            "messages": ("Messages taken from the broker", f.messages),
            "readings": ("Readings decoded", f.readings),
            "dead_letters": ("Messages refused as dead letters", f.dead_letters),
            "acknowledged": ("Messages acknowledged to the broker", f.acknowledged),
            "replayed": ("Messages replayed from the write-ahead log", f.replayed),
            "files_written": ("Parquet files committed to the lake", f.files_written),
            "rows_written": ("Readings in Parquet files committed to the lake", f.rows_written),
        }
        for name, (help_text, value) in counters.items():
            counter = CounterMetricFamily(f"wattlake_ingest_{name}", help_text, labels=["stream"])
            counter.add_metric([f.stream], value)
            yield counter
        by_format = {
            "received": ("Messages received by device format", f.received_by_format),
            "accepted": (
                "Messages accepted by device format (decoded, not a dead letter)",
                f.accepted_by_format,
            ),
        }
        for name, (help_text, values) in by_format.items():
            counter = CounterMetricFamily(
                f"wattlake_ingest_messages_{name}", help_text, labels=["stream", "format"]
            )
            for fmt in sorted(values):
                counter.add_metric([f.stream, fmt], values[fmt])
            yield counter
        histograms = {
            "flush_seconds": (
                "Time to write one flush's files to the lake and commit them",
                FLUSH_BUCKETS_S,
                f.flush_counts,
                f.flush_sum_s,
            ),
            "commit_latency_seconds": (
                "From the arrival of a flush's oldest message to the commit of its readings",
                COMMIT_BUCKETS_S,
                f.commit_counts,
                f.commit_sum_s,
            ),
        }
        for name, (help_text, bounds, counts, total) in histograms.items():
            histogram = HistogramMetricFamily(
                f"wattlake_ingest_{name}", help_text, labels=["stream"]
            )
            counts = list(counts) or [0] * (len(bounds) + 1)
            cumulative, buckets = 0, []
            for bound, n in zip([*map(str, bounds), "+Inf"], counts, strict=True):
                cumulative += n
                buckets.append((bound, cumulative))
            histogram.add_metric([f.stream], buckets, total)
            yield histogram


class MetricsFile:
    """A Prometheus text file rewritten from a worker's figures."""

    def __init__(self, path: Path, figures: Callable[[], IngestFigures]) -> None:
        self.path = path
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(IngestCollector(figures))

    def write(self) -> None:
        """Rewrite the file atomically; a failure is not the ingest's problem, so it is quiet.

        Raises:
            OSError: the file cannot be written (the caller logs it).
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_to_textfile(str(self.path), self.registry)


def write_job_metrics(path: Path, runs: Mapping[str, int], failures: Mapping[str, int]) -> None:
    """Write scheduled job runs and failures, by job, to ``path`` in Prometheus' text format
    (atomically).

    Raises:
        OSError: the file cannot be written (the caller logs it).
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_JobCollector(dict(runs), dict(failures)))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)


class _JobCollector(Collector):
    def __init__(self, runs: dict[str, int], failures: dict[str, int]) -> None:
        self.runs, self.failures = runs, failures

    def collect(self) -> Iterator[Metric]:
        for name, help_text, values in (
            ("runs", "Scheduled job runs that finished", self.runs),
            ("failures", "Scheduled job runs that failed", self.failures),
        ):
            counter = CounterMetricFamily(f"wattlake_job_{name}", help_text, labels=["job"])
            for job in sorted(values):
                counter.add_metric([job], values[job])
            yield counter
