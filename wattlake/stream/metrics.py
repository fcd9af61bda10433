"""Ingest metrics in Prometheus' text format, written to a file.

The worker rewrites the file every few seconds and at exit (atomically: a temporary file
renamed), so node_exporter's textfile collector, a cron check or a person with ``cat`` can see
what is wrong: is the lake writable, is the WAL, are messages still being acknowledged, how big
is the WAL. The web stage serves the same figures on ``/metrics``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from prometheus_client import CollectorRegistry, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# How often the worker rewrites its metrics file [s].
WRITE_EVERY_S: Final = 5.0


@dataclass(frozen=True, slots=True)
class IngestFigures:
    """One snapshot of what a worker has done and how it is."""

    stream: str
    lake_writable: bool
    wal_writable: bool
    acknowledging: bool
    wal_bytes: int
    buffered_rows: int
    messages: int
    readings: int
    dead_letters: int
    acknowledged: int
    replayed: int
    files_written: int
    rows_written: int = 0


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
