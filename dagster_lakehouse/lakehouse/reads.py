"""Reads of a `Lakehouse` table: PyArrow, Polars eager and lazy, with column and filter pushdown."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import polars as pl
import pyarrow as pa
from pyiceberg.expressions import AlwaysTrue, BooleanExpression
from pyiceberg.table import Table

from dagster_lakehouse.lakehouse.config import LakehouseConfig
from dagster_lakehouse.lakehouse.errors import ColumnNotFound
from dagster_lakehouse.lakehouse.filters import FilterLike, prepare_filter, to_polars
from dagster_lakehouse.lakehouse.names import MAIN
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
            selected = tuple(dict.fromkeys(columns))  # a column asked for twice is read once, as the CLI does
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
        """Read table `name` on `ref` as PyArrow, reading only `columns` and the files/row groups `filter` can match.

        A transient object-store failure re-runs the whole read, up to `storage_retry_seconds`.
        """

        def read() -> pa.Table:
            table, selected, row_filter, _ = self._scan_args(name, ref, columns, filter)
            return table.scan(row_filter=row_filter, selected_fields=selected, snapshot_id=snapshot_id).to_arrow()

        return self._retrying(f"table '{name}' on '{ref}'", read)

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
        """A Polars LazyFrame over table `name` on `ref`; Polars pushes projection and filter into the scan.

        Loading the table is retried on transient object-store errors; the files are read when the frame is collected.
        """
        table, selected, _, row_filter = self._retrying(
            f"table '{name}' on '{ref}'", lambda: self._scan_args(name, ref, columns, filter)
        )
        if snapshot_id is None and table.current_snapshot() is None:
            return pl.from_arrow(table.scan(selected_fields=selected).to_arrow()).lazy()  # type: ignore[union-attr]
        lazy = pl.scan_iceberg(table, snapshot_id=snapshot_id, storage_options=self._polars_storage_options())
        if not isinstance(row_filter, AlwaysTrue):
            lazy = lazy.filter(to_polars(row_filter, table.schema()))
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
