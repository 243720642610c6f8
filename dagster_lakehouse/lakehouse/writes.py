"""`WriteCommit`: one write of a table on a branch (append, partition-scoped replace, full replace).

A replace is a delete snapshot (rows matching the filter, or all rows) followed by an append snapshot, each
tagged with what it did (`history.op_props`) so merges can replay it. A write that loses a race with another
writer on the branch is re-applied on the fresh table unless the winner added rows its filter can match
(`merge_rules.race_conflict`); its Parquet files are written once and reused by every attempt. The data comes in
chunks (`write_data`): a streamed LazyFrame or RecordBatchReader is written chunk by chunk, never held whole.
"""

from __future__ import annotations

import itertools
import uuid
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import _check_pyarrow_schema_compatible, _dataframe_to_data_files
from pyiceberg.manifest import DataFile, ManifestEntryStatus
from pyiceberg.partitioning import UNPARTITIONED_PARTITION_SPEC
from pyiceberg.schema import Schema
from pyiceberg.table import Table, TableProperties, Transaction
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.update import AddSnapshotUpdate

from dagster_lakehouse.lakehouse.appends import WrittenFiles, append_written, usable, write_added_manifest
from dagster_lakehouse.lakehouse.catalog import RefCatalog
from dagster_lakehouse.lakehouse.commits import CatalogCommit, Pointer, add_log_entry, stage, transaction
from dagster_lakehouse.lakehouse.errors import PartitionPathTooLong, WriteConflict
from dagster_lakehouse.lakehouse.filters import FilterLike, filter_string, prepare_filter
from dagster_lakehouse.lakehouse.history import chain, op_props, since, table_op
from dagster_lakehouse.lakehouse.locations import native_path
from dagster_lakehouse.lakehouse.merge_rules import race_conflict
from dagster_lakehouse.lakehouse.parquet_stream import ParquetStream
from dagster_lakehouse.lakehouse.partition_paths import check_partition_paths
from dagster_lakehouse.lakehouse.partition_specs import spec_change, update_schema
from dagster_lakehouse.lakehouse.polars_sink import delete_files, sink_files, sink_unsupported
from dagster_lakehouse.lakehouse.row_checks import check_scope
from dagster_lakehouse.lakehouse.schema import plan_schema
from dagster_lakehouse.lakehouse.write_data import InMemoryData, StreamedData, WriteData
from dagster_lakehouse.lakehouse.written_files import record

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

_NO_MATCH_WARNING = "Delete operation did not match any records"

ROW_GROUP_ROWS = 131_072
"""Rows per Parquet row group of the files we write, unless the table sets `write.parquet.row-group-limit`.

PyIceberg's default is 1,048,576: a reader decodes a row group at a time, so a streamed read of such files held
about twice the memory (measured: a 1 GB table scanned by Polars' streaming engine peaked at 705 MiB with 1 Mi-row
groups, 346 MiB with 128 Ki-row groups); smaller groups also let statistics skip more of a file."""


def write_properties(metadata: TableMetadata) -> TableMetadata:
    """`metadata` with our defaults for the Parquet writer where the table sets none (the table's stay as they are)."""
    if TableProperties.PARQUET_ROW_GROUP_LIMIT in metadata.properties:
        return metadata
    properties = {**metadata.properties, TableProperties.PARQUET_ROW_GROUP_LIMIT: str(ROW_GROUP_ROWS)}
    return metadata.model_copy(update={"properties": properties})


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


def discard_staged(tx: Transaction) -> None:
    """Delete the manifest lists, manifests and rewritten data files of the snapshots staged in `tx`, which will never
    be committed (files they carry over from earlier snapshots stay)."""
    io = tx._table.io
    paths: list[str] = []
    for update in tx._updates:
        if isinstance(update, AddSnapshotUpdate):
            snapshot = update.snapshot
            paths.append(snapshot.manifest_list)
            for manifest in snapshot.manifests(io):
                if manifest.added_snapshot_id == snapshot.snapshot_id:
                    paths.append(manifest.manifest_path)
                    entries = manifest.fetch_manifest_entry(io, discard_deleted=True)
                    paths += [e.data_file.file_path for e in entries if e.status == ManifestEntryStatus.ADDED]
    delete_files(io, paths)


def create_transaction(
    catalog: RefCatalog, name: str, schema: pa.Schema, partition_by: Sequence[str] | None
) -> Transaction:
    """The transaction creating table `name` with `schema`, partitioned by identity on `partition_by` (if any)."""
    tx = catalog.create_table_transaction(name, schema=schema, partition_spec=UNPARTITIONED_PARTITION_SPEC)
    if partition_by:
        with tx.update_spec() as spec:
            for column in partition_by:
                spec.add_identity(column)
    return tx


class WriteCommit(CatalogCommit):
    """Write `data` to one table of a branch; `where` scopes a replace to the matching rows (streamed data is checked
    against it chunk by chunk, as it is written; data in memory was checked before)."""

    def __init__(
        self,
        engine: Engine,
        catalog: RefCatalog,
        name: str,
        data: WriteData,
        *,
        mode: str,
        where: FilterLike,
        props: dict[str, str],
        partition_by: Sequence[str] | None,
        timeout: float,
        check: Any,
        message: str,
        run_id: str | None,
        storage_options: dict[str, str] | None = None,
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
        self.storage_options = storage_options
        """Polars' settings for the object store, for a LazyFrame that Polars writes itself."""
        self._check = check
        self._started = False
        self._start: int | None = None  # the table's snapshot when the first attempt planned
        self._files: dict[tuple[str, int], WrittenFiles] = {}
        self._loaded: dict[str, str | None] = {}  # the table's metadata file when this attempt loaded it

    @property
    def context(self) -> str:
        return f"{self.what}: "

    def prepare(self) -> list[Pointer]:
        """Load the table, write the data files (first attempt only), take the ref's commit turn, then build and
        stage the snapshots: concurrent writers write their files side by side and queue only for the short rest."""
        try:
            current = self.catalog.load_table(self.name)
        except NoSuchTableError:
            current = None
        self._loaded = {self.name: current.metadata_location if current is not None else None}
        if current is not None and isinstance(self.data, InMemoryData):  # before a replace writes its delete
            check_partition_paths(current.metadata, self.data.table, table=self.name, branch=self.ref)
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
        """Create the table holding the data; its append records what the write replaces (a table created on two
        branches merges as both sides' work on an empty table, so a replace there must still read as one)."""
        self._started = True
        tx = create_transaction(self.catalog, self.name, self.data.schema, self.partition_by)
        replaces = None
        if self.mode == "replace":
            replaces = "" if self.where is None else self._scope(tx.table_metadata.schema())
        self._append(tx, self.data.schema, {**self.props, **op_props("append", replaces=replaces)})
        return tx

    def _scope(self, schema: Schema) -> str:
        """The text of the `where=` filter bound to `schema`, as snapshots record it."""
        row_filter, _ = prepare_filter(schema, self.where, context=self.context)
        return filter_string(row_filter)

    def _overwrite(self, table: Table) -> Transaction:
        replace_all = self.mode == "replace" and self.where is None
        plan = plan_schema(self.name, self.ref, table.schema(), self.data.schema.empty_table(), replace=replace_all)
        row_filter = None
        if self.mode == "replace" and self.where is not None:
            row_filter, _ = prepare_filter(table.schema(), self.where, context=self.context)
        self._check_race(table, row_filter)
        tx = transaction(table)
        replaces = None  # the rows go first, under the schema and spec they were written with
        if replace_all:
            replaces = ""
            delete_rows(tx, AlwaysTrue(), {**self.props, **op_props("replace")})
        elif row_filter is not None:
            replaces = filter_string(row_filter)
            delete_rows(tx, row_filter, {**self.props, **op_props("delete", replaces)})
        spec = spec_change(
            table.schema(), table.spec(), plan.data.schema, partition_by=self.partition_by, replace_all=replace_all,
            retyped=plan.drop, context=self.context,
        )  # fmt: skip
        if spec is not None:
            spec.clear(tx)  # before the schema drops a partition column
        if plan.drop:
            with update_schema(tx) as update:
                for column in plan.drop:
                    update.delete_column(column)
        if plan.evolve:
            with update_schema(tx) as update:
                update.union_by_name(plan.data.schema)
        if spec is not None:
            spec.apply(tx)
        self._append(tx, plan.data.schema, {**self.props, **op_props("append", replaces=replaces)})
        return tx

    def _append(self, tx: Transaction, schema: pa.Schema, props: dict[str, str]) -> None:
        """Append the written data files to `tx`, through the manifest written with them when it still fits."""
        written = self._data_files(tx, schema)
        if usable(tx, written):
            append_written(tx, written, props)
        else:
            append_files(tx, written.files, props)

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

    def _data_files(self, tx: Transaction, schema: pa.Schema) -> WrittenFiles:
        """Write the data, cast to `schema`, as Parquet once per (schema, spec) the table has while retrying, with the
        manifest that adds them (`appends`); reuse both otherwise. Streamed data is written a chunk at a time.

        Keyed by the schema's text, field ids included: a concurrent writer may have given a column name another id.
        """
        metadata = tx.table_metadata
        key = (metadata.schema().model_dump_json(), metadata.default_spec_id)
        if key in self._files:
            return self._files[key]
        if self._files and not self.data.replayable:
            raise WriteConflict(
                self.name,
                self.ref,
                "a concurrent write changed the table's schema or partition spec while this write committed, and "
                "the RecordBatchReader it wrote cannot be read again",
            )
        _check_pyarrow_schema_compatible(metadata.schema(), provided_schema=schema, format_version=metadata.format_version)
        io, write_uuid, counter = tx._table.io, uuid.uuid4(), itertools.count(0)  # file names: uuid-counter
        written = write_properties(metadata)
        lazy = self.data.source if isinstance(self.data, StreamedData) and self.data.replayable else None
        if lazy is not None and sink_unsupported(written, schema) is None:  # Polars writes it: see polars_sink
            files = self._sink(lazy, schema, written, metadata, write_uuid)
        elif not self.data.streamed:  # in memory: PyIceberg's writer, which writes several files at once
            (chunk,) = self.data.chunks()
            chunk = chunk if chunk.schema == schema else chunk.cast(schema)
            check_partition_paths(written, chunk, table=self.name, branch=self.ref)
            files = list(_dataframe_to_data_files(table_metadata=written, write_uuid=write_uuid, df=chunk, io=io)) if (
                chunk.num_rows
            ) else []
        else:
            try:
                files = self._stream(ParquetStream(io, written, write_uuid, counter), schema, metadata)
            except PartitionPathTooLong:
                discard_staged(tx)  # a replace's delete, staged before the rows came: nothing is left behind
                raise
        result = self._files[key] = write_added_manifest(metadata, io, files)
        self.take_turn(self._loaded)  # the files exist: queue for the ref (LostRace if the table moved meanwhile)
        return result

    def _sink(
        self, lazy: pl.LazyFrame, schema: pa.Schema, written: TableMetadata, metadata: TableMetadata, write_uuid: uuid.UUID
    ) -> list[DataFile]:
        """Let Polars' streaming sink write the LazyFrame, then check the rows it wrote against `where` and the rules
        (a scan of the new files), before anything is committed."""
        io = self.catalog._load_file_io(written.properties, written.location)
        files, rows = self.data.wrap(lambda: sink_files(lazy, schema, written, io, write_uuid, self.storage_options))
        record([f.file_path for f in files], io)  # Polars wrote them, not a FileIO: note them in the commit's log
        self.data.rows = rows
        if files and (self.where is not None or self.data.rules):
            scan = pl.scan_parquet([native_path(f.file_path) for f in files], storage_options=self.storage_options)
            try:
                for rule in self.data.rules:  # the caller's rules first, as for data in memory
                    rule.check(scan, rows)
                if self.where is not None:
                    check_scope(scan, metadata.schema(), self.where, context=self.context, rows=rows)
            except BaseException:
                delete_files(io, [f.file_path for f in files])  # refused: its files will never be committed
                raise
        return files

    def _stream(self, stream: ParquetStream, schema: pa.Schema, metadata: TableMetadata) -> list[DataFile]:
        """Write streamed data chunk by chunk, each checked against `where` first; the open files are abandoned to
        `gc` if a chunk fails."""
        try:
            for chunk in self.data.chunks():
                chunk = chunk if chunk.schema == schema else chunk.cast(schema)
                if self.where is not None:
                    check_scope(chunk, metadata.schema(), self.where, context=self.context)
                check_partition_paths(metadata, chunk, table=self.name, branch=self.ref)
                stream.write(chunk)
        except BaseException:
            stream.abort()
            raise
        return stream.close()
