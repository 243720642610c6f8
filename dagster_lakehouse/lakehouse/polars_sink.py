"""A LazyFrame written by Polars' own streaming Parquet sink into a table's data folder, as Iceberg data files.

Polars runs the query and writes its rows in one pipeline (no Python in between, so nothing piles up between a
fast producer and a slow consumer): files roll at the table's target size, are named and placed by the table's
location provider, and carry Iceberg field ids (`arrow_schema` with `PARQUET:field_id`), so any Iceberg reader maps
their columns; each column is cast to the type the table stores (an `int` is int32 in the file, whatever the frame
held), as PyIceberg's writer does. Column statistics come from each file's footer, as PyIceberg computes them for its own files. Tables
this does not cover (partitioned, nested columns, a name mapping, a format other than Parquet) are written chunk by
chunk by `parquet_stream.ParquetStream` instead: `sink_unsupported` says why.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.io import FileIO
from pyiceberg.io.pyarrow import (
    compute_statistics_plan,
    data_file_statistics_from_parquet_metadata,
    parquet_path_to_id_mapping,
    schema_to_pyarrow,
)
from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
from pyiceberg.table import TableProperties
from pyiceberg.table.locations import load_location_provider
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.typedef import Record
from pyiceberg.utils.properties import property_as_int

from dagster_lakehouse.lakehouse.locations import is_local, native_path

__all__ = ["delete_files", "sink_files", "sink_unsupported"]

def sink_unsupported(metadata: TableMetadata, schema: pa.Schema) -> str | None:
    """Why Polars' sink cannot write data of `schema` into the table `metadata` describes, or None if it can."""
    if not metadata.spec().is_unpartitioned():
        return "the table is partitioned"
    if metadata.properties.get(TableProperties.WRITE_FILE_FORMAT, "parquet").lower() != "parquet":
        return "the table's files are not Parquet"
    if metadata.schema().name_mapping and "schema.name-mapping.default" in metadata.properties:
        return "the table has a name mapping"
    nested = [f.name for f in schema if pa.types.is_nested(f.type)]
    if nested:
        return f"column {nested[0]!r} is nested"
    target = file_schema(metadata, schema)
    produced = pl.DataFrame(schema=_polars_types(target)).to_arrow().schema
    for field, made in zip(target, produced, strict=True):
        if made.type != field.type:
            return f"Polars writes column {field.name!r} as {made.type}, not {field.type}"
    return None


def file_schema(metadata: TableMetadata, schema: pa.Schema) -> pa.Schema:
    """The Arrow schema of the files for data of `schema`: its columns, typed as the table stores them (an `int`
    column is int32 whatever the frame held), each with its Iceberg field id."""
    table = schema_to_pyarrow(metadata.schema())
    return pa.schema([table.field(name) for name in schema.names])


def _polars_types(schema: pa.Schema) -> dict[str, pl.DataType]:
    return dict(pl.from_arrow(schema.empty_table()).schema)  # type: ignore[union-attr]


def sink_files(
    lazy: pl.LazyFrame,
    schema: pa.Schema,
    metadata: TableMetadata,
    io: FileIO,
    write_uuid: uuid.UUID,
    storage_options: dict[str, str] | None,
) -> tuple[list[DataFile], int]:
    """Write `lazy` (whose columns are those of the Arrow `schema`) as data files of the table, its columns cast to the
    table's types; returns the files and the number of rows written."""
    table_schema = metadata.schema()
    arrow_schema = file_schema(metadata, schema)
    wanted = _polars_types(arrow_schema)
    if dict(lazy.collect_schema()) != wanted:
        lazy = lazy.cast(wanted)
    if list(lazy.collect_schema().names()) != schema.names:
        lazy = lazy.select(schema.names)
    locations = load_location_provider(table_location=metadata.location, table_properties=metadata.properties)
    target = property_as_int(
        metadata.properties, TableProperties.WRITE_TARGET_FILE_SIZE_BYTES, TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT
    )
    rows_per_group = property_as_int(
        metadata.properties, TableProperties.PARQUET_ROW_GROUP_LIMIT, TableProperties.PARQUET_ROW_GROUP_LIMIT_DEFAULT
    )
    sunk: list[Any] = []
    started: list[str] = []
    location_of: dict[str, str] = {}  # Polars' sink takes a local file's native path (`locations`), not its URI

    def path_of(args: Any) -> str:
        started.append(locations.new_data_location(f"00000-{args.index_in_partition}-{write_uuid}.parquet"))
        location_of[native_path(started[-1])] = started[-1]
        return native_path(started[-1])

    try:
        lazy.sink_parquet(
            pl.PartitionBy(native_path(metadata.location), file_path_provider=path_of, approximate_bytes_per_file=target),
            arrow_schema=arrow_schema,
            row_group_size=rows_per_group,
            storage_options=storage_options,
            sinked_paths_callback=lambda args: sunk.extend(args.paths),
            mkdir=is_local(metadata.location),  # on S3 it would leave an empty 'data/' object
            engine="streaming",
        )
    except BaseException:
        folder = locations.new_data_location(f"00000-0-{write_uuid}.parquet").rsplit("/", 1)[0] + "/"
        _remove_partial_files(io, started, folder)
        raise
    statistics_plan = compute_statistics_plan(table_schema, metadata.properties)
    column_ids = parquet_path_to_id_mapping(table_schema)
    files = []
    for path in (p for p in sunk if p.num_rows):
        location = location_of.get(path.path, path.path)
        with io.new_input(location).open() as stream:
            footer = pq.read_metadata(stream)
        statistics = data_file_statistics_from_parquet_metadata(
            parquet_metadata=footer, stats_columns=statistics_plan, parquet_column_mapping=column_ids
        )
        files.append(
            DataFile.from_args(
                content=DataFileContent.DATA,
                file_path=location,
                file_format=FileFormat.PARQUET,
                partition=Record(),
                file_size_in_bytes=path.num_bytes,
                sort_order_id=None,
                spec_id=metadata.default_spec_id,
                equality_ids=None,
                key_metadata=None,
                **statistics.to_serialized_dict(),
            )
        )
    return files, sum(path.num_rows for path in sunk)


def delete_files(io: FileIO, paths: list[str]) -> None:
    """Delete the data files of a write that will not commit (nothing references them); one already gone is fine."""
    for path in paths:
        try:
            io.delete(path)
        except (FileNotFoundError, OSError):
            pass


def _remove_partial_files(io: FileIO, paths: list[str], folder: str, attempts: int = 6) -> None:
    """Delete what a failed sink began writing (its files, and on an object store the empty folder marker of their
    folder, which no committed file can be relying on: the folder is this table's and a marker holds nothing).
    Polars may still be closing a file after the error reached us, so look again a few times, 0.1 s doubling
    (3 s at most), until none of them is there."""
    markers = sorted({folder, *(path.rsplit("/", 1)[0] + "/" for path in paths)})
    pause = 0.1
    for attempt in range(attempts):
        delete_files(io, paths)
        _delete_markers(io, markers)  # Polars' sink leaves an empty 'data/' object on S3, which PyArrow cannot delete
        if attempt == attempts - 1:
            return
        time.sleep(pause)
        pause *= 2
        if not any(_exists(io, path) for path in paths):
            return


def _exists(io: FileIO, path: str) -> bool:
    try:
        return io.new_input(path).exists()
    except OSError:
        return True


def _delete_markers(io: FileIO, markers: list[str]) -> None:
    """Delete empty folder-marker objects (`s3://bucket/.../data/`) with boto3, configured from the FileIO's S3
    properties; best effort: a marker holds nothing, and gc ignores it."""
    markers = [m for m in markers if m.startswith(("s3://", "s3a://"))]
    if not markers:
        return
    try:
        import boto3

        props = io.properties
        client = boto3.client(
            "s3",
            endpoint_url=props.get("s3.endpoint"),
            region_name=props.get("s3.region") or props.get("client.region"),
            aws_access_key_id=props.get("s3.access-key-id"),
            aws_secret_access_key=props.get("s3.secret-access-key"),
            aws_session_token=props.get("s3.session-token"),
        )
        for marker in markers:
            bucket, _, key = marker.split("://", 1)[1].partition("/")
            client.delete_object(Bucket=bucket, Key=key)
    except Exception:  # noqa: BLE001 - tidying up after a failure already being raised
        pass
