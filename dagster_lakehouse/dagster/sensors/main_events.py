"""The events that show an asset (partition) at its version on `main`: a materialization and the checks that audited it.

The version on `main` of an unpartitioned (or branch-partitioned) asset is its table's snapshot; of a partition of
data partitions, `partition_state` on `main` of the rows the IO manager's scope gives that partition: its exact row
count and the snapshot that added its newest data file (never another partition's). The materialization is a copy of
the one that produced that version, found in the partition's history by its snapshot id or data version (on `main`,
or on a branch a fast-forward merge took it from, or, for a merge that replayed a branch's operations, the snapshots
main's snapshot names as its origins); without one, it is built from the table. The check evaluations restated are
those the producing run made of this partition (or unpartitioned checks of it), so the UI never shows the restated
version as "Not evaluated".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dagster as dg

from dagster_lakehouse.dagster.metadata import table_schema, total_rows
from dagster_lakehouse.dagster.sensors.main_changes import Restatement, text_value
from dagster_lakehouse.dagster.sensors.merge import COPIED_TAG_PREFIXES, DATA_VERSION_TAG
from dagster_lakehouse.dagster.sensors.versions import MainVersion, version_on
from dagster_lakehouse.lakehouse.core import Lakehouse
from dagster_lakehouse.lakehouse.errors import LakehouseError
from dagster_lakehouse.lakehouse.history import ORIGIN, SOURCE_SNAPSHOT
from dagster_lakehouse.lakehouse.names import MAIN

__all__ = [
    "MainVersion",
    "describes",
    "main_version",
    "records",
    "restated",
    "restated_checks",
    "source_of",
    "unaudited_checks",
]

HISTORY = 100
_CAUSES = (
    "lakehouse/restated_after_run",
    "lakehouse/restated_after_branch",
    "lakehouse/restated_after_commit",
    "lakehouse/restated_after",
)


def main_version(lakehouse: Lakehouse, graph: Any, item: Restatement) -> MainVersion | None:
    """The version on `main` of `item`'s asset (partition); None when `main` lacks its table or partition."""
    return version_on(lakehouse, graph, item.key, item.partition, item.table, MAIN)


def records(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None, limit: int) -> Sequence[Any]:
    """The latest `limit` materialization records of the asset (partition), newest first."""
    records_filter: dg.AssetKey | dg.AssetRecordsFilter = (
        key if partition is None else dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition])
    )
    return instance.fetch_materializations(records_filter, limit=limit).records


def describes(materialization: dg.AssetMaterialization, version: MainVersion) -> bool:
    """Whether a materialization is of `main` at `version` (and, for a partition, with its rows as row count: a run's
    own materialization counts the whole table)."""
    rows = text_value(materialization.metadata, "dagster/row_count")
    return (
        text_value(materialization.metadata, "lakehouse/branch") == MAIN
        and _recorded_snapshot(materialization) == str(version.snapshot)
        and (version.rows is None or rows is None or rows == str(version.rows))
    )


def _recorded_snapshot(materialization: dg.AssetMaterialization) -> str | None:
    return text_value(materialization.metadata, "lakehouse/snapshot_id") or (materialization.tags or {}).get(
        DATA_VERSION_TAG
    )


def source_of(lakehouse: Lakehouse, table: str, history: Sequence[Any], snapshot: int) -> Any:
    """The record of the materialization that produced `snapshot` on `main`: recorded on `main` at it (run, publish
    or restatement), else made on a branch at it (a fast-forward merge) or at one of the operations a replaying
    merge took it from; None when Dagster did not produce it."""
    on_main = [r for r in history if text_value(r.asset_materialization.metadata, "lakehouse/branch") == MAIN]
    for candidates, wanted in ((on_main, {str(snapshot)}), (history, {str(snapshot)})):
        found = next((r for r in candidates if _produced(r.asset_materialization, wanted)), None)
        if found is not None:
            return found
    origins = _origins(lakehouse, table, snapshot)
    return next((r for r in history if origins and _produced(r.asset_materialization, origins)), None)


def _produced(materialization: dg.AssetMaterialization, snapshots: set[str]) -> bool:
    tags = materialization.tags or {}
    return (
        text_value(materialization.metadata, "lakehouse/snapshot_id") in snapshots
        or tags.get(DATA_VERSION_TAG) in snapshots
    )


def _origins(lakehouse: Lakehouse, table: str, snapshot: int) -> set[str]:
    """The branch snapshots a merge replayed as `snapshot` on `main` (empty for a snapshot that is no replay)."""
    try:
        found = lakehouse.table(table, MAIN).snapshot_by_id(snapshot)
    except LakehouseError:
        return set()
    summary = found.summary.additional_properties if found is not None and found.summary else {}
    origins = {o for o in summary.get(ORIGIN, "").split(",") if o}
    return origins | ({summary[SOURCE_SNAPSHOT]} if SOURCE_SNAPSHOT in summary else set())


def restated(
    lakehouse: Lakehouse, item: Restatement, version: MainVersion, source: Any, sensor_name: str
) -> dg.AssetMaterialization:
    """`main`'s version as a materialization: a copy of the one that produced it, else built from the table."""
    if source is not None:
        produced = source.asset_materialization
        metadata = dict(produced.metadata)
        tags = {k: v for k, v in (produced.tags or {}).items() if k.startswith(COPIED_TAG_PREFIXES)}
        metadata["lakehouse/produced_by_run"] = dg.MetadataValue.text(_producer(source) or "")
    else:
        table = lakehouse.table(item.table, MAIN)
        metadata = {
            "dagster/row_count": dg.MetadataValue.int(total_rows(table, 0)),
            "dagster/column_schema": dg.MetadataValue.table_schema(table_schema(table.schema())),
            "dagster/table_name": dg.MetadataValue.text(item.table),
            "lakehouse/uri": dg.MetadataValue.path(table.location()),
        }
        tags = {}
    if version.rows is not None:
        metadata["dagster/row_count"] = dg.MetadataValue.int(version.rows)
        metadata["dagster/partition_row_count"] = dg.MetadataValue.int(version.rows)
    for stale in _CAUSES:
        metadata.pop(stale, None)
    metadata.update(
        {
            "lakehouse/branch": dg.MetadataValue.text(MAIN),
            "lakehouse/snapshot_id": dg.MetadataValue.int(version.snapshot),
            **item.cause_metadata(),
        }
    )
    tags[DATA_VERSION_TAG] = str(version.snapshot)
    return dg.AssetMaterialization(
        asset_key=item.key,
        partition=item.partition,
        description=(
            f"{sensor_name}: the version on main (snapshot {version.snapshot}), restated after {item.cause}"
            + ("" if item.commit is not None else "; that run's own materialization is in the event history")
        ),
        metadata=metadata,
        tags=tags,
    )


def _producer(source: Any) -> str | None:
    """The run that produced a materialization (for a publish or restatement, the run it names)."""
    metadata = source.asset_materialization.metadata
    return (
        text_value(metadata, "lakehouse/produced_by_run") or text_value(metadata, "lakehouse/run_id") or source.run_id
    )


def restated_checks(
    instance: dg.DagsterInstance,
    graph: Any,
    item: Restatement,
    source: Any,
    only: set[dg.AssetCheckKey] | None = None,
) -> list[dg.AssetCheckEvaluation]:
    """The latest evaluation of each of the asset's checks (or of `only` those) that audited the version `source`
    recorded (of this partition, or an unpartitioned check), restated after it."""
    metadata = source.asset_materialization.metadata
    produced_by = {
        text_value(metadata, "lakehouse/produced_by_run"),
        text_value(metadata, "lakehouse/run_id"),
        source.run_id,
    } - {None, ""}
    events = []
    for check_key in sorted(graph.get(item.key).check_keys, key=lambda k: k.name):
        if only is not None and check_key not in only:
            continue
        for record in _check_history(instance, check_key, item.partition):
            evaluation = record.event.dagster_event.event_specific_data if record.event is not None else None
            if not isinstance(evaluation, dg.AssetCheckEvaluation):
                continue
            if record.run_id in produced_by or text_value(evaluation.metadata, "lakehouse/run_id") in produced_by:
                events.append(
                    dg.AssetCheckEvaluation(
                        asset_key=item.key,
                        check_name=check_key.name,
                        passed=evaluation.passed,
                        metadata={**evaluation.metadata, "lakehouse/branch": dg.MetadataValue.text(MAIN)},
                        severity=evaluation.severity,
                        description=evaluation.description,
                        blocking=evaluation.blocking,
                        partition=evaluation.partition,
                    )
                )
                break
    return events


def _check_history(instance: dg.DagsterInstance, check_key: dg.AssetCheckKey, partition: str | None) -> list[Any]:
    """The check's latest executions of `partition` (or unpartitioned), newest first."""
    history = instance.event_log_storage.get_asset_check_execution_history(check_key, limit=HISTORY)
    return [r for r in history if r.partition in (None, partition)]


def unaudited_checks(instance: dg.DagsterInstance, graph: Any, item: Restatement, latest: Any) -> set[dg.AssetCheckKey]:
    """The asset's checks whose latest result (of this partition, or unpartitioned) is not of the materialization
    `latest`, as Dagster judges it (same run, the materialization it targeted, else evaluated after it): the UI shows
    them "Not evaluated" for it (e.g. a publish that restated the run's materialization but not its checks)."""
    found = set()
    for check_key in graph.get(item.key).check_keys:
        history = _check_history(instance, check_key, item.partition)
        if history and not _targets(history[0], latest):
            found.add(check_key)
    return found


def _targets(record: Any, latest: Any) -> bool:
    if record.run_id == latest.run_id:
        return True
    evaluation = record.event.dagster_event.event_specific_data if record.event is not None else None
    target = getattr(evaluation, "target_materialization_data", None)
    if target is not None:
        return target.storage_id == latest.storage_id
    return latest.timestamp < record.create_timestamp
