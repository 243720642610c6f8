"""One handler per kind of frame the IO manager and isolated model runs read and write (Dagster's `TypeHandler` idea).

Free of Dagster, so a model running in its notebook's own environment reads and writes exactly as in-process.

A handler says how an input of its kind is read (which `Lakehouse` method, then any conversion) and how an output of
its kind becomes what `Lakehouse.write` takes. Inputs pick theirs by input metadata `load_as`, else by the
parameter's annotation, else `polars`; outputs by the value returned. pandas is optional: without it, a pandas input
or output fails with the `pip install` that adds it.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from typing import Any, ClassVar

import polars as pl
import pyarrow as pa
from pyiceberg.table import Table

from dagster_lakehouse.lakehouse.core import Lakehouse
from dagster_lakehouse.lakehouse.errors import LakehouseIOError
from dagster_lakehouse.lakehouse.filters import FilterLike

__all__ = ["HANDLERS", "LOAD_AS_KEY", "FrameHandler", "input_handler", "output_handler"]

LOAD_AS_KEY = "load_as"
PANDAS_INSTALL = "pip install 'dagster-lakehouse[pandas]'"


class FrameHandler:
    """How one kind of frame is read from a lakehouse table and written to one."""

    name: ClassVar[str]
    """The input metadata `load_as` value that asks for this kind."""
    label: ClassVar[str]
    """How users spell the type in an annotation, for messages."""
    reads_as: ClassVar[type] = pl.DataFrame
    """What the `Lakehouse` read returns before `from_read` (`pl.DataFrame`, `pl.LazyFrame` or `pa.Table`)."""
    method: ClassVar[str] = "read"

    def is_type(self, annotation: Any) -> bool:
        """Whether an input annotated `annotation` asks for this kind."""
        return annotation is self.reads_as

    def is_value(self, value: Any) -> bool:
        """Whether this handler writes `value`."""
        return isinstance(value, self.reads_as)

    def read(
        self,
        lakehouse: Lakehouse,
        name: str,
        ref: str,
        *,
        loaded: Table | None,
        columns: Sequence[str] | None,
        filter: FilterLike,
        where: str,
    ) -> Any:
        """Table `name` on `ref` as this kind, with `columns` and `filter` pushed down (`loaded`: the table, when the
        caller loaded it already)."""
        self.check_available(where)
        if loaded is None:
            frame = getattr(lakehouse, self.method)(name, ref=ref, columns=columns, filter=filter)
        else:
            frame = lakehouse.read_table(loaded, name, ref, kind=self.reads_as, columns=columns, filter=filter)
        return self.from_read(frame)

    def from_read(self, frame: Any) -> Any:
        """The value handed to the asset, from what the `Lakehouse` read returned."""
        return frame

    def to_write(self, value: Any, where: str) -> Any:
        """`value` as `Lakehouse.write` takes it (a LazyFrame stays lazy: it is streamed into the table)."""
        return value

    def check_available(self, where: str) -> None:
        """Refuse, naming the input or asset, when the library of this kind is not installed."""


class PolarsFrames(FrameHandler):
    """`pl.DataFrame`: read whole into memory; the default of unannotated inputs."""

    name, label = "polars", "pl.DataFrame"


class LazyFrames(FrameHandler):
    """`pl.LazyFrame`: a lazy scan of the table's Parquet files in; streamed by Polars' engine out."""

    name, label, reads_as, method = "lazy", "pl.LazyFrame", pl.LazyFrame, "scan"


class ArrowTables(FrameHandler):
    """`pa.Table` (and, as outputs, `pa.RecordBatchReader`, read batch by batch)."""

    name, label, reads_as, method = "arrow", "pa.Table", pa.Table, "read_arrow"

    def is_value(self, value: Any) -> bool:
        return isinstance(value, pa.Table | pa.RecordBatchReader)


class PandasFrames(FrameHandler):
    """`pd.DataFrame`, through Arrow: read as a PyArrow table then `to_pandas()`; written with
    `pa.Table.from_pandas(preserve_index=False)`, refusing an index that holds data (a named index or a MultiIndex)."""

    name, label, reads_as, method = "pandas", "pd.DataFrame", pa.Table, "read_arrow"

    def is_type(self, annotation: Any) -> bool:
        return _is_pandas(annotation) and getattr(annotation, "__name__", "") == "DataFrame"

    def is_value(self, value: Any) -> bool:
        return _is_pandas(type(value))

    def from_read(self, frame: Any) -> Any:
        return frame.to_pandas()

    def check_available(self, where: str) -> None:
        try:
            import pandas  # noqa: F401
        except ImportError:
            raise LakehouseIOError(f"{where}: pandas frames need pandas, which is not installed: {PANDAS_INSTALL}") from None

    def to_write(self, value: Any, where: str) -> pa.Table:
        import pandas as pd

        if isinstance(value, pd.Series):
            raise LakehouseIOError(
                f"{where}: returned a pandas Series; return a DataFrame (`series.to_frame()`, or `.reset_index()` "
                "after a groupby)"
            )
        if not isinstance(value, pd.DataFrame):
            raise LakehouseIOError(f"{where}: cannot write a {type(value).__module__}.{type(value).__name__}")
        names = [n for n in value.index.names if n is not None]
        if names or isinstance(value.index, pd.MultiIndex):
            raise LakehouseIOError(
                f"{where}: the pandas DataFrame has an index holding data ({', '.join(map(repr, names)) or 'a MultiIndex'}), "
                "which would be lost: call `.reset_index()` to keep it as columns, or `.reset_index(drop=True)` to drop it"
            )
        try:
            return pa.Table.from_pandas(value, preserve_index=False)
        except (pa.ArrowException, ValueError, TypeError) as exc:
            raise LakehouseIOError(
                f"{where}: cannot convert the pandas DataFrame to Arrow: {exc}; give the column one type "
                "(e.g. `df[col] = df[col].astype(str)`)"
            ) from exc


HANDLERS: dict[str, FrameHandler] = {h.name: h for h in (PolarsFrames(), LazyFrames(), ArrowTables(), PandasFrames())}
"""The handlers by their `load_as` name: `polars` (the default), `lazy`, `arrow`, `pandas`."""


def _is_pandas(kind: Any) -> bool:
    return isinstance(kind, type) and kind.__module__.split(".", 1)[0] == "pandas"


def _annotated(annotation: Any) -> FrameHandler | None:
    """The handler an annotation asks for; None when it asks for nothing (no annotation, `Any`, `object`)."""
    if annotation in (None, typing.Any, object):
        return None
    for handler in HANDLERS.values():
        if handler.is_type(annotation):
            return handler
    raise LakehouseIOError(f"cannot load an input annotated {annotation!r}")


def input_handler(load_as: Any, annotation: Any, where: str) -> FrameHandler:
    """The handler of an input: metadata `load_as` if given (it must agree with a frame annotation), else the
    annotation's, else `polars`. `where` names the input (asset and parameter) in errors."""
    allowed = ", ".join(map(repr, HANDLERS))
    try:
        annotated = _annotated(annotation)
    except LakehouseIOError:
        if load_as is not None:
            raise LakehouseIOError(
                f"{where}: annotated {annotation!r} but input metadata {LOAD_AS_KEY}={load_as!r}; drop the annotation "
                f"or annotate it as one of {', '.join(h.label for h in HANDLERS.values())}"
            ) from None
        raise LakehouseIOError(
            f"{where}: cannot load an input annotated {annotation!r}; annotate it as "
            f"{', '.join(h.label for h in HANDLERS.values())}, or set input metadata {LOAD_AS_KEY} to one of {allowed}"
        ) from None
    if load_as is None:
        return annotated or HANDLERS["polars"]
    handler = HANDLERS.get(load_as) if isinstance(load_as, str) else None
    if handler is None:
        raise LakehouseIOError(f"{where}: input metadata {LOAD_AS_KEY}={load_as!r} is not one of {allowed}")
    if annotated is not None and annotated is not handler:
        raise LakehouseIOError(
            f"{where}: annotated {annotated.label} but input metadata {LOAD_AS_KEY}={load_as!r} asks for "
            f"{handler.label}; make them agree, or drop one of them"
        )
    return handler


def output_handler(value: Any, where: str) -> FrameHandler:
    """The handler that writes `value`; refuses, naming the asset, a value no handler writes."""
    for handler in HANDLERS.values():
        if handler.is_value(value):
            return handler
    raise LakehouseIOError(
        f"{where}: cannot write a {type(value).__module__}.{type(value).__name__}: return a Polars DataFrame or "
        "LazyFrame, a PyArrow Table or RecordBatchReader, or a pandas DataFrame"
    )
