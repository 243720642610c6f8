"""Checks that every row a write writes satisfies a rule, on a frame in memory or on a lazy scan of written files.

`check_scope` is the rule of `where=`: a write that replaces the rows a filter matches may only write rows it
matches. `RowRule` is any other such rule (the IO manager's: a partitioned asset writes only its partition's rows).
A write checks data in memory before anything is written, streamed chunks as they arrive, and files Polars' sink
wrote by scanning them before the commit: the rule is the same expression in all three.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import polars as pl
import pyarrow as pa
from pyiceberg.expressions import BooleanExpression
from pyiceberg.io.pyarrow import schema_to_pyarrow
from pyiceberg.schema import Schema

from dagster_lakehouse.lakehouse.errors import InvalidFilter, RowsOutsideFilter
from dagster_lakehouse.lakehouse.filters import FilterLike, prepare_filter, shown, to_polars, top_level_names

__all__ = ["RowRule", "check_scope"]


@dataclass(frozen=True)
class RowRule:
    """Every row must satisfy `expr`; otherwise `error(outside, rows)` is raised (counts of the data checked)."""

    expr: pl.Expr
    error: Callable[[int, int], Exception]

    def check(self, data: pa.Table | pl.LazyFrame, rows: int | None = None) -> None:
        """Raise the rule's error if a row of `data` breaks it; `rows` is what the error counts them among (all of
        `data` unless said)."""
        frame = pl.from_arrow(data) if isinstance(data, pa.Table) else data
        if isinstance(frame, pl.DataFrame):
            outside, rows = frame.filter(~self.expr.fill_null(False)).height, rows or frame.height
        else:
            outside = frame.filter(~self.expr.fill_null(False)).select(pl.len()).collect(engine="streaming").item()
        if outside:
            raise self.error(outside, rows if rows is not None else outside)


def check_scope(
    data: pa.Table | pl.LazyFrame, schema: Schema, expression: FilterLike, *, context: str = "", rows: int | None = None
) -> BooleanExpression:
    """Bind `expression` to `schema` and refuse (`RowsOutsideFilter`) rows of `data` it does not match.

    A write with `where=` replaces the rows the filter matches, so a row outside it would replace rows of another
    partition (or be hidden from the next write of its own). A column the data lacks is null in every row. `data`
    is a table in memory or a lazy scan of `rows` rows. Returns the unbound, normalised filter.
    """
    if isinstance(expression, str) and not expression.strip():
        raise InvalidFilter(f"{context}where= is empty: pass where=None to replace the whole table")
    unbound, bound = prepare_filter(schema, expression, context=context)
    frame = _with_missing_columns(data, schema)
    try:
        outside = frame.filter(~to_polars(bound, schema).fill_null(False))
        if isinstance(outside, pl.LazyFrame):
            count = outside.select(pl.len()).collect(engine="streaming").item()
            first = outside.head(1).collect(engine="streaming")
            total = rows if rows is not None else count
        else:
            count, first, total = outside.height, outside.head(1), frame.height
    except pl.exceptions.PolarsError as exc:
        raise InvalidFilter(
            f"{context}filter {shown(expression)} cannot be checked against the data: {type(exc).__name__}: {exc}"
        ) from exc
    if count:
        names = top_level_names(schema, bound) or first.columns[:5]
        example = {name: first[name][0] for name in names}
        raise RowsOutsideFilter(
            f"{context}{count} of {total} rows are outside where {shown(expression)}, e.g. a row "
            f"with {shown(example)}; a write with where= replaces only the rows its filter matches, so every row it "
            "writes must match it: filter the data, or write those rows with their own where="
        )
    return unbound


def _with_missing_columns(data: pa.Table | pl.LazyFrame, schema: Schema) -> pl.DataFrame | pl.LazyFrame:
    """`data` as Polars, with a null column for each table column it lacks (what those rows will hold)."""
    names = data.schema.names if isinstance(data, pa.Table) else data.collect_schema().names()
    missing = [f for f in schema.fields if f.name not in names]
    if isinstance(data, pa.Table):
        for field in missing:
            data = data.append_column(field.name, pa.nulls(data.num_rows, _arrow_type(field)))
        frame = pl.from_arrow(data)
        assert isinstance(frame, pl.DataFrame)
        return frame
    nulls = [pl.lit(None, dtype=pl.from_arrow(pa.nulls(0, _arrow_type(f))).dtype).alias(f.name) for f in missing]  # type: ignore[union-attr]
    return data.with_columns(nulls) if nulls else data


def _arrow_type(field) -> pa.DataType:
    return schema_to_pyarrow(Schema(field)).field(0).type
