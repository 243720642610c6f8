"""`Lakehouse`: Iceberg tables in a SQL catalog where every read and write happens on a git-like branch."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, Literal

from pyiceberg.exceptions import (
    NamespaceAlreadyExistsError,
    NoSuchTableError,
)
from pyiceberg.table import Table
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from dagster_lakehouse.lakehouse import refs as refstore
from dagster_lakehouse.lakehouse.branches import BranchOps
from dagster_lakehouse.lakehouse.catalog import (
    IcebergTables,
    RefCatalog,
    make_engine,
    open_catalog_schema,
)
from dagster_lakehouse.lakehouse.commits import load_at, table_at
from dagster_lakehouse.lakehouse.config import DEFAULT_PATH, LakehouseConfig
from dagster_lakehouse.lakehouse.data import DataLike, to_arrow
from dagster_lakehouse.lakehouse.errors import (
    LakehouseError,
    TableNotFound,
)
from dagster_lakehouse.lakehouse.filters import FilterLike
from dagster_lakehouse.lakehouse.merge import MergeResult, TableDiff, diff_states
from dagster_lakehouse.lakehouse.merging import MergeCommit, OnConflict, change_counts
from dagster_lakehouse.lakehouse.names import MAIN, split_table_name
from dagster_lakehouse.lakehouse.reads import TableReads
from dagster_lakehouse.lakehouse.refs import Commit, Ref
from dagster_lakehouse.lakehouse.writes import WriteCommit

WriteMode = Literal["replace", "append"]


@dataclass(frozen=True)
class WriteResult:
    """The outcome of one committed write."""

    table: str
    branch: str
    snapshot_id: int | None
    rows: int
    mode: str
    metadata_location: str
    commit_id: str
    attempts: int
    iceberg_table: Table = field(repr=False, compare=False)
    """The committed PyIceberg table (schema, location, snapshot), so callers need not load it again."""


class Lakehouse(BranchOps, TableReads):
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
    ):
        self.config = LakehouseConfig.resolve(catalog_uri, warehouse, properties, path)
        self.commit_timeout = commit_timeout
        self._catalog_properties = {**self.config.properties, "uri": self.config.catalog_uri, "warehouse": self.config.warehouse}
        self._schema_version = _retry_on_race(
            lambda: open_catalog_schema(self.config.catalog_uri, self._catalog_properties)
        )
        self.engine = make_engine(self.config.catalog_uri)
        self._catalogs: dict[str, RefCatalog] = {}
        self._lock = threading.Lock()
        _retry_on_race(lambda: refstore.metadata.create_all(self.engine))
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

    def close(self) -> None:
        """Release the catalog database connections."""
        self.engine.dispose()

    def catalog(self, ref: str = MAIN) -> RefCatalog:
        """The PyIceberg catalog that sees the tables of `ref` (a branch or tag)."""
        with self._lock:
            if ref not in self._catalogs:
                self._catalogs[ref] = RefCatalog(ref, self.engine, self._schema_version, **self._catalog_properties)
            return self._catalogs[ref]

    # ----- tables -----------------------------------------------------------------------------------

    def tables(self, ref: str = MAIN) -> list[str]:
        """Names (`namespace.table`) of the tables visible on `ref`."""
        with self.engine.connect() as conn:
            self._get_ref(conn, ref)
            return sorted(self._state(conn, ref))

    def exists(self, name: str, ref: str = MAIN) -> bool:
        """Whether table `name` exists on `ref`."""
        split_table_name(name)
        return name in self.tables(ref)

    def table(self, name: str, ref: str = MAIN) -> Table:
        """The PyIceberg table `name` as seen on `ref`, for anything this API does not cover."""
        split_table_name(name)
        try:
            return self.catalog(ref).load_table(name)
        except NoSuchTableError:
            with self.engine.connect() as conn:
                self._get_ref(conn, ref)
                visible = sorted(self._state(conn, ref))
            raise TableNotFound(
                f"table '{name}' does not exist on '{ref}' (tables there: {', '.join(visible) or 'none'})"
            ) from None

    def snapshot_id(self, name: str, ref: str = MAIN) -> int | None:
        """Current snapshot id of table `name` on `ref` (None for a table with no data yet)."""
        snapshot = self.table(name, ref).current_snapshot()
        return snapshot.snapshot_id if snapshot else None

    def write(
        self,
        name: str,
        data: DataLike,
        *,
        branch: str = MAIN,
        mode: WriteMode = "replace",
        where: FilterLike = None,
        message: str | None = None,
        run_id: str | None = None,
        snapshot_properties: dict[str, str] | None = None,
        partition_by: Sequence[str] | None = None,
        allow_main: bool = False,
    ) -> WriteResult:
        """Write `data` to table `name` on `branch` in one Iceberg commit, creating it on first write.

        `replace` swaps the table's contents (and schema) for `data`; with `where`, only the rows matching
        that filter are replaced (partition-scoped overwrite). `append` adds rows; new columns evolve the
        schema. The pointer swap and the log entry are one catalog transaction. A write that loses a race to
        a concurrent writer is re-applied on the fresh table until `commit_timeout`, unless it replaces rows
        the winner added (`WriteConflict`: writes of different partitions never conflict).
        """
        namespace, _ = split_table_name(name)
        if mode not in ("replace", "append"):
            raise ValueError(f"table '{name}' on branch '{branch}': write mode must be 'replace' or 'append', not {mode!r}")
        with self.engine.connect() as conn:
            self._check_writable(conn, branch, allow_main)
        context = f"table '{name}' on branch '{branch}': "
        arrow = to_arrow(data, context=context)
        props = {"lakehouse.branch": branch, **({"lakehouse.message": message} if message else {})}
        if run_id:
            props["dagster.run-id"] = run_id
        props.update({k: str(v) for k, v in (snapshot_properties or {}).items()})
        catalog = self.catalog(branch)
        self._ensure_namespace(catalog, namespace)
        commit = WriteCommit(
            self.engine,
            catalog,
            name,
            arrow,
            mode=mode,
            where=where,
            props=props,
            partition_by=partition_by,
            timeout=self.commit_timeout,
            check=lambda conn: self._check_writable(conn, branch, allow_main),
            message=message or f"{mode} {name}",
            run_id=run_id,
        )
        (pointer,) = commit.run()
        assert pointer.metadata is not None and pointer.location is not None
        table = table_at(catalog, name, pointer.location, pointer.metadata)
        return WriteResult(
            table=name,
            branch=branch,
            snapshot_id=pointer.snapshot_id,
            rows=arrow.num_rows,
            mode=mode if where is None else "overwrite",
            metadata_location=pointer.location,
            commit_id=commit.commit_id or "",
            attempts=commit.attempts,
            iceberg_table=table,
        )

    @staticmethod
    def _ensure_namespace(catalog: RefCatalog, namespace: str) -> None:
        """Create the namespace if absent; a concurrent writer creating it first is fine."""
        try:
            catalog.create_namespace_if_not_exists(namespace)
        except (IntegrityError, NamespaceAlreadyExistsError):
            if not catalog.namespace_exists(namespace):
                raise

    def drop_table(self, name: str, *, branch: str = MAIN, allow_main: bool = False) -> None:
        """Remove table `name` from `branch` only; its files stay for other refs until `gc()`."""
        namespace, table_name = split_table_name(name)
        with self.engine.begin() as conn:
            self._check_writable(conn, branch, allow_main)
            result = conn.execute(
                delete(IcebergTables).where(
                    IcebergTables.catalog_name == branch,
                    IcebergTables.table_namespace == namespace,
                    IcebergTables.table_name == table_name,
                )
            )
            if result.rowcount == 0:
                raise TableNotFound(f"table '{name}' does not exist on '{branch}'")
            refstore.add_commit(conn, branch, "drop", f"drop {name}", [name], {name: None})

    # ----- merge, diff, log ---------------------------------------------------------------------------

    def merge(
        self,
        source: str,
        into: str = MAIN,
        *,
        message: str | None = None,
        run_id: str | None = None,
        on_conflict: OnConflict = "fail",
    ) -> MergeResult:
        """Three-way merge of every table of `source` into `into`, all tables in one catalog transaction.

        A table changed on one side only takes that side. A table changed on both is merged at the level of
        Iceberg data files when the two sides' work commutes (disjoint appends and partition replaces), by
        replaying the source's operations on the target; otherwise `MergeConflict` names each table and why,
        and nothing changes. `on_conflict="source"` / `"target"` (or a dict per table) takes one side's
        version of the conflicting tables instead. Readers see all of the merge or none of it.
        """
        if source == into:
            raise LakehouseError(f"cannot merge '{source}' into itself")
        commit = MergeCommit(self, source, into, message=message, run_id=run_id, on_conflict=on_conflict)
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

    def diff(self, a: str, b: str) -> list[TableDiff]:
        """Tables added, removed or modified going from ref `a` to ref `b`: snapshot ids, and the rows and files
        that `b`'s operations not yet in `a` added and removed (what merging `b` into `a` would replay)."""
        with self.engine.connect() as conn:
            self._get_ref(conn, a)
            self._get_ref(conn, b)
            diffs = diff_states(self._state(conn, a), self._state(conn, b))
        return [self._diff_counts(d, a, b) for d in diffs]

    def _diff_counts(self, d: TableDiff, a: str, b: str) -> TableDiff:
        before = load_at(self.catalog(a), d.table, d.before) if d.before else None
        after = load_at(self.catalog(b), d.table, d.after) if d.after else None
        counts = change_counts(after, before) if after is not None else {}
        return replace(
            d,
            before_snapshot_id=_current_snapshot_id(before),
            after_snapshot_id=_current_snapshot_id(after),
            **counts,
        )

    def log(self, ref: str = MAIN, limit: int | None = None) -> list[Commit]:
        """Commits reachable from `ref`, newest first: its own, then its parent's up to the fork."""
        commits: list[Commit] = []
        with self.engine.connect() as conn:
            current: Ref | None = self._get_ref(conn, ref)
            up_to: int | None = None
            seen: set[str] = set()
            while current is not None and current.name not in seen:
                seen.add(current.name)
                commits.extend(refstore.commits_of(conn, current.name, up_to))
                up_to = current.fork_seq
                current = refstore.get_ref(conn, current.parent) if current.parent else None
        commits.sort(key=lambda c: c.seq, reverse=True)
        return commits[:limit] if limit else commits

    # ----- garbage collection -----------------------------------------------------------------------

    def gc(self, *, older_than: timedelta = timedelta(hours=1), dry_run: bool = False) -> list[str]:
        """Delete warehouse files that no branch or tag reaches (mark and sweep); returns their URIs.

        Files younger than `older_than` are kept so an in-flight write's files are never taken.
        """
        from dagster_lakehouse.lakehouse.gc import collect_garbage

        with self.engine.connect() as conn:
            rows = conn.execute(
                select(IcebergTables.catalog_name, IcebergTables.metadata_location, IcebergTables.previous_metadata_location)
            ).all()
        return collect_garbage(self, rows, older_than=older_than, dry_run=dry_run)


def _retry_on_race(create: Any, attempts: int = 5) -> Any:
    """Run an idempotent create-if-absent step, retrying when another process wins the same race."""
    for attempt in range(attempts):
        try:
            return create()
        except (OperationalError, IntegrityError, ProgrammingError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1) * random.uniform(1, 2))


def _current_snapshot_id(table: Table | None) -> int | None:
    snapshot = table.current_snapshot() if table is not None else None
    return snapshot.snapshot_id if snapshot else None
