"""`UpsertCommit`: update the rows of a table whose key matches the data's, insert the rest, in one commit.

The matching is PyIceberg's upsert (`pyiceberg.table.upsert_util`): the data's keys become a match filter, the table's
rows under it are read, and rows whose other columns changed are updated; keys the table lacks are inserted. It is
committed as a partition-scoped replace whose filter is the keys of the rows it writes (updated and inserted): a delete
snapshot of those keys and an append snapshot of the new rows, each tagged (`history.op_props`) so a merge replays it
(delete the keys, add the files) or refuses it where the other side added rows with one of those keys
(`merge_rules`). A lost race prepares again on the fresh table, where the matches are computed again.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.expressions import AlwaysFalse, And, BooleanExpression, EqualTo, In, Or
from pyiceberg.io.pyarrow import _check_pyarrow_schema_compatible, _dataframe_to_data_files, schema_to_pyarrow
from pyiceberg.manifest import DataFile
from pyiceberg.table import DataScan, Table, Transaction
from pyiceberg.table import upsert_util

from dagster_lakehouse.lakehouse.catalog import RefCatalog
from dagster_lakehouse.lakehouse.commits import CatalogCommit, Pointer, add_log_entry, stage, transaction
from dagster_lakehouse.lakehouse.errors import ColumnNotFound, InvalidWrite, SchemaMismatch
from dagster_lakehouse.lakehouse.filters import filter_string, prepare_filter
from dagster_lakehouse.lakehouse.history import op_props
from dagster_lakehouse.lakehouse.partition_paths import check_partition_paths
from dagster_lakehouse.lakehouse.partition_specs import spec_change, update_schema
from dagster_lakehouse.lakehouse.schema import plan_schema
from dagster_lakehouse.lakehouse.write_data import InMemoryData, WriteData
from dagster_lakehouse.lakehouse.writes import append_files, create_transaction, delete_rows, write_properties

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

__all__ = ["UpsertCommit", "check_key", "in_memory"]

_INDEX = "__lakehouse_row"


def in_memory(data: WriteData, context: str) -> InMemoryData:
    """The data of an upsert in memory: its keys are matched against the table's rows, which needs them all at once
    (as PyIceberg's upsert does), so a LazyFrame or RecordBatchReader is collected, chunk by chunk."""
    if isinstance(data, InMemoryData):
        return data
    chunks = list(data.chunks())  # normalised, and checked against the caller's rules
    return InMemoryData(pa.concat_tables(chunks) if chunks else data.schema.empty_table(), context)


def check_key(key: Sequence[str] | str | None, data: pa.Table, context: str) -> list[str]:
    """The upsert key as a list of the data's primitive columns, with no null and no key twice in the data."""
    columns = [key] if isinstance(key, str) else list(key or [])
    if not columns or not all(isinstance(c, str) and c for c in columns) or len(set(columns)) != len(columns):
        raise InvalidWrite(
            f"{context}mode='upsert' needs key=[...], the distinct column names that identify a row "
            f"(e.g. key=['id']), not {key!r}"
        )
    for column in columns:
        if column not in data.schema.names:
            raise ColumnNotFound(
                f"{context}upsert key column {column!r} is not a column of the data; its columns are: "
                f"{', '.join(data.schema.names)}"
            )
        kind = data.schema.field(column).type
        if pa.types.is_nested(kind) or pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
            raise InvalidWrite(f"{context}upsert key column {column!r} is {kind}: a key must be a number, text or date")
        nulls = data.column(column).null_count
        if nulls:
            raise InvalidWrite(
                f"{context}upsert key column {column!r} has {nulls} null value{'s' if nulls != 1 else ''}; rows are "
                "matched by key, so every key must be set: fill or drop those rows"
            )
    if upsert_util.has_duplicate_rows(data, columns):
        counts = data.select(columns).group_by(columns).aggregate([([], "count_all")])
        repeated = counts.filter(pc.field("count_all") > 1)
        example = {c: repeated.column(c)[0].as_py() for c in columns}
        raise InvalidWrite(
            f"{context}the data has {len(repeated)} key{'s' if len(repeated) != 1 else ''} on more than one row "
            f"(e.g. {example} on {repeated.column('count_all')[0].as_py()} rows); an upsert needs one row per key: "
            f"deduplicate the data first"
        )
    return columns


def match_filter(rows: pa.Table, key: list[str]) -> BooleanExpression:
    """The rows whose key is one of `rows`' keys, as an unbound filter that `filter_string` can write: PyIceberg's
    `create_match_filter` for one key column; for several, grouped by the leading columns and balanced, so that
    thousands of keys stay shallow (visitors recurse once per level)."""
    keys = rows.select(key)
    keys = pa.table({c: [_literal_value(v) for v in keys.column(c).to_pylist()] for c in key})
    if len(key) == 1:
        return upsert_util.create_match_filter(keys, key) if len(keys) else AlwaysFalse()
    groups: dict[tuple, list[Any]] = {}
    for row in keys.to_pylist():
        groups.setdefault(tuple(row[c] for c in key[:-1]), []).append(row[key[-1]])
    terms: list[BooleanExpression] = []
    for lead, last in groups.items():
        parts = [EqualTo(c, v) for c, v in zip(key[:-1], lead, strict=True)]
        parts.append(EqualTo(key[-1], last[0]) if len(last) == 1 else In(key[-1], last))
        terms.append(_balanced(And, parts))
    return _balanced(Or, terms) if terms else AlwaysFalse()


def _balanced(combine: Any, terms: list[BooleanExpression]) -> BooleanExpression:
    if len(terms) == 1:
        return terms[0]
    middle = len(terms) // 2
    return combine(_balanced(combine, terms[:middle]), _balanced(combine, terms[middle:]))


def _literal_value(value: Any) -> Any:
    """A key value as a filter literal: dates and times as ISO-8601 text (bound to the column's type when parsed)."""
    return value.isoformat() if hasattr(value, "isoformat") else value


class UpsertCommit(CatalogCommit):
    """Upsert `data` (in memory, keys checked by `check_key`) into one table of a branch, creating it if absent."""

    def __init__(
        self,
        engine: Engine,
        catalog: RefCatalog,
        name: str,
        data: InMemoryData,
        *,
        key: list[str],
        props: dict[str, str],
        partition_by: Sequence[str] | None,
        timeout: float,
        check: Any,
        message: str,
        run_id: str | None,
    ):
        super().__init__(engine, catalog.name, timeout=timeout, what=f"table '{name}' on branch '{catalog.name}'")
        self.catalog = catalog
        self.name = name
        self.data = data
        self.key = key
        self.props = props
        self.partition_by = partition_by
        self.message = message
        self.run_id = run_id
        self._check = check
        self.rows_updated = 0
        self.rows_inserted = 0
        self.current: Table | None = None
        """The table this attempt found: what the branch still holds when the upsert changes no row."""

    @property
    def context(self) -> str:
        return f"{self.what}: "

    def prepare(self) -> list[Pointer]:
        """Load the table, take the ref's commit turn (the matches depend on its rows), then match, write and stage."""
        try:
            current = self.catalog.load_table(self.name)
        except NoSuchTableError:
            current = None
        self.current = current
        self.take_turn({self.name: current.metadata_location if current is not None else None})
        if current is None:
            tx = self._create()
        else:
            tx = self._upsert(current)
            if tx is None:
                return []
        return [stage(self.catalog, self.name, current, tx)]

    def check(self, conn: Connection) -> None:
        self._check(conn)

    def log(self, conn: Connection, pointers: list[Pointer]) -> str | None:
        if not pointers:
            return None  # every row is already as the data has it: nothing to commit
        return add_log_entry(conn, self.ref, "write", self.message, pointers, run_id=self.run_id)

    def _create(self) -> Transaction:
        tx = create_transaction(self.catalog, self.name, self.data.schema, self.partition_by)
        self.rows_updated, self.rows_inserted = 0, self.data.rows
        replaces = filter_string(self._bound_filter(tx.table_metadata.schema(), self.data.table))  # merges see the keys
        append_files(tx, self._data_files(tx, self.data.table), {**self.props, **op_props("append", replaces=replaces)})
        return tx

    def _upsert(self, table: Table) -> Transaction | None:
        """The delete of the keys it rewrites and the append of their new rows, or None if no row changes."""
        schema = table.schema()
        columns = [f.name for f in schema.fields]
        plan = plan_schema(self.name, self.ref, schema, self.data.table, replace=False)
        missing = [c for c in self.key if c not in columns]
        if missing:
            raise ColumnNotFound(
                f"{self.context}upsert key column {missing[0]!r} is not a column of the table; its columns are: "
                f"{', '.join(columns)} (upsert on columns the table has, or replace the table first)"
            )
        lacking = [c for c in columns if c not in plan.data.schema.names]
        if lacking:
            raise SchemaMismatch(
                f"{self.context}an upsert replaces whole rows, so the data must have every column of the table; it "
                f"lacks {', '.join(lacking)} (table columns: {', '.join(columns)}; data columns: "
                f"{', '.join(plan.data.schema.names)}); add them (as nulls to clear them); nothing was written"
            )
        tx = transaction(table)
        spec = spec_change(
            schema, table.spec(), plan.data.schema, partition_by=self.partition_by, replace_all=False, retyped=[],
            context=self.context,
        )  # fmt: skip
        if plan.evolve:
            with update_schema(tx) as update:
                update.union_by_name(plan.data.schema)
        if spec is not None:
            spec.clear(tx)
            spec.apply(tx)
        evolved = tx.table_metadata.schema()
        target = schema_to_pyarrow(evolved, include_field_ids=False)
        data = plan.data.select(target.names).cast(target)
        scan = DataScan(tx.table_metadata, table.io, row_filter=self._bound_filter(evolved, data))
        existing = scan.to_arrow().select(target.names).cast(target)
        if upsert_util.has_duplicate_rows(existing, self.key):
            raise InvalidWrite(
                f"{self.context}the table has more than one row for some keys of the data, so they cannot be "
                f"matched to one row each; deduplicate the table on {self.key} (a replace) before upserting"
            )
        updates = upsert_util.get_rows_to_update(data, existing, self.key)
        inserts = data.take(_rows_without_match(data, existing, self.key))
        self.rows_updated, self.rows_inserted = updates.num_rows, inserts.num_rows
        if not updates.num_rows and not inserts.num_rows:
            return None
        written = pa.concat_tables([updates, inserts])
        row_filter, _ = prepare_filter(evolved, filter_string(match_filter(written, self.key)), context=self.context)
        replaces = filter_string(row_filter)
        delete_rows(tx, row_filter, {**self.props, **op_props("delete", replaces)})
        append_files(tx, self._data_files(tx, written), {**self.props, **op_props("append", replaces=replaces)})
        return tx

    def _bound_filter(self, schema: Any, data: pa.Table) -> BooleanExpression:
        """The filter of the table rows with one of the data's keys (unbound), through the same text it is logged as."""
        row_filter, _ = prepare_filter(schema, filter_string(match_filter(data, self.key)), context=self.context)
        return row_filter

    def _data_files(self, tx: Transaction, rows: pa.Table) -> list[DataFile]:
        """`rows` written as Parquet with PyIceberg's writer (the table's partitioning and our writer defaults)."""
        metadata = tx.table_metadata
        _check_pyarrow_schema_compatible(metadata.schema(), provided_schema=rows.schema, format_version=metadata.format_version)
        if not rows.num_rows:
            return []
        written = write_properties(metadata)
        check_partition_paths(written, rows, table=self.name, branch=self.ref)
        return list(_dataframe_to_data_files(table_metadata=written, write_uuid=uuid.uuid4(), df=rows, io=tx._table.io))


def _rows_without_match(data: pa.Table, existing: pa.Table, key: list[str]) -> pa.Array:
    """Indices of the rows of `data` whose key no row of `existing` has (joined on the key columns alone: a join
    cannot carry nested columns)."""
    indexed = data.select(key).append_column(_INDEX, pa.array(range(data.num_rows), pa.int64()))
    if not existing.num_rows:
        return indexed.column(_INDEX).combine_chunks()
    unmatched = indexed.join(existing.select(key), keys=key, join_type="left anti")
    return pa.array(sorted(unmatched.column(_INDEX).to_pylist()), pa.int64())
