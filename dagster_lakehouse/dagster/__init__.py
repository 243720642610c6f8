"""Dagster layer: the lakehouse resource, the IO manager writing assets on the run's branch, branch partitions,
write-audit-publish and the sensors that sync branch partitions, merge audited runs, keep asset state at `main`'s
version and react to raw tables."""

from dagster_lakehouse.dagster.branch import (
    BRANCH_TAG,
    TARGET_TAG,
    RunBranch,
    is_branch_partitions,
    resolve_branch,
    resolve_run_branch,
    resolve_target_branch,
)
from dagster_lakehouse.dagster.errors import BranchResolutionError, LakehouseIOError
from dagster_lakehouse.dagster.io_manager import LakehouseIOManager
from dagster_lakehouse.dagster.metadata import table_schema
from dagster_lakehouse.dagster.partitions import BRANCH_PARTITIONS_NAME, branch_partitions
from dagster_lakehouse.dagster.resource import LakehouseResource, clear_lakehouse_cache
from dagster_lakehouse.dagster.sensors import (
    MergeOutcome,
    branch_sync_sensor,
    build_branch_sync_sensor,
    build_main_state_sensor,
    build_merge_sensor,
    build_raw_table_sensor,
    main_state_sensor,
    merge_sensor,
    publish_run,
)
from dagster_lakehouse.dagster.tables import (
    MODE_KEY,
    PARTITION_COLUMN_KEY,
    TABLE_KEY,
    lakehouse_table_spec,
    table_name_for,
)
from dagster_lakehouse.dagster.wap import (
    MERGE_INTO_TAG,
    MERGE_REASON_TAG,
    MERGE_TAG,
    WAP_TAG,
    is_wap_branch,
    wap_branch_name,
)

__all__ = [
    "BRANCH_PARTITIONS_NAME",
    "BRANCH_TAG",
    "MERGE_INTO_TAG",
    "MERGE_REASON_TAG",
    "MERGE_TAG",
    "MODE_KEY",
    "PARTITION_COLUMN_KEY",
    "TABLE_KEY",
    "TARGET_TAG",
    "WAP_TAG",
    "BranchResolutionError",
    "LakehouseIOError",
    "LakehouseIOManager",
    "LakehouseResource",
    "MergeOutcome",
    "RunBranch",
    "branch_partitions",
    "branch_sync_sensor",
    "build_branch_sync_sensor",
    "build_main_state_sensor",
    "build_merge_sensor",
    "build_raw_table_sensor",
    "clear_lakehouse_cache",
    "is_branch_partitions",
    "is_wap_branch",
    "lakehouse_table_spec",
    "main_state_sensor",
    "merge_sensor",
    "publish_run",
    "resolve_branch",
    "resolve_run_branch",
    "resolve_target_branch",
    "table_name_for",
    "table_schema",
    "wap_branch_name",
]
