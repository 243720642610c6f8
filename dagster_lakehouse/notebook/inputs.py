"""`Input`: a table or another model that a model parameter reads, with columns, filter and the type it arrives as."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pyiceberg.expressions.parser import parse as parse_filter_expression

from dagster_lakehouse.lakehouse.errors import InvalidTableName
from dagster_lakehouse.lakehouse.names import split_table_name
from dagster_lakehouse.notebook.errors import NotebookLoadError

LOAD_AS = ("polars", "lazy", "arrow", "pandas")
LOAD_AS_KEY = "load_as"
"""The `AssetIn` metadata key naming the type an input arrives as (the IO manager honours it over the annotation)."""

LoadAs = Literal["polars", "lazy", "arrow", "pandas"]
_MODEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Input:
    """A lakehouse table (`"namespace.table"`) or another model (`"model_name"`) a model parameter reads.

    `columns` and `filter` are pushed down to the read; `load_as` picks the type the parameter receives (`"polars"`,
    `"lazy"`, `"arrow"` or `"pandas"`) without an annotation. `partition_column`: for a partitioned model reading an
    unpartitioned raw table, the table's column that holds the partition: the run then reads only its partition's rows.
    """

    table: str
    columns: list[str] | None = None
    filter: str | None = None
    partition_column: str | None = None
    load_as: LoadAs | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.table, str) and "." not in self.table and _MODEL_NAME.match(self.table)):
            try:
                split_table_name(self.table)
            except InvalidTableName as exc:
                raise NotebookLoadError(
                    f"Input({self.table!r}): {exc}, or the bare name of another model, e.g. 'trips_and_zones'"
                ) from None
        if self.partition_column is not None and (not isinstance(self.partition_column, str) or not self.partition_column):
            raise NotebookLoadError(
                f"Input({self.table!r}): partition_column must be a column name, not {self.partition_column!r}"
            )
        if self.columns is not None:
            if isinstance(self.columns, str) or not isinstance(self.columns, Sequence):
                raise NotebookLoadError(
                    f"Input({self.table!r}): columns must be a list of column names, "
                    f"not {type(self.columns).__name__} {self.columns!r}"
                )
            bad = [c for c in self.columns if not isinstance(c, str) or not c]
            if bad:
                raise NotebookLoadError(f"Input({self.table!r}): column names must be non-empty strings, got {bad!r}")
            object.__setattr__(self, "columns", list(self.columns))
        if self.filter is not None:
            check_filter(self.filter, f"Input({self.table!r})")
        if self.load_as is not None:
            check_load_as(self.load_as, f"Input({self.table!r}, load_as=...)")

    def __repr__(self) -> str:
        fields = ("columns", "filter", "partition_column", "load_as")
        shown = [repr(self.table), *(f"{f}={getattr(self, f)!r}" for f in fields if getattr(self, f) is not None)]
        return f"Input({', '.join(shown)})"

    def __hash__(self) -> int:
        columns = tuple(self.columns) if self.columns is not None else None
        return hash((self.table, columns, self.filter, self.partition_column, self.load_as))

    @property
    def is_model_name(self) -> bool:
        """True when `table` is a bare model name (`Input("trips_and_zones")`) rather than `namespace.table`."""
        return "." not in self.table

    @property
    def metadata(self) -> dict[str, Any]:
        """The `AssetIn` metadata the IO manager reads: only the keys that were set."""
        metadata: dict[str, Any] = {}
        if self.columns is not None:
            metadata["columns"] = list(self.columns)
        if self.filter is not None:
            metadata["filter"] = self.filter
        if self.partition_column is not None:
            metadata["lakehouse/partition_column"] = self.partition_column
        if self.load_as is not None:
            metadata[LOAD_AS_KEY] = self.load_as
        return metadata


def check_load_as(value: object, where: str) -> None:
    """Refuse a `load_as` that is not one of `LOAD_AS`."""
    if value not in LOAD_AS:
        raise NotebookLoadError(
            f"{where}: load_as={value!r} is not a type an input can arrive as; use one of "
            f"{', '.join(map(repr, LOAD_AS))} (Polars DataFrame, Polars LazyFrame, PyArrow Table, pandas DataFrame)"
        )


def check_filter(value: object, where: str, name: str = "filter") -> None:
    """Refuse a filter that is not a string PyIceberg's filter parser accepts (it is parsed, never evaluated)."""
    if not isinstance(value, str):
        raise NotebookLoadError(
            f"{where}: {name} must be a string such as \"pickup_datetime >= '2024-01-01'\", not {type(value).__name__}"
        )
    try:
        parse_filter_expression(value)
    except Exception as exc:
        raise NotebookLoadError(
            f"{where}: cannot parse {name} {value!r} ({_parse_problem(exc)}); "
            "expected e.g. \"pickup_datetime >= '2024-01-01' and PULocationID in (1, 2)\""
        ) from None


def _parse_problem(exc: Exception) -> str:
    """A short description of a filter parse failure (pyparsing's own message lists its whole grammar)."""
    column = getattr(exc, "col", None)
    text = getattr(exc, "line", None)
    if isinstance(column, int) and isinstance(text, str):
        rest = text[column - 1 :]
        return f"unexpected text at column {column}: {rest!r}" if rest else "unexpected end of the filter"
    message = str(exc)
    return message if len(message) <= 200 else message[:200] + "..."
