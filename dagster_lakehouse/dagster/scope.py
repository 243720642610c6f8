"""The rows a partitioned asset owns: Iceberg filters for partition-scoped overwrite and partition reads.

A time partition `[start, end)` on column `c` is `c >= start and c < end`; a static or dynamic partition key `k`
is `c = k`; multi-partitions combine their dimensions with `and`; the branch dimension selects the branch,
not rows. Timestamp columns without a time zone hold wall-clock time in the partitions' time zone; columns with
one are compared as instants; date columns compare the window's dates.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import reduce
from typing import Any, Literal

import dagster as dg
import polars as pl
from pyiceberg.expressions import (
    And,
    BooleanExpression,
    EqualTo,
    GreaterThanOrEqual,
    In,
    LessThan,
    Or,
)
from pyiceberg.types import (
    DateType,
    DoubleType,
    FloatType,
    IcebergType,
    IntegerType,
    LongType,
    StringType,
    TimestampType,
    TimestamptzType,
)

from dagster_lakehouse.dagster.branch import is_branch_partitions
from dagster_lakehouse.dagster.errors import LakehouseIOError
from dagster_lakehouse.dagster.tables import PARTITION_COLUMN_KEY, PARTITION_EXPR_KEY, metadata_value

Kind = Literal["timestamptz", "timestamp", "date", "int", "float", "string"]
KindOf = Callable[[str], "Kind | None"]


@dataclass(frozen=True)
class Condition:
    """`column` in `[lower, upper)` (a time window) or `column in values` (partition keys)."""

    column: str
    kind: Kind
    lower: Any = None
    upper: Any = None
    values: tuple[Any, ...] = ()

    def iceberg(self) -> BooleanExpression:
        """The condition as a PyIceberg expression (temporal values as ISO strings, bound later to the schema)."""
        if self.values:
            literals = [_iceberg_literal(v) for v in self.values]
            return EqualTo(self.column, literals[0]) if len(literals) == 1 else In(self.column, literals)
        return And(
            GreaterThanOrEqual(self.column, _iceberg_literal(self.lower)),
            LessThan(self.column, _iceberg_literal(self.upper)),
        )

    def polars(self) -> pl.Expr:
        """The same condition as a Polars expression, to check the rows a write brings."""
        column = pl.col(self.column)
        if self.kind == "timestamptz":
            column = column.dt.convert_time_zone("UTC")
        if self.values:
            return column.is_in([_polars_value(v) for v in self.values])
        return (column >= pl.lit(_polars_value(self.lower))) & (column < pl.lit(_polars_value(self.upper)))

    def text(self) -> str:
        """The condition in the filter-string syntax, for logs and error messages."""
        if self.values:
            if len(self.values) == 1:
                return f"{self.column} = {_text_literal(self.values[0])}"
            return f"{self.column} in ({', '.join(_text_literal(v) for v in self.values)})"
        return f"{self.column} >= {_text_literal(self.lower)} and {self.column} < {_text_literal(self.upper)}"


@dataclass(frozen=True)
class Scope:
    """Rows selected by a disjunction of conjunctions of conditions (one conjunction per partition key)."""

    terms: tuple[tuple[Condition, ...], ...]

    def iceberg(self) -> BooleanExpression:
        """The scope as one PyIceberg expression."""
        return reduce(Or, [reduce(And, [c.iceberg() for c in term]) for term in self.terms])

    def polars(self) -> pl.Expr:
        """The scope as one Polars expression (nulls count as outside)."""
        expr = reduce(lambda a, b: a | b, [reduce(lambda a, b: a & b, [c.polars() for c in t]) for t in self.terms])
        return expr.fill_null(False)

    def text(self) -> str:
        """The scope in filter-string syntax."""
        texts = [" and ".join(c.text() for c in term) for term in self.terms]
        return texts[0] if len(texts) == 1 else " or ".join(f"({t})" for t in texts)


def _iceberg_literal(value: Any) -> Any:
    return value.isoformat() if isinstance(value, (date, datetime)) else value


def _polars_value(value: Any) -> Any:
    return value.astimezone(UTC) if isinstance(value, datetime) and value.tzinfo else value


def _text_literal(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    text = _iceberg_literal(value)
    return "'" + str(text).replace("'", "''") + "'"


def polars_kind(dtype: pl.DataType) -> Kind | None:
    """The comparison kind of a Polars column type."""
    if isinstance(dtype, pl.Datetime):
        return "timestamptz" if dtype.time_zone else "timestamp"
    if dtype == pl.Date:
        return "date"
    if dtype.is_integer():
        return "int"
    if dtype.is_float():
        return "float"
    if dtype in (pl.Utf8, pl.Categorical) or isinstance(dtype, pl.Enum):
        return "string"
    return None


def iceberg_kind(field_type: IcebergType) -> Kind | None:
    """The comparison kind of an Iceberg column type."""
    kinds: dict[type, Kind] = {
        TimestamptzType: "timestamptz",
        TimestampType: "timestamp",
        DateType: "date",
        IntegerType: "int",
        LongType: "int",
        FloatType: "float",
        DoubleType: "float",
        StringType: "string",
    }
    return kinds.get(type(field_type))


def data_dimensions(partitions_def: dg.PartitionsDefinition | None) -> list[tuple[str | None, dg.PartitionsDefinition]]:
    """The dimensions that select rows: all but the branch dimension (`None` names a one-dimensional definition)."""
    if partitions_def is None or is_branch_partitions(partitions_def):
        return []
    if isinstance(partitions_def, dg.MultiPartitionsDefinition):
        return [
            (d.name, d.partitions_def)
            for d in partitions_def.partitions_defs
            if not is_branch_partitions(d.partitions_def)
        ]
    return [(None, partitions_def)]


def partition_columns(
    metadata: Mapping[str, Any] | None, partitions_def: dg.PartitionsDefinition | None, label: str
) -> dict[str | None, str]:
    """Column per row-selecting dimension, from metadata `lakehouse/partition_column` (or `partition_expr`)."""
    dimensions = data_dimensions(partitions_def)
    if not dimensions:
        return {}
    value = metadata_value(metadata, PARTITION_COLUMN_KEY, PARTITION_EXPR_KEY)
    names = [name for name, _ in dimensions]
    hint = f"set asset metadata {PARTITION_COLUMN_KEY!r} to the column that holds the partition" + (
        f" (a dict of dimension -> column for the dimensions {', '.join(map(str, names))})" if names != [None] else ""
    )
    if value is None:
        raise LakehouseIOError(
            f"{label} is partitioned ({type(partitions_def).__name__}) but names no partition column: {hint}"
        )
    if isinstance(value, str):
        if len(dimensions) != 1:
            raise LakehouseIOError(f"{label}: one partition column {value!r} for several dimensions: {hint}")
        return {names[0]: value}
    if isinstance(value, Mapping):
        missing = [n for n in names if n not in value]
        if missing:
            raise LakehouseIOError(f"{label}: no partition column for dimension {', '.join(map(str, missing))}: {hint}")
        return {n: str(value[n]) for n in names}
    raise LakehouseIOError(f"{label}: {PARTITION_COLUMN_KEY!r} must be a column name or a dict, not {value!r}")


def build_scope(
    partitions_def: dg.PartitionsDefinition,
    keys: Sequence[str],
    columns: Mapping[str | None, str],
    kind_of: KindOf,
    label: str,
) -> Scope | None:
    """The rows of partition `keys`; None when the definition has no row-selecting dimension."""
    dimensions = data_dimensions(partitions_def)
    if not dimensions or not keys:
        return None
    kinds = {name: _kind(columns[name], kind_of, label) for name, _ in dimensions}
    if len(dimensions) == 1 and dimensions[0][0] is None:
        _, sub = dimensions[0]
        column, kind = columns[None], kinds[None]
        if isinstance(sub, dg.TimeWindowPartitionsDefinition):
            windows = _merged_windows([sub.time_window_for_partition_key(k) for k in keys])
            return Scope(tuple((_window_condition(column, kind, w, sub, label),) for w in windows))
        values = tuple(dict.fromkeys(_key_value(column, kind, str(k), label) for k in keys))
        return Scope(((Condition(column, kind, values=values),),))
    assert isinstance(partitions_def, dg.MultiPartitionsDefinition)
    terms: dict[tuple[Condition, ...], None] = {}
    for key in keys:
        multi = key if isinstance(key, dg.MultiPartitionKey) else partitions_def.get_partition_key_from_str(str(key))
        term = []
        for name, sub in dimensions:
            assert name is not None
            sub_key = multi.keys_by_dimension[name]
            column, kind = columns[name], kinds[name]
            if isinstance(sub, dg.TimeWindowPartitionsDefinition):
                term.append(_window_condition(column, kind, sub.time_window_for_partition_key(sub_key), sub, label))
            else:
                term.append(Condition(column, kind, values=(_key_value(column, kind, sub_key, label),)))
        terms[tuple(term)] = None
    return Scope(tuple(terms))


def _kind(column: str, kind_of: KindOf, label: str) -> Kind:
    kind = kind_of(column)
    if kind is None:
        raise LakehouseIOError(
            f"{label}: partition column {column!r} has a type partitions cannot select on "
            "(use a timestamp, date, string or integer column)"
        )
    return kind


def _merged_windows(windows: list[dg.TimeWindow]) -> list[tuple[datetime, datetime]]:
    merged: list[tuple[datetime, datetime]] = []
    for window in sorted(windows, key=lambda w: w.start):
        if merged and window.start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], window.end))
        else:
            merged.append((window.start, window.end))
    return merged


def _window_condition(
    column: str,
    kind: Kind,
    window: dg.TimeWindow | tuple[datetime, datetime],
    sub: dg.TimeWindowPartitionsDefinition,
    label: str,
) -> Condition:
    start, end = (window.start, window.end) if isinstance(window, dg.TimeWindow) else window
    if kind == "timestamptz":
        return Condition(column, kind, lower=start.astimezone(UTC), upper=end.astimezone(UTC))
    if kind == "timestamp":
        return Condition(column, kind, lower=start.replace(tzinfo=None), upper=end.replace(tzinfo=None))
    if kind == "date":
        return Condition(column, kind, lower=start.date(), upper=end.date())
    if kind == "string":
        return Condition(column, kind, lower=start.strftime(sub.fmt), upper=end.strftime(sub.fmt))
    raise LakehouseIOError(f"{label}: time partitions need a timestamp, date or string column; {column!r} is {kind}")


def _key_value(column: str, kind: Kind, key: str, label: str) -> Any:
    try:
        if kind == "int":
            return int(key)
        if kind == "float":
            return float(key)
        if kind == "date":
            return date.fromisoformat(key)
        if kind in ("timestamp", "timestamptz"):
            value = datetime.fromisoformat(key)
            if kind == "timestamptz":
                return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
            return value.replace(tzinfo=None)
    except ValueError:
        raise LakehouseIOError(f"{label}: partition key {key!r} is not a valid {kind} for column {column!r}") from None
    return key
