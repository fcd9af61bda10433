"""Jobs over the lake (Glue ETL's role): compaction, migration, maintenance, rollups.

``JOBS`` is the registry the CLI's ``jobs run NAME`` dispatches through: a job name maps to
``module:function``, imported only when the job runs. A job function takes the resolved
settings (and keyword options such as ``dates``) and returns one row per thing it did.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Final

from wattlake.config import Settings
from wattlake.errors import UsageError

JobFunction = Callable[..., list[dict[str, Any]]]

JOBS: Final[dict[str, str]] = {
    "compact": "wattlake.jobs.compact:run",
    "maintain": "wattlake.jobs.maintain:run",
    "migrate": "wattlake.jobs.migrate:run",
    "rollup": "wattlake.jobs.rollup:run",
}


def job(name: str) -> JobFunction:
    """Return the function of job ``name``.

    Raises:
        UsageError: there is no such job.
    """
    if name not in JOBS:
        raise UsageError(f"There is no job {name!r}; choose one of: {', '.join(JOBS)}.")
    module, _, function = JOBS[name].partition(":")
    found: JobFunction = getattr(importlib.import_module(module), function)
    return found


def run_job(name: str, settings: Settings, **options: Any) -> list[dict[str, Any]]:
    """Run job ``name`` now and return its rows."""
    return job(name)(settings, **options)
