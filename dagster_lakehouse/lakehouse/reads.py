"""Reads of a `Lakehouse` table: PyArrow, Polars eager and lazy, with column and filter pushdown.

Every read asks the catalog which metadata file is current (never stale), loads the table once, plans the files
its filter can match from cached manifests (`read_plan`), and reads them with Polars' native Parquet reader: a
`LazyFrame` streams those files, a `DataFrame` collects it, a PyArrow table converts the collected frame.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import polars as pl
import pyarrow as pa
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import schema_to_pyarrow
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

from dagster_lakehouse.lakehouse import corruption
from dagster_lakehouse.lakehouse.config import LakehouseConfig
from dagster_lakehouse.lakehouse.errors import ColumnNotFound, LakehouseError
from dagster_lakehouse.lakehouse.filters import FilterLike, prepare_filter, to_polars
from dagster_lakehouse.lakehouse.names import MAIN
from dagster_lakehouse.lakehouse.read_plan import lazy_scan, plan_read
from dagster_lakehouse.lakehouse.storage import retrying

T = TypeVar("T")


class TableReads:
    """The read half of `Lakehouse` (mixed into it): every read names a ref, `main` by default."""

    config: LakehouseConfig

    if TYPE_CHECKING:

        def table(self, name: str, ref: str = MAIN) -> Table: ...  # defined by Lakehouse

    def _retrying(self, what: str, fn: Callable[[], T]) -> T:
        """`fn()`, retrying transient object-store errors up to the configured bound, then `StorageUnavailable`."""
        return retrying(what, fn, self.config.storage_retry_seconds, self.config.warehouse)

    def _on_table(self, name: str, ref: str, fn: Callable[[Table], T]) -> T:
        """`fn` on table `name` as loaded on `ref`; a failure that a damaged file of it explains is `CorruptTableFile`."""
        table = self.table(name, ref)
        with corruption.named(name, lambda: [(ref, table)]):
            return fn(table)

    def read_arrow(
        self,
        name: str,
        *,
        ref: str = MAIN,
        columns: Sequence[str] | None = None,
        filter: FilterLike = None,
        snapshot_id: int | None = None,
    ) -> pa.Table:
        """Read table `name` on `ref` as PyArrow, reading only `columns` and the files/row groups `filter` can match.

        Columns come in the order `columns` names them (else table order), typed as PyIceberg types them. A transient object-store failure re-runs the
        whole read, up to `storage_retry_seconds`.
        """
        return self._retrying(
            f"table '{name}' on '{ref}'",
            lambda: self._on_table(name, ref, lambda t: _to_arrow(*self._scan_table(t, name, ref, columns, filter, snapshot_id))),
        )

    def read(
        self,
        name: str,
        *,
        ref: str = MAIN,
        columns: Sequence[str] | None = None,
        filter: FilterLike = None,
        snapshot_id: int | None = None,
    ) -> pl.DataFrame:
        """Read table `name` on `ref` as a Polars DataFrame (columns in the order asked for), with column and filter
        pushdown."""
        return self._retrying(
            f"table '{name}' on '{ref}'",
            lambda: self._on_table(name, ref, lambda t: self._scan_table(t, name, ref, columns, filter, snapshot_id)[0].collect()),
        )

    def scan(
        self,
        name: str,
        *,
        ref: str = MAIN,
        columns: Sequence[str] | None = None,
        filter: FilterLike = None,
        snapshot_id: int | None = None,
    ) -> pl.LazyFrame:
        """A Polars LazyFrame over the files of table `name` on `ref` that `filter` can match (columns in the order
        asked for); Polars pushes the projection and the filter into its Parquet scan, and streams it.

        Loading the table and planning are retried on transient object-store errors; the files are read when the
        frame is collected.
        """
        return self._retrying(
            f"table '{name}' on '{ref}'",
            lambda: self._on_table(name, ref, lambda t: self._scan_table(t, name, ref, columns, filter, snapshot_id)[0]),
        )

    def read_table(
        self,
        table: Table,
        name: str,
        ref: str,
        *,
        kind: type = pl.DataFrame,
        columns: Sequence[str] | None = None,
        filter: FilterLike = None,
    ) -> pl.DataFrame | pl.LazyFrame | pa.Table:
        """Read `table`, already loaded by `table(name, ref)`, as `kind` (`pl.DataFrame`, `pl.LazyFrame` or `pa.Table`):
        what `read`, `scan` and `read_arrow` return, without loading the table again.

        For callers that needed the table first (the IO manager builds a partition filter from its schema).
        """
        lazy = kind is pl.LazyFrame

        def read() -> pl.DataFrame | pl.LazyFrame | pa.Table:
            with corruption.named(name, lambda: [(ref, table)]):
                frame, schema = self._scan_table(table, name, ref, columns, filter, None)
                if lazy:
                    return frame
                return _to_arrow(frame, schema) if kind is pa.Table else frame.collect()

        return self._retrying(f"table '{name}' on '{ref}'", read)

    def _scan_table(
        self,
        table: Table,
        name: str,
        ref: str,
        columns: Sequence[str] | None,
        filter: FilterLike,
        snapshot_id: int | None,
    ) -> tuple[pl.LazyFrame, Schema]:
        """The lazy read of `table` (table `name` on `ref`) with the filter and projection pushed into the scan of the
        planned files, and the Iceberg schema of what it returns (columns in the order `columns` names them)."""
        context = f"table '{name}' on '{ref}': "
        snapshot = _snapshot(table, snapshot_id, name, ref)
        schema = _scanned_schema(table, snapshot)
        selected = _selected(schema, columns, context)
        unbound, bound = prepare_filter(schema, filter, context=context)
        plan = plan_read(table, snapshot, schema, unbound)
        lazy = lazy_scan(plan, self._polars_storage_options())
        if not isinstance(bound, AlwaysTrue):
            lazy = lazy.filter(to_polars(bound, schema))
        if selected is None:
            return lazy, schema
        # a select only reorders column references (no copy); `Schema.select` would keep table order
        fields = [schema.find_field(c) for c in selected]
        return lazy.select(selected), Schema(*fields, schema_id=schema.schema_id)

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


def _to_arrow(lazy: pl.LazyFrame, schema: Schema) -> pa.Table:
    """Collect `lazy` and type it as PyIceberg's Arrow reader does for `schema` (uuid, fixed, time in us, ...)."""
    return lazy.collect().to_arrow().cast(schema_to_pyarrow(schema, include_field_ids=False))


def _snapshot(table: Table, snapshot_id: int | None, name: str, ref: str) -> Snapshot | None:
    """The snapshot a read sees: `snapshot_id`'s, else the current one (None for a table without data)."""
    if snapshot_id is None:
        return table.current_snapshot()
    snapshot = table.snapshot_by_id(snapshot_id)
    if snapshot is None:
        known = ", ".join(str(s.snapshot_id) for s in table.snapshots()[-5:]) or "none"
        raise LakehouseError(f"table '{name}' on '{ref}' has no snapshot {snapshot_id} (latest: {known})")
    return snapshot


def _scanned_schema(table: Table, snapshot: Snapshot | None) -> Schema:
    """The schema of the data a read returns: a past snapshot's own, else the table's current schema."""
    if snapshot is not None and snapshot.schema_id is not None and snapshot.snapshot_id != table.metadata.current_snapshot_id:
        return table.schemas().get(snapshot.schema_id, table.schema())
    return table.schema()


def _selected(schema: Schema, columns: Sequence[str] | None, context: str) -> list[str] | None:
    """The columns to return, in the order asked for (a column asked for twice comes once, where first named, as the
    CLI does), or None for all."""
    if columns is None:
        return None
    if isinstance(columns, str):
        columns = [columns]
    known = [f.name for f in schema.fields]
    missing = [c for c in columns if c not in known]
    if missing:
        raise ColumnNotFound(f"{context}no column {', '.join(map(repr, missing))}; columns are: {', '.join(known)}")
    return list(dict.fromkeys(columns))

