"""The ingest's counters are one dataclass carried from the stream through the writer's
reports to the worker's figures: a counter added to it reaches all three and is summed across
writer restarts."""

from __future__ import annotations

from dataclasses import fields

from wattlake.stream.delivery import StreamStats
from wattlake.stream.metrics import IngestCounters, IngestFigures
from wattlake.stream.writer import WriterReport


def sample(seed: int) -> dict[str, object]:
    """Return a value for every counter, different per counter and per ``seed``."""
    values: dict[str, object] = {}
    for i, f in enumerate(fields(IngestCounters), start=1):
        n = seed * 100 + i
        values[f.name] = (
            {"gen2": n, f"only-{seed}": 1}
            if f.name.endswith("_by_format")
            else [n, 0, 1]
            if f.name.endswith("_counts")
            else float(n) / 4
            if f.name.endswith("_s")
            else n
        )
    return values


def test_every_counter_is_carried_from_the_stream_to_the_figures() -> None:
    counters = {f.name for f in fields(IngestCounters)}
    for carrier in (StreamStats, WriterReport, IngestFigures):
        assert counters <= {f.name for f in fields(carrier)}, carrier.__name__
    stats = StreamStats(**sample(1))  # type: ignore[arg-type]
    report = WriterReport(**stats.counters(), lake_ok=False)
    assert report.counters() == sample(1) and not report.lake_ok


def test_plus_adds_every_counter_and_keeps_the_rest() -> None:
    later = WriterReport(**sample(2), lake_ok=False, failures=3)  # type: ignore[arg-type]
    earlier = WriterReport(**sample(1), lake_ok=True, failures=9)  # type: ignore[arg-type]
    total = later.plus(earlier).counters()
    for f in fields(IngestCounters):
        a, b = sample(2)[f.name], sample(1)[f.name]
        if isinstance(a, dict) and isinstance(b, dict):
            assert total[f.name] == {"gen2": a["gen2"] + b["gen2"], "only-2": 1, "only-1": 1}
        elif isinstance(a, list) and isinstance(b, list):
            assert total[f.name] == [x + y for x, y in zip(a, b, strict=True)]
        else:
            assert total[f.name] == a + b  # type: ignore[operator]
    assert later.plus(earlier).lake_ok is False and later.plus(earlier).failures == 3
