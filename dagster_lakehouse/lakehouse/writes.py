"""`WriteCommit`: one write of a table on a branch (append, partition-scoped replace, full replace).

A replace is a delete snapshot (rows matching the filter, or all rows) followed by an append snapshot, each
tagged with what it did (`history.op_props`) so merges can replay it. A write that loses a race with another
writer on the branch is re-applied on the fresh table unless the winner added rows its filter can match
(`merge_rules.race_conflict`); its Parquet files are written once and reused by every attempt.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import _check_pyarrow_schema_compatible, _dataframe_to_data_files
from pyiceberg.manifest import DataFile
from pyiceberg.partitioning import UNPARTITIONED_PARTITION_SPEC
from pyiceberg.table import Table, Transaction
from pyiceberg.table.update import AddSnapshotUpdate

from dagster_lakehouse.lakehouse.catalog import RefCatalog
from dagster_lakehouse.lakehouse.commits import CatalogCommit, Pointer, add_log_entry, stage, transaction
from dagster_lakehouse.lakehouse.errors import WriteConflict
from dagster_lakehouse.lakehouse.filters import FilterLike, filter_string, prepare_filter
from dagster_lakehouse.lakehouse.history import chain, op_props, since, table_op
from dagster_lakehouse.lakehouse.merge_rules import race_conflict
from dagster_lakehouse.lakehouse.schema import plan_schema

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

_NO_MATCH_WARNING = "Delete operation did not match any records"


def append_files(tx: Transaction, files: Sequence[DataFile], props: dict[str, str]) -> None:
    """Add existing data files to `tx` as one append snapshot (no data is read or copied)."""
    with tx.update_snapshot(snapshot_properties=props).fast_append() as append:
        for data_file in files:
            append.append_data_file(data_file)


def delete_rows(tx: Transaction, row_filter: Any, props: dict[str, str]) -> bool:
    """Remove the rows matching `row_filter`: files it wholly matches are dropped, files it partly matches rewritten.

    Returns whether it made a snapshot: a delete that matches no row makes none, so the append that follows says
    what it replaced (`history.REPLACES`).
    """
    before = len(tx._updates)
    with warnings.catch_warnings():  # replacing a partition that holds no rows yet is normal
        warnings.filterwarnings("ignore", message=_NO_MATCH_WARNING)
        tx.delete(row_filter, snapshot_properties=props)
    return any(isinstance(update, AddSnapshotUpdate) for update in tx._updates[before:])


class WriteCommit(CatalogCommit):
    """Write `data` to one table of a branch; `where` scopes a replace to the matching rows."""

    def __init__(
        self,
        engine: Engine,
        catalog: RefCatalog,
        name: str,
        data: pa.Table,
        *,
        mode: str,
        where: FilterLike,
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
        self.mode = mode
        self.where = where
        self.props = props
        self.partition_by = partition_by
        self.message = message
        self.run_id = run_id
        self._check = check
        self._started = False
        self._start: int | None = None  # the table's snapshot when the first attempt planned
        self._files: dict[tuple[str, int], list[DataFile]] = {}

    @property
    def context(self) -> str:
        return f"{self.what}: "

    def prepare(self) -> list[Pointer]:
        try:
            current = self.catalog.load_table(self.name)
        except NoSuchTableError:
            current = None
        if current is None:
            tx = self._create()
        else:
            tx = self._overwrite(current)
        pointer = stage(self.catalog, self.name, current, tx)
        return [pointer]

    def check(self, conn: Connection) -> None:
        self._check(conn)

    def log(self, conn: Connection, pointers: list[Pointer]) -> str | None:
        return add_log_entry(conn, self.ref, "write", self.message, pointers, run_id=self.run_id)

    def _create(self) -> Transaction:
        self._started = True
        tx = self.catalog.create_table_transaction(
            self.name, schema=self.data.schema, partition_spec=UNPARTITIONED_PARTITION_SPEC
        )
        if self.partition_by:
            with tx.update_spec() as spec:
                for column in self.partition_by:
                    spec.add_identity(column)
        append_files(tx, self._data_files(tx, self.data), {**self.props, **op_props("append")})
        return tx

    def _overwrite(self, table: Table) -> Transaction:
        replace_all = self.mode == "replace" and self.where is None
        plan = plan_schema(self.name, self.ref, table.schema(), self.data, replace=replace_all)
        row_filter = None
        if self.mode == "replace" and self.where is not None:
            row_filter, _ = prepare_filter(table.schema(), self.where, context=self.context)
        self._check_race(table, row_filter)
        tx = transaction(table)
        if plan.drop:
            with tx.update_schema() as update:
                for column in plan.drop:
                    update.delete_column(column)
        if plan.evolve:
            with tx.update_schema() as update:
                update.union_by_name(plan.data.schema)
        replaces = None
        if replace_all:
            replaces = ""
            delete_rows(tx, AlwaysTrue(), {**self.props, **op_props("replace")})
        elif row_filter is not None:
            replaces = filter_string(row_filter)
            delete_rows(tx, row_filter, {**self.props, **op_props("delete", replaces)})
        append_files(tx, self._data_files(tx, plan.data), {**self.props, **op_props("append", replaces=replaces)})
        return tx

    def _check_race(self, table: Table, row_filter: Any) -> None:
        """On a retry, refuse with `WriteConflict` if the winners added rows this replace would remove."""
        if not self._started:
            snapshot = table.current_snapshot()
            self._started, self._start = True, snapshot.snapshot_id if snapshot else None
            return
        if self.mode == "append":
            return
        winners = [table_op(s, table.io) for s in since(chain(table.metadata), self._start)]
        scope = filter_string(row_filter) if row_filter is not None else None
        reason = race_conflict(scope, winners, table.metadata, table.io)
        if reason is not None:
            raise WriteConflict(self.name, self.ref, reason)

    def _data_files(self, tx: Transaction, data: pa.Table) -> list[DataFile]:
        """Write `data` as Parquet once per (schema, spec) the table has while retrying; reuse it otherwise.

        Keyed by the schema's text, field ids included: a concurrent writer may have given a column name another id.
        """
        metadata = tx.table_metadata
        key = (metadata.schema().model_dump_json(), metadata.default_spec_id)
        if key not in self._files:
            _check_pyarrow_schema_compatible(
                metadata.schema(), provided_schema=data.schema, format_version=metadata.format_version
            )
            self._files[key] = (
                list(_dataframe_to_data_files(table_metadata=metadata, write_uuid=uuid.uuid4(), df=data, io=tx._table.io))
                if data.num_rows
                else []
            )
        return self._files[key]

