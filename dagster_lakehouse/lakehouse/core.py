"""`Lakehouse`: Iceberg tables in a SQL catalog where every read and write happens on a git-like branch."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Literal

import pyarrow as pa
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.table import Table
from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from dagster_lakehouse.lakehouse import refs as refstore
from dagster_lakehouse.lakehouse.branches import BranchOps
from dagster_lakehouse.lakehouse.catalog import (
    IcebergNamespaceProperties,
    IcebergTables,
    ReadOnlyCatalog,
    RefCatalog,
    make_engine,
    open_catalog_schema,
)
from dagster_lakehouse.lakehouse.config import DEFAULT_PATH, LakehouseConfig
from dagster_lakehouse.lakehouse.data import DataLike
from dagster_lakehouse.lakehouse.errors import (
    InvalidWrite,
    LakehouseError,
    TableNotFound,
    UnsafeGC,
)
from dagster_lakehouse.lakehouse.filters import FilterLike
from dagster_lakehouse.lakehouse.gc_report import GCResult
from dagster_lakehouse.lakehouse.merge import MergeResult
from dagster_lakehouse.lakehouse.merging import MergeCommit, OnConflict
from dagster_lakehouse.lakehouse.names import MAIN, split_table_name
from dagster_lakehouse.lakehouse.progress import Progress
from dagster_lakehouse.lakehouse.reads import TableReads
from dagster_lakehouse.lakehouse.refspec import is_pinned
from dagster_lakehouse.lakehouse.row_checks import check_scope
from dagster_lakehouse.lakehouse.schema import iceberg_schema, plan_schema
from dagster_lakehouse.lakehouse.storage_full import names_storage_full
from dagster_lakehouse.lakehouse.timeline import Timeline
from dagster_lakehouse.lakehouse.upsert import UpsertCommit, check_key, in_memory
from dagster_lakehouse.lakehouse.write_args import check_snapshot_properties, check_text, partition_columns
from dagster_lakehouse.lakehouse.write_data import InMemoryData, WriteData, write_data
from dagster_lakehouse.lakehouse.write_result import WriteResult, finish_write
from dagster_lakehouse.lakehouse.writes import WriteCommit

__all__ = ["Lakehouse", "WriteMode", "WriteResult"]

WriteMode = Literal["replace", "append", "upsert"]


class Lakehouse(BranchOps, TableReads, Timeline):
    """A catalog of Iceberg tables with lake-wide branches, tags, merges and branch-aware GC.

    A branch is a catalog name in the Iceberg SQL catalog database, so branching copies pointers (one row
    per table), never data, and any engine reading the SQL/JDBC catalog can read a branch by its name.
    """

    def __init__(
        self,
        catalog_uri: str | None = None,
        warehouse: str | None = None,
        properties: dict[str, str] | None = None,
        *,
        path: str | os.PathLike[str] | None = None,
        commit_timeout: float = 300.0,
        storage_retry_seconds: float | None = None,
        history_retention: timedelta | None = None,
    ):
        """`storage_retry_seconds` (default `LAKEHOUSE_STORAGE_RETRY_SECONDS`, else 30) bounds how long reads, writes
        and merges retry transient object-store errors before `StorageUnavailable`; `history_retention` (default
        `LAKEHOUSE_HISTORY_RETENTION_DAYS`, else 7 days) how long past commits stay readable, revertable and kept by `gc`."""
        self.config = LakehouseConfig.resolve(
            catalog_uri,
            warehouse,
            properties,
            path,
            storage_retry_seconds=storage_retry_seconds,
            history_retention=history_retention,
        )
        self.commit_timeout = commit_timeout
        self._catalog_properties = {**self.config.properties, "uri": self.config.catalog_uri, "warehouse": self.config.warehouse}
        self._schema_version = _retry_on_race(
            lambda: open_catalog_schema(self.config.catalog_uri, self._catalog_properties)
        )
        self.engine = make_engine(self.config.catalog_uri)
        self._catalogs: dict[str, RefCatalog] = {}
        self._lock = threading.Lock()
        _retry_on_race(lambda: refstore.metadata.create_all(self.engine))
        _retry_on_race(self._upgrade)
        _retry_on_race(self._ensure_main)

    @classmethod
    def local(cls, path: str | os.PathLike[str] = DEFAULT_PATH, **kwargs: Any) -> Lakehouse:
        """The embedded lakehouse: SQLite catalog and warehouse folder under `path` (default `.lakehouse`)."""
        config = LakehouseConfig.local(path)
        return cls(config.catalog_uri, config.warehouse, **kwargs)

    @classmethod
    def from_env(cls, **kwargs: Any) -> Lakehouse:
        """Configured by `LAKEHOUSE_CATALOG_URI`, `LAKEHOUSE_WAREHOUSE`, `LAKEHOUSE_PATH` and AWS variables."""
        return cls(**kwargs)

    def __repr__(self) -> str:
        return f"Lakehouse(catalog_uri={self.config.catalog_uri!r}, warehouse={self.config.warehouse!r})"

    def __enter__(self) -> Lakehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _upgrade(self) -> None:
        with self.engine.begin() as conn:
            refstore.upgrade(conn)

    def close(self) -> None:
        """Release the catalog database connections."""
        self.engine.dispose()

    def catalog(self, ref: str = MAIN) -> ReadOnlyCatalog:
        """The PyIceberg catalog that sees the tables of `ref` (a branch, tag, or past commit such as `main@<commit>` or
        `dev~2`), read-only (`RefNotFound` if no such ref).

        It and the tables it loads refuse every change (`ReadOnlyError`): writes go through `write()`, which
        checks protection and records the commit log.
        """
        with self.engine.connect() as conn:
            view = self._view(conn, ref)
        return self._pinned_catalog(view)

    def _read_catalog(self, ref: str) -> ReadOnlyCatalog:
        with self._lock:
            if ref not in self._catalogs:
                self._catalogs[ref] = ReadOnlyCatalog(ref, self.engine, self._schema_version, **self._catalog_properties)
            return self._catalogs[ref]  # type: ignore[return-value]

    def _write_catalog(self, branch: str) -> RefCatalog:
        """The catalog a `WriteCommit` stages through; never handed out."""
        return RefCatalog(branch, self.engine, self._schema_version, **self._catalog_properties)

    # ----- tables -----------------------------------------------------------------------------------

    def tables(self, ref: str = MAIN) -> list[str]:
        """Names (`namespace.table`) of the tables visible on `ref` (a branch, tag or past commit)."""
        with self.engine.connect() as conn:
            return sorted(self._view(conn, ref).state)

    def exists(self, name: str, ref: str = MAIN) -> bool:
        """Whether table `name` exists on `ref`."""
        split_table_name(name)
        return name in self.tables(ref)

    def table(self, name: str, ref: str = MAIN) -> Table:
        """The PyIceberg table `name` as seen on `ref`, read-only, for anything this API does not cover.

        Scans and metadata work; a change (`append`, `update_schema`, ...) raises `ReadOnlyError` before any file is
        written: write with `write()`.
        """
        split_table_name(name)
        self._check_storable(ref)
        catalog = self.catalog(ref) if is_pinned(ref) else self._read_catalog(ref)
        try:
            return self._retrying(f"table '{name}' on '{ref}'", lambda: catalog.load_table(name))
        except NoSuchTableError:
            visible = self.tables(ref)
            raise TableNotFound(
                f"table '{name}' does not exist on '{ref}' (tables there: {', '.join(visible) or 'none'})"
            ) from None

    def snapshot_id(self, name: str, ref: str = MAIN) -> int | None:
        """Current snapshot id of table `name` on `ref` (None for a table with no data yet)."""
        snapshot = self.table(name, ref).current_snapshot()
        return snapshot.snapshot_id if snapshot else None

    @names_storage_full("table '{name}' on branch '{branch}'")
    def write(
        self,
        name: str,
        data: DataLike | WriteData,
        *,
        branch: str = MAIN,
        mode: WriteMode = "replace",
        where: FilterLike = None,
        message: str | None = None,
        run_id: str | None = None,
        snapshot_properties: dict[str, str] | None = None,
        partition_by: Sequence[str] | None = None,
        allow_main: bool = False,
        key: Sequence[str] | None = None,
    ) -> WriteResult:
        """Write `data` to table `name` on `branch` in one Iceberg commit, creating it on first write.

        `replace` swaps the table's contents (and schema) for `data`; with `where`, only the rows matching
        that filter are replaced (partition-scoped overwrite). `append` adds rows; new columns evolve the
        schema. `upsert` updates the rows whose `key` columns match the data's and inserts the rest (`upsert`,
        data held in memory). The pointer swap and the log entry are one catalog transaction. A write that loses a race to
        a concurrent writer is re-applied on the fresh table until `commit_timeout`, unless it replaces rows
        the winner added (`WriteConflict`: writes of different partitions never conflict).

        A `pl.LazyFrame` runs on Polars' streaming engine and a `pa.RecordBatchReader` is read batch by batch, each
        written as Parquet a chunk at a time (`write_data`), so data larger than memory writes in one commit.
        """
        namespace, _ = split_table_name(name)
        context = f"table '{name}' on branch '{branch}': "
        if mode not in ("replace", "append", "upsert"):
            raise InvalidWrite(f"{context}write mode must be 'replace', 'append' or 'upsert', not {mode!r}")
        if mode in ("append", "upsert") and where is not None:
            raise InvalidWrite(
                f"{context}mode={mode!r} {'adds' if mode == 'append' else 'updates and adds'} rows and takes no where= "
                "filter; to replace the rows a filter matches, write with mode='replace' and where=..."
            )
        if (key is not None) != (mode == "upsert"):
            raise InvalidWrite(f"{context}key= names the columns of mode='upsert', and mode='upsert' needs key=[...]")
        with self.engine.connect() as conn:
            self._check_writable(conn, branch, allow_main)
        payload = write_data(data, context=context)
        if mode == "upsert":
            payload = in_memory(payload, context)
            key = check_key(key, payload.table, context)
        partition_by = partition_columns(payload.schema, partition_by, context)
        check_text(message, "message", None, context)
        check_text(run_id, "run_id", 255, context)
        props = {"lakehouse.branch": branch, **({"lakehouse.message": message} if message else {})}
        if run_id:
            props["dagster.run-id"] = run_id
        props.update(check_snapshot_properties(snapshot_properties, context))
        catalog = self._write_catalog(branch)
        if where is not None:
            self._check_where(catalog, name, payload, where, context)
        self._ensure_namespace(branch, namespace, allow_main)
        commit: WriteCommit | UpsertCommit
        if mode == "upsert":
            assert isinstance(payload, InMemoryData) and key is not None
            commit = UpsertCommit(
                self.engine,
                catalog,
                name,
                payload,
                key=list(key),
                props=props,
                partition_by=partition_by,
                timeout=self.commit_timeout,
                check=lambda conn: self._check_writable(conn, branch, allow_main),
                message=message or f"upsert {name}",
                run_id=run_id,
            )
            return finish_write(self, commit, branch, allow_main, mode)
        commit = WriteCommit(
            self.engine,
            catalog,
            name,
            payload,
            mode=mode,
            where=where,
            props=props,
            partition_by=partition_by,
            timeout=self.commit_timeout,
            check=lambda conn: self._check_writable(conn, branch, allow_main),
            message=message or f"{mode} {name}",
            run_id=run_id,
            storage_options=self._polars_storage_options(),
        )
        return finish_write(self, commit, branch, allow_main, mode if where is None else "overwrite")

    def _check_where(self, catalog: RefCatalog, name: str, data: WriteData, where: FilterLike, context: str) -> None:
        """Parse and bind `where` (to the table, or for a new table to the data) and refuse rows outside it (those of
        streamed data as each chunk is written)."""
        arrow = data.table if isinstance(data, InMemoryData) else data.schema.empty_table()
        try:
            current = self._retrying(f"table '{name}' on '{catalog.name}'", lambda: catalog.load_table(name))
        except NoSuchTableError:
            check_scope(arrow, iceberg_schema(arrow.schema), where, context=context)
            return
        plan = plan_schema(name, catalog.name, current.schema(), arrow, replace=False)
        check_scope(plan.data, current.schema(), where, context=context)

    def _ensure_namespace(self, branch: str, namespace: str, allow_main: bool) -> None:
        """Create the namespace on `branch` if absent, in one transaction with the check that the branch is writable.

        The check share-locks the ref row, so a concurrent `delete_branch` either goes first (`RefNotFound` here)
        or waits and removes this row too; a concurrent writer creating the namespace first is fine.
        """
        props = IcebergNamespaceProperties
        try:
            with self.engine.begin() as conn:
                self._check_writable(conn, branch, allow_main)
                known = conn.execute(
                    select(props.namespace).where(props.catalog_name == branch, props.namespace == namespace).limit(1)
                ).first() or conn.execute(
                    select(IcebergTables.table_name)
                    .where(IcebergTables.catalog_name == branch, IcebergTables.table_namespace == namespace)
                    .limit(1)
                ).first()
                if known is None:
                    conn.execute(
                        insert(props.__table__).values(
                            [
                                {"catalog_name": branch, "namespace": namespace, "property_key": k, "property_value": v}
                                for k, v in props.NAMESPACE_MINIMAL_PROPERTIES.items()
                            ]
                        )
                    )
        except IntegrityError:
            with self.engine.connect() as conn:
                self._check_writable(conn, branch, allow_main)

    @names_storage_full("dropping table '{name}' on branch '{branch}'")
    def drop_table(self, name: str, *, branch: str = MAIN, allow_main: bool = False) -> None:
        """Remove table `name` from `branch` only; its files stay for other refs until `gc()`."""
        namespace, table_name = split_table_name(name)
        with self.engine.begin() as conn:
            self._get_ref(conn, branch)  # names a bad or unknown ref before the lock's query
            refstore.lock_ref(conn, branch)
            self._check_writable(conn, branch, allow_main)
            rows = IcebergTables.__table__
            where = (rows.c.catalog_name == branch) & (rows.c.table_namespace == namespace) & (rows.c.table_name == table_name)
            location = conn.execute(select(rows.c.metadata_location).where(where)).scalar()
            if location is None or conn.execute(delete(rows).where(where)).rowcount == 0:
                raise TableNotFound(f"table '{name}' does not exist on '{branch}'")
            refstore.add_commit(conn, branch, "drop", f"drop {name}", [name], {name: None}, changes={name: (location, None)})

    # ----- merge ---------------------------------------------------------------------------------

    @names_storage_full("merge of '{source}' into '{into}'")
    def merge(
        self,
        source: str,
        into: str = MAIN,
        *,
        message: str | None = None,
        run_id: str | None = None,
        on_conflict: OnConflict = "fail",
        progress: Progress | None = None,
    ) -> MergeResult:
        """Three-way merge of every table of `source` into `into`, all tables in one catalog transaction.

        A table changed on one side only takes that side. A table changed on both is merged at the level of
        Iceberg data files when the two sides' work commutes (disjoint appends and partition replaces), by
        replaying the source's operations on the target; otherwise `MergeConflict` names each table and why,
        and nothing changes. `on_conflict="source"` / `"target"` (or a dict per table) takes one side's
        version of the conflicting tables instead. Readers see all of the merge or none of it. `progress(what, done,
        total)` is told of each table planned (`progress.Progress`).
        """
        if source == into:
            raise LakehouseError(f"cannot merge '{source}' into itself")
        commit = MergeCommit(
            self, source, into, message=message, run_id=run_id, on_conflict=on_conflict, progress=progress
        )
        pointers = commit.run()
        plan = commit.plan
        assert plan is not None
        fast_forward = all(plan.base.get(t) == plan.target_state.get(t) for t in set(plan.base) | set(plan.target_state))
        return MergeResult(
            source=source,
            target=into,
            tables=sorted(p.table for p in pointers),
            commit_id=commit.commit_id,
            fast_forward=fast_forward,
            changes={p.table: p.location for p in pointers},
            replayed=sorted(plan.replayed),
            resolved=dict(plan.resolved),
        )

    # ----- garbage collection -----------------------------------------------------------------------

    def gc(
        self,
        *,
        older_than: timedelta = timedelta(hours=1),
        dry_run: bool = False,
        force: bool = False,
        keep_history: timedelta | None = None,
        progress: Progress | None = None,
    ) -> GCResult:
        """Delete warehouse files that no branch or tag reaches, now or at any commit of their log younger than
        `keep_history` (default: the history retention window, `config.history_retention`); returns their URIs (a
        list), whose `problems` name the missing or unreadable files a ref reaches that it met (every file of a table
        whose metadata did not read is kept).

        Never takes a file that committed metadata of any ref references, nor one of a write or merge in flight
        (their write leases), whatever `older_than` is. Files younger than `older_than` are kept for writers that take
        no lease (other engines); below `gc.MIN_OLDER_THAN` (10 minutes) a deleting run needs `force=True` (`UnsafeGC`).
        `progress(what, done, total)` is told of the metadata files read and the files deleted (`progress.Progress`).
        """
        from dagster_lakehouse.lakehouse.gc import check_grace, collect_garbage

        check_grace(older_than, self.config.warehouse, force=force, dry_run=dry_run)
        history = self.config.history_retention if keep_history is None else keep_history
        if history < timedelta(0):
            raise UnsafeGC(f"gc of {self.config.warehouse}: keep_history must be 0 or more, not {history}")
        return collect_garbage(self, older_than=older_than, dry_run=dry_run, keep_history=history, progress=progress)


def _retry_on_race(create: Any, attempts: int = 5) -> Any:
    """Run an idempotent create-if-absent step, retrying when another process wins the same race."""
    for attempt in range(attempts):
        try:
            return create()
        except (OperationalError, IntegrityError, ProgrammingError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1) * random.uniform(1, 2))
