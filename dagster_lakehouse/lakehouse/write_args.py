"""A write's arguments checked before anything is written: partition columns, commit-log text, snapshot properties."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from dagster_lakehouse.lakehouse.errors import ColumnNotFound, InvalidWrite

__all__ = ["check_text", "partition_columns", "check_snapshot_properties"]


def partition_columns(schema: pa.Schema, partition_by: Sequence[str] | None, context: str) -> list[str] | None:
    """`partition_by` as a list, each a distinct top-level column of the data (of `schema`) with a primitive type."""
    if partition_by is None:
        return None
    columns = [partition_by] if isinstance(partition_by, str) else list(partition_by)
    for column in columns:
        if not isinstance(column, str) or column not in schema.names:
            raise ColumnNotFound(
                f"{context}partition_by names {column!r}, which is not a column of the data; "
                f"columns are: {', '.join(schema.names)}"
            )
        if pa.types.is_nested(schema.field(column).type):
            raise InvalidWrite(f"{context}cannot partition by column {column!r}: it is {schema.field(column).type}")
    if len(set(columns)) != len(columns):
        raise InvalidWrite(f"{context}partition_by names a column twice: {columns}")
    return columns


def check_text(value: str | None, what: str, limit: int | None, context: str) -> None:
    """Refuse a commit-log field the catalog database cannot store (NUL characters, too long), before any write."""
    if value is None:
        return
    if not isinstance(value, str) or "\x00" in value or (limit is not None and len(value) > limit):
        most = f" of at most {limit} characters" if limit else ""
        raise InvalidWrite(f"{context}{what} must be a string{most} without NUL characters, not {value!r:.80}")


def check_snapshot_properties(properties: dict[str, str] | None, context: str) -> dict[str, str]:
    """`snapshot_properties` as text; keys must be non-empty strings."""
    if properties is None:
        return {}
    if not isinstance(properties, dict) or not all(isinstance(k, str) and k for k in properties):
        raise InvalidWrite(f"{context}snapshot_properties must be a dict with non-empty string keys, not {properties!r}")
    return {k: str(v) for k, v in properties.items()}
