"""What Dagster shows for a run that asked to be published and was not: a failed run, a failed backfill, observations.

A write-audit-publish run (or a `lakehouse/merge_into` run) promises that its work reaches its target. When
`merge_sensor` does not merge it (a conflict, a failed check, a missing asset, anything), Dagster must not go on
showing it as a success:

- **The run** is marked failed (a `RUN_FAILURE` event whose message is the reason) if it had succeeded, so the Runs
  page, the run's own page and run-failure sensors say so. Its tags keep the outcome (`lakehouse/merge=conflict` or
  `skipped`, `lakehouse/merge_reason`).
- **Each asset (partition) it planned** gets an `AssetObservation` saying it was not published, and why.
- **Its backfill** is marked failed. Dagster decides a backfill's outcome from the asset partitions its runs did not
  materialize, and a WAP run did materialize them, on its own branch; so once the backfill daemon has finished with
  the backfill (any `COMPLETED_*` status), the run's asset partitions move from the backfill's materialized subset to
  its failed subset and the backfill becomes `COMPLETED_FAILED`. Until then the run carries the tag
  `lakehouse/backfill_outcome=pending` and the sensor looks again on each tick (a tag, like `lakehouse/merge`, so the
  state survives daemon restarts); then `recorded`.

Dagster OSS cannot un-materialize a partition (its event log storage has no partition wipe), so the partition's
latest materialization stays the WAP run's, labelled with its branch (`lakehouse/branch: wap/<run>`), never `main`;
`main_state_sensor` restates only what `main` holds.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import dagster as dg
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.definitions.events import AssetKeyPartitionKey
from dagster._core.execution.backfill import BulkActionStatus
from dagster._core.storage.tags import BACKFILL_ID_TAG

from dagster_lakehouse.dagster.sensors.run_audit import AssetPartition, audit_run, label

__all__ = [
    "BACKFILL_OUTCOME_TAG",
    "mark_run_unpublished",
    "settle_backfills",
    "unpublished_observations",
]

BACKFILL_OUTCOME_TAG = "lakehouse/backfill_outcome"
"""On a run that was not published and belongs to a backfill: `pending` until its backfill is marked failed, then
`recorded`."""
_PENDING, _RECORDED = "pending", "recorded"
_COMPLETED = (BulkActionStatus.COMPLETED, BulkActionStatus.COMPLETED_SUCCESS, BulkActionStatus.COMPLETED_FAILED)


def unpublished_observations(
    asset_partitions: Iterable[AssetPartition],
    *,
    status: str,
    reason: str,
    source: str | None,
    target: str | None,
    run_id: str,
    sensor_name: str,
    extra: Mapping[AssetPartition, Mapping[str, dg.MetadataValue]] | None = None,
) -> list[dg.AssetObservation]:
    """One observation per asset (partition) of a run that was not published: its outcome, the reason, the branch
    its work stays on and the target it did not reach (`extra` adds entries per asset partition)."""
    where = f" into {target!r}" if target else ""
    events = []
    for key, partition in sorted(set(asset_partitions), key=lambda ap: label(*ap)):
        metadata: dict[str, dg.MetadataValue] = {
            "lakehouse/merge": dg.MetadataValue.text(status),
            "lakehouse/published": dg.MetadataValue.bool(False),
            "lakehouse/merge_reason": dg.MetadataValue.text(reason),
            "lakehouse/run_id": dg.MetadataValue.text(run_id),
        }
        if source:
            metadata["lakehouse/branch"] = dg.MetadataValue.text(source)
        if target:
            metadata["lakehouse/target"] = dg.MetadataValue.text(target)
        metadata.update((extra or {}).get((key, partition), {}))
        events.append(
            dg.AssetObservation(
                asset_key=key,
                partition=partition,
                description=f"{sensor_name}: run {run_id} was not published{where}: {reason}",
                metadata=metadata,
            )
        )
    return events


def mark_run_unpublished(instance: dg.DagsterInstance, run: dg.DagsterRun, reason: str, log: Any) -> None:
    """Mark a finished run that was not published as failed (with `reason`) and, if a backfill launched it, queue
    the backfill to be marked failed (`settle_backfills`)."""
    current = instance.get_run_by_id(run.run_id) or run
    if current.status == dg.DagsterRunStatus.SUCCESS:
        instance.report_run_failed(current, message=f"Not published: {reason}")
        log.warning(f"run {run.run_id} marked failed: it was not published")
    if current.tags.get(BACKFILL_ID_TAG):
        instance.add_run_tags(run.run_id, {BACKFILL_OUTCOME_TAG: _PENDING})


def settle_backfills(instance: dg.DagsterInstance, asset_graph: Any, log: logging.Logger | Any) -> list[str]:
    """Mark failed each finished backfill that launched a run which was not published; returns what it did.

    A backfill the daemon has not finished with is left for a later tick: the daemon would overwrite its data."""
    records = instance.get_run_records(filters=dg.RunsFilter(tags={BACKFILL_OUTCOME_TAG: _PENDING}))
    runs_by_backfill: dict[str, list[dg.DagsterRun]] = {}
    for record in records:
        run = record.dagster_run
        runs_by_backfill.setdefault(run.tags[BACKFILL_ID_TAG], []).append(run)
    done = []
    for backfill_id, runs in runs_by_backfill.items():
        backfill = instance.get_backfill(backfill_id)
        if backfill is not None and backfill.status not in _COMPLETED:
            continue
        if backfill is not None:
            _fail_backfill(instance, backfill, runs, asset_graph, log)
            done.append(f"backfill {backfill_id} marked failed: {len(runs)} run(s) not published")
        for run in runs:
            instance.add_run_tags(run.run_id, {BACKFILL_OUTCOME_TAG: _RECORDED})
    return done


def _fail_backfill(
    instance: dg.DagsterInstance, backfill: Any, runs: list[dg.DagsterRun], asset_graph: Any, log: Any
) -> None:
    """Move the runs' asset partitions from the backfill's materialized subset to its failed one; status failed."""
    updated = backfill.with_status(BulkActionStatus.COMPLETED_FAILED)
    if backfill.is_asset_backfill and asset_graph is not None:
        try:
            data = backfill.get_asset_backfill_data(asset_graph)
            planned = set().union(*(audit_run(instance, run).planned for run in runs))
            known = {AssetKeyPartitionKey(k, p) for k, p in planned if k in data.target_subset.asset_keys}
            failed = AssetGraphSubset.from_asset_partition_set(known, asset_graph)
            data = data._replace(
                materialized_subset=data.materialized_subset - failed,
                failed_and_downstream_subset=data.failed_and_downstream_subset | failed,
            )
            updated = updated.with_asset_backfill_data(data, dynamic_partitions_store=instance, asset_graph=asset_graph)
        except Exception as exc:  # the status alone still tells the truth
            log.warning(f"backfill {backfill.backfill_id}: marked failed, but its partition counts were kept: {exc}")
    instance.update_backfill(updated)
