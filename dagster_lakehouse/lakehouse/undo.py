"""`RevertCommit` and `ResetCommit`: commits that take a branch's tables back, logged like any other commit.

| Table, for a revert of commit C (C moved it from F to T) | Current pointer N | Result |
|---|---|---|
| unchanged since C | N == T | pointer back to F (metadata, schema and data exactly as before C; F absent: dropped) |
| already back | N == F | nothing |
| changed since C, C only added/removed files | N != T | one snapshot on N: C's added files removed, its removed files re-added (by reference) |
| C created or dropped it, or changed its schema | N != T | refused (`RevertConflict`) |
| a later commit rewrote or removed a file C added | N != T | refused (`RevertConflict`) |

A reset points every table of the branch where the target (a ref or past commit) points. Either way merge bases of
the branch are moved where needed so that a later merge does not take the undone changes back in (see
`ResetCommit.log`), and the log entry records each table's pointer before and after, as every commit does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pyiceberg.manifest import DataFile
from pyiceberg.table import Table

from dagster_lakehouse.lakehouse import expiry
from dagster_lakehouse.lakehouse import refs as refstore
from dagster_lakehouse.lakehouse.commits import (
    CatalogCommit,
    LostRace,
    Pointer,
    add_log_entry,
    load_at,
    stage,
    transaction,
)
from dagster_lakehouse.lakehouse.errors import LakehouseError, ProtectedBranchError, RevertConflict, TableConflict
from dagster_lakehouse.lakehouse.history import REVERT_OF, chain
from dagster_lakehouse.lakehouse.names import MAIN
from dagster_lakehouse.lakehouse.refs import Commit
from dagster_lakehouse.lakehouse.refspec import RefView, reachable

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from dagster_lakehouse.lakehouse.core import Lakehouse

@dataclass(frozen=True)
class UndoResult:
    """What a revert or reset changed on its branch: per table the snapshot id it now has (None: dropped or empty)."""

    branch: str
    commit_id: str | None
    """The new commit (None when there was nothing to change)."""
    restored: dict[str, int | None] = field(default_factory=dict)
    """Tables whose pointer went back to an earlier metadata file, and that file's snapshot id."""
    inverted: dict[str, int | None] = field(default_factory=dict)
    """Tables undone file by file on top of later commits, and the new snapshot id."""

    @property
    def tables(self) -> list[str]:
        return sorted({*self.restored, *self.inverted})


class _UndoCommit(CatalogCommit):
    """Shared by revert and reset: prepares pointers on the branch's current state, re-prepared on a lost race."""

    def __init__(self, lakehouse: Lakehouse, branch: str, *, what: str, message: str, run_id: str | None, allow_main: bool):
        super().__init__(lakehouse.engine, branch, timeout=lakehouse.commit_timeout, what=what)
        self.lakehouse = lakehouse
        self.message = message
        self.run_id = run_id
        self.allow_main = allow_main
        self.restored: dict[str, int | None] = {}
        self.inverted: dict[str, int | None] = {}

    def prepare(self) -> list[Pointer]:
        self.restored, self.inverted = {}, {}
        return self.lakehouse._retrying(self.what, self._prepare)

    def _prepare(self) -> list[Pointer]:
        raise NotImplementedError

    def check(self, conn: Connection) -> None:
        self.lakehouse._check_writable(conn, self.ref, self.allow_main)

    def log(self, conn: Connection, pointers: list[Pointer]) -> str | None:
        return add_log_entry(conn, self.ref, self.kind, self.message, pointers, run_id=self.run_id) if pointers else None

    def _restore(self, table: str, current: str | None, location: str | None) -> Pointer:
        """Move `table`'s pointer back to `location` (an earlier metadata file; None drops the table)."""
        if location is None:
            self.restored[table] = None
            return Pointer(table, current, None)
        metadata = load_at(self.lakehouse._read_catalog(self.ref), table, location).metadata
        pointer = Pointer(table, current, location, metadata)
        self.restored[table] = pointer.snapshot_id
        return pointer

    def execute(self) -> UndoResult:
        self.run()
        return UndoResult(self.ref, self.commit_id, dict(self.restored), dict(self.inverted))


class RevertCommit(_UndoCommit):
    """Undo one commit's changes to each table on `branch` (rules in the module's table)."""

    kind = "revert"

    def __init__(self, lakehouse: Lakehouse, target: Commit, branch: str, *, message: str | None, run_id: str | None):
        super().__init__(
            lakehouse,
            branch,
            what=f"revert of commit {target.short_id} on '{branch}'",
            message=message or f"revert {target.short_id}: {target.message}",
            run_id=run_id,
            allow_main=True,
        )
        self.target = target

    def _prepare(self) -> list[Pointer]:
        lh, c = self.lakehouse, self.target
        with lh.engine.connect() as conn:
            ref = lh._check_writable(conn, self.ref, allow_main=True)
            if all(h.id != c.id for h in reachable(conn, ref)):
                raise LakehouseError(f"cannot revert commit {c.short_id} on '{self.ref}': it is not in its history (it is on '{c.ref}')")
            current = lh._state(conn, self.ref)
        if c.kind == "create":
            raise LakehouseError(
                f"cannot revert commit {c.short_id}: it created '{c.ref}'; delete the branch, or reset it with reset('{c.ref}', to=...)"
            )
        if c.changes is None:
            raise LakehouseError(f"cannot revert commit {c.short_id}: it was logged before commits recorded table pointers")
        needed = [  # the metadata files before and after the commit of each table the revert changes
            (table, location)
            for table, (before, after) in c.changes.items()
            if current.get(table) != before
            for location in (before, after)
            if location is not None and location != current.get(table)
        ]
        expiry.check_kept(f"{c.ref}@{c.short_id}", c, needed, lh.config.properties, lh.config.history_retention)
        pointers: list[Pointer] = []
        conflicts: list[TableConflict] = []
        for table, (before, after) in sorted(c.changes.items()):
            now = current.get(table)
            if now == before:
                continue
            if now == after:
                pointers.append(self._restore(table, now, before))
                continue
            outcome = self._inverse(table, before, after, now)
            (conflicts if isinstance(outcome, TableConflict) else pointers).append(outcome)  # type: ignore[arg-type]
        if conflicts:
            raise RevertConflict(c.short_id, self.ref, conflicts)
        return pointers

    def _inverse(self, table: str, before: str | None, after: str | None, now: str | None) -> Pointer | TableConflict:
        """The file-level inverse of the commit on the table as later commits left it, or why there is none."""
        c = self.target
        if now is None:
            return TableConflict(table, f"a later commit dropped the table commit {c.short_id} changed")
        if before is None:
            return TableConflict(table, f"commit {c.short_id} created the table and later commits changed it")
        if after is None:
            return TableConflict(table, f"commit {c.short_id} dropped the table and a later commit created it again")
        catalog = self.lakehouse._read_catalog(self.ref)
        old, new, cur = (load_at(catalog, table, location) for location in (before, after, now))
        if old.schema().as_struct() != new.schema().as_struct():
            return TableConflict(table, f"commit {c.short_id} changed the table's schema and later commits changed the table")
        old_files, new_files, cur_files = _files(old), _files(new), _files(cur)
        added = [f for path, f in new_files.items() if path not in old_files]
        removed = [f for path, f in old_files.items() if path not in new_files and path not in cur_files]
        gone = [f.file_path for f in added if f.file_path not in cur_files]
        if gone:
            return TableConflict(
                table,
                f"later commits rewrote or removed {len(gone)} of the {len(added)} data files commit {c.short_id} added "
                f"(e.g. {gone[0].rsplit('/', 1)[-1]})",
            )
        specs = {spec.spec_id for spec in cur.metadata.partition_specs}
        if any(f.spec_id not in specs for f in removed):
            return TableConflict(table, "the table's partitioning changed since the commit")
        tx = transaction(cur)
        props = {REVERT_OF: c.id, "lakehouse.branch": self.ref, "lakehouse.message": self.message}
        with tx.update_snapshot(snapshot_properties=props).overwrite() as overwrite:
            for data_file in added:
                overwrite.delete_data_file(data_file)
            for data_file in removed:
                overwrite.append_data_file(data_file)
        pointer = stage(self.lakehouse._write_catalog(self.ref), table, cur, tx)
        self.inverted[table] = pointer.snapshot_id
        return pointer


class ResetCommit(_UndoCommit):
    """Point every table of `branch` where a ref or past commit points (`Lakehouse.reset`)."""

    kind = "reset"

    def __init__(
        self, lakehouse: Lakehouse, branch: str, to: str, *, allow_main: bool, message: str | None, run_id: str | None
    ):
        super().__init__(
            lakehouse,
            branch,
            what=f"reset of '{branch}' to '{to}'",
            message=message or f"reset '{branch}' to '{to}'",
            run_id=run_id,
            allow_main=allow_main,
        )
        self.to = to
        self.view: RefView | None = None

    def _prepare(self) -> list[Pointer]:
        lh = self.lakehouse
        with lh.engine.connect() as conn:
            ref = lh._get_ref(conn, self.ref)
            if ref.is_tag:
                raise ProtectedBranchError(f"'{self.ref}' is a tag; tags are immutable, reset a branch instead")
            if self.ref == MAIN and not self.allow_main:
                raise ProtectedBranchError(
                    f"branch 'main' is protected: resetting it to '{self.to}' rewrites what every reader sees; "
                    "revert the commits instead (lh.revert(commit)), or pass allow_main=True"
                )
            lh._check_writable(conn, self.ref, self.allow_main)
            self.view = lh._view(conn, self.to)
            current = lh._state(conn, self.ref)
            self.bases = refstore.merge_bases_of(conn, self.ref)
        target = self.view.state
        pointers = [
            self._restore(table, current.get(table), target.get(table))
            for table in sorted({*current, *target})
            if current.get(table) != target.get(table)
        ]
        self.moved_bases = {other: self._moved_base(base, pointers) for other, base in self.bases.items()}
        return pointers

    def _moved_base(self, base: dict[str, str], pointers: list[Pointer]) -> dict[str, str]:
        """The branch's merge base with another ref after the reset: per table the reset changed, the base stays when
        the new table descends from it (a merge then carries the new table's changes on), else it becomes the new
        table, so a merge with the other ref keeps that ref's version instead of taking back what the reset removed."""
        moved = dict(base)
        for pointer in pointers:
            table, was = pointer.table, moved.get(pointer.table)
            if was is None:
                continue
            if pointer.location is None or pointer.metadata is None:
                moved.pop(table)
                continue
            was_snapshot = load_at(self.lakehouse._read_catalog(self.ref), table, was).metadata.current_snapshot()
            if was_snapshot is None or was_snapshot.snapshot_id not in {s.snapshot_id for s in chain(pointer.metadata)}:
                moved[table] = pointer.location
        return moved

    def log(self, conn: Connection, pointers: list[Pointer]) -> str | None:
        assert self.view is not None
        if not pointers:
            return None
        self.lakehouse._merge_namespaces(conn, self.view.ref.name, self.ref)
        for other, base in self.bases.items():
            if refstore.get_merge_base(conn, self.ref, other) != base:
                raise LostRace(f"merge base of '{self.ref}' and '{other}'")  # a merge moved it since prepare
            if self.moved_bases[other] != base:
                refstore.set_merge_base(conn, self.ref, other, self.moved_bases[other])
        return super().log(conn, pointers)


def _files(table: Table) -> dict[str, DataFile]:
    """The live data files of the table's current snapshot, by path."""
    snapshot = table.current_snapshot()
    if snapshot is None:
        return {}
    return {
        entry.data_file.file_path: entry.data_file
        for manifest in snapshot.manifests(table.io)
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True)
    }
