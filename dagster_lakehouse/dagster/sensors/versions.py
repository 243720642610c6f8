"""The version of an asset (partition) on a ref, as Dagster records it: the table's snapshot, or for a partition of
data partitions the snapshot that added its newest rows and its exact row count (`partition_state` over the rows the
IO manager's scope gives that partition). `merge_sensor` and `main_state_sensor` describe published and restated
versions with it, so both record the same data version for one partition."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dagster as dg
from pyiceberg.expressions import BooleanExpression

from dagster_lakehouse.dagster.scope import build_scope, data_dimensions, iceberg_kind, partition_columns
from dagster_lakehouse.lakehouse.core import Lakehouse
from dagster_lakehouse.lakehouse.errors import LakehouseError
from dagster_lakehouse.lakehouse.partition_state import partition_state

__all__ = ["MainVersion", "version_on"]


@dataclass(frozen=True)
class MainVersion:
    """An asset's (partition's) version on `main`: the snapshot, and for a data partition its exact rows."""

    snapshot: int
    rows: int | None = None


def version_on(
    lakehouse: Lakehouse, graph: Any, key: dg.AssetKey, partition: str | None, table: str, ref: str
) -> MainVersion | None:
    """The version on `ref` of an asset (partition): the table's snapshot, or for a data partition the snapshot
    that added its newest rows and its exact row count; None when `ref` lacks the table or the partition."""
    try:
        where = _partition_filter(lakehouse, graph, key, partition, table, ref)
        if where is None:
            snapshot = lakehouse.snapshot_id(table, ref)
            return None if snapshot is None else MainVersion(snapshot)
        state = partition_state(lakehouse, table, ref, where)
    except LakehouseError:
        return None
    return None if state is None else MainVersion(state.snapshot_id, state.rows)


def _partition_filter(
    lakehouse: Lakehouse, graph: Any, key: dg.AssetKey, partition: str | None, table: str, ref: str
) -> BooleanExpression | None:
    """The rows of the asset's partition, as the IO manager scopes them; None for an asset without data partitions."""
    if partition is None or graph is None or not graph.has(key):
        return None
    node = graph.get(key)
    partitions_def = node.partitions_def
    if not data_dimensions(partitions_def):
        return None
    label = f"asset {key.to_user_string()} [{partition}]"
    columns = partition_columns(node.metadata, partitions_def, label)
    known = {field.name: field.field_type for field in lakehouse.table(table, ref).schema().fields}
    scope = build_scope(
        partitions_def, [partition], columns, lambda c: iceberg_kind(known[c]) if c in known else None, label
    )
    return None if scope is None else scope.iceberg()
