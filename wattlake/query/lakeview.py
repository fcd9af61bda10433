"""One DuckDB connection over the lake's views for a long-running reader (the web server):
renewed in the background when a table changes, with views pruned to a range of days and a
cache of answers per table state."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final, TypeVar, cast

import duckdb

from wattlake.config import Settings
from wattlake.lake import tables
from wattlake.lake.freshness import DAY_MS
from wattlake.lake.storage import Lake
from wattlake.query.engine import (
    DERIVED_VIEWS,
    VIEW_NAMES,
    ViewFilter,
    connect,
    define_views,
    drop_views,
)
from wattlake.schema import TABLES

# How often the tables' snapshot ids are checked [s]; when one changed, the views (their list
# of data files) are made again (planning the Iceberg scans holds the GIL for a second or two)
# and the figures asked lately are computed for the new state before it is shown, for at most
# WARM_LIMIT_S: so a figure shown lags the lake by VIEW_REFRESH_S + WARM_LIMIT_S = 30 s at most,
# plus the second or two that planning the views takes.
VIEW_REFRESH_S: Final = 25.0
WARM_LIMIT_S: Final = 5.0
# Figures computed again for a new table state: those asked within this time [s], at most
# WARM_ENTRIES of them (the most recently asked).
WARM_RECENT_S: Final = 600.0
WARM_ENTRIES: Final = 32
# The tables behind the views and the figures; their snapshot ids key the figures' cache.
VIEW_TABLES: Final = tuple(TABLES)
# Views pruned to a range of days kept (see LakeView.fetch_in), and the longest range of
# days they are made for (a longer one reads most of the files anyway: the whole views).
RANGE_VIEWS: Final = 8
RANGE_VIEW_DAYS: Final = 62
# Answers kept per table state (the least recently used go first).
CACHE_ENTRIES: Final = 256
T = TypeVar("T")
log = logging.getLogger(__name__)


class LakeView:
    """One DuckDB connection over the lake's views, renewed in the background every
    ``VIEW_REFRESH_S`` so new data files appear without a request waiting for the catalog.
    Queries run one at a time (registered Arrow views belong to one connection)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.lake = Lake.from_settings(settings)
        self._lock = threading.Lock()
        self._con: duckdb.DuckDBPyConnection | None = None
        # Views pruned to a range of days, by (snapshot ids, first day, last day): the suffix
        # of their names on one connection, the least recently used first (see fetch_in).
        self._ranges: OrderedDict[tuple[Any, ...], str] = OrderedDict()
        self._range_con: duckdb.DuckDBPyConnection | None = None
        self._range_number = 0
        self._made_at = 0.0
        self._renewing = False
        # The tables' snapshot ids the views show: figures are cached under them.
        self.snapshots: tuple[int | None, ...] = ()
        self._cache: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._cache_lock = threading.Lock()
        # The overview's month cost, computed at most every MONTH_COST_TTL_S.
        self.month_cost: dict[tuple[int, str, str], tuple[Any, dict[str, Any]]] = {}
        self.month_cost_lock = threading.Lock()
        # Figures asked lately (key -> how to compute it, when last asked), and callbacks that
        # compute figures depending on the time now (the overview's): both run for a new table
        # state before requests see it (see renew).
        self._recent: OrderedDict[tuple[Any, ...], tuple[Callable[[], Any], float]] = OrderedDict()
        self.warmers: list[Callable[[], Any]] = []
        self._warming = threading.local()

    def _snapshot_ids(self) -> tuple[int | None, ...]:
        """Return the current snapshot id of every table the figures read (a few ms each)."""
        ids = []
        for name in VIEW_TABLES:
            snapshot = tables.open_table(self.lake, name).current_snapshot()
            ids.append(None if snapshot is None else snapshot.snapshot_id)
        return tuple(ids)

    def cached(self, key: tuple[Any, ...], compute: Callable[[], T], *, again: bool = True) -> T:
        """Return ``compute()``, kept under ``key`` and the snapshot ids the views show, so
        a figure is computed once per table state (a new commit is seen within
        ``VIEW_REFRESH_S + WARM_LIMIT_S``, as the views are). With ``again`` (for a
        ``compute`` that does not depend on the time now), a figure asked lately is computed
        for a new table state before requests see that state (see :meth:`renew`)."""
        self.fetch("SELECT 1")  # the views and snapshot ids exist (or are renewed)
        ids = getattr(self._warming, "ids", None) or self.snapshots
        full = (ids, *key)
        if again and getattr(self._warming, "ids", None) is None:
            with self._cache_lock:
                self._recent[key] = (compute, time.monotonic())
                self._recent.move_to_end(key)
                while len(self._recent) > WARM_ENTRIES:
                    self._recent.popitem(last=False)
        with self._cache_lock:
            if full in self._cache:
                self._cache.move_to_end(full)
                return cast(T, self._cache[full])
        value = compute()
        with self._cache_lock:
            self._cache[full] = value
            while len(self._cache) > CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return value

    def fetch(self, query: str, params: list[Any] | None = None) -> tuple[list[str], list[Any]]:
        """Return the column names and rows of ``query`` over the current views.

        Raises:
            StorageError: the lake cannot be read.
        """
        if self._con is None:
            ids = self._snapshot_ids()
            fresh = self._connect(ids)
            with self._lock:
                if self._con is None:
                    self._con, self._made_at, self.snapshots = fresh, time.monotonic(), ids
        elif time.monotonic() - self._made_at > VIEW_REFRESH_S and not self._renewing:
            self._renewing = True
            threading.Thread(target=self.renew, name="lake-views", daemon=True).start()
        with self._lock:
            assert self._con is not None
            cursor = self._con.execute(query, params or [])
            return [d[0] for d in cursor.description or []], cursor.fetchall()

    def _connect(self, ids: tuple[int | None, ...]) -> duckdb.DuckDBPyConnection:
        """Return a connection whose views show the tables at snapshot ids ``ids``."""
        return connect(
            self.lake, snapshot_ids=dict(zip(VIEW_TABLES, ids, strict=True)), keep_plans=True
        )

    def fetch_in(
        self, start_ms: int, end_ms: int, query: str, params: list[Any] | None = None
    ) -> tuple[list[str], list[Any]]:
        """Return :meth:`fetch` of ``query`` over views pruned to the UTC days of [start, end)
        at the table state the views show: a short range opens its few files, not the footer
        of every file in the lake. The query names views in braces (``{readings}``) and must
        filter its own range; a range longer than ``RANGE_VIEW_DAYS`` uses the whole views.

        Raises:
            StorageError: the lake cannot be read.
        """
        names = {view: view for view in (*VIEW_NAMES, *DERIVED_VIEWS)}
        first, last = start_ms // DAY_MS, (end_ms - 1) // DAY_MS
        if last - first >= RANGE_VIEW_DAYS:
            return self.fetch(query.format(**names), params)
        self.fetch("SELECT 1")  # the views and snapshot ids exist (or are renewed)
        ids = self.state()
        key = (ids, first, last)
        with self._lock:
            suffix = self._ranges.get(key)
            if suffix is None:
                # Views of one more range on the one connection kept for them (planning is
                # kept per table state, so this takes some ms, not the catalog's seconds).
                if self._range_con is None:
                    self._range_con = duckdb.connect()
                self._range_number += 1
                suffix = f"_r{self._range_number}"
                define_views(
                    self._range_con,
                    self.lake,
                    suffix=suffix,
                    view_filter=ViewFilter(start_ms, end_ms),
                    snapshot_ids=dict(zip(VIEW_TABLES, ids, strict=True)),
                    keep_plans=True,
                )
                self._ranges[key] = suffix
                while len(self._ranges) > RANGE_VIEWS:
                    drop_views(self._range_con, self._ranges.popitem(last=False)[1])
            self._ranges.move_to_end(key)
            assert self._range_con is not None
            named = query.format(**{n: f"{n}{suffix}" for n in names})
            cursor = self._range_con.execute(named, params or [])
            return [d[0] for d in cursor.description or []], cursor.fetchall()

    def renew(self) -> None:
        """Show the tables' current state if one changed: make the views again, compute the
        figures asked lately (and the warmers') for the new state within ``WARM_LIMIT_S``,
        then key the cache by the new snapshot ids, so the first request after a commit finds
        its figures computed. Until then requests see the previous state (the new views
        already answer uncached queries)."""
        fresh = None
        with self._lock:
            self._renewing = True  # (called directly, too)
        try:
            ids = self._snapshot_ids()
            # Planning the views' scans is the costly part: only when a table changed.
            if ids != self.snapshots:
                fresh = self._connect(ids)
        except Exception:  # the old views keep serving; the next request tries again
            ids = self.snapshots
        if fresh is not None:
            with self._lock:
                old, self._con = self._con, fresh
                if old is not None:
                    old.close()
            # The new state is shown after WARM_LIMIT_S at the latest (a figure still being
            # computed then is kept for it when done; a request for it meanwhile computes it).
            warming = threading.Thread(
                target=self._warm, args=(ids,), name="lake-warm", daemon=True
            )
            warming.start()
            warming.join(WARM_LIMIT_S)
        with self._lock:
            self._made_at = time.monotonic()
            self.snapshots = ids
            self._renewing = False

    def _warm(self, ids: tuple[int | None, ...]) -> None:
        """Compute the figures asked lately and the warmers' under snapshot ids ``ids`` (the
        warmers first; no new one after ``WARM_LIMIT_S``)."""
        deadline = time.monotonic() + WARM_LIMIT_S
        with self._cache_lock:
            recent = [
                (key, compute)
                for key, (compute, asked) in reversed(self._recent.items())
                if asked > time.monotonic() - WARM_RECENT_S
            ]
        jobs: list[tuple[tuple[Any, ...] | None, Callable[[], Any]]] = [
            *((None, w) for w in self.warmers),
            *recent,
        ]
        self._warming.ids = ids
        try:
            for key, compute in jobs:
                if time.monotonic() > deadline:
                    break
                try:
                    if key is None:
                        compute()
                    else:
                        self.cached(key, compute)
                except Exception as exc:  # the request will compute (and report) it
                    log.debug("warming %r failed: %s", key, exc)
        finally:
            self._warming.ids = None

    _renew = renew

    def warming(self) -> bool:
        """Return whether this thread computes figures for a new table state."""
        return getattr(self._warming, "ids", None) is not None

    def state(self) -> tuple[int | None, ...]:
        """Return the snapshot ids figures are computed for now (the new ones while warming)."""
        return getattr(self._warming, "ids", None) or self.snapshots
