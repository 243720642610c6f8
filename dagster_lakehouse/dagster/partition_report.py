"""What the materialization of a partitioned write reports: each partition's rows on the run's branch right after
the write, and the snapshot that added them (its data version), read at the commit the write made, so a concurrent
writer of other partitions cannot change the numbers.

The rows of a partition are the IO manager's scope of it (`scope.py`), counted by `partition_state`, as
`merge_sensor` and `main_state_sensor` count a published or restated partition, so all record one data version for
one partition's data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg

from dagster_lakehouse.dagster.scope import build_scope, data_dimensions, iceberg_kind, partition_columns
from dagster_lakehouse.lakehouse.core import Lakehouse, WriteResult
from dagster_lakehouse.lakehouse.partition_state import partition_state

__all__ = ["PER_PARTITION_LIMIT", "PartitionReport", "partition_report", "report_partitions"]

PER_PARTITION_LIMIT = 100
"""A run over more partitions reports the rows of all of them together (one count instead of one per partition)."""


@dataclass(frozen=True)
class PartitionReport:
    """The rows of the written partitions after the write (`rows`: all of them; `rows_by_partition` when counted
    one by one) and the snapshot that added the newest of them (None when they hold no row)."""

    rows: int
    snapshot_id: int | None
    rows_by_partition: Mapping[str, int]


def report_partitions(
    context: dg.OutputContext, lakehouse: Lakehouse, result: WriteResult, where: str
) -> PartitionReport | None:
    """The report of a partitioned output's write; a run over several partitions also gets each partition's
    `dagster/row_count` on that partition's materialization. None for an output without data partitions."""
    if not context.has_asset_partitions or not data_dimensions(context.asset_partitions_def):
        return None
    partitions_def = context.asset_partitions_def
    columns = partition_columns(context.definition_metadata, partitions_def, where)
    report = partition_report(lakehouse, result, partitions_def, context.asset_partition_keys, columns, where)
    step = _step(context)
    if report is not None and step is not None and len(report.rows_by_partition) > 1:
        for key, rows in report.rows_by_partition.items():
            step.add_asset_metadata(
                {"dagster/row_count": rows, "dagster/partition_row_count": rows},
                asset_key=context.asset_key,
                partition_key=key,
            )
    return report


def partition_report(
    lakehouse: Lakehouse,
    result: WriteResult,
    partitions_def: dg.PartitionsDefinition,
    keys: Sequence[str],
    columns: Mapping[str | None, str],
    where: str,
) -> PartitionReport | None:
    """The report of write `result` of partitions `keys` (partition columns `columns`), read at the write's commit
    (the branch's head for a write that committed nothing); None when the definition selects no rows."""
    ref = f"{result.branch}@{result.commit_id}" if result.commit_id else result.branch
    known = {field.name: field.field_type for field in result.iceberg_table.schema().fields}

    def state(selected: Sequence[str]) -> tuple[int, int | None] | None:
        scope = build_scope(
            partitions_def, selected, columns, lambda c: iceberg_kind(known[c]) if c in known else None, where
        )
        if scope is None:
            return None
        found = partition_state(lakehouse, result.table, ref, scope.iceberg())
        return (found.rows, found.snapshot_id) if found is not None else (0, None)

    if len(keys) > PER_PARTITION_LIMIT:
        together = state(keys)
        return None if together is None else PartitionReport(together[0], together[1], {})
    states: dict[str, tuple[int, int | None]] = {}
    for key in keys:
        found = state([key])
        if found is None:
            return None
        states[str(key)] = found
    rows_by_partition = {key: rows for key, (rows, _) in states.items()}
    snapshots = [snapshot for _, snapshot in states.values() if snapshot is not None]
    newest = _newest(result, snapshots)
    return PartitionReport(sum(rows_by_partition.values()), newest, rows_by_partition)


def _step(context: dg.OutputContext) -> Any:
    try:
        return context.step_context
    except dg.DagsterInvariantViolationError:  # an output context built outside a run
        return None


def _newest(result: WriteResult, snapshots: Sequence[int]) -> int | None:
    """The newest of `snapshots` in the table's history (the write's own snapshot when it is one of them)."""
    if not snapshots:
        return None
    if result.snapshot_id in snapshots:
        return result.snapshot_id
    order = {s.snapshot_id: s.sequence_number or 0 for s in result.iceberg_table.metadata.snapshots}
    return max(snapshots, key=lambda s: order.get(s, 0))
