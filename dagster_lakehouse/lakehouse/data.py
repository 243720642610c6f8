"""Conversion of user data (Polars DataFrame/LazyFrame, PyArrow) to the Arrow tables Iceberg writes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import polars as pl
import pyarrow as pa
from pyiceberg.io.pyarrow import UTC_ALIASES, UnsupportedPyArrowTypeException

from dagster_lakehouse.lakehouse.errors import InvalidData, SchemaMismatch
from dagster_lakehouse.lakehouse.schema import iceberg_schema

DataLike = pl.DataFrame | pl.LazyFrame | pa.Table | pa.RecordBatchReader


def to_arrow(data: Any, *, context: str = "") -> pa.Table:
    """Materialise `data` as a PyArrow table with Iceberg-friendly types (microsecond timestamps, plain strings).

    Refuses (`InvalidData`, `SchemaMismatch`) what no Iceberg table can hold, before anything is written: no
    columns, empty or duplicate names, types Iceberg lacks, values out of range of the type they are stored as.
    """
    try:
        table = _materialise(data, context)
    except (pl.exceptions.PolarsError, pa.ArrowException) as exc:
        raise InvalidData(f"{context}cannot read the data to write: {type(exc).__name__}: {exc}") from exc
    if table.num_columns == 0:
        raise InvalidData(f"{context}the data has no columns; a table needs at least one")
    _check_names(table.schema, f"{context}the data", "")
    table = normalise(table, context)
    try:
        iceberg_schema(table.schema)
    except (UnsupportedPyArrowTypeException, ValueError, TypeError) as exc:
        raise SchemaMismatch(f"{context}{exc}; Iceberg has no such type: cast the column first") from exc
    return table


def _materialise(data: Any, context: str) -> pa.Table:
    if isinstance(data, pl.LazyFrame):
        data = data.collect()
    if isinstance(data, pl.DataFrame):
        return data.to_arrow()
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatchReader):
        return data.read_all()
    if type(data).__module__.startswith("pandas"):
        return pa.Table.from_pandas(data, preserve_index=False)
    raise InvalidData(
        f"{context}cannot write a {type(data).__module__}.{type(data).__name__}: "
        "expected a Polars DataFrame or LazyFrame, or a PyArrow Table"
    )


def _check_names(fields: Iterable[pa.Field], what: str, path: str) -> None:
    """Refuse empty or duplicate column names, at the top level and inside structs (Iceberg needs them unique)."""
    fields = list(fields)
    names = [f.name for f in fields]
    if any(not name for name in names):
        raise InvalidData(f"{what} has a column with an empty name{_inside(path)}; name every column")
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise InvalidData(
            f"{what} has more than one column named {', '.join(map(repr, duplicates))}{_inside(path)}; "
            "column names must be unique"
        )
    for f in fields:
        for child, child_path in _children(f.type, f"{path}{f.name}"):
            _check_names(child, what, child_path)


def _children(arrow_type: pa.DataType, path: str) -> list[tuple[list[pa.Field], str]]:
    if pa.types.is_struct(arrow_type):
        return [([arrow_type.field(i) for i in range(arrow_type.num_fields)], f"{path}.")]
    if pa.types.is_map(arrow_type):
        return [([arrow_type.key_field, arrow_type.item_field], f"{path}.")]
    if hasattr(arrow_type, "value_field"):  # every kind of list
        return [([arrow_type.value_field], f"{path}.")]
    return []


def _inside(path: str) -> str:
    return f" inside column '{path.rstrip('.')}'" if path else ""


def normalise(table: pa.Table, context: str) -> pa.Table:
    """`table` with the types Iceberg stores (microsecond timestamps, signed ints, ...), refusing values they cannot hold."""
    fields = [pa.field(f.name, _iceberg_friendly(f.type, f"{context}column {f.name!r}"), True) for f in table.schema]
    target = pa.schema(fields)
    if target == table.schema:
        return table
    columns = [_cast(table.column(i), f, table.schema.field(i).type, context) for i, f in enumerate(fields)]
    return pa.Table.from_arrays(columns, schema=target)


def _cast(column: pa.ChunkedArray, target: pa.Field, source: pa.DataType, context: str) -> pa.ChunkedArray:
    """Cast one column, refusing values the Iceberg type cannot hold (nanoseconds, uint64 above int64's range)."""
    if column.type == target.type:
        return column
    try:
        return column.cast(target.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise SchemaMismatch(
            f"{context}column {target.name!r} ({source}) holds values Iceberg cannot store as {target.type}: "
            f"{str(exc).splitlines()[0]}; cast or round the column first"
        ) from exc


def _iceberg_friendly(arrow_type: pa.DataType, where: str) -> pa.DataType:
    if pa.types.is_timestamp(arrow_type) and arrow_type.tz is not None and arrow_type.tz not in UTC_ALIASES:
        return pa.timestamp("us", tz="UTC")  # Iceberg's timestamptz holds instants in UTC: the same values
    if pa.types.is_timestamp(arrow_type) and arrow_type.unit in ("ns", "ms", "s"):
        return pa.timestamp("us", tz=arrow_type.tz)
    if pa.types.is_date64(arrow_type):
        return pa.date32()
    if pa.types.is_time(arrow_type) and arrow_type != pa.time64("us"):
        return pa.time64("us")
    if pa.types.is_decimal(arrow_type) and arrow_type.precision <= 38 and not pa.types.is_decimal128(arrow_type):
        return pa.decimal128(arrow_type.precision, arrow_type.scale)
    if pa.types.is_map(arrow_type):
        key = _iceberg_friendly(arrow_type.key_type, where)
        return pa.map_(key, pa.field("value", _iceberg_friendly(arrow_type.item_type, where), True))
    if pa.types.is_unsigned_integer(arrow_type):  # Iceberg has only signed ints: widen so every value fits
        return pa.int32() if arrow_type.bit_width <= 16 else pa.int64()
    if pa.types.is_dictionary(arrow_type):
        return _iceberg_friendly(arrow_type.value_type, where)
    if pa.types.is_string_view(arrow_type):
        return pa.large_string()
    if pa.types.is_binary_view(arrow_type):
        return pa.large_binary()
    if pa.types.is_null(arrow_type):
        raise SchemaMismatch(f"{where} holds only nulls and has no type: cast it (e.g. pl.lit(None, dtype=pl.Utf8))")
    if hasattr(arrow_type, "value_field") and not pa.types.is_dictionary(arrow_type):  # list, large, fixed, views
        return pa.large_list(_iceberg_friendly(arrow_type.value_type, where))
    if pa.types.is_struct(arrow_type):
        if arrow_type.num_fields == 0:
            raise SchemaMismatch(f"{where} is a struct with no fields, which Iceberg cannot store")
        return pa.struct([pa.field(f.name, _iceberg_friendly(f.type, where), True) for f in arrow_type])
    return arrow_type
