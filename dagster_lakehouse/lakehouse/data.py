"""Conversion of user data (Polars DataFrame/LazyFrame, PyArrow) to the Arrow tables Iceberg writes."""

from __future__ import annotations

from typing import Any

import polars as pl
import pyarrow as pa

from dagster_lakehouse.lakehouse.errors import SchemaMismatch

DataLike = pl.DataFrame | pl.LazyFrame | pa.Table | pa.RecordBatchReader


def to_arrow(data: Any, *, context: str = "") -> pa.Table:
    """Materialise `data` as a PyArrow table with Iceberg-friendly types (microsecond timestamps, plain strings)."""
    if isinstance(data, pl.LazyFrame):
        data = data.collect()
    if isinstance(data, pl.DataFrame):
        table = data.to_arrow()
    elif isinstance(data, pa.Table):
        table = data
    elif isinstance(data, pa.RecordBatchReader):
        table = data.read_all()
    elif type(data).__module__.startswith("pandas"):
        table = pa.Table.from_pandas(data, preserve_index=False)
    else:
        raise TypeError(
            f"{context}cannot write a {type(data).__module__}.{type(data).__name__}: "
            "expected a Polars DataFrame or LazyFrame, or a PyArrow Table"
        )
    return _normalise(table, context)


def _normalise(table: pa.Table, context: str) -> pa.Table:
    fields = [pa.field(f.name, _iceberg_friendly(f.type, f"{context}column {f.name!r}"), True) for f in table.schema]
    target = pa.schema(fields)
    return table if target == table.schema else table.cast(target)


def _iceberg_friendly(arrow_type: pa.DataType, where: str) -> pa.DataType:
    if pa.types.is_timestamp(arrow_type) and arrow_type.unit in ("ns", "ms", "s"):
        return pa.timestamp("us", tz=arrow_type.tz)
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
    if pa.types.is_large_list(arrow_type) or pa.types.is_list(arrow_type):
        return pa.large_list(_iceberg_friendly(arrow_type.value_type, where))
    if pa.types.is_struct(arrow_type):
        return pa.struct([pa.field(f.name, _iceberg_friendly(f.type, where), True) for f in arrow_type])
    return arrow_type
