"""Read planning: the data files a filtered read of one snapshot needs, from cached manifests, and the lazy scan of them.

Files are pruned with PyIceberg's own evaluators (partition summaries, partition values, column statistics) over
manifests parsed once per process (`read_cache`), then read by Polars' native Parquet reader with Iceberg's column
mapping (field ids, so files written before a column was renamed, added or dropped read correctly, with Iceberg's
type promotions). Tables with something that mapping does not cover (delete files, non-Parquet files, a name
mapping, default values, identity-partition columns absent from files, column names Parquet stores sanitized) are
read by `pl.scan_iceberg` instead.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl
from pyiceberg.expressions import AlwaysTrue, BooleanExpression
from pyiceberg.io.pyarrow import schema_to_pyarrow
from pyiceberg.manifest import DataFile, DataFileContent, FileFormat, ManifestContent, ManifestFile
from pyiceberg.schema import Schema, sanitize_column_names
from pyiceberg.table import ManifestGroupPlanner, Table
from pyiceberg.table.snapshots import Snapshot
from pyiceberg.transforms import IdentityTransform
from pyiceberg.utils.concurrent import ExecutorFactory

from dagster_lakehouse.lakehouse import read_cache
from dagster_lakehouse.lakehouse.locations import keeps_escapes, native_path

__all__ = ["ReadPlan", "lazy_scan", "plan_read"]

NAME_MAPPING = "schema.name-mapping.default"


def _native_scan_available() -> bool:
    """Whether this Polars takes the Iceberg column mapping that `pl.scan_iceberg` itself hands its Parquet reader."""
    try:
        from polars.io.scan_options.cast_options import ScanCastOptions
    except ImportError:
        return False
    parameters = inspect.signature(pl.scan_parquet).parameters
    return (
        int(pl.__version__.split(".")[0]) >= 2
        and all(p in parameters for p in ("_column_mapping", "_row_count", "_source_sizes"))
        and hasattr(ScanCastOptions, "_default_iceberg")
    )


NATIVE_SCAN = _native_scan_available()


@dataclass(frozen=True)
class ReadPlan:
    """The data files of `snapshot` a read needs; `fallback` says why they must be read by `pl.scan_iceberg`."""

    table: Table
    schema: Schema
    snapshot: Snapshot | None
    files: tuple[DataFile, ...]
    fallback: str | None = None


def plan_read(table: Table, snapshot: Snapshot | None, schema: Schema, row_filter: BooleanExpression) -> ReadPlan:
    """Plan a read of `snapshot` (None: an empty table) with the unbound `row_filter`, bound to `schema`."""
    if snapshot is None:
        return ReadPlan(table, schema, None, ())
    metadata = table.metadata
    if schema.schema_id != metadata.current_schema_id:  # a past snapshot: bind the filter to its schema
        metadata = metadata.model_copy(update={"current_schema_id": schema.schema_id})
    planner = ManifestGroupPlanner(metadata, table.io, row_filter=row_filter)
    manifests = read_cache.manifests(table.io, snapshot)
    deletes = [m for m in manifests if m.content == ManifestContent.DELETES and _has_live_files(m)]
    if deletes:
        return ReadPlan(table, schema, snapshot, (), f"delete files ({deletes[0].manifest_path})")
    keep_manifest = {spec: planner._build_manifest_evaluator(spec) for spec in {m.partition_spec_id for m in manifests}}
    wanted = [m for m in manifests if m.content == ManifestContent.DATA and keep_manifest[m.partition_spec_id](m)]
    metrics = planner._build_metrics_evaluator() if not isinstance(row_filter, AlwaysTrue) else None
    partition = {spec: planner._build_partition_evaluator(spec) for spec in {m.partition_spec_id for m in wanted}}
    files: list[DataFile] = []
    for manifest, entries in zip(wanted, _entries(table, wanted), strict=True):
        keep = partition[manifest.partition_spec_id]
        files.extend(
            e.data_file for e in entries if keep(e.data_file) and (metrics is None or metrics(e.data_file))
        )
    return ReadPlan(table, schema, snapshot, tuple(files), _unsupported(table, schema, files))


def _has_live_files(manifest: ManifestFile) -> bool:
    return manifest.has_added_files() or manifest.has_existing_files()


def _entries(table: Table, manifests: list[ManifestFile]) -> list[tuple]:
    """Each manifest's live entries; manifests not cached yet are fetched in parallel, as PyIceberg does."""
    if len(manifests) <= 1:
        return [read_cache.manifest_entries(table.io, m) for m in manifests]
    executor = ExecutorFactory.get_or_create()
    return list(executor.map(lambda m: read_cache.manifest_entries(table.io, m), manifests))


def _unsupported(table: Table, schema: Schema, files: list[DataFile]) -> str | None:
    """Why the native scan cannot read `files` of `table` correctly, or None."""
    if NAME_MAPPING in table.metadata.properties:
        return "a name mapping (files without field ids)"
    if not NATIVE_SCAN:
        return f"polars {pl.__version__} has no Iceberg column mapping for scan_parquet"
    if sanitize_column_names(schema) != schema:  # Polars' mapping panics on the names PyIceberg writes for these
        return "column names that Parquet files store sanitized (e.g. 'a.b', 'a b')"
    for field_id in schema.field_ids:
        if getattr(schema.find_field(field_id), "initial_default", None) is not None:
            return f"column '{schema.find_column_name(field_id)}' has a default value"
    identity = _identity_sources(table, schema)
    for data_file in files:
        if data_file.file_format != FileFormat.PARQUET or data_file.content != DataFileContent.DATA:
            return f"{data_file.file_format} {data_file.content} file {data_file.file_path}"
        stats = data_file.value_counts or {}
        absent = [f for f in identity.get(data_file.spec_id, ()) if f not in stats]
        if absent:
            return f"identity-partition column id {absent[0]} may be absent from {data_file.file_path}"
    return None


def _identity_sources(table: Table, schema: Schema) -> Mapping[int, tuple[int, ...]]:
    """Per partition spec, the columns of `schema` it partitions by identity (their values may live only in metadata)."""
    found = {}
    for spec_id, spec in table.specs().items():
        ids = tuple(f.source_id for f in spec.fields if isinstance(f.transform, IdentityTransform))
        ids = tuple(i for i in ids if i in schema.field_ids)
        if ids:
            found[spec_id] = ids
    return found


def lazy_scan(plan: ReadPlan, storage_options: dict[str, str] | None) -> pl.LazyFrame:
    """A lazy scan of the plan's files with every column of its schema (Polars reads only what the query needs)."""
    if plan.fallback is not None:
        snapshot_id = plan.snapshot.snapshot_id if plan.snapshot is not None else None
        reader = "pyiceberg" if any(keeps_escapes(f.file_path) for f in plan.files) else None  # see `locations`
        return pl.scan_iceberg(
            plan.table, snapshot_id=snapshot_id, storage_options=storage_options, reader_override=reader
        )
    empty = pl.from_arrow(schema_to_pyarrow(plan.schema, include_field_ids=False).empty_table())
    assert isinstance(empty, pl.DataFrame)
    if not plan.files:
        return empty.lazy()
    from polars.io.scan_options.cast_options import ScanCastOptions

    rows = sum(f.record_count for f in plan.files)
    return pl.scan_parquet(
        [native_path(f.file_path) for f in plan.files],  # local files by the rule of `locations`
        glob=False,
        schema=empty.schema,  # else Polars takes the first file's columns: a file older than a column would hide it
        cast_options=ScanCastOptions._default_iceberg(),
        missing_columns="insert",
        extra_columns="ignore",
        storage_options=storage_options,
        _column_mapping=("iceberg-column-mapping", schema_to_pyarrow(plan.schema), None),
        _row_count=(rows, 0) if all(f.record_count >= 0 for f in plan.files) else None,
        _source_sizes=[f.file_size_in_bytes for f in plan.files],
    )
