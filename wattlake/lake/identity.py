"""A lake's identity: a UUID written once into the lake, so local state can name its lake.

The identity lives in ``_wattlake/lake.json`` under the lake root. It is created the first
time something writes to the lake and never rewritten: locally by a hard link of a complete
temporary file (which fails if the file exists, so two creators agree on the first one); on S3
by one PUT followed by a read-back, so a creator racing another adopts whichever identity the
store kept. Local state that belongs to exactly one lake (the write-ahead log of an S3 lake,
kept on this machine) records the identity and is found by it.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from dataclasses import dataclass
from typing import Final

import pyarrow.fs as pafs

from wattlake.errors import StorageError
from wattlake.lake.storage import Lake, fsync_dir

IDENTITY_FILE: Final = "_wattlake/lake.json"
FORMAT_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class LakeIdentity:
    """Who a lake is: its UUID, and where it was when the identity was made."""

    lake_id: str
    created_url: str
    created_at: str

    def to_json(self) -> bytes:
        """Return the identity file's content."""
        document = {
            "format": FORMAT_VERSION,
            "lake_id": self.lake_id,
            "created_url": self.created_url,
            "created_at": self.created_at,
        }
        return (json.dumps(document, indent=2) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> LakeIdentity:
        """Parse an identity file read from ``where``.

        Raises:
            StorageError: the file is not an identity document.
        """
        try:
            document = json.loads(data)
            lake_id = str(uuid.UUID(document["lake_id"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageError(
                f"The lake identity {where} is damaged ({exc}); restore it from a backup, or "
                "remove it to give the lake a new identity (local write-ahead logs of the old "
                "one are then no longer replayed into it)."
            ) from exc
        return cls(lake_id, str(document.get("created_url", "")), str(document.get("created_at")))


def read_identity(lake: Lake) -> LakeIdentity | None:
    """Return the lake's identity, or None when it has none yet.

    Raises:
        StorageError: the identity cannot be read or is damaged.
    """
    path = lake.path(IDENTITY_FILE)
    try:
        with lake.fs.open_input_stream(path) as stream:
            data = bytes(stream.read())
    except FileNotFoundError:
        return None
    except OSError as exc:
        if _missing(lake, path):
            return None
        raise lake.os_error(exc, f"read the lake identity {path}") from exc
    return LakeIdentity.from_json(data, path)


def _missing(lake: Lake, path: str) -> bool:
    try:
        return bool(lake.fs.get_file_info(path).type == pafs.FileType.NotFound)
    except OSError:
        return False


def ensure_identity(lake: Lake) -> LakeIdentity:
    """Return the lake's identity, creating it first when the lake has none.

    Raises:
        StorageError: the identity cannot be read or written.
    """
    found = read_identity(lake)
    if found is not None:
        return found
    made = LakeIdentity(
        lake_id=str(uuid.uuid4()),
        created_url=lake.url,
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    if lake.is_local:
        _create_local(lake, made)
    else:
        try:
            lake.write_bytes(IDENTITY_FILE, made.to_json())
        except StorageError as exc:
            raise StorageError(f"Cannot write the lake identity: {exc}") from exc
    kept = read_identity(lake)
    if kept is None:
        raise StorageError(f"The lake identity {lake.path(IDENTITY_FILE)} vanished after writing.")
    return kept


def _create_local(lake: Lake, identity: LakeIdentity) -> None:
    """Create the identity file only if none exists (link of a complete temporary file)."""
    target = lake.path(IDENTITY_FILE)
    directory = os.path.dirname(target)
    tmp = os.path.join(directory, f".lake.json.{uuid.uuid4().hex[:8]}.tmp")
    try:
        os.makedirs(directory, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(identity.to_json())
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):  # another creator was first: theirs stands
            os.link(tmp, target)
        fsync_dir(directory)
    except OSError as exc:
        raise StorageError(f"Cannot write the lake identity {target}: {exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
