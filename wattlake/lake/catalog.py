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
import threading
from pathlib import Path
from typing import Final

from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.exceptions import NamespaceAlreadyExistsError

from wattlake.errors import ConfigError, StorageError
from wattlake.lake.storage import CATALOG_FILE, Lake
from wattlake.state import adopt_legacy_lake_state

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


def forget_catalogs() -> None:
    """Drop the catalogs opened so far (tests that delete a lake call this)."""
    with _lock:
        _open.clear()


# Which copy of a duplicated reading is kept: the first received.
DEDUP_WINDOW: Final = "PARTITION BY device_id, channel, ts ORDER BY received_at, source"
