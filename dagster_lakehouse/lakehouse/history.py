"""What each Iceberg snapshot of a table did, read back from its summary and manifests.

Every snapshot this package commits says what it is in its summary: `lakehouse.op` is `append` (its added
files are new rows), `delete` (rows matching `lakehouse.filter` were removed; its added files are the
rewritten remainders of files that also held other rows) or `replace` (all rows removed). A snapshot that
replays another ref's snapshot in a merge names the source branch (`lakehouse.merge-source`) and snapshot
(`lakehouse.source-snapshot`), and keeps the id of the operation's first snapshot as `lakehouse.origin`, so two
refs can tell which of their operations the other already holds, whatever path the operation took.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pyiceberg.io import FileIO
from pyiceberg.manifest import DataFile, ManifestEntryStatus
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.snapshots import Operation, Snapshot, ancestors_of

OP = "lakehouse.op"
FILTER = "lakehouse.filter"
ORIGIN = "lakehouse.origin"
MERGE_SOURCE = "lakehouse.merge-source"
SOURCE_SNAPSHOT = "lakehouse.source-snapshot"
REPLACES = "lakehouse.replaces"
"""On the append half of a replace: the filter of the rows it replaced (empty: all rows), for conflict messages."""

OpKind = Literal["append", "delete", "replace", "foreign"]


@dataclass(frozen=True)
class TableOp:
    """One snapshot seen as an operation: its kind, row filter (deletes), and the data files it added and removed."""

    snapshot_id: int
    origin: int
    kind: OpKind
    filter: str | None
    added: tuple[DataFile, ...]
    removed: tuple[DataFile, ...]
    summary: dict[str, str]

    @property
    def new_rows(self) -> tuple[DataFile, ...]:
        """Files holding rows this operation brought in (not remainders it rewrote)."""
        return self.added if self.kind in ("append", "foreign") else ()

    def describe(self) -> str:
        """The operation in words, for conflict messages."""
        if self.kind == "append" and REPLACES in self.summary:
            replaced = self.summary[REPLACES]
            return f"replaced rows where {replaced}" if replaced else "replaced all rows"
        if self.kind == "append":
            return "appended rows"
        if self.kind == "delete":
            return f"replaced rows where {self.filter}"
        if self.kind == "replace":
            return "replaced all rows"
        return f"committed a {self.summary.get('operation', 'snapshot')} outside this package"


def op_props(
    kind: OpKind, filter: str | None = None, origin: int | None = None, replaces: str | None = None
) -> dict[str, str]:
    """The summary properties that make a snapshot readable as a `TableOp`."""
    props = {OP: kind}
    if replaces is not None:
        props[REPLACES] = replaces
    if filter is not None:
        props[FILTER] = filter
    if origin is not None:
        props[ORIGIN] = str(origin)
    return props


def _origin(snapshot: Snapshot) -> int:
    summary = snapshot.summary.additional_properties if snapshot.summary else {}
    return int(summary.get(ORIGIN, snapshot.snapshot_id))


def chain(metadata: TableMetadata) -> list[Snapshot]:
    """The current snapshot and its ancestors, newest first."""
    return list(ancestors_of(metadata.current_snapshot(), metadata))


def common_ancestor(a: list[Snapshot], b: list[Snapshot]) -> int | None:
    """The newest snapshot id on both chains (None when they share none)."""
    ids = {s.snapshot_id for s in b}
    return next((s.snapshot_id for s in a if s.snapshot_id in ids), None)


def since(snapshots: list[Snapshot], ancestor: int | None) -> list[Snapshot]:
    """The snapshots of a newest-first chain after `ancestor`, oldest first."""
    newer: list[Snapshot] = []
    for snapshot in snapshots:
        if snapshot.snapshot_id == ancestor:
            break
        newer.append(snapshot)
    return newer[::-1]


def origins(snapshots: list[Snapshot]) -> set[int]:
    """The ids of the operations these snapshots hold (a replayed snapshot holds its origin)."""
    return {_origin(s) for s in snapshots}


def table_op(snapshot: Snapshot, io: FileIO) -> TableOp:
    """Read one snapshot's operation: its summary and the entries its own manifests added or deleted."""
    added: list[DataFile] = []
    removed: list[DataFile] = []
    for manifest in snapshot.manifests(io):
        if manifest.added_snapshot_id != snapshot.snapshot_id:
            continue
        for entry in manifest.fetch_manifest_entry(io, discard_deleted=False):
            if entry.snapshot_id != snapshot.snapshot_id:
                continue
            if entry.status == ManifestEntryStatus.ADDED:
                added.append(entry.data_file)
            elif entry.status == ManifestEntryStatus.DELETED:
                removed.append(entry.data_file)
    summary = dict(snapshot.summary.additional_properties) if snapshot.summary else {}
    if snapshot.summary is not None:
        summary["operation"] = snapshot.summary.operation.value
    kind = summary.get(OP)
    if kind not in ("append", "delete", "replace"):
        is_append = snapshot.summary is not None and snapshot.summary.operation == Operation.APPEND
        kind = "append" if is_append and not removed else "foreign"
    return TableOp(
        snapshot_id=snapshot.snapshot_id,
        origin=_origin(snapshot),
        kind=kind,  # type: ignore[arg-type]
        filter=summary.get(FILTER),
        added=tuple(added),
        removed=tuple(removed),
        summary=summary,
    )


def pending_ops(side: TableMetadata, other: TableMetadata | None, io: FileIO) -> list[TableOp]:
    """The operations of `side` that `other` (None: a table that does not exist) does not hold yet, oldest first.

    Both chains are walked back to their newest common snapshot; of the snapshots after it, those whose
    origin the other side also holds (it replayed them, or they replay its own) are skipped.
    """
    side_chain, other_chain = chain(side), chain(other) if other is not None else []
    ancestor = common_ancestor(side_chain, other_chain)
    held = origins(other_chain)
    return [table_op(s, io) for s in since(side_chain, ancestor) if _origin(s) not in held]


def live_files(metadata: TableMetadata, io: FileIO) -> dict[str, DataFile]:
    """The data files of the current snapshot, by path."""
    snapshot = metadata.current_snapshot()
    if snapshot is None:
        return {}
    files: dict[str, DataFile] = {}
    for manifest in snapshot.manifests(io):
        for entry in manifest.fetch_manifest_entry(io, discard_deleted=True):
            files[entry.data_file.file_path] = entry.data_file
    return files
