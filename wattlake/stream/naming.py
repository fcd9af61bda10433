"""Object names in the lake: partition folders and unique file names."""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime

MS_PER_HOUR = 3_600_000


def hour_partition(hour_index: int) -> str:
    """Return ``date=YYYY-MM-DD/hour=HH`` for an hour counted from the epoch (UTC)."""
    start = datetime.fromtimestamp(hour_index * 3600, UTC)
    return f"date={start:%Y-%m-%d}/hour={start:%H}"


def date_partition(epoch_ms: int) -> str:
    """Return ``date=YYYY-MM-DD`` of an instant (UTC)."""
    return f"date={datetime.fromtimestamp(epoch_ms / 1000, UTC):%Y-%m-%d}"


def object_name(stream: str, seq: int, suffix: str, now_s: float | None = None) -> str:
    """Return ``<stream>-<seq>-<YYYYmmddHHMMSS>-<rand><suffix>``: unique across workers."""
    stamp = datetime.fromtimestamp(time.time() if now_s is None else now_s, UTC)
    return f"{stream}-{seq:010d}-{stamp:%Y%m%d%H%M%S}-{secrets.token_hex(4)}{suffix}"
