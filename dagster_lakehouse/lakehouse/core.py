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

import polars as pl
import pyarrow as pa
from pyiceberg.exceptions import (
    CommitFailedException,
    NamespaceAlreadyExistsError,
    NoSuchTableError,
    TableAlreadyExistsError,
)
from pyiceberg.expressions import AlwaysTrue, BooleanExpression
from pyiceberg.table import Table
from sqlalchemy import delete, insert, literal, select
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from dagster_lakehouse.lakehouse import refs as refstore
from dagster_lakehouse.lakehouse.catalog import (
    IcebergNamespaceProperties,
    IcebergTables,
    RefCatalog,
    make_engine,
    open_catalog_schema,
)
from dagster_lakehouse.lakehouse.commits import load_at
from dagster_lakehouse.lakehouse.config import DEFAULT_PATH, LakehouseConfig
from dagster_lakehouse.lakehouse.data import DataLike, to_arrow
from dagster_lakehouse.lakehouse.errors import (
    ColumnNotFound,
    LakehouseError,
    ProtectedBranchError,
    RefAlreadyExists,
    RefNotFound,
    TableNotFound,
)
from dagster_lakehouse.lakehouse.filters import FilterLike, prepare_filter, to_polars
from dagster_lakehouse.lakehouse.merge import MergeResult, State, TableDiff, diff_states
from dagster_lakehouse.lakehouse.merging import MergeCommit, OnConflict, change_counts
from dagster_lakehouse.lakehouse.names import MAIN, split_table_name, validate_ref_name
from dagster_lakehouse.lakehouse.refs import Commit, Ref
from dagster_lakehouse.lakehouse.writes import WriteCommit

WriteMode = Literal["replace", "append"]
_RETRYABLE = (CommitFailedException, TableAlreadyExistsError, OperationalError, IntegrityError)


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


class Lakehouse:
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

    # ----- refs -------------------------------------------------------------------------------------

    def _ensure_main(self) -> None:
        with self.engine.begin() as conn:
            if refstore.get_ref(conn, MAIN) is None:
                try:
                    with conn.begin_nested():
                        refstore.insert_ref(conn, MAIN, "branch", None, None, {})
                        refstore.add_commit(conn, MAIN, "create", "created main", [])
                except IntegrityError:
                    pass

    def catalog(self, ref: str = MAIN) -> RefCatalog:
        """The PyIceberg catalog that sees the tables of `ref` (a branch or tag)."""
        with self._lock:
            if ref not in self._catalogs:
                self._catalogs[ref] = RefCatalog(ref, self.engine, self._schema_version, **self._catalog_properties)
            return self._catalogs[ref]

    def _get_ref(self, conn: Any, name: str) -> Ref:
        ref = refstore.get_ref(conn, name)
        if ref is None:
            known = ", ".join(r.name for r in refstore.list_refs(conn)) or "none"
            raise RefNotFound(f"branch or tag '{name}' does not exist (known: {known})")
        return ref

    def _state(self, conn: Any, ref: str) -> State:
        rows = conn.execute(
            select(IcebergTables.table_namespace, IcebergTables.table_name, IcebergTables.metadata_location).where(
                IcebergTables.catalog_name == ref
            )
        )
        return {f"{ns}.{name}": location for ns, name, location in rows}

    def branches(self) -> list[str]:
        """Names of all branches, `main` included."""
        with self.engine.connect() as conn:
            return [r.name for r in refstore.list_refs(conn, "branch")]

    def tags(self) -> list[str]:
        """Names of all tags."""
        with self.engine.connect() as conn:
            return [r.name for r in refstore.list_refs(conn, "tag")]

    def ref(self, name: str) -> Ref:
        """Details of a branch or tag: kind, parent, branch point."""
        with self.engine.connect() as conn:
            return self._get_ref(conn, name)

    def has_branch(self, name: str) -> bool:
        """Whether a branch (not a tag) of that name exists."""
        with self.engine.connect() as conn:
            ref = refstore.get_ref(conn, name)
        return ref is not None and not ref.is_tag

    def create_branch(self, name: str, from_ref: str = MAIN, *, exist_ok: bool = False) -> Ref:
        """Fork `from_ref` in one transaction: copies one catalog row per table, never a data file."""
        return self._create_ref(name, from_ref, "branch", exist_ok=exist_ok)

    def tag(self, name: str, ref: str = MAIN) -> Ref:
        """Freeze the current state of `ref` under an immutable tag name."""
        return self._create_ref(name, ref, "tag", exist_ok=False)

    def _create_ref(self, name: str, from_ref: str, kind: str, *, exist_ok: bool) -> Ref:
        validate_ref_name(name)
        try:
            return self._insert_ref(name, from_ref, kind, exist_ok=exist_ok)
        except IntegrityError:  # another process created the same ref between our check and insert
            with self.engine.connect() as conn:
                existing = refstore.get_ref(conn, name)
            if existing is not None and exist_ok and existing.kind == kind:
                return existing
            raise RefAlreadyExists(f"a branch or tag named '{name}' exists already") from None

    def _insert_ref(self, name: str, from_ref: str, kind: str, *, exist_ok: bool) -> Ref:
        with self.engine.begin() as conn:
            existing = refstore.get_ref(conn, name)
            if existing is not None:
                if exist_ok and existing.kind == kind:
                    return existing
                raise RefAlreadyExists(f"a {existing.kind} named '{name}' exists already")
            self._get_ref(conn, from_ref)
            base = self._state(conn, from_ref)
            fork_seq = refstore.last_seq(conn)
            tables = IcebergTables.__table__
            columns = [c.name for c in tables.columns if c.name != "catalog_name"]
            conn.execute(
                insert(tables).from_select(
                    ["catalog_name", *columns],
                    select(literal(name), *[tables.c[c] for c in columns]).where(tables.c.catalog_name == from_ref),
                )
            )
            props = IcebergNamespaceProperties.__table__
            pcols = [c.name for c in props.columns if c.name != "catalog_name"]
            conn.execute(
                insert(props).from_select(
                    ["catalog_name", *pcols],
                    select(literal(name), *[props.c[c] for c in pcols]).where(props.c.catalog_name == from_ref),
                )
            )
            refstore.insert_ref(conn, name, kind, from_ref, fork_seq, base)
            refstore.set_merge_base(conn, name, from_ref, base)
            refstore.add_commit(conn, name, "create", f"{kind} '{name}' created from '{from_ref}'", sorted(base))
            return self._get_ref(conn, name)

    def delete_branch(self, name: str) -> None:
        """Delete a branch's pointers (never its files: other refs may share them; `gc()` reclaims)."""
        if name == MAIN:
            raise ProtectedBranchError("branch 'main' cannot be deleted")
        self._delete_ref(name, "branch")

    def delete_tag(self, name: str) -> None:
        """Delete a tag; its files become collectable by `gc()` unless another ref reaches them."""
        self._delete_ref(name, "tag")

    def _delete_ref(self, name: str, kind: str) -> None:
        with self.engine.begin() as conn:
            ref = self._get_ref(conn, name)
            if ref.kind != kind:
                raise RefNotFound(f"'{name}' is a {ref.kind}, not a {kind}")
            conn.execute(delete(IcebergTables).where(IcebergTables.catalog_name == name))
            conn.execute(delete(IcebergNamespaceProperties).where(IcebergNamespaceProperties.catalog_name == name))
            refstore.delete_ref(conn, name)
            refstore.forget_merge_bases(conn, name)
        with self._lock:
            self._catalogs.pop(name, None)

    def _check_writable(self, conn: Any, branch: str, allow_main: bool) -> Ref:
        ref = self._get_ref(conn, branch)
        if ref.is_tag:
            raise ProtectedBranchError(f"'{branch}' is a tag; tags are immutable, write to a branch instead")
        if branch == MAIN and not allow_main:
            raise ProtectedBranchError(
                "branch 'main' is protected: write to a branch (lh.create_branch('dev')) and merge it, "
                "or pass allow_main=True"
            )
        return ref

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
        schema. Lost commit races are retried on fresh metadata until `commit_timeout`.
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
        table = Table(
            identifier=catalog.identifier_to_tuple(name),
            metadata=pointer.metadata,
            metadata_location=pointer.location,
            io=catalog._load_file_io(pointer.metadata.properties, pointer.location),
            catalog=catalog,
        )
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

    def _scan_args(
        self, name: str, ref: str, columns: Sequence[str] | None, filter: FilterLike
    ) -> tuple[Table, tuple[str, ...], BooleanExpression, BooleanExpression]:
        table = self.table(name, ref)
        schema = table.schema()
        context = f"table '{name}' on '{ref}': "
        selected: tuple[str, ...] = ("*",)
        if columns is not None:
            if isinstance(columns, str):
                columns = [columns]
            known = [f.name for f in schema.fields]
            missing = [c for c in columns if c not in known]
            if missing:
                raise ColumnNotFound(
                    f"{context}no column {', '.join(map(repr, missing))}; columns are: {', '.join(known)}"
                )
            selected = tuple(columns)
        unbound, bound = prepare_filter(schema, filter, context=context)
        return table, selected, unbound, bound

    def read_arrow(
        self,
        name: str,
        *,
        ref: str = MAIN,
        columns: Sequence[str] | None = None,
        filter: FilterLike = None,
        snapshot_id: int | None = None,
    ) -> pa.Table:
        """Read table `name` on `ref` as PyArrow, reading only `columns` and the files/row groups `filter` can match."""
        table, selected, row_filter, _ = self._scan_args(name, ref, columns, filter)
        scan = table.scan(row_filter=row_filter, selected_fields=selected, snapshot_id=snapshot_id)
        return scan.to_arrow()

    def read(
        self,
        name: str,
        *,
        ref: str = MAIN,
        columns: Sequence[str] | None = None,
        filter: FilterLike = None,
        snapshot_id: int | None = None,
    ) -> pl.DataFrame:
        """Read table `name` on `ref` as a Polars DataFrame, with column and filter pushdown."""
        result = pl.from_arrow(self.read_arrow(name, ref=ref, columns=columns, filter=filter, snapshot_id=snapshot_id))
        assert isinstance(result, pl.DataFrame)
        return result

    def scan(
        self,
        name: str,
        *,
        ref: str = MAIN,
        columns: Sequence[str] | None = None,
        filter: FilterLike = None,
        snapshot_id: int | None = None,
    ) -> pl.LazyFrame:
        """A Polars LazyFrame over table `name` on `ref`; Polars pushes projection and filter into the scan."""
        table, selected, _, row_filter = self._scan_args(name, ref, columns, filter)
        if snapshot_id is None and table.current_snapshot() is None:
            return pl.from_arrow(table.scan(selected_fields=selected).to_arrow()).lazy()  # type: ignore[union-attr]
        lazy = pl.scan_iceberg(table, snapshot_id=snapshot_id, storage_options=self._polars_storage_options())
        if not isinstance(row_filter, AlwaysTrue):
            lazy = lazy.filter(to_polars(row_filter))
        if selected != ("*",):
            lazy = lazy.select(list(selected))
        return lazy

    def _polars_storage_options(self) -> dict[str, str] | None:
        """The S3 settings of this lakehouse in Polars' terms, so `AWS_*` variables cannot redirect a scan."""
        props = self.config.properties
        pairs = {
            "aws_endpoint_url": props.get("s3.endpoint"),
            "aws_endpoint_url_s3": props.get("s3.endpoint"),
            "aws_region": props.get("s3.region"),
            "aws_access_key_id": props.get("s3.access-key-id"),
            "aws_secret_access_key": props.get("s3.secret-access-key"),
            "aws_session_token": props.get("s3.session-token"),
        }
        if props.get("s3.endpoint", "").startswith("http://"):
            pairs["aws_allow_http"] = "true"
        options = {key: value for key, value in pairs.items() if value}
        return options or None

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

    def _merge_namespaces(self, conn: Any, source: str, target: str) -> None:
        props = IcebergNamespaceProperties
        existing = {
            (ns, key)
            for ns, key in conn.execute(select(props.namespace, props.property_key).where(props.catalog_name == target))
        }
        rows = conn.execute(
            select(props.namespace, props.property_key, props.property_value).where(props.catalog_name == source)
        ).all()
        for ns, key, value in rows:
            if (ns, key) not in existing:
                conn.execute(
                    insert(props.__table__).values(catalog_name=target, namespace=ns, property_key=key, property_value=value)
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
