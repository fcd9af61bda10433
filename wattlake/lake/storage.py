"""Where the lake lives: a local folder or ``s3://bucket/prefix``, behind one small interface.

Every object appears atomically: locally it is written under a hidden temporary name and
renamed; on S3 it is one PUT. Readers never see half a file.
"""

from __future__ import annotations

import io
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from wattlake.config import Settings
from wattlake.errors import StorageError, TransientStorageError

RAW_READINGS: Final = "raw/readings"
ERRORS: Final = "errors"
CURATED_READINGS: Final = "curated/readings"


@dataclass(frozen=True, slots=True)
class Lake:
    """A lake root: ``fs`` plus the ``root`` path inside it (no trailing slash)."""

    fs: pafs.FileSystem
    root: str
    url: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Lake:
        """Open the lake that ``data_dir`` names.

        Raises:
            StorageError: the URL scheme is not supported.
        """
        return cls.open(
            settings.data_dir,
            s3_endpoint_url=settings["lake.s3_endpoint_url"],
            s3_region=settings["lake.s3_region"],
        )

    @classmethod
    def open(cls, url: str, *, s3_endpoint_url: str = "", s3_region: str = "us-east-1") -> Lake:
        """Open a lake by URL (``s3://bucket/prefix``) or local path.

        Raises:
            StorageError: the URL scheme is not supported.
        """
        if url.startswith("s3://"):
            kwargs: dict[str, object] = {"region": s3_region}
            if s3_endpoint_url:
                scheme, _, host = s3_endpoint_url.partition("://")
                kwargs.update(endpoint_override=host, scheme=scheme or "http")
            fs = pafs.S3FileSystem(**kwargs)  # type: ignore[arg-type]
            return cls(fs, url.removeprefix("s3://").rstrip("/"), url)
        if "://" in url and not url.startswith("file://"):
            raise StorageError(f"Lake URL {url!r} is neither a local path nor s3://bucket/prefix.")
        path = Path(url.removeprefix("file://")).expanduser().resolve()
        return cls(pafs.LocalFileSystem(), str(path), str(path))

    @property
    def is_local(self) -> bool:
        """Return True for a lake in a local folder."""
        return isinstance(self.fs, pafs.LocalFileSystem)

    def path(self, relative: str) -> str:
        """Return the full path of ``relative`` inside the lake."""
        return f"{self.root}/{relative}"

    def write_bytes(self, relative: str, data: bytes) -> str:
        """Write ``data`` at ``relative`` atomically and return the full path.

        Raises:
            TransientStorageError: the write failed (disk full, unreachable); retry later.
        """
        target = self.path(relative)
        try:
            if self.is_local:
                directory, name = os.path.split(target)
                os.makedirs(directory, exist_ok=True)
                tmp = os.path.join(directory, f".{name}.{uuid.uuid4().hex[:8]}.tmp")
                try:
                    with open(tmp, "wb") as fh:
                        fh.write(data)
                        fh.flush()
                        os.fsync(fh.fileno())
                    os.replace(tmp, target)
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
                fsync_dir(directory)
            else:
                with self.fs.open_output_stream(target) as out:
                    out.write(data)
        except OSError as exc:
            raise TransientStorageError(f"Could not write {target}: {exc}") from exc
        return target

    def write_table(self, relative: str, table: pa.Table, *, compression: str = "zstd") -> str:
        """Write ``table`` as one Parquet object at ``relative``, atomically.

        Raises:
            TransientStorageError: the write failed; retry later.
        """
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression=compression)
        return self.write_bytes(relative, buffer.getvalue())

    def read_bytes(self, path: str) -> bytes:
        """Return the content of the object at full ``path``.

        Raises:
            TransientStorageError: the object could not be read.
        """
        try:
            with self.fs.open_input_stream(path) as stream:
                return bytes(stream.read())
        except OSError as exc:
            raise TransientStorageError(f"Could not read {path}: {exc}") from exc

    def delete(self, path: str) -> None:
        """Delete the object at full ``path``; a missing object is not an error.

        Raises:
            TransientStorageError: the object could not be deleted.
        """
        try:
            self.fs.delete_file(path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise TransientStorageError(f"Could not delete {path}: {exc}") from exc

    def list_files(self, relative: str, suffix: str = "") -> list[str]:
        """Return full paths of the objects below ``relative`` ending in ``suffix``, sorted."""
        selector = pafs.FileSelector(self.path(relative), recursive=True, allow_not_found=True)
        try:
            infos = self.fs.get_file_info(selector)
        except OSError as exc:
            raise TransientStorageError(f"Could not list {self.path(relative)}: {exc}") from exc
        return sorted(
            i.path
            for i in infos
            if i.type == pafs.FileType.File
            and i.path.endswith(suffix)
            and not os.path.basename(i.path).startswith(".")
        )


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make a file created, renamed or deleted in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
