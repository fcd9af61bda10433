"""Power over time from the lake's views: min, mean and max per bucket (from the rollups
``power_1h`` and ``power_1min`` as far as they reach, raw readings after), each device
channel's last reading, and mean power per hour. SQL over a :class:`LakeView`."""

from __future__ import annotations

from typing import Any, Final

from wattlake.query.lakeview import LakeView
from wattlake.schema import POWER_ROLLUP, TABLES

# Times in SQL: a TIMESTAMPTZ from epoch ms, so filters on ts reach the Parquet statistics.
TS_PARAM: Final = "make_timestamptz(?::BIGINT * 1000)"
# Views of the rollup tables of power statistics and their period [ms], coarsest first.
POWER_ROLLUPS: Final = tuple(
    sorted(
        (
            (t.view, t.rollup.bucket_ms)
            for t in TABLES.values()
            if t.rollup is not None and t.rollup.kind == POWER_ROLLUP
        ),
        key=lambda view_period: -view_period[1],
    )
)


def power_buckets(
    view: LakeView, *, start_ms: int, end_ms: int, bucket_ms: int, device_id: str | None = None
) -> tuple[list[Any], str]:
    """Return one row per device channel and bucket of ``bucket_ms`` from ``start_ms``: device,
    channel, bucket index, min, mean and max power [W] and the number of samples, sorted; and
    the source (``readings``, or the rollup table that answered from the start).

    Buckets of an hour or more come from ``power_1h``, of a minute or more from ``power_1min``
    as far as those rollups reach; the rest (short ranges, data not rolled up yet) from raw
    readings.
    """
    device_sql = " AND device_id = ?" if device_id else ""
    device_param: list[Any] = [device_id] if device_id else []
    found: list[Any] = []
    raw_from = start_ms
    rollup = next(((t, p) for t, p in POWER_ROLLUPS if bucket_ms >= p), None)
    if rollup is not None:
        table, period_ms = rollup
        _, reach = view.fetch_in(
            start_ms,
            end_ms,
            f"SELECT epoch_ms(max(start)) FROM {{{table}}} WHERE start >= {TS_PARAM} "
            f"AND start < {TS_PARAM}{device_sql}",
            [start_ms, end_ms, *device_param],
        )
        if reach and reach[0][0] is not None:
            raw_from = min(end_ms, int(reach[0][0]) + period_ms)
            _, found = view.fetch_in(
                start_ms,
                end_ms,
                "SELECT device_id, channel, (epoch_ms(start) - ?) // ? AS b, min(min_power_w), "
                "sum(mean_power_w * samples) / sum(samples), max(max_power_w), sum(samples) "
                f"FROM {{{table}}} WHERE start >= make_timestamptz(?::BIGINT * 1000) AND start < "
                f"make_timestamptz(?::BIGINT * 1000){device_sql} GROUP BY ALL",
                [start_ms, bucket_ms, start_ms, raw_from, *device_param],
            )
    if raw_from < end_ms:
        _, raw = view.fetch_in(
            start_ms,
            end_ms,
            "SELECT device_id, channel, (epoch_ms(ts) - ?) // ? AS b, min(power_w), "
            "avg(power_w), max(power_w), count(*) FROM {readings} WHERE ts >= "
            "make_timestamptz(?::BIGINT * 1000) AND ts < make_timestamptz(?::BIGINT * 1000)"
            f"{device_sql} GROUP BY ALL",
            [start_ms, bucket_ms, raw_from, end_ms, *device_param],
        )
        found = _merge_buckets(found, raw)
    found.sort(key=lambda f: (f[0], f[1], f[2]))
    source = "readings" if rollup is None or raw_from == start_ms else rollup[0]
    return found, source


def _merge_buckets(first: list[Any], second: list[Any]) -> list[Any]:
    """Combine bucket statistics of two sources (a bucket may straddle where they meet)."""
    merged: dict[tuple[Any, Any, Any], list[Any]] = {}
    for d, c, b, lo, mean, hi, n in [*first, *second]:
        key = (d, c, b)
        if key not in merged:
            merged[key] = [d, c, b, lo, mean, hi, n]
            continue
        m = merged[key]
        total = (m[6] or 0) + (n or 0)
        if mean is not None and m[4] is not None and total:
            m[4] = (m[4] * m[6] + mean * n) / total
        m[3] = lo if m[3] is None else m[3] if lo is None else min(m[3], lo)
        m[5] = hi if m[5] is None else m[5] if hi is None else max(m[5], hi)
        m[6] = total
    return [tuple(v) for v in merged.values()]


def last_readings(view: LakeView, since_ms: int, until_ms: int) -> list[Any]:
    """Return per device channel with readings from ``since_ms`` on: device, channel, time of
    its last reading [ms UTC], its power [W] and the number of readings, in order of device and
    channel (views pruned to the days up to ``until_ms``)."""
    return view.fetch_in(
        since_ms,
        until_ms,
        "SELECT device_id, channel, epoch_ms(max(ts)) AS last_ms, arg_max(power_w, ts), "
        f"count(*) FROM {{readings}} WHERE ts >= {TS_PARAM} GROUP BY ALL "
        "ORDER BY device_id, channel",
        [since_ms],
    )[1]


def hourly_power(
    view: LakeView,
    *,
    start_ms: int,
    end_ms: int,
    device_id: str | None = None,
    channel: int | None = None,
) -> list[Any]:
    """Return the mean power [W] per UTC hour [ms], device and channel of the readings in
    [start, end) (of ``device_id`` and ``channel`` only if given)."""
    query = (
        "SELECT epoch_ms(date_trunc('hour', ts)) AS h, device_id, channel, avg(power_w) "
        f"FROM readings WHERE ts >= {TS_PARAM} AND ts < {TS_PARAM}"
        + (" AND device_id = ?" if device_id else "")
        + (" AND channel = ?" if channel is not None else "")
        + " GROUP BY ALL"
    )
    params: list[Any] = [start_ms, end_ms] + ([device_id] if device_id else [])
    params += [channel] if channel is not None else []
    return view.fetch(query, params)[1]
