"""Partition folders the warehouse cannot hold, refused by name before a data file is written.

PyIceberg puts every partition value in a folder name (`column=value`, named by the table's location provider; on a
local warehouse the value reaches the disk decoded, `locations`). A local file system holds at most `NAME_MAX` bytes
(255 on most) per name and `PATH_MAX` per path; an object store (S3, GCS) 1024 bytes per key. Rows that would need a
longer name refuse the whole write with `PartitionPathTooLong`, naming the table, column, value and limit, before any
of its files exists, so nothing is committed and nothing is left to collect.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

import pyarrow as pa
from pyiceberg.io.pyarrow import _get_field_from_arrow_table
from pyiceberg.partitioning import PartitionFieldValue, PartitionKey, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table.locations import load_location_provider
from pyiceberg.table.metadata import TableMetadata

from dagster_lakehouse.lakehouse.errors import PartitionPathTooLong
from dagster_lakehouse.lakehouse.locations import is_local, native_path

__all__ = ["OBJECT_KEY_MAX", "check_partition_paths"]

OBJECT_KEY_MAX = 1024
"""Bytes of an object key on S3 and GCS."""

_OBJECT_STORES = ("s3", "s3a", "s3n", "gs", "gcs")
_SAMPLE_FILE = f"00000-9999999-{uuid.UUID(int=0)}.parquet"
"""As long as the name of any data file a write makes (`<task>-<counter>-<write uuid>.parquet`)."""


@dataclass(frozen=True)
class _Limits:
    """What the store under a table holds: bytes per name (None: no such limit) and per path or key."""

    store: str
    name: int | None
    path: int


def check_partition_paths(metadata: TableMetadata, rows: pa.Table, *, table: str, branch: str) -> None:
    """Raise `PartitionPathTooLong` if a row of `rows` (columns named as the table's) belongs in a partition of the
    table `metadata` describes whose data files the store cannot name."""
    spec = metadata.spec()
    if spec.is_unpartitioned() or not rows.num_rows:
        return
    limits = _limits(metadata.location)
    if limits is None:
        return
    schema = metadata.schema()
    provider = load_location_provider(table_location=metadata.location, table_properties=metadata.properties)
    for key in _partition_keys(spec, schema, rows):
        location = provider.new_data_location(data_file_name=_SAMPLE_FILE, partition_key=key)
        path = native_path(location) if is_local(location) else location.split("://", 1)[-1].partition("/")[2]
        names = path.split("/")[-len(spec.fields) - 1 : -1]  # the partition folders, one per field
        sizes = [len(os.fsencode(name)) for name in names]
        if limits.name is not None and max(sizes) > limits.name:
            field = sizes.index(max(sizes))
            _refuse(
                table, branch, spec, schema, key, field, names[field], sizes[field], f"a name of {limits.name}", limits
            )
        total = len(os.fsencode(path))
        if total > limits.path:
            field = sizes.index(max(sizes))
            what = "a path" if is_local(location) else "a key"
            _refuse(table, branch, spec, schema, key, field, path, total, f"{what} of {limits.path}", limits)


def _refuse(
    table: str,
    branch: str,
    spec: PartitionSpec,
    schema: Schema,
    key: PartitionKey,
    field: int,
    name: str,
    size: int,
    limit: str,
    limits: _Limits,
) -> None:
    partition_field = spec.fields[field]
    column = schema.find_column_name(partition_field.source_id) or partition_field.name
    source_type = schema.find_field(partition_field.source_id).field_type
    value = partition_field.transform.to_human_string(
        partition_field.transform.result_type(source_type), key.partition[field]
    )
    raise PartitionPathTooLong(table, branch, column, value, name, size, limit, limits.store)


def _limits(location: str) -> _Limits | None:
    """The limits of the store holding `location`, or None for a store this module knows none of."""
    if is_local(location):
        folder = native_path(location)
        while folder and not os.path.isdir(folder) and os.path.dirname(folder) != folder:
            folder = os.path.dirname(folder)
        return _Limits(
            "the local file system", _pathconf(folder, "PC_NAME_MAX", 255), _pathconf(folder, "PC_PATH_MAX", 4096)
        )
    if location.split("://", 1)[0] in _OBJECT_STORES:
        return _Limits("the object store", None, OBJECT_KEY_MAX)
    return None


def _pathconf(folder: str, name: str, default: int) -> int:
    try:
        return os.pathconf(folder, name)
    except (OSError, ValueError):
        return default


def _partition_keys(spec: PartitionSpec, schema: Schema, rows: pa.Table) -> list[PartitionKey]:
    """The distinct partitions `rows` fall in, as PyIceberg's writer computes them (`_determine_partitions`); none if
    `rows` lack a partition column (the writer names that)."""
    columns = {}
    for position, partition_field in enumerate(spec.fields):
        source = schema.find_field(partition_field.source_id)
        name = schema.find_column_name(partition_field.source_id)
        if name is None or name.split(".")[0] not in rows.column_names:
            return []
        values = _get_field_from_arrow_table(rows, name)
        columns[f"_p{position}"] = partition_field.transform.pyarrow_transform(source.field_type)(values)
    unique = pa.table(columns).group_by(list(columns)).aggregate([])
    return [
        PartitionKey(
            field_values=[PartitionFieldValue(field=f, value=row[f"_p{i}"]) for i, f in enumerate(spec.fields)],
            partition_spec=spec,
            schema=schema,
        )
        for row in unique.to_pylist()
    ]
