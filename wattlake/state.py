"""This machine's local state folder: what wattlake keeps outside the lake.

``$XDG_STATE_HOME/wattlake``, by default ``~/.local/state/wattlake``. It holds the project CA
and device registry (``security/``) and, for a lake in object storage, the local parts that
belong to that one lake, each in a folder named by the lake's identity
(:mod:`wattlake.lake.identity`): ``wal/<lake-id>/``, ``catalog/<lake-id>/`` and
``tokens/<lake-id>/``. Every module finds the folder here, so ``XDG_STATE_HOME`` moves all of it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

APP_DIR: Final = "wattlake"


def state_dir() -> Path:
    """Return wattlake's local state folder: ``$XDG_STATE_HOME/wattlake``, by default
    ``~/.local/state/wattlake`` (read from the environment at each call)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local/state")
    return Path(base) / APP_DIR


def lake_state_dir(kind: str, lake_id: str) -> Path:
    """Return the local folder of ``kind`` (``wal``, ``catalog``, ``tokens``) that belongs to
    the lake whose identity is ``lake_id``."""
    return state_dir() / kind / lake_id
