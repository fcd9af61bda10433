"""The Iceberg catalog of the lake's tables (the Glue Data Catalog's role).

By default a SQL catalog in a SQLite file: ``catalog.db`` beside a local lake, or
``catalog/<lake-id>/catalog.db`` in the local state folder (:mod:`wattlake.state`) for a lake in
S3 (like the WAL, local state named by the lake's identity). ``catalog.uri`` names another SQL
database (PostgreSQL: ``postgresql+psycopg://user:pass@host/db``); ``catalog.type`` chooses a
REST catalog (SeaweedFS's or Amazon S3 Tables', signed with SigV4 when
``catalog.rest_signing_name`` is set) or AWS Glue.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Final

from wattlake.errors import ConfigError, StorageError
from wattlake.lake.storage import CATALOG_FILE, Lake
from wattlake.state import PLAN_CACHE_DIR, adopt_legacy_lake_state

if TYPE_CHECKING:  # pyiceberg is imported when a catalog is opened (it pulls in sqlalchemy)
    from pyiceberg.catalog import Catalog

CATALOG_NAME: Final = "wattlake"
CATALOG_TYPES: Final = ("sql", "rest", "glue")

_lock = threading.Lock()
_open: dict[tuple[object, ...], Catalog] = {}


def sql_string(text: str) -> str:
    """Quote ``text`` as an SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def default_sql_uri(lake: Lake) -> str:
    """Return the SQLite catalog's URL for ``lake``: beside a local lake, else in local state.

    Raises:
        StorageError: the lake's identity (which names its local state) cannot be read.
    """
    if lake.is_local:
        path = Path(lake.root) / CATALOG_FILE
    else:
        from wattlake.lake.identity import ensure_identity

        lake_id = ensure_identity(lake).lake_id
        try:
            path = adopt_legacy_lake_state("catalog", lake_id) / CATALOG_FILE
        except OSError as exc:
            raise StorageError(
                f"Cannot move the catalog of {lake.url} into the state folder: {exc}"
            ) from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def io_properties(lake: Lake) -> dict[str, str]:
    """Return pyiceberg FileIO properties that reach ``lake`` (credentials from the
    environment, as for the lake itself)."""
    props = {"py-io-impl": "pyiceberg.io.pyarrow.PyArrowFileIO"}
    if not lake.is_local:
        props["s3.region"] = lake.s3_region
        if lake.s3_endpoint_url:
            props["s3.endpoint"] = lake.s3_endpoint_url
    return props


def catalog_properties(lake: Lake) -> dict[str, str]:
    """Return the pyiceberg catalog properties for ``lake``'s configured catalog.

    Raises:
        ConfigError: the catalog type is unknown, or a REST catalog has no endpoint.
    """
    config = lake.catalog
    props = io_properties(lake)
    if config.type == "sql":
        props.update(type="sql", uri=config.uri or default_sql_uri(lake), warehouse=lake.uri)
        if props["uri"].startswith("sqlite"):
            props["pool_pre_ping"] = "false"
    elif config.type == "rest":
        if not config.uri:
            raise ConfigError(
                "A REST catalog needs its endpoint: set catalog.uri (WATTLAKE_CATALOG__URI)."
            )
        props.update(type="rest", uri=config.uri)
        if config.warehouse:
            props["warehouse"] = config.warehouse
        if config.rest_signing_name:
            props.update(
                {
                    "rest.sigv4-enabled": "true",
                    "rest.signing-name": config.rest_signing_name,
                    "rest.signing-region": lake.s3_region,
                }
            )
    elif config.type == "glue":
        props.update(type="glue", **{"glue.region": lake.s3_region})
        if config.uri:
            props["glue.endpoint"] = config.uri
        if config.warehouse:
            props["warehouse"] = config.warehouse
    else:
        raise ConfigError(
            f"catalog.type is {config.type!r}; choose one of {', '.join(CATALOG_TYPES)} "
            "(WATTLAKE_CATALOG__TYPE)."
        )
    return props


def open_catalog(lake: Lake) -> Catalog:
    """Return the catalog of ``lake``'s tables (one per process and configuration), with the
    lake's namespace created.

    Raises:
        ConfigError: the catalog settings cannot be used.
        StorageError: the catalog cannot be reached.
    """
    from pyiceberg.catalog import load_catalog
    from pyiceberg.exceptions import NamespaceAlreadyExistsError

    props = catalog_properties(lake)
    key = (lake.url, lake.catalog, tuple(sorted(props.items())))
    with _lock:
        catalog = _open.get(key)
        if catalog is None:
            try:
                catalog = load_catalog(CATALOG_NAME, **props)
                with contextlib.suppress(NamespaceAlreadyExistsError):  # a racing creator
                    catalog.create_namespace_if_not_exists(lake.catalog.namespace)
            except (OSError, ValueError) as exc:
                raise StorageError(
                    f"Cannot open the {lake.catalog.type} catalog of {lake.url}: {exc}; check "
                    "the catalog.* settings and that the catalog is reachable."
                ) from exc
            _open[key] = catalog
        return catalog


def sqlite_catalog_path(lake: Lake) -> Path | None:
    """Return the file of ``lake``'s catalog when it is a SQLite catalog, else None.

    Raises:
        StorageError: the lake's identity (which names its local state) cannot be read.
    """
    config = lake.catalog
    if config.type != "sql":
        return None
    if not config.uri and lake.is_local:  # (default_sql_uri would create the lake's folder)
        return Path(lake.root) / CATALOG_FILE
    uri = config.uri or default_sql_uri(lake)
    prefix = "sqlite:///"
    return Path(uri[len(prefix) :]) if uri.startswith(prefix) else None


def current_metadata_location(lake: Lake, name: str) -> str | None:
    """Return where the current metadata of table ``name`` is, read straight from a SQLite
    catalog with the standard library (opening the catalog through pyiceberg imports
    sqlalchemy, about 0.1 s of a short command); None when the catalog is not SQLite, does not
    hold the table yet, or cannot be read now (the caller then opens the catalog).

    The row is the one pyiceberg's SQL catalog keeps: ``iceberg_tables(catalog_name,
    table_namespace, table_name, metadata_location, ...)``, updated by every commit.
    """
    try:
        path = sqlite_catalog_path(lake)
    except StorageError:
        return None
    if path is None or not path.is_file():
        return None
    try:
        with contextlib.closing(
            sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=5.0)
        ) as con:
            row = con.execute(
                "SELECT metadata_location FROM iceberg_tables WHERE catalog_name = ? "
                "AND table_namespace = ? AND table_name = ?",
                (CATALOG_NAME, lake.catalog.namespace, name),
            ).fetchone()
    except sqlite3.Error:  # another schema, a locked file: the catalog answers instead
        return None
    return str(row[0]) if row and row[0] else None


def plan_cache_dir(lake: Lake) -> Path | None:
    """Return the folder that keeps ``lake``'s scan plans between commands: beside its SQLite
    catalog (in the lake's folder for a local lake, in the local state folder for a lake in
    object storage); None for other catalogs."""
    try:
        path = sqlite_catalog_path(lake)
    except StorageError:
        return None
    return None if path is None else path.parent / PLAN_CACHE_DIR


def forget_catalogs() -> None:
    """Drop the catalogs opened so far (tests that delete a lake call this)."""
    with _lock:
        _open.clear()


# Which copy of a duplicated reading is kept: the first received.
DEDUP_WINDOW: Final = "PARTITION BY device_id, channel, ts ORDER BY received_at, source"
