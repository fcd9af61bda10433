"""Where the lake lives: a local folder or ``s3://bucket/prefix``, behind one small interface.

Every object appears atomically: locally it is written under a hidden temporary name and
renamed; on S3 it is one PUT. Readers never see half a file.
"""

from __future__ import annotations

import io
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from wattlake.config import Settings
from wattlake.errors import ConfigError, StorageError, TransientStorageError

# The Hive-style layout of lakes before the Iceberg tables (read by ``jobs run migrate``).
RAW_READINGS: Final = "raw/readings"
ERRORS: Final = "errors"
CURATED_READINGS: Final = "curated/readings"
# Where the Iceberg tables' data and metadata live under the lake root: tables/<name>/...
TABLES_DIR: Final = "tables"
# The SQLite catalog's file beside a local lake (an S3 lake keeps it in the local state folder).
CATALOG_FILE: Final = "catalog.db"


@dataclass(frozen=True, slots=True)
class CatalogConfig:
    """Which Iceberg catalog holds the lake's tables (the ``catalog.*`` settings)."""

    type: str = "sql"
    uri: str = ""
    warehouse: str = ""
    namespace: str = "wattlake"
    rest_signing_name: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> CatalogConfig:
        """Return the catalog that ``settings`` configure."""
        return cls(
            type=settings["catalog.type"],
            uri=settings["catalog.uri"],
            warehouse=settings["catalog.warehouse"],
            namespace=settings["catalog.namespace"],
            rest_signing_name=settings["catalog.rest_signing_name"],
        )


@dataclass(frozen=True, slots=True)
class Lake:
    """A lake root: ``fs`` plus the ``root`` path inside it (no trailing slash), and the
    catalog of its tables."""

    fs: pafs.FileSystem
    root: str
    url: str
    s3_endpoint_url: str = ""
    s3_region: str = "us-east-1"
    catalog: CatalogConfig = field(default_factory=CatalogConfig)

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
            catalog=CatalogConfig.from_settings(settings),
        )

    @classmethod
    def open(
        cls,
        url: str,
        *,
        s3_endpoint_url: str = "",
        s3_region: str = "us-east-1",
        catalog: CatalogConfig | None = None,
    ) -> Lake:
        """Open a lake by URL (``s3://bucket/prefix``) or local path.

        Raises:
            StorageError: the URL scheme is not supported.
            ConfigError: a local lake's path is a file.
        """
        catalog = catalog or CatalogConfig()
        if url.startswith("s3://"):
            kwargs: dict[str, object] = {"region": s3_region}
            if s3_endpoint_url:
                scheme, _, host = s3_endpoint_url.partition("://")
                kwargs.update(endpoint_override=host, scheme=scheme or "http")
            fs = pafs.S3FileSystem(**kwargs)  # type: ignore[arg-type]
            root = url.removeprefix("s3://").rstrip("/")
            return cls(fs, root, f"s3://{root}", s3_endpoint_url, s3_region, catalog)
        if "://" in url and not url.startswith("file://"):
            raise StorageError(f"Lake URL {url!r} is neither a local path nor s3://bucket/prefix.")
        path = Path(url.removeprefix("file://")).expanduser().resolve()
        if path.exists() and not path.is_dir():
            raise ConfigError(f"The lake's folder {path} is a file; choose a folder for the lake.")
        local = pafs.LocalFileSystem()
        return cls(local, str(path), str(path), s3_endpoint_url, s3_region, catalog)

    @property
    def is_local(self) -> bool:
        """Return True for a lake in a local folder."""
        return isinstance(self.fs, pafs.LocalFileSystem)

    @property
    def uri(self) -> str:
        """Return the lake root as a URI (``file:///…`` or ``s3://…``), as Iceberg names files."""
        return f"file://{self.root}" if self.is_local else f"s3://{self.root}"

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
