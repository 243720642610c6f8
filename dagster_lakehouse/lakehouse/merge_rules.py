"""When concurrent work on one table commutes: the rules for merges and for writers racing on one branch.

A merge compares, per table, the branch point and both sides' pointers; for a table both sides changed, it
compares the operations each side holds that the other lacks (`history.pending_ops`):

| source | target | result |
|---|---|---|
| unchanged since the branch point | anything | keep the target |
| changed | unchanged since the branch point | take the source's table (pointer switch) |
| changed to the same metadata as the target | | nothing to do |
| created the table (absent at the branch point) | created it too: shared columns have the same field ids, types equal or widening, same partition spec | the rows below, as if both had started from an empty table (the creating write is an append, a `where=` replace or a full replace) |
| created the table | created it too, with a column whose field id or type differs | conflict: both created it with schemas that do not line up (the column and both schemas named) |
| created the table | created it too, partitioned another way | conflict: both created it, partitioned differently |
| dropped the table | changed it (or the other way round) | conflict |
| holds no operation the target lacks | | keep the target |
| has operations the target lacks | holds none the source lacks | fast-forward: take the source's table |
| replaced all rows | has pending operations (either way round) | conflict |
| a commit made outside this package that removed files | has pending operations (either way round) | conflict |
| replaced rows where `f` | added rows that match `f` (either way round) | conflict: both changed rows where `f` |
| upserted rows with keys `K` (recorded as a replace of the rows where the key is in `K`) | added rows with a key in `K`, by append or upsert (either way round) | conflict: both changed rows where the key is in `K` |
| changed the schema | changed the schema differently | conflict |
| dropped or retyped a column (not a widening) | has pending operations | conflict |
| partitions the table one way | partitions it another way | conflict |
| appends and partition-scoped replaces | appends and partition-scoped replaces, none matching the other's filters | **replay** the source's pending operations on the target, in order |

An upsert's `K` is the keys of the rows it wrote (updated and inserted, not those it found unchanged), so a replay
deletes the target's rows with those keys and adds the upsert's files: no row is lost or doubled, and upserts of
different keys on the two sides both land.

Two writers on one branch follow Iceberg's serializable rule: a write that lost the race is re-applied on the
fresh table unless it replaces rows (a filter, or all rows) and the winners added rows that match (`race_conflict`).
Appends always commute; an upsert that lost the race matches its keys again on the fresh table. A writer that
lost a race to create the table is re-applied the same way on the table the winner created.

"Match" is decided by each file's column statistics (and so its partition values); a file whose statistics
cannot rule a match out has just the filter's columns read to decide exactly, so disjoint work never conflicts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pyiceberg.expressions import AlwaysTrue
from pyiceberg.expressions.visitors import _InclusiveMetricsEvaluator, extract_field_ids
from pyiceberg.io import FileIO
from pyiceberg.io.pyarrow import ArrowScan
from pyiceberg.manifest import DataFile
from pyiceberg.schema import Schema
from pyiceberg.table import FileScanTask
from pyiceberg.table.metadata import TableMetadata

from dagster_lakehouse.lakehouse.errors import LakehouseError
from dagster_lakehouse.lakehouse.filters import prepare_filter
from dagster_lakehouse.lakehouse.history import TableOp
from dagster_lakehouse.lakehouse.schema import promotes
from dagster_lakehouse.lakehouse.schema_union import SchemaClash, union_schema


def holds_matching_rows(filter: str | None, files: Iterable[DataFile], metadata: TableMetadata, io: FileIO) -> bool:
    """Whether any of `files` holds a row matching `filter` (None = every row)."""
    files = [f for f in files if f.record_count != 0]
    if not files:
        return False
    if filter is None:
        return True
    schema = metadata.schema()
    try:
        unbound, bound = prepare_filter(schema, filter)
    except LakehouseError:
        return True  # the filter no longer fits this side's schema: cannot rule a match out
    if isinstance(unbound, AlwaysTrue):
        return True
    evaluator = _InclusiveMetricsEvaluator(schema, unbound)
    unsure = [f for f in files if evaluator.eval(f)]
    if not unsure:
        return False
    projected = schema.select(*[schema.find_column_name(i) for i in extract_field_ids(bound)])
    scan = ArrowScan(table_metadata=metadata, io=io, projected_schema=projected, row_filter=unbound)
    return any(scan.to_table([FileScanTask(f)]).num_rows > 0 for f in unsure)


def _first_match(filter: str | None, ops: Sequence[TableOp], metadata: TableMetadata, io: FileIO) -> TableOp | None:
    return next((op for op in ops if holds_matching_rows(filter, op.new_rows, metadata, io)), None)


def race_conflict(filter: str | None, winners: Sequence[TableOp], metadata: TableMetadata, io: FileIO) -> str | None:
    """Why a write replacing rows where `filter` (None = all rows) cannot be re-applied after `winners`, or None."""
    winner = _first_match(filter, winners, metadata, io)
    if winner is None:
        return None
    scope = "all rows" if filter is None else f"rows where {filter}"
    return f"it replaces {scope}, and a concurrent write (snapshot {winner.snapshot_id}) added rows there"


def merge_conflict(
    source: str,
    target: str,
    source_ops: Sequence[TableOp],
    target_ops: Sequence[TableOp],
    source_meta: TableMetadata,
    target_meta: TableMetadata,
    base_schema: Schema | None,
    io: FileIO,
) -> str | None:
    """Why the pending operations of two sides (both non-empty) on one table do not commute, or None (replay)."""
    reason = _ops_conflict(source, target, source_ops, target_ops, source_meta, target_meta, io)
    if reason is None and source_meta.spec().fields != target_meta.spec().fields:
        reason = f"'{source}' and '{target}' partition the table differently"
    return reason or _schema_conflict(source, target, source_meta.schema(), target_meta.schema(), base_schema)


def created_conflict(
    source: str,
    target: str,
    source_ops: Sequence[TableOp],
    target_ops: Sequence[TableOp],
    source_meta: TableMetadata,
    target_meta: TableMetadata,
    io: FileIO,
) -> str | None:
    """Why a table both sides created cannot merge as both sides' work on one empty table, or None (replay).

    The two tables assigned field ids on their own, so their schemas must line up first (`schema_union`); then the
    partition specs must agree and the operations commute, each side's creating write being one of its operations.
    """
    created = f"both '{source}' and '{target}' created it"
    src, dst = source_meta.schema(), target_meta.schema()
    try:
        union_schema(src, dst, source, target)
    except SchemaClash as clash:
        return f"{created} with schemas that do not line up: {clash} ('{source}': {_columns(src)}; '{target}': {_columns(dst)})"
    if source_meta.spec().fields != target_meta.spec().fields:
        return f"{created}: '{source}' and '{target}' partition the table differently"
    reason = _ops_conflict(source, target, source_ops, target_ops, source_meta, target_meta, io)
    return None if reason is None else f"{created}: {reason}"


def _ops_conflict(
    source: str,
    target: str,
    source_ops: Sequence[TableOp],
    target_ops: Sequence[TableOp],
    source_meta: TableMetadata,
    target_meta: TableMetadata,
    io: FileIO,
) -> str | None:
    """Why the two sides' pending operations do not commute (a full replace, or a replace matching the other side's
    new rows), or None."""
    sides = ((source, source_ops, target, target_ops, target_meta), (target, target_ops, source, source_ops, source_meta))
    for name, ops, other, other_ops, other_meta in sides:
        for op in ops:
            if op.replaces_all:
                return f"'{name}' replaced all rows while '{other}' also changed the table"
            if op.kind == "foreign" and op.removed:
                return f"'{name}' {op.describe()} (snapshot {op.snapshot_id}) while '{other}' also changed the table"
        filters = list(dict.fromkeys(op.delete_filter for op in ops if op.delete_filter))
        if not filters or _first_match(" or ".join(f"({f})" for f in filters), other_ops, other_meta, io) is None:
            continue  # one pass over the other side's files for all of this side's filters
        for filter in filters:
            clash = _first_match(filter, other_ops, other_meta, io)
            if clash is not None:
                if clash.replaces == filter:
                    return f"both replaced rows where {_short(filter)}"
                return f"both changed rows where {_short(filter)}: '{name}' replaced them, '{other}' {clash.describe()}"
    return None


def _schema_conflict(source: str, target: str, src: Schema, dst: Schema, base: Schema | None) -> str | None:
    if src.as_struct() == dst.as_struct():
        return None
    src_changed = base is None or src.as_struct() != base.as_struct()
    dst_changed = base is None or dst.as_struct() != base.as_struct()
    if src_changed and dst_changed:
        return f"both changed the schema ('{source}': {_columns(src)}; '{target}': {_columns(dst)})"
    new, old, who = (src, dst, source) if src_changed else (dst, src, target)
    for field in old.fields:
        try:
            now = new.find_field(field.field_id)
        except ValueError:
            return f"'{who}' dropped column '{field.name}', which the other side's files still hold"
        if now.field_type != field.field_type and not promotes(field.field_type, now.field_type):
            return f"'{who}' changed column '{field.name}' from {field.field_type} to {now.field_type}"
    return None


def _short(text: str | None, limit: int = 300) -> str:
    """A filter for a message: a merged run of replaces can hold hundreds of days."""
    text = text or ""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _columns(schema: Schema) -> str:
    return ", ".join(f"{f.name} {f.field_type}" for f in schema.fields)

