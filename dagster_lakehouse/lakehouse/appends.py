"""Appends of written data files whose manifest is written before the ref's commit turn.

A fast append writes two Avro files: the manifest of its new data files and the manifest list of the new snapshot.
Only the list depends on the parent snapshot; the manifest needs just the snapshot id, the schema and the partition
spec. So a write writes its manifest right after its Parquet files, side by side with other writers, and in its
commit turn (`turns.py`) writes only the manifest list and the metadata file: concurrent writers of one ref queue
for less work. Its entries inherit their sequence number from the manifest list, as any new manifest's do.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from pyiceberg.io import FileIO
from pyiceberg.manifest import DataFile, ManifestEntry, ManifestEntryStatus, ManifestFile, write_manifest
from pyiceberg.table import TableProperties, Transaction
from pyiceberg.table.locations import load_location_provider
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.refs import MAIN_BRANCH
from pyiceberg.table.snapshots import Operation
from pyiceberg.table.update.snapshot import _FastAppendFiles


@dataclass(frozen=True)
class WrittenFiles:
    """Data files written for one (schema, partition spec) of a table, and the manifest that adds them as snapshot
    `snapshot_id` (None when there are no files)."""

    files: list[DataFile]
    snapshot_id: int
    manifest: ManifestFile | None


def write_added_manifest(metadata: TableMetadata, io: FileIO, files: Sequence[DataFile]) -> WrittenFiles:
    """Write the manifest adding `files` to a new snapshot of the table `metadata` describes (its current schema and
    default spec), under a snapshot id chosen now."""
    snapshot_id = metadata.new_snapshot_id()
    if not files:
        return WrittenFiles([], snapshot_id, None)
    location = load_location_provider(metadata.location, metadata.properties).new_metadata_location(
        f"{uuid.uuid4()}-m0.avro"
    )
    compression = metadata.properties.get(
        TableProperties.WRITE_AVRO_COMPRESSION, TableProperties.WRITE_AVRO_COMPRESSION_DEFAULT
    )
    with write_manifest(
        format_version=metadata.format_version,
        spec=metadata.spec(),
        schema=metadata.schema(),
        output_file=io.new_output(location),
        snapshot_id=snapshot_id,
        avro_compression=compression,  # type: ignore[arg-type]
    ) as writer:
        for data_file in files:
            writer.add(
                ManifestEntry.from_args(
                    status=ManifestEntryStatus.ADDED,
                    snapshot_id=snapshot_id,
                    sequence_number=None,
                    file_sequence_number=None,
                    data_file=data_file,
                )
            )
    return WrittenFiles(list(files), snapshot_id, writer.to_manifest_file())


class _AppendWritten(_FastAppendFiles):
    """PyIceberg's fast append, taking its added-files manifest and snapshot id from `WrittenFiles`."""

    def __init__(self, tx: Transaction, written: WrittenFiles, props: dict[str, str]):
        super().__init__(
            operation=Operation.APPEND, transaction=tx, io=tx._table.io, branch=MAIN_BRANCH, snapshot_properties=props
        )
        self._snapshot_id = written.snapshot_id
        self._added_data_files = list(written.files)
        self._written = written.manifest

    def _manifests(self) -> list[ManifestFile]:
        added = [self._written] if self._written is not None else []
        return self._process_manifests(added + self._existing_manifests())


def usable(tx: Transaction, written: WrittenFiles) -> bool:
    """Whether `written` can be appended in `tx` as it is: its snapshot id is still free (a 63-bit random id: a
    clash is all but impossible, and then the files are appended PyIceberg's way, the manifest written anew)."""
    return tx.table_metadata.snapshot_by_id(written.snapshot_id) is None


def append_written(tx: Transaction, written: WrittenFiles, props: dict[str, str]) -> None:
    """Add `written` to `tx` as one append snapshot, reusing its manifest (no data is read or copied)."""
    _AppendWritten(tx, written, props).commit()
