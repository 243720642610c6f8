"""`build_raw_table_sensor`: report new snapshots of raw lakehouse tables and run the assets downstream of them.

Raw tables are written outside Dagster (ingestion jobs, other engines) and appear in Dagster as external assets
(`lakehouse_table_spec("taxi.trips")`). The sensor keeps `{table: snapshot_id}` in its cursor and reports each new
snapshot as an asset event whose data version (tag `dagster/data_version`) is the snapshot id, then requests a run
of the assets downstream of the changed tables. The event is an `AssetMaterialization` (an external write, as
Dagster reports them) for a plain external asset: Dagster's staleness reads only materializations of non-observable
assets, so only that makes readers show as stale in the UI (an observation would leave them stale for good). For an
observable source asset it is an `AssetObservation`. The event also carries the table's column schema, row count
(from the snapshot summary) and location, so the external asset's UI shows what the table holds now. The first
evaluation (no cursor) records the snapshots and reports them but requests no run, since nothing is known to have
changed; a table that appears later counts as changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import dagster as dg
from pyiceberg.table import Table

from dagster_lakehouse.dagster.metadata import table_schema
from dagster_lakehouse.dagster.resource import LakehouseResource
from dagster_lakehouse.dagster.tables import TABLE_KEY, table_name_for
from dagster_lakehouse.lakehouse.core import Lakehouse
from dagster_lakehouse.lakehouse.errors import TableNotFound
from dagster_lakehouse.lakehouse.names import MAIN, split_table_name

if TYPE_CHECKING:
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

__all__ = ["RawTable", "build_raw_table_sensor", "raw_tables"]

DATA_VERSION_TAG = "dagster/data_version"

RawTableLike = dg.AssetSpec | dg.AssetKey | dg.AssetsDefinition | dg.SourceAsset | str


@dataclass(frozen=True)
class RawTable:
    """A raw lakehouse table and the asset key it has in Dagster."""

    key: dg.AssetKey
    table: str


def raw_tables(assets: Sequence[RawTableLike], default_namespace: str = "public") -> list[RawTable]:
    """The tables behind `assets`: metadata `lakehouse/table` of a spec or asset, else its key; a string is a table
    name (key `[namespace, table]`)."""
    found: dict[dg.AssetKey, RawTable] = {}
    for item in assets:
        if isinstance(item, str):
            namespace, name = split_table_name(item)
            entries = [RawTable(dg.AssetKey([namespace, name]), item)]
        elif isinstance(item, dg.AssetKey):
            entries = [RawTable(item, table_name_for(item, None, default_namespace))]
        elif isinstance(item, (dg.AssetSpec, dg.SourceAsset)):
            entries = [RawTable(item.key, table_name_for(item.key, item.metadata, default_namespace))]
        elif isinstance(item, dg.AssetsDefinition):
            entries = [RawTable(s.key, table_name_for(s.key, s.metadata, default_namespace)) for s in item.specs]
        else:
            raise TypeError(
                f"raw table sensor: expected an AssetSpec, AssetKey, AssetsDefinition, SourceAsset or table name, "
                f"not {item!r}"
            )
        for entry in entries:
            found.setdefault(entry.key, entry)
    if not found:
        raise ValueError("raw table sensor: give at least one table to watch")
    return list(found.values())


def _load(lakehouse: Lakehouse, tables: Sequence[RawTable], ref: str) -> dict[str, Table]:
    """The watched tables that exist on `ref`, each loaded once per evaluation."""
    loaded: dict[str, Table] = {}
    for raw in tables:
        try:
            loaded[raw.table] = lakehouse.table(raw.table, ref)
        except TableNotFound:
            continue
    return loaded


def _snapshot_id(table: Table | None) -> int | None:
    """The table's current snapshot id (None when it does not exist or has no data)."""
    snapshot = table.current_snapshot() if table is not None else None
    return snapshot.snapshot_id if snapshot is not None else None


def _row_count(table: Table) -> int | None:
    """Rows in the table's current snapshot, from its summary's `total-records` (None when not recorded)."""
    snapshot = table.current_snapshot()
    total = snapshot.summary["total-records"] if snapshot is not None and snapshot.summary else None
    return int(total) if total is not None else None


def _report(
    raw: RawTable, table: Table, snapshot: int, ref: str, observable: bool
) -> dg.AssetMaterialization | dg.AssetObservation:
    """The event saying `raw` is at `snapshot` on `ref` (data version = snapshot id), with its schema and size."""
    event = dg.AssetObservation if observable else dg.AssetMaterialization
    metadata: dict[str, dg.MetadataValue] = {
        TABLE_KEY: dg.MetadataValue.text(raw.table),
        "dagster/table_name": dg.MetadataValue.text(raw.table),
        "dagster/column_schema": dg.MetadataValue.table_schema(table_schema(table.schema())),
        "lakehouse/uri": dg.MetadataValue.path(table.location()),
        "lakehouse/branch": dg.MetadataValue.text(ref),
        "lakehouse/snapshot_id": dg.MetadataValue.int(snapshot),
    }
    rows = _row_count(table)
    if rows is not None:
        metadata["dagster/row_count"] = dg.MetadataValue.int(rows)
    return event(
        asset_key=raw.key,
        description=f"snapshot {snapshot} of lakehouse table {raw.table!r} on {ref!r}, written outside Dagster",
        metadata=metadata,
        tags={DATA_VERSION_TAG: str(snapshot)},
    )


def _observable(context: dg.SensorEvaluationContext, tables: Sequence[RawTable]) -> set[dg.AssetKey]:
    """The watched tables that are observable source assets in the sensor's code location (reported by observation)."""
    repository = context.repository_def
    if repository is None:
        return set()
    graph = repository.asset_graph
    return {t.key for t in tables if graph.has(t.key) and graph.get(t.key).is_observable}


def _downstream(context: dg.SensorEvaluationContext, keys: Sequence[dg.AssetKey], name: str) -> list[dg.AssetKey]:
    """Materializable assets directly downstream of `keys` in the sensor's repository."""
    repository = context.repository_def
    if repository is None:
        raise dg.DagsterInvariantViolationError(
            f"{name} computes the assets downstream of changed tables from the code location's asset graph, but "
            "it was evaluated without one: pass definitions=/repository_def= to build_sensor_context, "
            "or give the sensor a job= or asset_selection="
        )
    graph = repository.asset_graph
    children: set[dg.AssetKey] = set()
    for key in keys:
        if graph.has(key):
            children.update(c for c in graph.get(key).child_keys if graph.get(c).is_materializable)
    return sorted(children, key=lambda k: k.to_user_string())


def build_raw_table_sensor(
    assets: Sequence[RawTableLike],
    *,
    ref: str = MAIN,
    name: str = "raw_table_sensor",
    job: dg.JobDefinition | UnresolvedAssetJobDefinition | None = None,
    asset_selection: dg.AssetSelection | Sequence[dg.AssetKey] | None = None,
    minimum_interval_seconds: int = 60,
    run_tags: Mapping[str, str] | None = None,
    default_namespace: str = "public",
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.STOPPED,
) -> dg.SensorDefinition:
    """A sensor that reports new snapshots of raw tables on `ref` (data version = snapshot id) and runs their readers.

    Target: `job`, or `asset_selection` (run as a whole when any table changed), or by default the materializable
    assets directly downstream of the changed tables (from the code location's asset graph). `run_tags` go on every
    requested run, e.g. `{"lakehouse/wap": "true"}` to publish through `merge_sensor`. Needs the resource
    `lakehouse` (a `LakehouseResource`).
    """
    tables = raw_tables(assets, default_namespace)
    if job is not None and asset_selection is not None:
        raise ValueError(f"{name}: give either job= or asset_selection=, not both")
    default_target = job is None and asset_selection is None
    selection: dg.AssetSelection | Sequence[dg.AssetKey] | None = asset_selection
    if default_target:
        selection = dg.AssetSelection.assets(*[t.key for t in tables]).downstream(depth=1, include_self=False)
    watched = ", ".join(t.table for t in tables)

    @dg.sensor(
        name=name,
        job=job,
        asset_selection=selection,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description=(
            f"Reports new snapshots of {watched} on {ref!r} (data version = snapshot id) and runs "
            + ("the assets directly downstream of the changed tables." if default_target else "its target.")
        ),
    )
    def _raw_table_sensor(
        context: dg.SensorEvaluationContext, lakehouse: LakehouseResource
    ) -> dg.SensorResult | dg.SkipReason:
        loaded = _load(lakehouse.get_lakehouse(), tables, ref)
        current = {t.table: _snapshot_id(loaded.get(t.table)) for t in tables}
        observable = _observable(context, tables)
        cursor = json.dumps(current, sort_keys=True)
        if context.cursor is None:
            events = [
                _report(t, loaded[t.table], snapshot, ref, t.key in observable)
                for t in tables
                if (snapshot := current[t.table]) is not None
            ]
            seen = ", ".join(f"{t}@{s}" for t, s in sorted(current.items()) if s is not None) or "no snapshot yet"
            message = f"{name}: first evaluation recorded {seen} on {ref!r}; no run requested until a table changes"
            context.log.info(message)
            return dg.SensorResult(asset_events=events, cursor=cursor, skip_reason=message)
        previous: dict[str, int | None] = json.loads(context.cursor)
        changed = {
            t: snapshot
            for t in tables
            if (snapshot := current[t.table]) is not None and snapshot != previous.get(t.table)
        }
        if not changed:
            if cursor == json.dumps(previous, sort_keys=True):
                return dg.SkipReason(f"no new snapshot of {watched} on {ref!r}")
            return dg.SensorResult(cursor=cursor, skip_reason=f"no new snapshot of {watched} on {ref!r}")
        events = [_report(t, loaded[t.table], snapshot, ref, t.key in observable) for t, snapshot in changed.items()]
        what = ", ".join(f"{t.table} (snapshot {previous.get(t.table)} -> {s})" for t, s in changed.items())
        run_key = (
            f"{name}:{ref}:"
            + hashlib.sha256(
                json.dumps({t.table: snapshot for t, snapshot in changed.items()}, sort_keys=True).encode()
            ).hexdigest()[:16]
        )
        tags = dict(run_tags or {})
        if default_target:
            downstream = _downstream(context, [t.key for t in changed], name)
            if not downstream:
                message = f"{name}: new snapshot of {what} on {ref!r}, but no asset reads it"
                context.log.info(message)
                return dg.SensorResult(asset_events=events, cursor=cursor, skip_reason=message)
            context.log.info(
                f"{name}: new snapshot of {what} on {ref!r}: requesting "
                f"{', '.join(k.to_user_string() for k in downstream)}"
            )
            request = dg.RunRequest(run_key=run_key, asset_selection=downstream, tags=tags)
        else:
            context.log.info(f"{name}: new snapshot of {what} on {ref!r}: requesting a run of the sensor's target")
            request = dg.RunRequest(run_key=run_key, tags=tags)
        return dg.SensorResult(run_requests=[request], asset_events=events, cursor=cursor)

    return _raw_table_sensor
