"""What each Iceberg snapshot of a table did, read back from its summary and manifests.

Every snapshot this package commits says what it is in its summary: `lakehouse.op` is `append` (its added
files are new rows), `delete` (rows matching `lakehouse.filter` were removed; its added files are the
rewritten remainders of files that also held other rows) or `replace` (all rows removed). A snapshot that
replays other refs' operations in a merge names the source branch (`lakehouse.merge-source`) and keeps the ids
of the operations' first snapshots as `lakehouse.origin` (comma-separated: a merge replays a run of operations as
one delete and one append), so two refs can tell which operations the other already holds, whatever path the
operations took. Appends are also told apart by their files, which are added by reference everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal

from pyiceberg.io import FileIO
from pyiceberg.manifest import DataFile, ManifestEntryStatus
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.snapshots import Operation, Snapshot

OP = "lakehouse.op"
FILTER = "lakehouse.filter"
ORIGIN = "lakehouse.origin"
MERGE_SOURCE = "lakehouse.merge-source"
SOURCE_SNAPSHOT = "lakehouse.source-snapshot"
REVERT_OF = "lakehouse.revert-of"
"""On a snapshot that undid a commit file by file (`undo.RevertCommit`): the id of the commit it reverted."""
REPLACES = "lakehouse.replaces"
"""On an append: it first removed the rows matching this filter (empty: all rows). The append half of every replace
carries it, so the replace is still known where its delete matched no row and left no snapshot of its own."""

OpKind = Literal["append", "delete", "replace", "foreign"]


@dataclass(frozen=True)
class TableOp:
    """One snapshot seen as an operation: its kind, row filter (deletes), and the data files it added and removed."""

    snapshot_id: int
    origins: frozenset[int]
    kind: OpKind
    filter: str | None
    added: tuple[DataFile, ...]
    removed: tuple[DataFile, ...]
    summary: dict[str, str]

    @property
    def replaces(self) -> str | None:
        """For an append: the filter of the rows it replaced first (\"\" = all rows), else None."""
        return self.summary.get(REPLACES) if self.kind == "append" else None

    @property
    def delete_filter(self) -> str | None:
        """The filter of the rows this operation removed before adding any (None: it removed none by filter)."""
        return self.filter if self.kind == "delete" else self.replaces or None

    @property
    def replaces_all(self) -> bool:
        return self.kind == "replace" or self.replaces == ""

    @property
    def new_rows(self) -> tuple[DataFile, ...]:
        """Files holding rows this operation brought in (not remainders it rewrote)."""
        return self.added if self.kind in ("append", "foreign") else ()

    def describe(self) -> str:
        """The operation in words, for conflict messages."""
        if self.replaces is not None:
            return f"replaced rows where {self.replaces}" if self.replaces else "replaced all rows"
        if self.kind == "append":
            return "appended rows"
        if self.kind == "delete":
            return f"replaced rows where {self.filter}"
        if self.kind == "replace":
            return "replaced all rows"
        if REVERT_OF in self.summary:
            return f"reverted commit {self.summary[REVERT_OF][:10]}"
        return f"committed a {self.summary.get('operation', 'snapshot')} outside this package"


def op_props(
    kind: OpKind, filter: str | None = None, origins: Iterable[int] = (), replaces: str | None = None
) -> dict[str, str]:
    """The summary properties that make a snapshot readable as a `TableOp`."""
    props = {OP: kind}
    if replaces is not None:
        props[REPLACES] = replaces
    if filter is not None:
        props[FILTER] = filter
    if origins:
        props[ORIGIN] = ",".join(str(o) for o in sorted(origins))
    return props


def _origins(snapshot: Snapshot) -> frozenset[int]:
    summary = snapshot.summary.additional_properties if snapshot.summary else {}
    recorded = summary.get(ORIGIN)
    return frozenset(int(o) for o in recorded.split(",")) if recorded else frozenset({snapshot.snapshot_id})


def chain(metadata: TableMetadata) -> list[Snapshot]:
    """The current snapshot and its ancestors, newest first (one pass: PyIceberg's lookup by id is a scan)."""
    by_id = {s.snapshot_id: s for s in metadata.snapshots}
    snapshots: list[Snapshot] = []
    snapshot = metadata.current_snapshot()
    while snapshot is not None:
        snapshots.append(snapshot)
        snapshot = by_id.get(snapshot.parent_snapshot_id) if snapshot.parent_snapshot_id is not None else None
    return snapshots


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
    """The ids of the operations these snapshots hold (a replayed snapshot holds its origins)."""
    return {o for s in snapshots for o in _origins(s)}


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
        origins=_origins(snapshot),
        kind=kind,  # type: ignore[arg-type]
        filter=summary.get(FILTER),
        added=tuple(added),
        removed=tuple(removed),
        summary=summary,
    )


def pending_ops(side: TableMetadata, other: TableMetadata | None, io: FileIO) -> list[TableOp]:
    """The operations of `side` that `other` (None: a table that does not exist) does not hold yet, oldest first.

    Both chains are walked back to their newest common snapshot; of the snapshots after it, those whose
    origins the other side all holds (it replayed them, or they replay its own) are skipped, and an append
    the other side holds in part keeps only the files the other side lacks.
    """
    side_chain, other_chain = chain(side), chain(other) if other is not None else []
    ancestor = common_ancestor(side_chain, other_chain)
    held = origins(other_chain)
    pending: list[TableOp] = []
    other_files: set[str] | None = None
    for snapshot in since(side_chain, ancestor):
        ids = _origins(snapshot)
        if ids <= held:
            continue
        op = table_op(snapshot, io)
        if ids & held and op.kind in ("append", "foreign") and not op.removed:
            if other_files is None:
                other_files = {f.file_path for s in since(other_chain, ancestor) for f in table_op(s, io).added}
            op = replace(op, added=tuple(f for f in op.added if f.file_path not in other_files))
        pending.append(op)
    return pending
