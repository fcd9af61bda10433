"""Dead letters in the lake's views: counted by reason, and the latest with their payloads."""

from __future__ import annotations

from typing import Any

from wattlake.query.lakeview import LakeView


def dead_letter_rows(view: LakeView, *, limit: int = 20) -> tuple[list[Any], list[str], list[Any]]:
    """Return (reason, count) per reason, most first; the columns shown of a dead letter; and
    the latest ``limit`` dead letters with those columns."""
    _, by_reason = view.fetch(
        "SELECT error_code AS reason, count(*) AS count FROM dead_letters GROUP BY 1 ORDER BY 2 "
        "DESC"
    )
    columns, _ = view.fetch("SELECT * FROM dead_letters LIMIT 0")
    order = "arrival_ms DESC" if "arrival_ms" in columns else "1"
    wanted: list[str] = [
        c for c in ("arrival_time", "error_code", "topic", "raw_text") if c in columns
    ]
    _, latest = view.fetch(
        f"SELECT {', '.join(wanted) or '*'} FROM dead_letters ORDER BY {order} LIMIT ?", [limit]
    )
    return by_reason, wanted, latest
