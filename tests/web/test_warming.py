"""The web server's lake views: a new table state is computed before requests see it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

from wattlake.config import Settings
from wattlake.lake import tables
from wattlake.lake.storage import Lake
from wattlake.schema import READINGS_TABLE, readings_to_table
from wattlake.web.figures import LakeView

DAY = 86_400_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
COUNT = "SELECT count(*) FROM {readings} WHERE ts >= make_timestamptz(?::BIGINT * 1000)"


def _append_day(lake: Lake, day: int) -> None:
    rows = [
        {"ts": T0 + day * DAY + h * 3_600_000, "received_at": T0 + day * DAY + h * 3_600_000,
         "device_id": "m1", "channel": 0, "power_w": 100.0, "source": "generic"}
        for h in range(24)
    ]  # fmt: skip
    tables.append(lake, READINGS_TABLE, readings_to_table(rows))


def test_figures_asked_lately_are_computed_for_a_new_state_before_it_is_shown(
    tmp_path: Path,
) -> None:
    settings = Settings.load(overrides={"data_dir": str(tmp_path / "lake")}, environ={})
    lake = Lake.from_settings(settings)
    _append_day(lake, 0)
    view = LakeView(settings)
    calls: Counter[str] = Counter()

    def figure(name: str) -> Callable[[], int]:
        def compute() -> int:
            calls[name] += 1
            return int(view.fetch("SELECT count(*) FROM readings")[1][0][0])

        return compute

    assert view.cached(("past",), figure("past")) == 24
    assert view.cached(("now",), figure("now"), again=False) == 24
    # Views pruned to day 0, at the state shown.
    assert view.fetch_in(T0, T0 + DAY, COUNT, [T0])[1] == [(24,)]

    _append_day(lake, 1)
    # Until the views are renewed, requests see the state before the commit.
    assert view.cached(("past",), figure("past")) == 24
    assert view.fetch_in(T0, T0 + 2 * DAY, COUNT, [T0])[1] == [(24,)]
    view.renew()
    # The figure asked with `again` was computed for the new state during the renewal; the
    # other one is computed when asked.
    assert calls == {"past": 2, "now": 1}
    assert view.cached(("past",), figure("past")) == 48
    assert view.cached(("now",), figure("now"), again=False) == 48
    assert calls == {"past": 2, "now": 2}
    assert view.fetch_in(T0, T0 + 2 * DAY, COUNT, [T0])[1] == [(48,)]
    assert view.fetch_in(T0 + DAY, T0 + 2 * DAY, COUNT, [T0 + DAY])[1] == [(24,)]
