"""`MergeCommit`: a three-way merge of every table of one ref into a branch, in one catalog transaction.

Tables changed on one side only switch pointers, with no object-store I/O: the snapshot id the merge logs for such
a table is the one the source's log recorded when it committed that metadata file. Tables changed on both sides are
merged at the level of Iceberg data files by the rules of `merge_rules`: when the two sides' operations commute, the
source's pending operations are replayed on the target's current table (appends add the source's data files by
reference; a partition-scoped replace deletes the rows its filter matches, dropping the files it wholly matches and
rewriting only files that also hold other rows), each as a snapshot naming its origin and the source branch. A table
both sides created since the branch point is merged the same way, as if both had started from an empty table, when
the two creations' schemas line up field id by field id (`schema_union`).
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.table.update import AddSchemaUpdate, SetCurrentSchemaUpdate
from sqlalchemy import select

from dagster_lakehouse.lakehouse import corruption
from dagster_lakehouse.lakehouse import refs as refstore
from dagster_lakehouse.lakehouse.catalog import RefCatalog
from dagster_lakehouse.lakehouse.commits import (
    CatalogCommit,
    LostRace,
    Pointer,
    add_log_entry,
    load_at,
    stage,
    transaction,
)
from dagster_lakehouse.lakehouse.errors import LakehouseError, MergeConflict, ProtectedBranchError, TableConflict
from dagster_lakehouse.lakehouse.filters import filter_string, prepare_filter
from dagster_lakehouse.lakehouse.history import MERGE_SOURCE, SOURCE_SNAPSHOT, TableOp, op_props, pending_ops
from dagster_lakehouse.lakehouse.merge import State, plan_merge
from dagster_lakehouse.lakehouse.merge_rules import created_conflict, holds_matching_rows, merge_conflict
from dagster_lakehouse.lakehouse.progress import Progress
from dagster_lakehouse.lakehouse.schema_union import union_schema
from dagster_lakehouse.lakehouse.storage import is_transient
from dagster_lakehouse.lakehouse.writes import append_files, delete_rows

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from dagster_lakehouse.lakehouse.core import Lakehouse

_PARALLEL_TABLES = 8
"""Tables of one merge planned (and their replays staged) at once."""

Resolution = Literal["fail", "source", "target"]
OnConflict = Resolution | Mapping[str, Resolution]


@dataclass(frozen=True)
class SwitchedPointer(Pointer):
    """A pointer moved to a metadata file the source committed, carrying the snapshot id the source's log recorded for
    it, so switching needs no object-store read."""

    recorded_snapshot_id: int | None = None

    @property
    def snapshot_id(self) -> int | None:
        return self.recorded_snapshot_id


@dataclass
class MergePlan:
    """What one attempt of a merge will do, planned on the refs' current states."""

    source_state: State
    target_state: State
    base: State
    pointers: list[Pointer] = field(default_factory=list)
    replayed: list[str] = field(default_factory=list)
    resolved: dict[str, Resolution] = field(default_factory=dict)


class MergeCommit(CatalogCommit):
    """Merge `source` into branch `target`; `on_conflict` may take one side's version of conflicting tables, and
    `progress` hears of each table planned ("merging tables", done, total; again from 0 if planning starts over)."""

    kind = "merge"

    def __init__(
        self,
        lakehouse: Lakehouse,
        source: str,
        target: str,
        *,
        message: str | None,
        run_id: str | None,
        on_conflict: OnConflict,
        progress: Progress | None = None,
    ):
        super().__init__(lakehouse.engine, target, timeout=lakehouse.commit_timeout, what=f"merge of '{source}' into '{target}'")
        self.lakehouse = lakehouse
        self.source = source
        self.message = message or f"merge '{source}' into '{target}'"
        self.run_id = run_id
        self.on_conflict = on_conflict
        self.progress = progress
        self.plan: MergePlan | None = None

    def _resolution(self, table: str) -> Resolution:
        if isinstance(self.on_conflict, str):
            return self.on_conflict
        return self.on_conflict.get(table, "fail")

    def prepare(self) -> list[Pointer]:
        """Plan and stage on the refs' current states, re-planned while the object store fails transiently."""
        return self.lakehouse._retrying(self.what, self._prepare)

    def _prepare(self) -> list[Pointer]:
        lh = self.lakehouse
        with lh.engine.connect() as conn:
            src, dst = lh._get_ref(conn, self.source), lh._get_ref(conn, self.ref)
            if dst.is_tag:
                raise ProtectedBranchError(f"'{self.ref}' is a tag; tags are immutable")
            source_state, target_state = lh._state(conn, self.source), lh._state(conn, self.ref)
            base = refstore.get_merge_base(conn, self.source, self.ref)
            pointer_plan = plan_merge(base or {}, source_state, target_state)
            recorded = self._recorded_snapshots(conn, source_state, {*pointer_plan.changes, *pointer_plan.both_changed})
        if base is None:
            raise LakehouseError(
                f"cannot merge '{self.source}' into '{self.ref}': they have no branch point in common "
                f"('{self.source}' was forked from '{src.parent}', '{self.ref}' from '{dst.parent}'); "
                f"merge '{self.source}' into '{src.parent}' first, then '{src.parent}' into '{self.ref}'"
            )
        plan = MergePlan(source_state, target_state, base)
        conflicts: list[TableConflict] = []
        tick = self._counter(len(pointer_plan.changes) + len(pointer_plan.both_changed))
        for table, location in pointer_plan.changes.items():
            plan.pointers.append(self._switch(table, target_state.get(table), location, recorded))
            tick()
        for table, outcome in self._merge_tables(pointer_plan.both_changed, base, source_state, target_state, tick):
            if isinstance(outcome, TableConflict):
                resolution = self._resolution(table)
                if resolution == "fail":
                    conflicts.append(outcome)
                    continue
                plan.resolved[table] = resolution
                outcome = (
                    self._switch(table, target_state.get(table), source_state.get(table), recorded)
                    if resolution == "source"
                    else None
                )
            elif outcome is not None and outcome.location != source_state.get(table):
                plan.replayed.append(table)  # not a fast-forward to the source's table
            if outcome is not None:
                plan.pointers.append(outcome)
        if conflicts:
            raise MergeConflict(self.source, self.ref, conflicts)
        self.plan = plan
        return plan.pointers

    def _counter(self, total: int) -> Callable[[], None]:
        """A function to call once per table planned, reporting to `progress` (from the planning thread only)."""
        done = 0
        if self.progress is not None:
            self.progress("merging tables", 0, total)

        def tick() -> None:
            nonlocal done
            done += 1
            if self.progress is not None:
                self.progress("merging tables", done, total)

        return tick

    def _merge_tables(
        self, tables: list[str], base: State, source: State, target: State, tick: Callable[[], None]
    ) -> list[tuple[str, Pointer | TableConflict | None]]:
        """`_merge_table` for every table both sides changed, several at once: on S3 each is a dozen round trips.
        `tick` is called as each one is done, in this thread."""

        def merge_one(table: str) -> Pointer | TableConflict | None:
            with corruption.named(table, lambda: self._sides(table, source.get(table), target.get(table))):
                return self._merge_table(table, base.get(table), source.get(table), target.get(table))

        outcomes: dict[str, Pointer | TableConflict | None] = {}
        if len(tables) < 2:
            for table in tables:
                outcomes[table] = merge_one(table)
                tick()
        else:
            with ThreadPoolExecutor(max_workers=min(_PARALLEL_TABLES, len(tables))) as pool:
                # each in a copy of this context, so the files it writes are noted in the commit's log (`written_files`)
                futures = {pool.submit(contextvars.copy_context().run, merge_one, table): table for table in tables}
                for future in as_completed(futures):
                    outcomes[futures[future]] = future.result()
                    tick()
        return [(table, outcomes[table]) for table in tables]

    def _sides(self, table: str, source: str | None, target: str | None) -> list[tuple[str, Table]]:
        """The source's and the target's table, to look for a damaged file in (`corruption.named`)."""
        catalog = self.lakehouse._read_catalog(self.ref)
        return [(ref, load_at(catalog, table, location)) for ref, location in ((self.source, source), (self.ref, target)) if location]

    def _recorded_snapshots(self, conn: Connection, source_state: State, tables: set[str]) -> dict[str, int]:
        """Snapshot ids the source's log recorded for the current metadata of `tables` (those it has a record of).

        `LostRace` if a source pointer moved while the log was read, which would pair a pointer with a later record.
        """
        recorded = recorded_snapshots(conn, self.source, tables & set(source_state))
        now = self.lakehouse._state(conn, self.source)
        moved = sorted(t for t in recorded if now.get(t) != source_state[t])
        if moved:
            raise LostRace(moved[0])
        return recorded

    def _switch(self, table: str, expected: str | None, location: str | None, recorded: dict[str, int]) -> Pointer:
        """Move the target's pointer to the source's `location`; its metadata is read only if the log has no record."""
        if location is None:
            return Pointer(table, expected, None)
        if table in recorded:
            return SwitchedPointer(table, expected, location, recorded_snapshot_id=recorded[table])
        return Pointer(table, expected, location, load_at(self.lakehouse.catalog(self.source), table, location).metadata)

    def _merge_table(
        self, table: str, base: str | None, source: str | None, target: str | None
    ) -> Pointer | TableConflict | None:
        """File-level merge of a table both sides changed: the replayed table, a conflict, or None (nothing to do)."""
        if source is None or target is None:
            dropped, changed = (self.source, self.ref) if source is None else (self.ref, self.source)
            return TableConflict(table, f"'{dropped}' dropped the table while '{changed}' changed it")
        catalog = self.lakehouse.catalog(self.ref)
        src, dst = load_at(self.lakehouse._read_catalog(self.source), table, source), load_at(catalog, table, target)
        source_ops = pending_ops(src.metadata, dst.metadata, src.io)
        target_ops = pending_ops(dst.metadata, src.metadata, dst.io)
        if not source_ops:
            return None  # the target holds every operation of the source already
        if base is None:
            return self._merge_created(table, src, dst, source_ops, target_ops)
        base_schema = _base_schema(catalog, table, base)
        if not target_ops and (base_schema is None or dst.schema().as_struct() in (base_schema.as_struct(), src.schema().as_struct())):
            return Pointer(table, target, source, src.metadata)  # the target holds nothing the source lacks: fast-forward
        reason = merge_conflict(
            self.source, self.ref, source_ops, target_ops, src.metadata, dst.metadata, base_schema, dst.io
        )
        if reason is not None:
            return TableConflict(table, reason)
        schema_changed = src.schema().as_struct() != dst.schema().as_struct() and (
            base_schema is None or dst.schema().as_struct() == base_schema.as_struct()
        )
        return self._replay(table, src, dst, source_ops, src.schema() if schema_changed else None)

    def _merge_created(
        self, table: str, src: Table, dst: Table, source_ops: list[TableOp], target_ops: list[TableOp]
    ) -> Pointer | TableConflict:
        """Both sides created the table: the source's operations replayed on the target's table, as if both had
        started from an empty one, when the two creations line up (`merge_rules.created_conflict`)."""
        reason = created_conflict(self.source, self.ref, source_ops, target_ops, src.metadata, dst.metadata, dst.io)
        if reason is not None:
            return TableConflict(table, reason)
        schema = union_schema(src.schema(), dst.schema(), self.source, self.ref)
        if not target_ops and schema.as_struct() == src.schema().as_struct():
            return Pointer(table, dst.metadata_location, src.metadata_location, src.metadata)  # fast-forward
        return self._replay(table, src, dst, source_ops, None if schema.as_struct() == dst.schema().as_struct() else schema)

    def _replay(self, table: str, src: Table, dst: Table, ops: list[TableOp], schema: Schema | None) -> Pointer:
        """Apply the source's pending `ops` to the target's table, and `schema` first if given (the source's, when only
        the source changed it; the union, for a table both created).

        Runs of operations are replayed as one delete (the union of their filters) and one append (all their
        files): deletes move ahead of appends their filters cannot match, so a long-lived branch's hundreds of
        operations become a couple of snapshots (PyIceberg re-derives a transaction's metadata per snapshot).
        """
        tx = transaction(dst)
        if schema is not None:
            next_id = max(s.schema_id for s in dst.metadata.schemas) + 1
            tx._stage((AddSchemaUpdate(schema=schema.model_copy(update={"schema_id": next_id})), SetCurrentSchemaUpdate()))
        for filters, appends in _segments(ops, src):
            combined = " or ".join(f"({f})" for f, _ in filters) if filters else None
            recorded = True
            if combined is not None:
                row_filter, _ = prepare_filter(tx.table_metadata.schema(), combined, context=f"table '{table}': ")
                combined = filter_string(row_filter)
                deleting = [op for _, op in filters]
                origins = {o for op in deleting for o in op.origins}
                recorded = delete_rows(tx, row_filter, self._props("delete", deleting, combined, origins))
            if appends or not recorded:  # a delete that matched no row is recorded on the append (REPLACES)
                group = appends or [op for _, op in filters]
                origins = {o for op in group for o in op.origins}
                props = self._props("append", group, None, origins, None if recorded else combined)
                append_files(tx, [f for a in appends for f in a.added], props)
        return stage(self.lakehouse.catalog(self.ref), table, dst, tx)

    def _props(
        self, kind: str, ops: list[TableOp], filter: str | None, origins: set[int], replaces: str | None = None
    ) -> dict[str, str]:
        return {
            **op_props(kind, filter, origins=origins, replaces=replaces),  # type: ignore[arg-type]
            MERGE_SOURCE: self.source,
            SOURCE_SNAPSHOT: str(ops[-1].snapshot_id),
        }

    def check(self, conn: Connection) -> None:
        self.lakehouse._get_ref(conn, self.source)
        self.lakehouse._get_ref(conn, self.ref)

    def log(self, conn: Connection, pointers: list[Pointer]) -> str | None:
        assert self.plan is not None
        self.lakehouse._merge_namespaces(conn, self.source, self.ref)
        refstore.set_merge_base(conn, self.source, self.ref, self.plan.source_state)
        if not pointers:
            return None
        return add_log_entry(conn, self.ref, "merge", self.message, pointers, run_id=self.run_id)


def _base_schema(catalog: RefCatalog, table: str, base: str) -> Schema | None:
    """The table's schema at the branch point (None if that metadata file is gone)."""
    try:
        return load_at(catalog, table, base).schema()
    except OSError as exc:
        if is_transient(exc):
            raise  # the store is down, not the file gone: retried by `MergeCommit.prepare`
        return None


def recorded_snapshots(conn: Connection, ref: str, tables: set[str]) -> dict[str, int]:
    """For each of `tables`, the snapshot id in the newest commit reachable from `ref` that names it (as `log` walks:
    the ref's own commits, then its parent's up to the fork). Tables whose newest record is a drop are left out."""
    commits = refstore.commits_table
    found: dict[str, int | None] = {}
    current, up_to, seen = refstore.get_ref(conn, ref), None, set()
    while current is not None and current.name not in seen and len(found) < len(tables):
        seen.add(current.name)
        query = select(commits.c.snapshots).where(commits.c.ref == current.name)
        if up_to is not None:
            query = query.where(commits.c.seq <= up_to)
        for (snapshots,) in conn.execute(query.order_by(commits.c.seq.desc())):
            for table, snapshot_id in json.loads(snapshots).items():
                if table in tables:
                    found.setdefault(table, snapshot_id)
            if len(found) == len(tables):
                break
        up_to = current.fork_seq
        current = refstore.get_ref(conn, current.parent) if current.parent else None
    return {table: snapshot_id for table, snapshot_id in found.items() if snapshot_id is not None}


def change_counts(side: Table, other: Table | None) -> dict[str, int]:
    """Rows and files added and removed by the operations of `side` that `other` lacks (all of them if None)."""
    ops = pending_ops(side.metadata, other.metadata if other is not None else None, side.io)
    counts = {"rows_added": 0, "rows_removed": 0, "files_added": 0, "files_removed": 0}
    for op in ops:
        added, deleted = int(op.summary.get("added-records", 0)), int(op.summary.get("deleted-records", 0))
        counts["files_added"] += int(op.summary.get("added-data-files", 0))
        counts["files_removed"] += int(op.summary.get("deleted-data-files", 0))
        if op.kind in ("delete", "replace"):
            counts["rows_removed"] += deleted - added  # its added files are remainders of the files it rewrote
        else:
            counts["rows_added"] += added
            counts["rows_removed"] += deleted
    return counts


def _segments(ops: list[TableOp], source: Table) -> list[tuple[list[tuple[str, TableOp]], list[TableOp]]]:
    """Split `ops` into runs that each replay as (all deletes, then all appends) with the same result: a delete
    (or the replace an append records) starts a new run only if its filter matches rows of an append of the run."""
    segments: list[tuple[list[tuple[str, TableOp]], list[TableOp]]] = [([], [])]
    for op in ops:
        filters, appends = segments[-1]
        if op.delete_filter is not None:
            if holds_matching_rows(op.delete_filter, [f for a in appends for f in a.added], source.metadata, source.io):
                segments.append(([], []))
                filters, appends = segments[-1]
            filters.append((op.delete_filter, op))
        if op.kind != "delete":
            appends.append(op)
    return segments
