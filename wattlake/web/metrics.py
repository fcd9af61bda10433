"""Prometheus ``/metrics`` and the alerts the overview shows.

The ingest counts its own figures once and writes them to a Prometheus text file
(:mod:`wattlake.stream.metrics`), and so does a stack's job loop (runs and failures per job,
``jobs.prom``); this module serves those files as they are rather than counting again, and
adds what the web process knows: lake files and bytes, dead letters by reason, messages refused
because they named a device other than their publisher (by publisher, beside the embedded
broker's refused publishes), query latency and the alerts (as
``wattlake_alert{alert=…,device_id=…}`` gauges, 1 while firing) for Alertmanager.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Final

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from wattlake.config import Settings
from wattlake.devices.identity import IDENTITY_MISMATCH, publisher
from wattlake.lake.storage import Lake
from wattlake.stream.ingest import (
    broker_metrics_file,
    jobs_metrics_file,
    wal_dir_from_settings,
)
from wattlake.web.figures import (
    LakeView,
    devices,
    local_midnight_before,
    now_ms,
    today_energy,
    tz_of,
)

log = logging.getLogger(__name__)

HOUR_MS: Final = 3_600_000


class WebMetrics:
    """The web process's own metrics and the ingest's metrics file."""

    def __init__(self, settings: Settings, view: LakeView) -> None:
        self.settings = settings
        self.view = view
        self.registry = CollectorRegistry(auto_describe=True)
        self.query_seconds = Histogram(
            "wattlake_web_query_seconds",
            "Time to answer an API request that reads the lake",
            ["endpoint"],
            registry=self.registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10),
        )

    def ingest_file(self) -> Path | None:
        """Return the ingest's metrics file, if it can be found."""
        configured = self.settings["stream.metrics_file"]
        if configured:
            return Path(configured)
        try:
            return wal_dir_from_settings(self.settings, self.view.lake) / "metrics.prom"
        except Exception:  # no WAL folder is no ingest figures, not an error
            return None

    def render(self) -> bytes:
        """Return every metric in Prometheus' text format."""
        parts = [generate_latest(self.registry).decode()]
        parts.append(self._lake_metrics())
        parts.append(self._alert_metrics())
        path = self.ingest_file()
        if path is not None:
            try:
                parts.append(path.read_text(encoding="utf-8"))
            except OSError:
                parts.append("# no ingest metrics file found (is the ingest running?)\n")
        parts.append(self._identity_metrics())
        broker = self.broker_file()
        if broker is not None and broker.is_file():  # only a stack's embedded broker has one
            try:
                parts.append(broker.read_text(encoding="utf-8"))
            except OSError:
                parts.append("# the broker's metrics file could not be read\n")
        jobs = self.jobs_file()
        if jobs is not None and jobs.is_file():  # only a stack running jobs has one
            try:
                parts.append(jobs.read_text(encoding="utf-8"))
            except OSError:
                parts.append("# the scheduled jobs' metrics file could not be read\n")
        return "".join(parts).encode()

    def jobs_file(self) -> Path | None:
        """Return the scheduled jobs' counters file (written by ``up`` and ``demo``)."""
        try:
            wal_dir = wal_dir_from_settings(self.settings, self.view.lake)
        except Exception:  # no WAL folder is no job figures, not an error
            return None
        return jobs_metrics_file(wal_dir)

    def broker_file(self) -> Path | None:
        """Return the embedded broker's counters file (written by ``up`` and ``demo``)."""
        try:
            wal_dir = wal_dir_from_settings(self.settings, self.view.lake)
        except Exception:  # no WAL folder is no broker figures, not an error
            return None
        return broker_metrics_file(wal_dir)

    def _lake_metrics(self) -> str:
        lake: Lake = self.view.lake
        lines = [
            "# HELP wattlake_lake_files Data files in the lake\n# TYPE wattlake_lake_files gauge\n",
        ]
        files = 0
        size = 0
        try:
            for f in lake.list_files("", ".parquet"):
                files += 1
                if lake.is_local:
                    size += Path(f).stat().st_size
        except Exception as exc:  # an unreachable lake shows as zero files
            log.warning("cannot list the lake for metrics: %s", exc)
        lines.append(f"wattlake_lake_files {files}\n")
        lines.append(
            "# HELP wattlake_lake_bytes Bytes of data files in a local lake\n"
            f"# TYPE wattlake_lake_bytes gauge\nwattlake_lake_bytes {size}\n"
        )
        try:
            _, found = self.view.fetch("SELECT error_code, count(*) FROM dead_letters GROUP BY 1")
        except Exception:
            found = []
        lines.append(
            "# HELP wattlake_dead_letters Dead letters in the lake by reason\n"
            "# TYPE wattlake_dead_letters gauge\n"
        )
        for reason, n in found:
            lines.append(f'wattlake_dead_letters{{reason="{_label(reason)}"}} {int(n)}\n')
        return "".join(lines)

    def _identity_metrics(self) -> str:
        """Return the identity-mismatch dead letters by publishing device: the ingest's
        counterpart of the broker's refused publishes (counted from the one record of them,
        the ``dead_letters`` table)."""
        try:
            _, found = self.view.fetch(
                "SELECT topic, count(*) FROM dead_letters WHERE error_code = ? GROUP BY 1",
                [IDENTITY_MISMATCH],
            )
        except Exception:  # no dead letters yet
            found = []
        by_device: dict[str, int] = {}
        for topic, n in found:
            device = publisher(str(topic)) or ""
            by_device[device] = by_device.get(device, 0) + int(n)
        lines = [
            "# HELP wattlake_identity_mismatches Messages refused because they named a device "
            "other than their publisher (dead letters identity-mismatch), by publishing device\n"
            "# TYPE wattlake_identity_mismatches gauge\n"
        ]
        for device, n in sorted(by_device.items()):
            lines.append(f'wattlake_identity_mismatches{{device="{_label(device)}"}} {n}\n')
        return "".join(lines)

    def _alert_metrics(self) -> str:
        lines = [
            "# HELP wattlake_alert 1 while an alert fires\n# TYPE wattlake_alert gauge\n",
        ]
        for a in alerts(self.view, self.settings):
            lines.append(
                f'wattlake_alert{{alert="{a["alert"]}",device_id="{_label(a["device_id"])}"}} 1\n'
            )
        return "".join(lines)


def duration(seconds: float) -> str:
    """Return ``seconds`` for people: ``45 s``, ``12 min``, ``8 h 33 min``, ``3 d 4 h``."""
    s = int(seconds)
    if s < 120:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def _label(value: Any) -> str:
    return str(value or "").replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def alerts(view: LakeView, settings: Settings, *, at_ms: int | None = None) -> list[dict[str, Any]]:
    """Return the alerts firing now: silent devices, low coverage today, dead letters
    arriving too fast, and ingest lag (newest reading in the lake too old)."""
    now = at_ms if at_ms is not None else now_ms()
    tz = tz_of(settings)
    fired: list[dict[str, Any]] = []
    rows = devices(view, settings, tz=tz, at_ms=now).rows
    silent_s = float(settings["alerts.silent_after_s"])
    silent: dict[str, float] = {}
    for r in rows:  # a device is as silent as its most recent channel
        silent[r["device_id"]] = min(silent.get(r["device_id"], float("inf")), r["age_s"])
    for device_id, age_s in silent.items():
        if age_s > silent_s:
            fired.append(
                {
                    "alert": "device_silent",
                    "device_id": device_id,
                    "message": f"{device_id} silent for {duration(age_s)}",
                }
            )
    day_start = local_midnight_before(now, tz)
    if rows and now - day_start > HOUR_MS:
        lowest: dict[str, float] = {}
        # Today's coverage: from the overview's energy of today (once per table state).
        today = today_energy(view, settings, tz=tz, at_ms=now)
        for q in today.rows:
            lowest[q["device_id"]] = min(lowest.get(q["device_id"], 1.0), q["coverage"])
        for device_id, coverage in lowest.items():
            if coverage < float(settings["alerts.coverage_min"]):
                fired.append(
                    {
                        "alert": "coverage_low",
                        "device_id": device_id,
                        "message": f"{device_id} coverage today {coverage:.0%}",
                    }
                )
    try:
        _, found = view.fetch(
            "SELECT count(*) FROM dead_letters WHERE arrival_ms >= ?", [now - HOUR_MS]
        )
        recent = int(found[0][0]) if found else 0
    except Exception:  # no dead letters yet: the view has no arrival_ms
        recent = 0
    if recent > float(settings["alerts.dead_letters_per_hour"]):
        fired.append(
            {
                "alert": "dead_letters",
                "device_id": "",
                "message": f"{recent} dead letters in the last hour",
            }
        )
    if rows:
        newest = max(r["last_seen_ms"] for r in rows)
        lag_s = (now - newest) / 1000
        if lag_s > float(settings["alerts.ingest_lag_s"]):
            fired.append(
                {
                    "alert": "ingest_lag",
                    "device_id": "",
                    "message": f"the newest reading in the lake is {duration(lag_s)} old",
                }
            )
    return fired
