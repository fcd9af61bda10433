"""This machine's local state folder: what wattlake keeps outside the lake.

``$XDG_STATE_HOME/wattlake``, by default ``~/.local/state/wattlake``. It holds the project CA
and device registry (``security/``) and, for a lake in object storage, the local parts that
belong to that one lake, each in a folder named by the lake's identity
(:mod:`wattlake.lake.identity`): ``wal/<lake-id>/``, ``catalog/<lake-id>/`` and
``tokens/<lake-id>/``. Every module finds the folder here, so ``XDG_STATE_HOME`` moves all of it.

Beside a lake's SQLite catalog (in the lake's folder for a local lake, in ``catalog/<lake-id>/``
for one in object storage) ``plan-cache/`` keeps the tables' scan plans by metadata file, so that
a short command does not plan a table that did not change (:mod:`wattlake.query.engine`).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

APP_DIR: Final = "wattlake"
PLAN_CACHE_DIR: Final = "plan-cache"
"""The folder, beside a lake's SQLite catalog, that keeps scan plans between commands."""


def state_dir() -> Path:
    """Return wattlake's local state folder: ``$XDG_STATE_HOME/wattlake``, by default
    ``~/.local/state/wattlake`` (read from the environment at each call)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local/state")
    return Path(base) / APP_DIR


def lake_state_dir(kind: str, lake_id: str) -> Path:
    """Return the local folder of ``kind`` (``wal``, ``catalog``, ``tokens``) that belongs to
    the lake whose identity is ``lake_id``."""
    return state_dir() / kind / lake_id


def legacy_state_dir() -> Path:
    """Return where the catalog and tokens of S3 lakes were kept before they honoured
    ``XDG_STATE_HOME``: always ``~/.local/state/wattlake``."""
    return Path.home() / ".local/state" / APP_DIR


def adopt_legacy_lake_state(kind: str, lake_id: str) -> Path:
    """Return :func:`lake_state_dir` of ``kind`` and ``lake_id``, first moving the folder an
    older wattlake kept at :func:`legacy_state_dir` there when only that one exists (with
    ``XDG_STATE_HOME`` set the two differ); across file systems it is copied and the old one
    stays.

    Raises:
        OSError: the old folder cannot be moved or copied.
    """
    target = lake_state_dir(kind, lake_id)
    legacy = legacy_state_dir() / kind / lake_id
    if target.exists() or not legacy.is_dir() or target.resolve() == legacy.resolve():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(legacy, target)
    except OSError:
        shutil.copytree(legacy, target)
        log.warning("copied %s to %s (the old copy is no longer used)", legacy, target)
    return target
