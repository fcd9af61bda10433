"""Local bucket edges and command-line times: DST days, half-hour zones, parsing."""

from __future__ import annotations

import numpy as np
import pytest

from wattlake.energy.buckets import bucket_edges_ms, format_local, parse_time_ms, zone
from wattlake.errors import UsageError

H = 3_600_000


def labels(edges: np.ndarray, tz_name: str) -> list[str]:
    return [format_local(int(e), zone(tz_name)) for e in edges]


def test_spring_day_in_warsaw_has_23_hour_buckets() -> None:
    tz = zone("Europe/Warsaw")
    edges = bucket_edges_ms(
        parse_time_ms("2026-03-29", tz), parse_time_ms("2026-03-30", tz), "hour", tz
    )
    assert len(edges) - 1 == 23
    assert (np.diff(edges) == H).all()
    # 01:00 CET is followed by 03:00 CEST: the 02:00 hour does not exist
    assert labels(edges, "Europe/Warsaw")[1:3] == [
        "2026-03-29T01:00:00+01:00",
        "2026-03-29T03:00:00+02:00",
    ]


def test_autumn_day_in_warsaw_repeats_the_0200_hour_as_two_buckets() -> None:
    tz = zone("Europe/Warsaw")
    edges = bucket_edges_ms(
        parse_time_ms("2026-10-25", tz), parse_time_ms("2026-10-26", tz), "hour", tz
    )
    assert len(edges) - 1 == 25
    assert labels(edges, "Europe/Warsaw")[2:5] == [
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:00:00+01:00",
        "2026-10-25T03:00:00+01:00",
    ]
    day = bucket_edges_ms(edges[0], edges[-1], "day", tz)
    assert np.diff(day).tolist() == [25 * H]


def test_half_hour_zones_start_hours_at_their_local_full_hour() -> None:
    tz = zone("Asia/Kolkata")  # UTC+05:30, no DST
    edges = bucket_edges_ms(
        parse_time_ms("2026-01-01", tz), parse_time_ms("2026-01-02", tz), "hour", tz
    )
    assert len(edges) - 1 == 24
    assert edges[0] % H == H // 2  # 2025-12-31T18:30Z
    tz = zone("Australia/Adelaide")  # +10:30 -> +09:30 on 2026-04-05
    edges = bucket_edges_ms(
        parse_time_ms("2026-04-05", tz), parse_time_ms("2026-04-06", tz), "hour", tz
    )
    assert len(edges) - 1 == 25
    assert all(label[14:16] == "00" for label in labels(edges, "Australia/Adelaide"))


def test_15min_and_month_edges() -> None:
    tz = zone("Europe/Warsaw")
    start, end = parse_time_ms("2026-01-01", tz), parse_time_ms("2027-01-01", tz)
    assert len(bucket_edges_ms(start, end, "month", tz)) - 1 == 12
    # 365 days * 96 quarter hours (the 23 h and 25 h days cancel out)
    assert len(bucket_edges_ms(start, end, "15min", tz)) - 1 == 365 * 96


def test_a_range_off_the_boundaries_gets_partial_first_and_last_buckets() -> None:
    tz = zone("UTC")
    edges = bucket_edges_ms(H // 2, 2 * H + H // 4, "hour", tz)
    assert edges.tolist() == [H // 2, H, 2 * H, 2 * H + H // 4]


def test_parse_times() -> None:
    tz = zone("Europe/Warsaw")
    # local midnight in CET is 23:00 UTC the day before
    assert parse_time_ms("2026-01-02", tz) == 1_767_308_400_000
    assert parse_time_ms("2026-01-02T00:00:00+01:00", tz) == 1_767_308_400_000
    assert parse_time_ms("2026-01-01T23:00:00Z", tz) == 1_767_308_400_000
    assert parse_time_ms("2026-01-02T00:00", tz) == 1_767_308_400_000  # naive means local
    with pytest.raises(UsageError, match="date like"):
        parse_time_ms("yesterday", tz)
    with pytest.raises(UsageError, match="IANA"):
        zone("Mars/Olympus")
    with pytest.raises(UsageError, match="after the start"):
        bucket_edges_ms(5, 5, "hour", tz)
    with pytest.raises(UsageError, match="bucket size"):
        bucket_edges_ms(0, 5, "week", tz)
