"""`main_state_sensor`: after a run wrote a branch other than `main`, restate each asset's version on `main`.

Dagster shows an asset's latest materialization as its state. A run on `dev` or `wap/<run>` records a
materialization too, so without this the asset's page would describe whatever ran last on any branch. For every
asset (partition) a finished run materialized on another branch, the sensor records a runless materialization of the
version `main` holds, unless the latest one already describes it: a copy of the materialization that produced that
version (metadata, code version, input data versions, so staleness is right), or, for a version written outside
Dagster, one built from the table (row count, column schema, snapshot id); data version = `main`'s snapshot id.
Then it restates the check results that version was audited with. The branch's own materialization stays in the
event history, labelled `lakehouse/branch`. An asset whose table is not on `main` yet keeps its branch version
(labelled with its branch) until it is published. Of branch-partitioned assets only partition `main` is restated:
each other partition is one branch's state.

A revert or reset commit on `main` changes tables without a run: the sensor follows `main`'s log too and restates the
assets whose version on `main` that commit took away (`main_history`), with the restored snapshot id as data version,
so staleness is right afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from dagster_lakehouse.dagster.branch import BRANCH_TAG, branch_dimension, is_branch_partitions
from dagster_lakehouse.dagster.metadata import table_schema, total_rows
from dagster_lakehouse.dagster.resource import LakehouseResource
from dagster_lakehouse.dagster.sensors.main_history import removed_versions, undo_commits, versions_on_main
from dagster_lakehouse.dagster.sensors.merge import COPIED_TAG_PREFIXES, DATA_VERSION_TAG, FINISHED_STATUSES
from dagster_lakehouse.lakehouse.core import Lakehouse
from dagster_lakehouse.lakehouse.errors import LakehouseError
from dagster_lakehouse.lakehouse.names import MAIN
from dagster_lakehouse.lakehouse.refs import Commit

__all__ = ["Restatement", "build_main_state_sensor", "main_state_events", "main_state_sensor", "undo_restatements"]

_HISTORY = 100


@dataclass(frozen=True)
class Restatement:
    """One asset (partition) to be shown at its version on `main`: a run wrote it on `branch`, or `commit` (a revert
    or reset of `main`) took its version away."""

    key: dg.AssetKey
    partition: str | None
    table: str
    branch: str
    run_id: str
    commit: Commit | None = None

    @property
    def cause(self) -> str:
        """Why it is restated, for notes and descriptions."""
        if self.commit is not None:
            return f"{self.commit.kind} commit {self.commit.short_id} on main ({self.commit.message!r})"
        return f"run {self.run_id} wrote {self.branch!r}"

    def cause_metadata(self) -> dict[str, dg.MetadataValue]:
        """The cause as metadata entries of the restated materialization."""
        if self.commit is not None:
            return {
                "lakehouse/restated_after_commit": dg.MetadataValue.text(self.commit.id),
                "lakehouse/restated_after": dg.MetadataValue.text(f"{self.commit.kind}: {self.commit.message}"),
            }
        return {
            "lakehouse/restated_after_run": dg.MetadataValue.text(self.run_id),
            "lakehouse/restated_after_branch": dg.MetadataValue.text(self.branch),
        }


def _text(metadata: dg.RawMetadataMapping | Any, key: str) -> str | None:
    value = metadata.get(key) if metadata else None
    value = getattr(value, "value", value)
    return None if value is None else str(value)


def written_elsewhere(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[Restatement]:
    """The assets (partitions) `run` materialized on a branch other than `main`, from its materialization events."""
    found: dict[tuple[dg.AssetKey, str | None], Restatement] = {}
    for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        event = entry.dagster_event
        if event is None:
            continue
        materialization = event.event_specific_data.materialization
        branch = _text(materialization.metadata, "lakehouse/branch")
        table = _text(materialization.metadata, "dagster/table_name")
        if branch and table and branch != MAIN:
            key = (materialization.asset_key, materialization.partition)
            found[key] = Restatement(*key, table, branch, run.run_id)
    return list(found.values())


def _records(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None, limit: int) -> Sequence[Any]:
    records_filter: dg.AssetKey | dg.AssetRecordsFilter = (
        key if partition is None else dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition])
    )
    return instance.fetch_materializations(records_filter, limit=limit).records


def _describes(materialization: dg.AssetMaterialization, snapshot: int) -> bool:
    """Whether a materialization is of `main` at `snapshot`."""
    return (
        _text(materialization.metadata, "lakehouse/branch") == MAIN
        and _text(materialization.metadata, "lakehouse/snapshot_id") == str(snapshot)
    )


def _branch_state(graph: Any, key: dg.AssetKey, partition: str | None) -> bool:
    """Whether the asset (partition) is some branch's own state: a partition of branch partitions other than `main`,
    or any partition with a branch dimension."""
    if graph is None or not graph.has(key):
        return False
    partitions_def = graph.get(key).partitions_def
    if is_branch_partitions(partitions_def):
        return partition != MAIN
    return branch_dimension(partitions_def) is not None


def main_state_events(
    instance: dg.DagsterInstance,
    lakehouse: Lakehouse,
    restatements: Iterable[Restatement],
    *,
    graph: Any = None,
    sensor_name: str = "main_state_sensor",
) -> tuple[list[dg.AssetMaterialization | dg.AssetCheckEvaluation], list[str]]:
    """The events that make each asset's latest materialization describe `main` again, and a note per asset
    (one per asset partition: of several runs that wrote it, the last named)."""
    events: list[dg.AssetMaterialization | dg.AssetCheckEvaluation] = []
    notes: list[str] = []
    latest = {(item.key, item.partition): item for item in restatements}
    for item in latest.values():
        label = item.key.to_user_string() + (f" [{item.partition}]" if item.partition else "")
        if _branch_state(graph, item.key, item.partition):
            continue
        try:
            snapshot = lakehouse.snapshot_id(item.table, MAIN)
        except LakehouseError:
            snapshot = None
        if snapshot is None:
            notes.append(f"{label}: {item.table} is not on main yet; its latest version is branch {item.branch!r}'s")
            continue
        latest_record = _records(instance, item.key, item.partition, 1)
        if latest_record and _describes(latest_record[0].asset_materialization, snapshot):
            continue
        history = _records(instance, item.key, item.partition, _HISTORY)
        source = next((r for r in history if _produced(r.asset_materialization, snapshot)), None)
        events.append(_restated(lakehouse, item, snapshot, source, sensor_name))
        if source is not None and graph is not None and graph.has(item.key):
            events.extend(_restated_checks(instance, graph, item, source))
        notes.append(f"{label}: restated main's snapshot {snapshot} after {item.cause}")
    return events, notes


def _produced(materialization: dg.AssetMaterialization, snapshot: int) -> bool:
    """Whether a materialization recorded the version at `snapshot` on `main` (written there or published there)."""
    tags = materialization.tags or {}
    return _describes(materialization, snapshot) or (
        tags.get(DATA_VERSION_TAG) == str(snapshot) and _text(materialization.metadata, "lakehouse/branch") == MAIN
    )


def _restated(
    lakehouse: Lakehouse, item: Restatement, snapshot: int, source: Any, sensor_name: str
) -> dg.AssetMaterialization:
    """`main`'s version as a materialization: a copy of the one that produced it, else built from the table."""
    if source is not None:
        produced = source.asset_materialization
        metadata = dict(produced.metadata)
        tags = {k: v for k, v in (produced.tags or {}).items() if k.startswith(COPIED_TAG_PREFIXES)}
        metadata["lakehouse/produced_by_run"] = dg.MetadataValue.text(
            _text(produced.metadata, "lakehouse/run_id") or source.run_id or ""
        )
    else:
        table = lakehouse.table(item.table, MAIN)
        metadata = {
            "dagster/row_count": dg.MetadataValue.int(total_rows(table, 0)),
            "dagster/column_schema": dg.MetadataValue.table_schema(table_schema(table.schema())),
            "dagster/table_name": dg.MetadataValue.text(item.table),
            "lakehouse/uri": dg.MetadataValue.path(table.location()),
        }
        tags = {}
    metadata.update(
        {
            "lakehouse/branch": dg.MetadataValue.text(MAIN),
            "lakehouse/snapshot_id": dg.MetadataValue.int(snapshot),
            **item.cause_metadata(),
        }
    )
    tags[DATA_VERSION_TAG] = str(snapshot)
    return dg.AssetMaterialization(
        asset_key=item.key,
        partition=item.partition,
        description=(
            f"{sensor_name}: the version on main (snapshot {snapshot}), restated after {item.cause}"
            + ("" if item.commit is not None else "; that run's own materialization is in the event history")
        ),
        metadata=metadata,
        tags=tags,
    )


def _restated_checks(
    instance: dg.DagsterInstance, graph: Any, item: Restatement, source: Any
) -> list[dg.AssetCheckEvaluation]:
    """The latest evaluation of each of the asset's checks made for the version `source` recorded, restated."""
    produced_by = {_text(source.asset_materialization.metadata, "lakehouse/run_id"), source.run_id} - {None, ""}
    events = []
    for check_key in sorted(graph.get(item.key).check_keys, key=lambda k: k.name):
        for record in instance.event_log_storage.get_asset_check_execution_history(check_key, limit=_HISTORY):
            evaluation = record.event.dagster_event.event_specific_data if record.event is not None else None
            if not isinstance(evaluation, dg.AssetCheckEvaluation) or evaluation.partition != item.partition:
                continue
            if record.run_id in produced_by or _text(evaluation.metadata, "lakehouse/run_id") in produced_by:
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


def undo_restatements(
    instance: dg.DagsterInstance, lakehouse: Lakehouse, commits: Sequence[Commit], asset_keys: Iterable[dg.AssetKey]
) -> list[Restatement]:
    """The assets (partitions) each revert or reset commit on `main` took their version away from: every unpartitioned
    asset on a table it changed, and each partition whose latest version on `main` it removed."""
    restatements = []
    keys = list(asset_keys)
    for commit in commits:
        removed = removed_versions(lakehouse, commit)
        for key, partition, table, version in versions_on_main(instance, keys, set(removed)):
            if partition is None or version in removed[table]:
                restatements.append(Restatement(key, partition, table, MAIN, commit.run_id or "", commit))
    return restatements


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
    """A sensor that keeps each asset's latest materialization at its version on `main` after runs on other branches.

    Needs the resource `lakehouse` (a `LakehouseResource`). Its cursor is the update time of the last run looked
    at and the position in `main`'s log; the first evaluation looks at the latest `runs_per_tick` finished runs and
    starts following `main`'s log from its end (earlier reverts and resets are not restated).
    """

    @dg.sensor(
        name=name,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description=(
            "After a run wrote a branch other than main, or a revert or reset of main, records each asset's version "
            "on main again (snapshot id as data version, its code version and check results), so asset pages describe "
            "production."
        ),
    )
    def _main_state_sensor(
        context: dg.SensorEvaluationContext, lakehouse: LakehouseResource
    ) -> dg.SensorResult | dg.SkipReason:
        cursor = json.loads(context.cursor) if context.cursor else {}
        after = datetime.fromtimestamp(cursor["after"], UTC) if "after" in cursor else None
        store = lakehouse.get_lakehouse()
        records = _finished_runs(context.instance, after, runs_per_tick)
        undone, main_seq = undo_commits(store, cursor.get("main_seq"))
        graph = context.repository_def.asset_graph if context.repository_def is not None else None
        restatements = [item for r in records for item in written_elsewhere(context.instance, r.dagster_run)]
        if undone and graph is not None:
            restatements += undo_restatements(context.instance, store, undone, graph.materializable_asset_keys)
        newest = max((r.update_timestamp.timestamp() for r in records), default=cursor.get("after"))
        new_cursor = json.dumps({k: v for k, v in {"after": newest, "main_seq": main_seq}.items() if v is not None})
        if not records and not undone:
            return dg.SensorResult(
                cursor=new_cursor,
                skip_reason="no finished run wrote a branch other than main, and no revert or reset of main, since the "
                "last evaluation",
            )
        events, notes = main_state_events(context.instance, store, restatements, graph=graph, sensor_name=name)
        for note in notes:
            context.log.info(f"{name}: {note}")
        looked_at = f"{len(records)} run(s) and {len(undone)} revert/reset commit(s) of main looked at"
        summary = "; ".join(notes) or f"{looked_at}: every asset already shows main's version"
        return dg.SensorResult(asset_events=events, cursor=new_cursor, skip_reason=summary[:1000])

    return _main_state_sensor


main_state_sensor = build_main_state_sensor()
"""The default `main_state_sensor` (stopped until turned on; every 10 s)."""
