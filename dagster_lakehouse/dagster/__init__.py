"""Dagster layer: the lakehouse resource, the IO manager writing assets on the run's branch, branch partitions."""

from dagster_lakehouse.dagster.branch import BRANCH_TAG, is_branch_partitions, resolve_branch
from dagster_lakehouse.dagster.errors import BranchResolutionError, LakehouseIOError
from dagster_lakehouse.dagster.io_manager import LakehouseIOManager
from dagster_lakehouse.dagster.metadata import table_schema
from dagster_lakehouse.dagster.partitions import BRANCH_PARTITIONS_NAME, branch_partitions
from dagster_lakehouse.dagster.resource import LakehouseResource, clear_lakehouse_cache
from dagster_lakehouse.dagster.tables import (
    MODE_KEY,
    PARTITION_COLUMN_KEY,
    TABLE_KEY,
    lakehouse_table_spec,
    table_name_for,
)

__all__ = [
    "BRANCH_PARTITIONS_NAME",
    "BRANCH_TAG",
    "MODE_KEY",
    "PARTITION_COLUMN_KEY",
    "TABLE_KEY",
    "BranchResolutionError",
    "LakehouseIOError",
    "LakehouseIOManager",
    "LakehouseResource",
    "branch_partitions",
    "clear_lakehouse_cache",
    "is_branch_partitions",
    "lakehouse_table_spec",
    "resolve_branch",
    "table_name_for",
    "table_schema",
]
