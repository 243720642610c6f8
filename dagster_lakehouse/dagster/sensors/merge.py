"""`merge_sensor`: publishes finished runs that asked for it by merging their branch into its target.

A run asks to be published when it is write-audit-publish (run tag `lakehouse/wap=true` or
`LakehouseResource(wap=True)`: it wrote to `wap/<run_id>`, merged into the branch it was forked from) or carries
run tag `lakehouse/merge_into=<target>` (the branch it wrote to is merged into `<target>`). The resource tags such a
run `lakehouse/merge=pending` and `lakehouse/warehouse=<its warehouse>` when it first uses its branch; the sensor
takes the finished pending runs of its own warehouse, earliest finished first.

A run is merged only when it succeeded, every asset it planned materialized and every asset check evaluation passed,
blocking or not (for a re-execution: the latest evaluation of each check across the run and the runs it
re-executes). Then the merge is recorded as an `AssetMaterialization` on the target per merged asset, the WAP branch
is deleted, and the run is tagged `lakehouse/merge=merged`. Otherwise the run is tagged `skipped` (or `conflict`,
naming each conflicting table and why) with `lakehouse/merge_reason`, and
every branch is kept for inspection; a run that was not published is also marked failed with the reason, its
asset partitions get an observation saying so, and its backfill is marked failed (`unpublished`). The run tag is the
sensor's state: a run leaves `pending` once handled, so it is
handled once; a run whose handling raised an unexpected error stays pending and is retried on the next tick.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from dagster_lakehouse.dagster.branch import BRANCH_TAG
from dagster_lakehouse.dagster.errors import BranchResolutionError
from dagster_lakehouse.dagster.resource import LakehouseResource
from dagster_lakehouse.dagster.sensors.run_audit import AssetPartition, RunAudit, audit_run, label
from dagster_lakehouse.dagster.sensors.unpublished import (
    mark_run_unpublished,
    settle_backfills,
    unpublished_observations,
)
from dagster_lakehouse.dagster.sensors.versions import MainVersion, version_on
from dagster_lakehouse.dagster.wap import (
    MERGE_CONFLICT,
    MERGE_INTO_TAG,
    MERGE_PENDING,
    MERGE_REASON_TAG,
    MERGE_SKIPPED,
    MERGE_TAG,
    MERGED,
    WAP_TAG,
    WAREHOUSE_TAG,
    wap_branch_name,
    wap_enabled,
)
from dagster_lakehouse.lakehouse.core import Lakehouse
from dagster_lakehouse.lakehouse.errors import LakehouseError, MergeConflict, RefNotFound
from dagster_lakehouse.lakehouse.merge import MergeResult

__all__ = [
    "MergeOutcome",
    "RunAudit",
    "audit_run",
    "build_merge_sensor",
    "merge_sensor",
    "publish_run",
]

FINISHED_STATUSES = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
DATA_VERSION_TAG = "dagster/data_version"
COPIED_TAG_PREFIXES = (
    "dagster/code_version",
    "dagster/input_data_version/",
    "dagster/input_event_pointer/",
    "dagster/data_version_is_user_provided",
)
_DROPPED_METADATA = ("lakehouse/commit_id",)
_REASON_LIMIT = 1000


@dataclass
class MergeOutcome:
    """How the sensor handled one run: `merged`, `skipped` or `conflict`, why, and the asset events to report."""

    run_id: str
    status: str
    reason: str
    source: str | None = None
    target: str | None = None
    merge: MergeResult | None = None
    events: list[dg.AssetMaterialization | dg.AssetObservation | dg.AssetCheckEvaluation] = field(default_factory=list)


def _source_and_target(lakehouse: Lakehouse, run: dg.DagsterRun, audit: RunAudit) -> tuple[str, str]:
    """The branch to merge and the branch to merge it into; raises `LookupError` with the reason when unknown."""
    tags = run.tags
    if wap_enabled(tags):
        source = wap_branch_name(run.root_run_id or run.run_id)
        try:
            target = lakehouse.ref(source).parent
        except RefNotFound:
            raise LookupError(
                f"its write-audit-publish branch {source!r} does not exist (deleted, or never written)"
            ) from None
        if not target:
            raise LookupError(f"its write-audit-publish branch {source!r} records no branch it was forked from")
        return source, target
    target = tags.get(MERGE_INTO_TAG, "").strip()
    if not target:
        raise LookupError(f"it is neither write-audit-publish (run tag {WAP_TAG!r}) nor tagged {MERGE_INTO_TAG!r}")
    branches = audit.branches() or ({tags[BRANCH_TAG]} if tags.get(BRANCH_TAG) else set())
    if not branches:
        raise LookupError("it wrote no lakehouse table, so the branch to merge is unknown")
    if len(branches) > 1:
        raise LookupError(f"it wrote to several branches ({', '.join(sorted(branches))}); merge them by hand")
    source = branches.pop()
    if source == target:
        raise LookupError(f"it wrote directly to its merge target {target!r}: nothing to merge")
    return source, target


def publish_run(
    instance: dg.DagsterInstance,
    lakehouse: Lakehouse,
    run: dg.DagsterRun,
    *,
    log: logging.Logger | Any,
    sensor_name: str = "merge_sensor",
    delete_merged_branch: bool = True,
    graph: Any = None,
) -> MergeOutcome:
    """Merge a finished run's branch into its target if the run passed its audit; tag the run with the outcome.
    `graph` (the repository's asset graph) lets a published partition be described exactly: its rows on the target
    and the snapshot that added them."""
    run_id = run.run_id
    who = f"{sensor_name}: run {run_id} (job {run.job_name})"
    audit = audit_run(instance, run)
    try:
        source, target = _source_and_target(lakehouse, run, audit)
    except (LookupError, BranchResolutionError) as exc:
        return _finish(instance, log, MergeOutcome(run_id, MERGE_SKIPPED, f"not merged: {exc}"), who)
    problems = audit.problems()
    where = f"branch {source!r} (target {target!r})"
    if problems:
        written = sorted(set(audit.tables().values()))
        tables = f" (tables written: {', '.join(written)})" if written else ""
        reason = f"not merged into {target!r}: {'; '.join(problems)}; {source!r}{tables} kept for inspection"
        outcome = MergeOutcome(run_id, MERGE_SKIPPED, reason, source, target)
        outcome.events = _unpublished(audit, outcome, sensor_name)
        return _unpublished_run(instance, run, log, _finish(instance, log, outcome, who))
    message = f"publish {source} into {target}: run {run_id} of job {run.job_name} passed its audit"
    try:
        result = lakehouse.merge(source, into=target, message=message, run_id=run_id)
    except MergeConflict as exc:
        conflicts = {c.table: c.reason for c in exc.conflicts}
        reason = f"conflict merging {where}: {_conflict_text(conflicts)}; nothing was merged, both branches kept"
        outcome = MergeOutcome(run_id, MERGE_CONFLICT, reason, source, target)
        outcome.events = _unpublished(audit, outcome, sensor_name, conflicts)
        return _unpublished_run(instance, run, log, _finish(instance, log, outcome, who))
    except LakehouseError as exc:
        reason = f"merge of {where} refused: {exc}; branches kept"
        outcome = MergeOutcome(run_id, MERGE_SKIPPED, reason, source, target)
        outcome.events = _unpublished(audit, outcome, sensor_name)
        return _unpublished_run(instance, run, log, _finish(instance, log, outcome, who))
    versions = {
        (key, partition): version_on(lakehouse, graph, key, partition, table, target)
        for (key, partition), table in audit.tables().items()
        if table in result.tables
    }
    if result.tables:
        reason = f"merged {where}: tables {', '.join(result.tables)} (commit {result.commit_id})"
    else:
        reason = f"merged {where}: nothing had changed"
    outcome = MergeOutcome(run_id, MERGED, reason, source, target, result)
    outcome.events = _merge_materializations(audit, result, versions, source, target, run_id, sensor_name)
    _finish(instance, log, outcome, who)
    if delete_merged_branch and source == wap_branch_name(run.root_run_id or run.run_id):
        try:
            lakehouse.delete_branch(source)
            log.info(f"{who}: deleted merged branch {source!r}")
        except LakehouseError as exc:
            log.warning(f"{who}: merged, but could not delete branch {source!r}: {exc}")
    return outcome


def _finish(instance: dg.DagsterInstance, log: Any, outcome: MergeOutcome, who: str) -> MergeOutcome:
    """Tag the run with the outcome and log it (warning unless merged)."""
    reason = outcome.reason if len(outcome.reason) <= _REASON_LIMIT else outcome.reason[: _REASON_LIMIT - 3] + "..."
    instance.add_run_tags(outcome.run_id, {MERGE_TAG: outcome.status, MERGE_REASON_TAG: reason})
    (log.info if outcome.status == MERGED else log.warning)(f"{who}: {outcome.reason}")
    return outcome


def _merge_materializations(
    audit: RunAudit,
    result: MergeResult,
    versions: Mapping[AssetPartition, MainVersion | None],
    source: str,
    target: str,
    run_id: str,
    sensor_name: str,
) -> list[dg.AssetMaterialization | dg.AssetObservation]:
    """One materialization on the target per asset (partition) of the run whose table the merge took, describing its
    version there (a partition: its rows and the snapshot that added them), followed by the run's check evaluations of
    that asset (partition), so the UI shows the published version as audited."""
    events: list[dg.AssetMaterialization | dg.AssetObservation | dg.AssetCheckEvaluation] = []
    merged = set(result.tables)
    for (key, partition), table in sorted(audit.tables().items(), key=lambda item: label(*item[0])):
        if table not in merged:
            continue
        written = audit.materializations[(key, partition)]
        version = versions.get((key, partition))
        metadata: dict[str, Any] = {k: v for k, v in written.metadata.items() if k not in _DROPPED_METADATA}
        metadata.update(
            {
                "lakehouse/branch": dg.MetadataValue.text(target),
                "lakehouse/merged_from": dg.MetadataValue.text(source),
                "lakehouse/merge_commit": dg.MetadataValue.text(result.commit_id or ""),
                "lakehouse/run_id": dg.MetadataValue.text(run_id),
            }
        )
        tags = {k: v for k, v in (written.tags or {}).items() if k.startswith(COPIED_TAG_PREFIXES)}
        if version is not None:
            metadata["lakehouse/snapshot_id"] = dg.MetadataValue.int(version.snapshot)
            tags[DATA_VERSION_TAG] = str(version.snapshot)
            if version.rows is not None:
                metadata["dagster/row_count"] = dg.MetadataValue.int(version.rows)
        events.append(
            dg.AssetMaterialization(
                asset_key=key,
                partition=partition,
                description=f"{sensor_name} merged branch {source!r} into {target!r} after run {run_id} passed its audit",
                metadata=metadata,
                tags=tags,
            )
        )
        events.extend(_republished_checks(audit, key, partition, source, target, run_id))
    return events


def _republished_checks(
    audit: RunAudit, key: dg.AssetKey, partition: str | None, source: str, target: str, run_id: str
) -> list[dg.AssetCheckEvaluation]:
    """The run's (passed) evaluations of `key`'s checks, restated for the version the merge published."""
    return [
        dg.AssetCheckEvaluation(
            asset_key=key,
            check_name=check_key.name,
            passed=evaluation.passed,
            metadata={
                **evaluation.metadata,
                "lakehouse/branch": dg.MetadataValue.text(target),
                "lakehouse/audited_on": dg.MetadataValue.text(source),
                "lakehouse/run_id": dg.MetadataValue.text(run_id),
            },
            severity=evaluation.severity,
            description=evaluation.description,
            blocking=evaluation.blocking,
            partition=evaluation.partition,
        )
        for (check_key, check_partition), evaluation in sorted(audit.evaluations.items(), key=lambda i: i[0][0].name)
        if check_key.asset_key == key and check_partition in (partition, None)
    ]


def _conflict_text(conflicts: Mapping[str, str]) -> str:
    return "; ".join(f"{table}: {why}" for table, why in conflicts.items())


def _unpublished(
    audit: RunAudit, outcome: MergeOutcome, sensor_name: str, conflicts: Mapping[str, str] | None = None
) -> list[dg.AssetMaterialization | dg.AssetObservation | dg.AssetCheckEvaluation]:
    """One observation per asset (partition) the run planned, saying it was not published and why; for a conflict,
    also the conflicting tables and each one's reason (`lakehouse/conflict_reason`: the asset's own table's reason,
    or all of them)."""
    tables = audit.tables()
    extra: dict[AssetPartition, dict[str, dg.MetadataValue]] = {}
    if conflicts:
        details = _conflict_text(conflicts)
        for asset_partition in set(audit.planned) | set(audit.materializations):
            table = tables.get(asset_partition)
            extra[asset_partition] = {
                "lakehouse/conflicting_tables": dg.MetadataValue.text(", ".join(conflicts)),
                "lakehouse/conflict_reason": dg.MetadataValue.text(
                    f"{table}: {conflicts[table]}" if table in conflicts else details
                ),
                "lakehouse/conflict_reasons": dg.MetadataValue.json(dict(conflicts)),
            }
    return list(
        unpublished_observations(
            set(audit.planned) | set(audit.materializations),
            status=outcome.status,
            reason=outcome.reason,
            source=outcome.source,
            target=outcome.target,
            run_id=outcome.run_id,
            sensor_name=sensor_name,
            extra=extra,
        )
    )


def _unpublished_run(instance: dg.DagsterInstance, run: dg.DagsterRun, log: Any, outcome: MergeOutcome) -> MergeOutcome:
    """Mark the run failed with the outcome's reason (and queue its backfill to be marked failed)."""
    mark_run_unpublished(instance, run, outcome.reason, log)
    return outcome


def pending_runs(instance: dg.DagsterInstance, warehouse: str, limit: int) -> tuple[list[dg.DagsterRun], int]:
    """Up to `limit` finished runs tagged `lakehouse/merge=pending` on this warehouse, earliest finished first,
    and how many pending runs belong to another lakehouse (tag `lakehouse/warehouse`) and were left alone."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(tags={MERGE_TAG: MERGE_PENDING}, statuses=FINISHED_STATUSES),
        order_by="update_timestamp",
        ascending=True,
    )
    runs = [r.dagster_run for r in records if r.dagster_run.tags.get(WAREHOUSE_TAG, warehouse) == warehouse]
    return runs[:limit], len(records) - len(runs)


def build_merge_sensor(
    *,
    name: str = "merge_sensor",
    minimum_interval_seconds: int = 30,
    delete_merged_branch: bool = True,
    runs_per_tick: int = 25,
    tick_budget_seconds: float = 30.0,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.STOPPED,
) -> dg.SensorDefinition:
    """A sensor that merges each finished write-audit-publish (or `lakehouse/merge_into`) run whose audit passed.

    Needs the resource `lakehouse` (a `LakehouseResource`). Merges are recorded as asset materializations on the
    target (metadata `lakehouse/branch`, `lakehouse/merged_from`, `lakehouse/snapshot_id`, `lakehouse/merge_commit`,
    `lakehouse/run_id`); `delete_merged_branch` deletes a merged WAP branch (never a `merge_into` run's branch).
    At most `runs_per_tick` runs are handled per evaluation, and no new one once `tick_budget_seconds` have passed
    (at least one always is): the rest wait for the next evaluation. The budget keeps a tick well inside Dagster's
    sensor timeout (60 s by default), since runs are tagged as they are merged but the merges' materializations are
    recorded only when the tick returns.
    """

    @dg.sensor(
        name=name,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description=(
            "Merges the branch of each finished write-audit-publish run (run tag lakehouse/wap=true) into the branch "
            "it was forked from, and of runs tagged lakehouse/merge_into into that branch, when every planned asset "
            "materialized and every asset check passed; records the merge as materializations on the target."
        ),
    )
    def _merge_sensor(
        context: dg.SensorEvaluationContext, lakehouse: LakehouseResource
    ) -> dg.SensorResult | dg.SkipReason:
        store = lakehouse.get_lakehouse()
        graph = context.repository_def.asset_graph if context.repository_def is not None else None
        summary: list[str] = settle_backfills(context.instance, graph, context.log)
        runs, foreign = pending_runs(context.instance, store.config.warehouse, runs_per_tick)
        if foreign:
            context.log.info(
                f"{name}: left {foreign} pending run(s) of other lakehouses (tag {WAREHOUSE_TAG} is not "
                f"{store.config.warehouse!r}) to their own merge sensor"
            )
        if not runs:
            return dg.SkipReason(
                "; ".join([*summary, f"no finished run waits to be merged (run tag {MERGE_TAG}={MERGE_PENDING})"])
            )
        events: list[dg.AssetMaterialization | dg.AssetObservation | dg.AssetCheckEvaluation] = []
        deadline = time.monotonic() + tick_budget_seconds
        for index, run in enumerate(runs):
            if index and time.monotonic() >= deadline:
                left = f"{len(runs) - index} more run(s) wait for the next tick (tick budget {tick_budget_seconds:g}s)"
                context.log.info(f"{name}: {left}")
                summary.append(left)
                break
            try:
                outcome = publish_run(
                    context.instance,
                    store,
                    run,
                    log=context.log,
                    sensor_name=name,
                    delete_merged_branch=delete_merged_branch,
                    graph=graph,
                )
            except Exception as exc:
                context.log.exception(f"{name}: run {run.run_id} could not be handled, retrying next tick: {exc}")
                summary.append(f"run {run.run_id}: error ({type(exc).__name__}), retried next tick")
                continue
            events.extend(outcome.events)
            summary.append(f"run {run.run_id}: {outcome.status}")
        return dg.SensorResult(asset_events=events, skip_reason="; ".join(summary))

    return _merge_sensor


merge_sensor = build_merge_sensor()
"""The default `merge_sensor` (stopped until turned on; every 30 s; deletes merged WAP branches)."""
