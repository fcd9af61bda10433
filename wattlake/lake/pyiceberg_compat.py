"""Every use of pyiceberg's internals, written for pyiceberg 0.12 (checked at import).

A commit (:func:`wattlake.lake.tables.commit`) runs in a :class:`Transaction` whose staged
metadata is computed once per staged update, replaces files through :class:`Overwrite`, which
reads each manifest once, and a crash test can stop it between writing the new metadata and
updating the catalog (:func:`after_metadata_written`). Why each exists: docs/compat.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from pyiceberg.manifest import (
    DataFileContent,
    ManifestEntry,
    ManifestEntryStatus,
    ManifestFile,
)
from pyiceberg.table import Table
from pyiceberg.table import Transaction as _PyicebergTransaction
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.snapshots import Operation
from pyiceberg.table.update.snapshot import _OverwriteFiles, _SnapshotProducer
from pyiceberg.typedef import KeyDefaultDict
from pyiceberg.utils.concurrent import ExecutorFactory

from wattlake.compat import require_series

# The pyiceberg releases this module was written for (and checked against).
PYICEBERG_SERIES: Final = "0.12."


def check_version() -> str:
    """Return the installed pyiceberg version.

    Raises:
        LibraryVersionError: it is not :data:`PYICEBERG_SERIES`.
    """
    return require_series("pyiceberg", PYICEBERG_SERIES, __name__)


check_version()


class Transaction(_PyicebergTransaction):
    """pyiceberg's transaction, its staged metadata computed once per staged update.

    pyiceberg applies every staged update to the table's metadata, and deep-copies the result,
    each time a commit reads ``table_metadata`` (about 20 times per snapshot): most of a
    commit's CPU, and growing with the snapshots kept. The metadata objects are frozen, so one
    copy per state serves every read.
    """

    # (the table's metadata, how many updates were staged, the staged metadata)
    _cached: tuple[TableMetadata, int, TableMetadata] | None = None

    @property
    def table_metadata(self) -> TableMetadata:
        base, staged = self._table.metadata, len(self._updates)  # updates are only ever added
        cached = self._cached
        if cached is None or cached[0] is not base or cached[1] != staged:
            cached = self._cached = (base, staged, super().table_metadata)
        return cached[2]


class Overwrite(_OverwriteFiles):
    """pyiceberg's overwrite (a replacement of files), each manifest of the parent snapshot
    read once.

    pyiceberg reads every manifest that may hold a replaced file twice: for the entries it
    marks deleted (in parallel) and again, one after the other, for those it keeps. A table a
    stream writes holds a manifest per flush, and reading one costs about 1.5 ms of CPU: on
    the benchmark's 28 files, 56 reads took most of a compaction commit's 130 ms.
    """

    # Live entries per manifest path (manifests never change), read here or given.
    _live: dict[str, list[ManifestEntry]] | None = None

    def _live_entries(self, manifest: ManifestFile) -> list[ManifestEntry]:
        if self._live is None:
            self._live = {}
        entries = self._live.get(manifest.manifest_path)
        if entries is None:
            entries = manifest.fetch_manifest_entry(io=self._io, discard_deleted=True)
            self._live[manifest.manifest_path] = entries
        return entries

    def _deleted_entries(self) -> list[ManifestEntry]:
        deleted: list[ManifestEntry] = []
        if self._parent_snapshot_id is not None:
            previous = self._transaction.table_metadata.snapshot_by_id(self._parent_snapshot_id)
            if previous is None:
                raise ValueError(
                    f"Could not find the previous snapshot: {self._parent_snapshot_id}"
                )
            evaluators: dict[int, Callable[[ManifestFile], bool]] = KeyDefaultDict(
                self._build_manifest_evaluator
            )

            def entries(manifest: ManifestFile) -> list[ManifestEntry]:
                if not evaluators[manifest.partition_spec_id](manifest):
                    return []
                return [
                    ManifestEntry.from_args(
                        status=ManifestEntryStatus.DELETED,
                        snapshot_id=self._snapshot_id,
                        sequence_number=entry.sequence_number,
                        file_sequence_number=entry.file_sequence_number,
                        data_file=entry.data_file,
                    )
                    for entry in self._live_entries(manifest)
                    if entry.data_file.content == DataFileContent.DATA
                    and entry.data_file in self._deleted_data_files
                ]

            executor = ExecutorFactory.get_or_create()
            for found in executor.map(entries, previous.manifests(self._io)):
                deleted += found
        self._validate_required_deletes(deleted)
        return deleted

    def _existing_manifests(self) -> list[ManifestFile]:
        existing: list[ManifestFile] = []
        evaluators: dict[int, Callable[[ManifestFile], bool]] = KeyDefaultDict(
            self._build_manifest_evaluator
        )
        snapshot = self._transaction.table_metadata.snapshot_by_name(name=self._target_branch)
        for manifest in snapshot.manifests(io=self._io) if snapshot else []:
            if not evaluators[manifest.partition_spec_id](manifest):
                existing.append(manifest)
                continue
            kept = [
                e
                for e in self._live_entries(manifest)
                if e.data_file not in self._deleted_data_files
            ]
            if len(kept) == len(self._live_entries(manifest)):
                existing.append(manifest)  # nothing of it replaced
                continue
            if not kept:
                continue  # every file of it replaced
            with self.new_manifest_writer(self.spec(manifest.partition_spec_id)) as writer:
                for entry in kept:
                    writer.add_entry(
                        ManifestEntry.from_args(
                            status=ManifestEntryStatus.EXISTING,
                            snapshot_id=entry.snapshot_id,
                            sequence_number=entry.sequence_number,
                            file_sequence_number=entry.file_sequence_number,
                            data_file=entry.data_file,
                        )
                    )
            existing.append(writer.to_manifest_file())
        return existing


def snapshot_producer(
    tx: _PyicebergTransaction,
    properties: dict[str, str],
    replaces: bool,
    read: Mapping[str, list[ManifestEntry]] | None,
) -> _SnapshotProducer[Any]:
    """Return the producer of the next snapshot in ``tx``: an :class:`Overwrite` when it
    ``replaces`` files (using manifests' live entries already ``read``), else a fast append."""
    if not replaces:
        return tx.update_snapshot(snapshot_properties=properties).fast_append()
    producer = Overwrite(
        operation=Operation.OVERWRITE,
        transaction=tx,
        io=tx._table.io,
        snapshot_properties=properties,
    )
    producer._live = dict(read or {})
    return producer


def after_metadata_written(table: Table, then: Callable[[], None]) -> None:
    """Make ``table``'s catalog call ``then`` after it writes a new metadata file, before it
    points the table to it (crash tests: :mod:`wattlake.faults`, ``commit-in-flight``)."""
    write_metadata = table.catalog._write_metadata  # type: ignore[attr-defined]

    def write_then(*args: Any, **kwargs: Any) -> None:
        write_metadata(*args, **kwargs)
        then()

    table.catalog._write_metadata = write_then  # type: ignore[attr-defined]
