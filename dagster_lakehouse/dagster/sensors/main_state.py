"""`main_state_sensor`: keep each asset's latest materialization at its version on `main`.

Dagster shows an asset's latest materialization as its state. A run on `dev` or `wap/<run>` records a
materialization too, and a merge or write on `main` from a shell or Python records none, so without this the asset's
page would describe whatever ran last on any branch, or miss what `main` got outside Dagster. The sensor restates:

- each asset (partition) a finished run materialized on another branch (`main_changes.written_elsewhere`);
- each asset (partition) on a table a new commit on `main` changed, whatever made it (a merge or write from Dagster,
  the CLI, Python or another process, a revert, a reset): it follows `main`'s commit log with a cursor, so each
  commit is handled once and a tick with no new commit reads no table (`main_history`, `main_changes`).

For each, unless its latest materialization already describes it, it records a runless materialization of the
version `main` holds (`main_events`): for an unpartitioned asset the table's snapshot; for a partition of data
partitions exactly that partition (its rows on `main`, and the snapshot that added its newest data file, from
`partition_state`), or nothing when `main` lacks the partition (the latest materialization then stays the branch
run's, labelled with its branch). It copies the materialization that produced that version (metadata, code version,
input data versions, so staleness is right), or builds one from the table for a version written outside Dagster;
data version = that snapshot id. Then it restates the check results that version was audited with, of that
partition or unpartitioned. Of branch-partitioned assets only partition `main` is restated: each other partition is
one branch's state.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from dagster_lakehouse.dagster.branch import BRANCH_TAG, branch_dimension, is_branch_partitions
from dagster_lakehouse.dagster.resource import LakehouseResource
from dagster_lakehouse.dagster.sensors.main_changes import Restatement, commit_restatements, written_elsewhere
from dagster_lakehouse.dagster.sensors.main_events import (
    HISTORY,
    describes,
    main_version,
    records,
    restated,
    restated_checks,
    source_of,
    unaudited_checks,
)
from dagster_lakehouse.dagster.sensors.main_history import main_commits
from dagster_lakehouse.dagster.sensors.merge import FINISHED_STATUSES
from dagster_lakehouse.lakehouse.core import Lakehouse
from dagster_lakehouse.lakehouse.names import MAIN

__all__ = ["Restatement", "build_main_state_sensor", "main_state_events", "main_state_sensor", "written_elsewhere"]


def _branch_state(graph: Any, key: dg.AssetKey, partition: str | None) -> bool:
    """Whether the asset (partition) is some branch's own state: a partition of branch partitions other than `main`,
    or any partition with a branch dimension."""
    if graph is None or not graph.has(key):
        return False
    partitions_def = graph.get(key).partitions_def
    if is_branch_partitions(partitions_def):
        return partition != MAIN
    return branch_dimension(partitions_def) is not None


def _missing_checks(instance: dg.DagsterInstance, graph: Any, item: Restatement, latest: Any) -> list[Any]:
    """For a materialization that already describes `main`, the check results of its version it lacks."""
    if graph is None or not graph.has(item.key):
        return []
    missing = unaudited_checks(instance, graph, item, latest)
    return restated_checks(instance, graph, item, latest, missing) if missing else []


def main_state_events(
    instance: dg.DagsterInstance,
    lakehouse: Lakehouse,
    restatements: Iterable[Restatement],
    *,
    graph: Any = None,
    sensor_name: str = "main_state_sensor",
) -> tuple[list[dg.AssetMaterialization | dg.AssetCheckEvaluation], list[str]]:
    """The events that make each asset's (partition's) latest materialization describe `main` again, and a note per
    restated or missing one (of several causes of one asset partition, the last named)."""
    events: list[dg.AssetMaterialization | dg.AssetCheckEvaluation] = []
    notes: list[str] = []
    latest = {(item.key, item.partition): item for item in restatements}
    for item in latest.values():
        if _branch_state(graph, item.key, item.partition):
            continue
        version = main_version(lakehouse, graph, item)
        if version is None:
            if item.commit is None:
                notes.append(f"{item.label}: not on main yet; its latest version is branch {item.branch!r}'s")
            continue
        latest_record = records(instance, item.key, item.partition, 1)
        if latest_record and describes(latest_record[0].asset_materialization, version):
            events.extend(_missing_checks(instance, graph, item, latest_record[0]))
            continue
        source = source_of(
            lakehouse, item.table, records(instance, item.key, item.partition, HISTORY), version.snapshot
        )
        events.append(restated(lakehouse, item, version, source, sensor_name))
        if source is not None and graph is not None and graph.has(item.key):
            events.extend(restated_checks(instance, graph, item, source))
        notes.append(f"{item.label}: restated main's snapshot {version.snapshot} after {item.cause}")
    return events, notes


def _finished_runs(instance: dg.DagsterInstance, after: datetime | None, limit: int) -> list[Any]:
    """Finished runs tagged with a lakehouse branch, updated after `after`, oldest update first."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(statuses=FINISHED_STATUSES, updated_after=after),
        order_by="update_timestamp",
        ascending=after is not None,
        limit=limit,
    )
    records = records if after is not None else list(reversed(records))
    return [r for r in records if r.dagster_run.tags.get(BRANCH_TAG, MAIN) != MAIN]


def build_main_state_sensor(
    *,
    name: str = "main_state_sensor",
    minimum_interval_seconds: int = 10,
    runs_per_tick: int = 50,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.STOPPED,
) -> dg.SensorDefinition:
    """A sensor that keeps each asset's latest materialization at its version on `main` after runs on other branches
    and after every commit on `main`.

    Needs the resource `lakehouse` (a `LakehouseResource`). Its cursor is the update time of the last run looked
    at and the position in `main`'s log; the first evaluation looks at the latest `runs_per_tick` finished runs and
    starts following `main`'s log from its end (earlier commits are not restated).
    """

    @dg.sensor(
        name=name,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description=(
            "After a run wrote a branch other than main, or any commit on main (merge, write, revert, reset), records "
            "each asset's (partition's) version on main again (snapshot id as data version, its code version and check results), so asset pages describe "
            "production."
        ),
    )
    def _main_state_sensor(
        context: dg.SensorEvaluationContext, lakehouse: LakehouseResource
    ) -> dg.SensorResult | dg.SkipReason:
        cursor = json.loads(context.cursor) if context.cursor else {}
        after = datetime.fromtimestamp(cursor["after"], UTC) if "after" in cursor else None
        store = lakehouse.get_lakehouse()
        runs = _finished_runs(context.instance, after, runs_per_tick)
        commits, main_seq = main_commits(store, cursor.get("main_seq"))
        graph = context.repository_def.asset_graph if context.repository_def is not None else None
        restatements = [item for r in runs for item in written_elsewhere(context.instance, r.dagster_run)]
        restatements += commit_restatements(context.instance, graph, commits)
        newest = max((r.update_timestamp.timestamp() for r in runs), default=cursor.get("after"))
        new_cursor = json.dumps({k: v for k, v in {"after": newest, "main_seq": main_seq}.items() if v is not None})
        if not runs and not commits:
            return dg.SensorResult(
                cursor=new_cursor,
                skip_reason="no finished run wrote a branch other than main, and no new commit on main, since the "
                "last evaluation",
            )
        events, notes = main_state_events(context.instance, store, restatements, graph=graph, sensor_name=name)
        for note in notes:
            context.log.info(f"{name}: {note}")
        looked_at = f"{len(runs)} run(s) and {len(commits)} commit(s) on main looked at"
        summary = "; ".join(notes) or f"{looked_at}: every asset already shows main's version"
        return dg.SensorResult(asset_events=events, cursor=new_cursor, skip_reason=summary[:1000])

    return _main_state_sensor


main_state_sensor = build_main_state_sensor()
"""The default `main_state_sensor` (stopped until turned on; every 10 s)."""
