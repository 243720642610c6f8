"""Sensors for lakehouse branches: partitions that follow branches, merging audited runs, asset state kept at
`main`'s version, raw-table changes."""

from dagster_lakehouse.dagster.sensors.branch_sync import branch_sync_sensor, build_branch_sync_sensor
from dagster_lakehouse.dagster.sensors.main_state import build_main_state_sensor, main_state_sensor
from dagster_lakehouse.dagster.sensors.merge import MergeOutcome, build_merge_sensor, merge_sensor, publish_run
from dagster_lakehouse.dagster.sensors.raw_tables import build_raw_table_sensor

__all__ = [
    "MergeOutcome",
    "branch_sync_sensor",
    "build_branch_sync_sensor",
    "build_main_state_sensor",
    "build_merge_sensor",
    "build_raw_table_sensor",
    "main_state_sensor",
    "merge_sensor",
    "publish_run",
]
