"""Raw-table sensor events carry the table's column schema, row count, snapshot id and location."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dagster as dg
import polars as pl
import pytest
from test_dagster_support import (  # noqa: F401  (fresh_lakehouse_cache is an autouse fixture)
    TRIPS,
    fresh_lakehouse_cache,
    resource_for,
    seed_trips,
)

from dagster_lakehouse.dagster import LakehouseIOManager, build_raw_table_sensor, lakehouse_table_spec
from dagster_lakehouse.lakehouse import Lakehouse

TRIPS_SPEC = lakehouse_table_spec("taxi.trips")
TRIPS_TYPES = {"trip_id": "long", "PULocationID": "long", "trip_miles": "double", "borough": "string"}


@dg.asset(key=["taxi", "long_trips"], ins={"trips": dg.AssetIn(key=["taxi", "trips"])})
def long_trips(trips: pl.DataFrame) -> pl.DataFrame:
    """Trips over two miles, so the raw trips have a reader."""
    return trips.filter(pl.col("trip_miles") > 2)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def _store(backend: Any) -> Lakehouse:
    return Lakehouse(backend.catalog_uri, backend.warehouse, dict(backend.properties))


def tick(
    instance: dg.DagsterInstance, backend: Any, sensor: dg.SensorDefinition, assets: list[Any], cursor: str | None
) -> Any:
    """Evaluate `sensor` once and record its asset events as the daemon would."""
    resource = resource_for(backend)
    definitions = dg.Definitions(
        assets=assets,
        sensors=[sensor],
        resources={"lakehouse": resource, "io_manager": LakehouseIOManager(lakehouse=resource)},
    )
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, definitions=definitions, resources={"lakehouse": resource}
    ) as context:
        data = sensor.evaluate_tick(context)
    for event in data.asset_events:
        instance.report_runless_asset_event(event)
    return data


def _columns(metadata: dict[str, Any]) -> dict[str, str]:
    """Column name -> type of a `dagster/column_schema` entry."""
    return {column.name: column.type for column in metadata["dagster/column_schema"].value.columns}


def _latest(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict[str, Any]:
    entry = instance.get_latest_materialization_event(key)
    assert entry is not None and entry.asset_materialization is not None
    return dict(entry.asset_materialization.metadata)


def test_first_evaluation_reports_schema_row_count_snapshot_and_uri(
    local_backend: Any, instance: dg.DagsterInstance
) -> None:
    store = _store(local_backend)
    seed_trips(store)
    sensor = build_raw_table_sensor([TRIPS_SPEC])
    first = tick(instance, local_backend, sensor, [TRIPS_SPEC, long_trips], cursor=None)
    assert first.run_requests == [] and "first evaluation" in first.skip_message

    (event,) = first.asset_events
    table = store.table("taxi.trips")
    expected = {field.name: str(field.field_type) for field in table.schema().fields}
    assert expected == TRIPS_TYPES
    for metadata in (dict(event.metadata), _latest(instance, TRIPS_SPEC.key)):
        assert _columns(metadata) == TRIPS_TYPES
        assert metadata["dagster/row_count"].value == TRIPS.height
        assert metadata["lakehouse/snapshot_id"].value == store.snapshot_id("taxi.trips")
        assert metadata["lakehouse/uri"].value == table.location()
        assert metadata["dagster/table_name"].value == "taxi.trips"


def test_an_append_that_adds_a_column_updates_row_count_and_schema(
    local_backend: Any, instance: dg.DagsterInstance
) -> None:
    store = _store(local_backend)
    seed_trips(store)
    sensor = build_raw_table_sensor([TRIPS_SPEC])
    first = tick(instance, local_backend, sensor, [TRIPS_SPEC, long_trips], cursor=None)

    more = TRIPS.head(2).with_columns(tip=pl.Series([1.5, 0.0]))
    store.write("taxi.trips", more, branch="main", mode="append", allow_main=True)
    changed = tick(instance, local_backend, sensor, [TRIPS_SPEC, long_trips], cursor=first.cursor)
    (request,) = changed.run_requests
    assert request.asset_selection == [long_trips.key]

    metadata = _latest(instance, TRIPS_SPEC.key)
    assert _columns(metadata) == {**TRIPS_TYPES, "tip": "double"}
    assert metadata["dagster/row_count"].value == TRIPS.height + 2 == store.read("taxi.trips").height
    assert metadata["lakehouse/snapshot_id"].value == store.snapshot_id("taxi.trips")
    assert metadata["lakehouse/snapshot_id"].value != first.asset_events[0].metadata["lakehouse/snapshot_id"].value


def test_observations_of_observable_source_assets_carry_the_same_metadata(
    local_backend: Any, instance: dg.DagsterInstance
) -> None:
    @dg.observable_source_asset(key=["taxi", "trips"], metadata={"lakehouse/table": "taxi.trips"})
    def observed_trips() -> dg.DataVersion:
        return dg.DataVersion("unused")

    store = _store(local_backend)
    seed_trips(store)
    sensor = build_raw_table_sensor([observed_trips], name="observed")
    (event,) = tick(instance, local_backend, sensor, [observed_trips, long_trips], cursor=None).asset_events
    assert isinstance(event, dg.AssetObservation)
    assert _columns(dict(event.metadata)) == TRIPS_TYPES
    assert event.metadata["dagster/row_count"].value == TRIPS.height


def test_a_branch_sensor_reports_the_branch_tables_size(local_backend: Any, instance: dg.DagsterInstance) -> None:
    store = _store(local_backend)
    seed_trips(store)
    store.create_branch("dev")
    store.write("taxi.trips", TRIPS.head(3).drop("borough"), branch="dev")
    sensor = build_raw_table_sensor([TRIPS_SPEC], ref="dev", name="dev_trips")
    (event,) = tick(instance, local_backend, sensor, [TRIPS_SPEC, long_trips], cursor=None).asset_events
    assert event.metadata["dagster/row_count"].value == 3
    assert _columns(dict(event.metadata)) == {k: v for k, v in TRIPS_TYPES.items() if k != "borough"}
    assert event.metadata["lakehouse/uri"].value == store.table("taxi.trips", "dev").location()
