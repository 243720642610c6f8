"""Dagster metadata for lakehouse tables: column schema from the Iceberg schema, and the output metadata of a write."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
from pyiceberg.schema import Schema
from pyiceberg.table import Table

from dagster_lakehouse.dagster.lineage import column_lineage
from dagster_lakehouse.lakehouse.core import WriteResult

__all__ = ["table_schema", "write_metadata"]


def table_schema(schema: Schema) -> dg.TableSchema:
    """The Dagster column schema of an Iceberg schema (type, nullability, doc), shown in the asset's UI."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=field.name,
                type=str(field.field_type),
                description=field.doc,
                constraints=dg.TableColumnConstraints(nullable=not field.required),
            )
            for field in schema.fields
        ]
    )


def total_rows(table: Table, fallback: int) -> int:
    """Rows in the table's current snapshot (from its summary), else `fallback`."""
    snapshot = table.current_snapshot()
    total = snapshot.summary["total-records"] if snapshot and snapshot.summary else None
    return int(total) if total is not None else fallback


def write_metadata(
    result: WriteResult,
    *,
    partitioned: bool = False,
    partition_rows: int | None = None,
    input_columns: Mapping[dg.AssetKey, Sequence[str]] | None = None,
    input_snapshots: Mapping[str, int | None] | None = None,
) -> dict[str, Any]:
    """Output metadata of one write: row count (`partition_rows`, a partitioned write's rows of its partitions
    after it, else the table's), schema, table name and URI, branch, snapshot, metadata file, column lineage for
    the columns passed through from `input_columns` (the columns each parent was read with), and
    `lakehouse/input_snapshots`, the snapshot of each parent table the step read (`input_snapshots`)."""
    table = result.iceberg_table
    schema = table.schema()
    metadata: dict[str, Any] = {
        "dagster/row_count": dg.MetadataValue.int(
            partition_rows if partition_rows is not None else total_rows(table, result.rows)
        ),
        "dagster/column_schema": dg.MetadataValue.table_schema(table_schema(schema)),
        "dagster/table_name": dg.MetadataValue.text(result.table),
        "lakehouse/uri": dg.MetadataValue.path(table.location()),
        "lakehouse/branch": dg.MetadataValue.text(result.branch),
        "lakehouse/mode": dg.MetadataValue.text(result.mode),
        "lakehouse/metadata_location": dg.MetadataValue.path(result.metadata_location),
        "lakehouse/commit_id": dg.MetadataValue.text(result.commit_id),
    }
    if result.snapshot_id is not None:
        metadata["lakehouse/snapshot_id"] = dg.MetadataValue.int(result.snapshot_id)
    if partitioned:
        rows = partition_rows if partition_rows is not None else result.rows
        metadata["dagster/partition_row_count"] = dg.MetadataValue.int(rows)
    lineage = column_lineage([field.name for field in schema.fields], input_columns or {})
    if lineage is not None:
        metadata["dagster/column_lineage"] = dg.MetadataValue.column_lineage(lineage)
    if input_snapshots:
        metadata["lakehouse/input_snapshots"] = dg.MetadataValue.json(dict(sorted(input_snapshots.items())))
    return metadata
