"""Where the lake lives: a local folder or ``s3://bucket/prefix``, behind one small interface.

Every object appears atomically: locally it is written under a hidden temporary name and
renamed; on S3 it is one PUT. Readers never see half a file.

A lake's URL is checked in words before anything touches the network or a folder: the
backends are a table keyed by URL scheme (:data:`BACKENDS`), so ``S3://``, ``gs://``, a bucket
name S3 refuses and the one-slash ``s3:/bucket`` (which would otherwise be a local folder named
``s3:``) are each one sentence.
"""

from __future__ import annotations

import io
import ipaddress
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from wattlake.config import Settings
from wattlake.errors import ConfigError, TransientStorageError, UsageError

# The Hive-style layout of lakes before the Iceberg tables (read by ``jobs run migrate``).
RAW_READINGS: Final = "raw/readings"
ERRORS: Final = "errors"
CURATED_READINGS: Final = "curated/readings"
# Where the Iceberg tables' data and metadata live under the lake root: tables/<name>/...
TABLES_DIR: Final = "tables"
# The SQLite catalog's file beside a local lake (an S3 lake keeps it in the local state folder).
CATALOG_FILE: Final = "catalog.db"

# S3's rules for a bucket name (general purpose buckets): 3-63 lowercase letters, digits, '.'
# and '-', a letter or digit at both ends.
S3_BUCKET: Final = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# ``word:`` at the start of a path without ``://``: a URL missing a slash (``s3:/bucket``).
ONE_SLASH: Final = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]+):/?(?P<rest>[^/].*)?$")
# What Arrow's S3 client says when it cannot connect at all (not an S3 error answer).
UNREACHABLE_SIGNS: Final = ("NETWORK_CONNECTION", "curlCode")
S3_ENDPOINT_SETTING: Final = "lake.s3_endpoint_url (WATTLAKE_LAKE__S3_ENDPOINT_URL)"


class LakeUrlError(UsageError):
    """The lake's URL cannot name a lake: an unknown scheme, no bucket or a bad bucket name."""


class LakeUnreachableError(TransientStorageError):
    """The lake's object store does not answer at all (nothing listens, no route, no name)."""


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
            LakeUrlError: ``data_dir`` cannot name a lake.
            ConfigError: a local lake's path is a file.
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
            LakeUrlError: the URL's scheme is not one of :data:`BACKENDS`, it names no bucket
                or a bad one, or it is a URL with one slash (``s3:/bucket``).
            ConfigError: a local lake's path is a file.
        """
        catalog = catalog or CatalogConfig()
        scheme, sep, rest = url.partition("://")
        if not sep:
            if re.match(r"(?i)file:/(?!/)", url):  # file:/path, the short form of file:///path
                return _open_local(url[5:], s3_endpoint_url, s3_region, catalog)
            _refuse_one_slash(url)
            return _open_local(url, s3_endpoint_url, s3_region, catalog)
        opener = BACKENDS.get(scheme)
        if opener is None:
            if scheme.lower() in BACKENDS:
                raise LakeUrlError(
                    f"The lake URL {url!r} spells its scheme {scheme}://; did you mean "
                    f"{scheme.lower()}://{rest}?"
                )
            raise LakeUrlError(
                f"The lake URL {url!r} uses {scheme}://, where wattlake cannot keep a lake; "
                "give a local folder or s3://bucket/prefix."
            )
        return opener(url, rest, s3_endpoint_url, s3_region, catalog)

    def os_error(self, exc: OSError, doing: str) -> TransientStorageError:
        """Return the error to raise when ``doing`` (``read x``) failed with ``exc``: a short
        sentence naming the endpoint setting when the object store does not answer at all."""
        if self.is_local or not any(sign in str(exc) for sign in UNREACHABLE_SIGNS):
            return TransientStorageError(f"Could not {doing}: {exc}")
        if self.s3_endpoint_url:
            return LakeUnreachableError(
                f"Cannot reach the S3 endpoint {self.s3_endpoint_url} of the lake {self.url}; "
                f"start it, or correct {S3_ENDPOINT_SETTING}."
            )
        return LakeUnreachableError(
            f"Cannot reach S3 (AWS, region {self.s3_region}) for the lake {self.url}; check "
            f"the network, or set {S3_ENDPOINT_SETTING} for another S3 server."
        )

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
            raise self.os_error(exc, f"write {target}") from exc
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
            raise self.os_error(exc, f"read {path}") from exc

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
            raise self.os_error(exc, f"delete {path}") from exc

    def list_files(self, relative: str, suffix: str = "") -> list[str]:
        """Return full paths of the objects below ``relative`` ending in ``suffix``, sorted."""
        selector = pafs.FileSelector(self.path(relative), recursive=True, allow_not_found=True)
        try:
            infos = self.fs.get_file_info(selector)
        except OSError as exc:
            raise self.os_error(exc, f"list {self.path(relative)}") from exc
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


Opener = Callable[[str, str, str, str, CatalogConfig], Lake]
"""Open a lake: (url, the part after ``scheme://``, S3 endpoint, S3 region, catalog)."""


def _open_local(
    path_text: str, s3_endpoint_url: str, s3_region: str, catalog: CatalogConfig
) -> Lake:
    path = Path(path_text).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"The lake's folder {path} is a file; choose a folder for the lake.")
    local = pafs.LocalFileSystem()
    return Lake(local, str(path), str(path), s3_endpoint_url, s3_region, catalog)


def _open_file_url(
    url: str, rest: str, s3_endpoint_url: str, s3_region: str, catalog: CatalogConfig
) -> Lake:
    return _open_local(rest, s3_endpoint_url, s3_region, catalog)


def _open_s3(
    url: str, rest: str, s3_endpoint_url: str, s3_region: str, catalog: CatalogConfig
) -> Lake:
    root = rest.rstrip("/")
    bucket, _, prefix = root.partition("/")
    check_s3_location(url, bucket, prefix)
    kwargs: dict[str, object] = {"region": s3_region}
    if s3_endpoint_url:
        scheme, _, host = s3_endpoint_url.partition("://")
        kwargs.update(endpoint_override=host, scheme=scheme or "http")
    fs = pafs.S3FileSystem(**kwargs)  # type: ignore[arg-type]
    return Lake(fs, root, f"s3://{root}", s3_endpoint_url, s3_region, catalog)


BACKENDS: Final[dict[str, Opener]] = {"s3": _open_s3, "file": _open_file_url}
"""Where a lake can live, by URL scheme (a path without a scheme is a local folder)."""


def check_s3_location(url: str, bucket: str, prefix: str) -> None:
    """Check that ``bucket`` and ``prefix`` of lake ``url`` can name S3 objects.

    Raises:
        LakeUrlError: there is no bucket, the bucket's name breaks S3's rules, or the prefix
            has an empty part (``a//b``).
    """
    if not bucket:
        raise LakeUrlError(f"The lake URL {url!r} names no bucket; write s3://bucket/prefix.")
    if (
        not S3_BUCKET.match(bucket)
        or ".." in bucket
        or _is_ip_address(bucket)
        or bucket.startswith("xn--")
    ):
        raise LakeUrlError(
            f"{bucket!r} in the lake URL {url!r} is not an S3 bucket name (3-63 lowercase "
            "letters, digits, '.' and '-', starting and ending with a letter or digit)."
        )
    if prefix and "" in prefix.split("/"):
        raise LakeUrlError(
            f"The lake URL {url!r} has an empty part in its prefix ('//'); write "
            f"s3://{bucket}/{'/'.join(p for p in prefix.split('/') if p)}."
        )


def _is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _refuse_one_slash(path_text: str) -> None:
    """Refuse a local path that is a URL missing a slash (``s3:/bucket/prefix``, ``s3:bucket``):
    taken as a path it would make a folder named ``s3:`` here.

    Raises:
        LakeUrlError: ``path_text`` reads as such a URL.
    """
    found = ONE_SLASH.match(path_text)
    if found is None:
        return
    scheme, rest = found["scheme"], found["rest"] or ""
    raise LakeUrlError(
        f"The lake {path_text!r} reads as a URL missing a slash; did you mean "
        f"{scheme.lower()}://{rest}? (A local folder of that name is written ./{path_text}.)"
    )
