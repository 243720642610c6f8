"""dagster-lakehouse: marimo notebooks to Dagster assets over branch-scoped Iceberg tables."""

from dagster_lakehouse.lakehouse import (
    Commit,
    Lakehouse,
    LakehouseError,
    MergeConflict,
    MergeResult,
    TableDiff,
)

__all__ = [
    "Commit",
    "Lakehouse",
    "LakehouseError",
    "MergeConflict",
    "MergeResult",
    "TableDiff",
]
