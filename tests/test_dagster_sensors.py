"""Sensors: branch partitions follow lakehouse branches; raw-table snapshots trigger the assets that read them."""

import json
from collections.abc import Iterator
from typing import Any

import dagster as dg
import polars as pl
import pytest
from dagster._core.definitions.data_version import StaleStatus
from dagster._utils.test.data_versions import get_stale_status_resolver
from test_dagster_support import (  # noqa: F401  (fresh_lakehouse_cache is an autouse fixture)
    TRIPS,
    fresh_lakehouse_cache,
    resource_for,
    seed_trips,
)

from dagster_lakehouse.dagster import (
    LakehouseIOManager,
    branch_sync_sensor,
    build_branch_sync_sensor,
    build_raw_table_sensor,
    lakehouse_table_spec,
    merge_sensor,
)
from dagster_lakehouse.dagster.sensors.branch_sync import partition_changes
from dagster_lakehouse.dagster.sensors.raw_tables import RawTable, raw_tables
from dagster_lakehouse.lakehouse import Lakehouse

TRIPS_SPEC = lakehouse_table_spec("taxi.trips")
ZONES_SPEC = lakehouse_table_spec("taxi.zones")
LONG_TRIPS = dg.AssetKey(["taxi", "long_trips"])
ZONE_NAMES = dg.AssetKey(["taxi", "zone_names"])
MILEAGE = dg.AssetKey(["taxi", "mileage"])
ZONES = pl.DataFrame({"LocationID": [1, 2, 3], "Zone": ["Astoria", "Bronx Park", "Midtown"]})


@dg.asset(key=LONG_TRIPS, ins={"trips": dg.AssetIn(key=["taxi", "trips"])})
def long_trips(trips: pl.DataFrame) -> pl.DataFrame:
    """Trips over two miles (directly downstream of the raw trips)."""
    return trips.filter(pl.col("trip_miles") > 2)


@dg.asset(key=ZONE_NAMES, ins={"zones": dg.AssetIn(key=["taxi", "zones"])})
def zone_names(zones: pl.DataFrame) -> pl.DataFrame:
    """Zone names (directly downstream of the raw zones)."""
    return zones.select("Zone")


@dg.asset(key=MILEAGE, ins={"long_trips": dg.AssetIn(key=LONG_TRIPS)})
def mileage(long_trips: pl.DataFrame) -> pl.DataFrame:
    """Two steps away from the raw trips: not requested by the raw-table sensor."""
    return pl.DataFrame({"miles": [long_trips["trip_miles"].sum()]})


ASSETS = [TRIPS_SPEC, ZONES_SPEC, long_trips, zone_names, mileage]


def _store(backend: Any) -> Lakehouse:
    return Lakehouse(backend.catalog_uri, backend.warehouse, dict(backend.properties))


def _definitions(backend: Any, sensor: dg.SensorDefinition, **kwargs: Any) -> dg.Definitions:
    resource = resource_for(backend, branch="dev")
    return dg.Definitions(
        assets=ASSETS,
        sensors=[sensor],
        resources={"lakehouse": resource, "io_manager": LakehouseIOManager(lakehouse=resource)},
        **kwargs,
    )


def tick(
    instance: dg.DagsterInstance,
    backend: Any,
    sensor: dg.SensorDefinition,
    cursor: str | None = None,
    definitions: dg.Definitions | None = None,
) -> Any:
    """Evaluate `sensor` once and apply its asset events and partition requests as the daemon would."""
    definitions = definitions or _definitions(backend, sensor)
    resources = {"lakehouse": resource_for(backend)}
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, definitions=definitions, resources=resources
    ) as context:
        data = sensor.evaluate_tick(context)
    for event in data.asset_events:
        instance.report_runless_asset_event(event)
    for request in data.dynamic_partitions_requests or []:
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        else:
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)
    return data


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


# ----- branch_sync_sensor ----------------------------------------------------------------------------------


def test_partition_changes_rules() -> None:
    branches = ["main", "dev", "feature/x", "wap/123"]
    assert partition_changes(branches, []) == (["dev", "feature/x", "main"], [])
    assert partition_changes(branches, [], include_main=False) == (["dev", "feature/x"], [])
    assert partition_changes(branches, [], exclude_prefixes=()) == (["dev", "feature/x", "main", "wap/123"], [])
    assert partition_changes(branches, ["dev", "gone", "main", "wap/123"]) == (["feature/x"], ["gone"])


def test_branch_sync_adds_and_deletes_partitions(local_backend: Any, instance: dg.DagsterInstance) -> None:
    store = _store(local_backend)
    store.create_branch("dev")
    store.create_branch("feature/x")
    store.create_branch("wap/0000")

    first = tick(instance, local_backend, branch_sync_sensor)
    assert instance.get_dynamic_partitions("lakehouse_branches") == ["dev", "feature/x", "main"]
    assert "added branch partitions dev, feature/x, main" in first.skip_message
    assert "already match" in tick(instance, local_backend, branch_sync_sensor).skip_message

    store.delete_branch("dev")
    store.create_branch("hotfix")
    tick(instance, local_backend, branch_sync_sensor)
    assert sorted(instance.get_dynamic_partitions("lakehouse_branches")) == ["feature/x", "hotfix", "main"]


def test_branch_sync_options(local_backend: Any, instance: dg.DagsterInstance) -> None:
    store = _store(local_backend)
    store.create_branch("wap/0000")
    sensor = build_branch_sync_sensor(name="all_branches", exclude_prefixes=())
    assert sensor.name == "all_branches" and sensor.minimum_interval_seconds == 30
    tick(instance, local_backend, sensor)
    assert sorted(instance.get_dynamic_partitions("lakehouse_branches")) == ["main", "wap/0000"]
    without_main = build_branch_sync_sensor(name="no_main", include_main=False)
    fresh = dg.DagsterInstance.ephemeral()
    tick(fresh, local_backend, without_main)
    assert fresh.get_dynamic_partitions("lakehouse_branches") == []


# ----- raw table sensor ------------------------------------------------------------------------------------


def test_raw_tables_from_specs_keys_and_names() -> None:
    spec = lakehouse_table_spec("taxi.trips", key=["raw_trips"])
    assert raw_tables([spec, dg.AssetKey(["taxi", "zones"]), "ref.holidays", dg.AssetKey("plain")]) == [
        RawTable(dg.AssetKey(["raw_trips"]), "taxi.trips"),
        RawTable(dg.AssetKey(["taxi", "zones"]), "taxi.zones"),
        RawTable(dg.AssetKey(["ref", "holidays"]), "ref.holidays"),
        RawTable(dg.AssetKey(["plain"]), "public.plain"),
    ]
    with pytest.raises(ValueError, match="at least one table"):
        raw_tables([])


def test_raw_table_sensor_requests_direct_children_of_changed_tables(
    local_backend: Any, instance: dg.DagsterInstance
) -> None:
    store = _store(local_backend)
    seed_trips(store)
    sensor = build_raw_table_sensor([TRIPS_SPEC, ZONES_SPEC])
    assert sensor.name == "raw_table_sensor" and sensor.minimum_interval_seconds == 60

    first = tick(instance, local_backend, sensor)
    assert first.run_requests == [] and "first evaluation" in first.skip_message
    trips_snapshot = store.snapshot_id("taxi.trips")
    assert json.loads(first.cursor) == {"taxi.trips": trips_snapshot, "taxi.zones": None}
    (reported,) = first.asset_events
    assert isinstance(reported, dg.AssetMaterialization) and reported.asset_key == TRIPS_SPEC.key
    assert reported.tags["dagster/data_version"] == str(trips_snapshot)

    unchanged = tick(instance, local_backend, sensor, cursor=first.cursor)
    assert unchanged.run_requests == [] and unchanged.asset_events == []
    assert "no new snapshot of taxi.trips, taxi.zones on 'main'" in unchanged.skip_message

    store.write("taxi.trips", TRIPS.head(2), branch="main", mode="append", allow_main=True)
    changed = tick(instance, local_backend, sensor, cursor=first.cursor)
    new_snapshot = store.snapshot_id("taxi.trips")
    (request,) = changed.run_requests
    assert request.asset_selection == [LONG_TRIPS]
    assert json.loads(changed.cursor)["taxi.trips"] == new_snapshot
    record = instance.fetch_materializations(TRIPS_SPEC.key, limit=1).records[0]
    recorded = record.asset_materialization
    assert record.run_id == "" and recorded.tags["dagster/data_version"] == str(new_snapshot)
    assert recorded.metadata["lakehouse/snapshot_id"].value == new_snapshot
    assert recorded.metadata["lakehouse/branch"].value == "main"

    store.write("taxi.zones", ZONES, branch="main", allow_main=True)
    zones = tick(instance, local_backend, sensor, cursor=changed.cursor)
    (request,) = zones.run_requests
    assert request.asset_selection == [ZONE_NAMES]
    assert request.run_key != changed.run_requests[0].run_key


def test_raw_table_snapshot_makes_readers_stale(local_backend: Any, instance: dg.DagsterInstance) -> None:
    store = _store(local_backend)
    seed_trips(store)
    sensor = build_raw_table_sensor([TRIPS_SPEC])
    definitions = _definitions(local_backend, sensor)
    first = tick(instance, local_backend, sensor, definitions=definitions)
    resource = resource_for(local_backend, branch="dev")
    assert dg.materialize(
        [TRIPS_SPEC, long_trips],
        instance=instance,
        resources={"io_manager": LakehouseIOManager(lakehouse=resource)},
    ).success
    assert (
        get_stale_status_resolver(instance, [dg.AssetsDefinition(specs=[TRIPS_SPEC]), long_trips]).get_status(
            LONG_TRIPS
        )
        == StaleStatus.FRESH
    )
    store.write("taxi.trips", TRIPS.head(1), branch="main", allow_main=True)
    tick(instance, local_backend, sensor, cursor=first.cursor, definitions=definitions)
    assert (
        get_stale_status_resolver(instance, [dg.AssetsDefinition(specs=[TRIPS_SPEC]), long_trips]).get_status(
            LONG_TRIPS
        )
        == StaleStatus.STALE
    )


def test_observable_source_assets_get_observations(local_backend: Any, instance: dg.DagsterInstance) -> None:
    @dg.observable_source_asset(key=["taxi", "trips"], metadata={"lakehouse/table": "taxi.trips"})
    def observed_trips() -> dg.DataVersion:
        return dg.DataVersion("unused")

    store = _store(local_backend)
    seed_trips(store)
    sensor = build_raw_table_sensor([observed_trips], name="observed")
    resource = resource_for(local_backend)
    definitions = dg.Definitions(
        assets=[observed_trips, long_trips],
        sensors=[sensor],
        resources={"lakehouse": resource, "io_manager": LakehouseIOManager(lakehouse=resource)},
    )
    (event,) = tick(instance, local_backend, sensor, definitions=definitions).asset_events
    assert isinstance(event, dg.AssetObservation)
    assert event.tags["dagster/data_version"] == str(store.snapshot_id("taxi.trips"))


def test_raw_table_sensor_with_a_job_and_run_tags(local_backend: Any, instance: dg.DagsterInstance) -> None:
    store = _store(local_backend)
    seed_trips(store)
    job = dg.define_asset_job("rebuild", selection=[LONG_TRIPS, MILEAGE])
    sensor = build_raw_table_sensor(
        ["taxi.trips"], name="trips_sensor", job=job, run_tags={"lakehouse/wap": "true"}, minimum_interval_seconds=5
    )
    definitions = _definitions(local_backend, sensor, jobs=[job])
    first = tick(instance, local_backend, sensor, definitions=definitions)
    store.write("taxi.trips", TRIPS, branch="main", allow_main=True)
    data = tick(instance, local_backend, sensor, cursor=first.cursor, definitions=definitions)
    (request,) = data.run_requests
    assert sensor.job_name == "rebuild" and request.asset_selection is None
    assert request.tags["lakehouse/wap"] == "true"
    with pytest.raises(ValueError, match="not both"):
        build_raw_table_sensor(["taxi.trips"], job=job, asset_selection=[LONG_TRIPS])


def test_raw_table_sensor_with_an_asset_selection(local_backend: Any, instance: dg.DagsterInstance) -> None:
    store = _store(local_backend)
    seed_trips(store)
    sensor = build_raw_table_sensor([TRIPS_SPEC], asset_selection=dg.AssetSelection.assets(LONG_TRIPS, MILEAGE))
    first = tick(instance, local_backend, sensor)
    store.write("taxi.trips", TRIPS, branch="main", allow_main=True)
    (request,) = tick(instance, local_backend, sensor, cursor=first.cursor).run_requests
    assert set(request.asset_selection) == {LONG_TRIPS, MILEAGE}


# ----- merge sensor without work ---------------------------------------------------------------------------


def test_merge_sensor_skips_when_no_run_waits(local_backend: Any, instance: dg.DagsterInstance) -> None:
    data = tick(instance, local_backend, merge_sensor)
    assert data.run_requests == [] and "no finished run waits" in data.skip_message
    assert merge_sensor.name == "merge_sensor" and merge_sensor.minimum_interval_seconds == 30
