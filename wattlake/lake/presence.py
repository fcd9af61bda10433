"""Whether a lake is there: commands that only read open an existing lake, never make one.

Writing creates a lake as a side effect (its identity, catalog and tables appear on the first
open), so a mistyped ``--data-dir`` given to a reading command would leave an empty lake behind
and answer with nothing. Only the commands that put readings in (``import``, ``ingest``,
``demo``, ``up``) create a lake; the others call :func:`open_lake` with ``create=False`` first.

A lake is there when any of its marks is: the identity (``_wattlake/lake.json``), the tables'
folder, a local lake's ``catalog.db``, or the folders of a lake from before the Iceberg tables
(which ``jobs run migrate`` reads). A lake whose catalog is configured (``catalog.uri``, a REST
or Glue catalog) is not checked: its catalog, not a folder, knows whether it exists.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Final

import pyarrow.fs as pafs

from wattlake.config import REGISTRY, Settings
from wattlake.errors import UsageError
from wattlake.lake.identity import IDENTITY_FILE
from wattlake.lake.storage import (
    CATALOG_FILE,
    CURATED_READINGS,
    RAW_READINGS,
    TABLES_DIR,
    Lake,
)

MARKS: Final = (IDENTITY_FILE, TABLES_DIR, RAW_READINGS, CURATED_READINGS)
"""Paths under a lake root of which any one says that a lake is there."""
LOCAL_MARKS: Final = (CATALOG_FILE, *MARKS)
# How many sibling folders are looked at for a suggestion (a folder of thousands: no guess).
SIBLINGS_MAX: Final = 500


class NoLakeError(UsageError):
    """The data dir holds no lake, and the command only reads one."""


def open_lake(settings: Settings, *, create: bool) -> Lake:
    """Return the lake that ``settings`` name; with ``create`` False it must exist already.

    Raises:
        NoLakeError: ``create`` is False and there is no lake at ``data_dir``.
        wattlake.lake.storage.LakeUrlError: ``data_dir`` cannot name a lake.
        wattlake.errors.StorageError: the lake's store cannot be read.
    """
    lake = Lake.from_settings(settings)
    if not create:
        require_lake(lake)
    return lake


def require_lake(lake: Lake) -> None:
    """Check that ``lake`` exists (read only: nothing is created).

    Raises:
        NoLakeError: there is no lake there; the message names a nearby folder that holds one.
        wattlake.errors.StorageError: the lake's store cannot be read.
    """
    if holds_lake(lake):
        return
    where = lake.url
    guess = nearby_lake(Path(lake.root)) if lake.is_local else None
    hint = f"did you mean {guess}?" if guess else "check the data dir, or put readings in first."
    raise NoLakeError(f"No lake at {where} (it holds no wattlake tables); {hint}")


def holds_lake(lake: Lake) -> bool:
    """Return True when ``lake`` exists (or its configured catalog decides that).

    Raises:
        wattlake.errors.StorageError: the lake's store cannot be read.
    """
    if lake.catalog.type != "sql" or lake.catalog.uri:
        return True
    if lake.is_local:
        return any(os.path.exists(lake.path(mark)) for mark in LOCAL_MARKS)
    try:
        infos = lake.fs.get_file_info([lake.path(IDENTITY_FILE)])
        if infos[0].type != pafs.FileType.NotFound:
            return True
        for mark in MARKS[1:]:
            selector = pafs.FileSelector(lake.path(mark), recursive=False, allow_not_found=True)
            if lake.fs.get_file_info(selector):
                return True
    except OSError as exc:
        raise lake.os_error(exc, f"look for the lake at {lake.url}") from exc
    return False


def nearby_lake(path: Path) -> str | None:
    """Return a folder near ``path`` that holds a lake, as the user might have meant it: a
    sibling with a similar name, else the default data dir of the working folder."""
    parent = path.parent
    candidates: list[Path] = []
    if parent.is_dir():
        try:
            with os.scandir(parent) as entries:
                names = [e.name for _, e in zip(range(SIBLINGS_MAX), entries, strict=False)]
        except OSError:
            names = []
        close = difflib.get_close_matches(path.name, names, n=5, cutoff=0.6)
        candidates += [parent / name for name in close]
    candidates.append(Path(str(REGISTRY["data_dir"].default)).resolve())
    for candidate in candidates:
        if candidate != path and _local_lake_at(candidate):
            return _shown(candidate)
    return None


def _local_lake_at(path: Path) -> bool:
    return path.is_dir() and any((path / mark).exists() for mark in LOCAL_MARKS)


def _shown(path: Path) -> str:
    """Return ``path`` as ``./relative`` when it lies below the working folder."""
    cwd = Path.cwd()
    return f"./{path.relative_to(cwd)}" if path.is_relative_to(cwd) else str(path)
