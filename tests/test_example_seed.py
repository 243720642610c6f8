"""The example's sample data: 265 zones in 5 boroughs, deterministic fhvhv-like trips, and an idempotent seed."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl
import pytest

from dagster_lakehouse import Lakehouse
from example_project.seed import make_trips, make_zones, seed

TRIP_COLUMNS = [
    "pickup_datetime",
    "dropoff_datetime",
    "PULocationID",
    "DOLocationID",
    "trip_miles",
    "trip_time",
    "base_passenger_fare",
    "tips",
]


def test_zones_are_265_in_five_boroughs():
    zones = make_zones()
    assert zones.columns == ["LocationID", "Borough", "Zone", "service_zone"]
    assert zones.height == 265
    assert zones["LocationID"].is_unique().all()
    assert sorted(zones["LocationID"].to_list()) == list(range(1, 266))
    assert set(zones["Borough"].unique()) == {"Manhattan", "Brooklyn", "Queens", "Bronx", "Staten Island"}
    assert zones["Zone"].is_unique().all() and zones["Zone"].null_count() == 0
    assert zones["service_zone"].null_count() == 0


def test_trips_are_deterministic_and_fhvhv_shaped():
    trips = make_trips(1000)
    assert trips.equals(make_trips(1000))
    assert not trips.equals(make_trips(1000, seed=7))  # the seed, not a constant, makes them equal
    assert trips.columns == TRIP_COLUMNS
    assert trips.height == 1000
    assert trips.schema["pickup_datetime"] == pl.Datetime("us") == trips.schema["dropoff_datetime"]
    assert trips.null_count().sum_horizontal().item() == 0


def test_trips_are_sorted_by_pickup_and_end_after_they_start():
    trips = make_trips(1000)
    assert trips["pickup_datetime"].is_sorted()
    assert (trips["dropoff_datetime"] >= trips["pickup_datetime"]).all()
    seconds = (trips["dropoff_datetime"] - trips["pickup_datetime"]).dt.total_seconds()
    assert (seconds == trips["trip_time"]).all()
    start = datetime(2024, 1, 1)
    assert trips["pickup_datetime"].min() >= start
    assert trips["pickup_datetime"].max() < start + timedelta(days=31)
    assert trips["PULocationID"].is_between(1, 265).all() and trips["DOLocationID"].is_between(1, 265).all()
    assert (trips["trip_miles"] >= 0).all() and (trips["base_passenger_fare"] > 0).all()
    assert (trips["tips"] >= 0).all()


def test_seed_writes_both_tables_to_main_once_unless_forced(tmp_path):
    with Lakehouse.local(tmp_path / "lakehouse") as lakehouse:
        assert seed(lakehouse, trips=500) is True
        assert set(lakehouse.tables("main")) >= {"taxi.trips", "taxi.zones"}
        trips = lakehouse.read("taxi.trips", ref="main")
        assert trips.sort(TRIP_COLUMNS).equals(make_trips(500).sort(TRIP_COLUMNS))
        assert lakehouse.read("taxi.zones", ref="main").sort("LocationID").equals(make_zones())
        first = lakehouse.snapshot_id("taxi.trips")

        assert seed(lakehouse, trips=500) is False
        assert lakehouse.snapshot_id("taxi.trips") == first  # nothing rewritten

        assert seed(lakehouse, trips=300, force=True) is True
        assert lakehouse.snapshot_id("taxi.trips") != first
        assert lakehouse.read("taxi.trips").sort(TRIP_COLUMNS).equals(make_trips(300).sort(TRIP_COLUMNS))
        assert lakehouse.read("taxi.zones").height == 265


@pytest.mark.parametrize("missing", ["taxi.trips", "taxi.zones"])
def test_seed_writes_again_when_a_table_is_missing(tmp_path, missing):
    with Lakehouse.local(tmp_path / "lakehouse") as lakehouse:
        present = ({"taxi.trips", "taxi.zones"} - {missing}).pop()
        data = make_zones() if present == "taxi.zones" else make_trips(10)
        lakehouse.write(present, data, branch="main", allow_main=True)
        assert seed(lakehouse, trips=200) is True
        assert lakehouse.read("taxi.trips").height == 200
        assert lakehouse.read("taxi.zones").height == 265


def test_the_examples_materialize_all_is_one_unpartitioned_run_on_dev():
    """No asset of the example is partitioned, so Dagster's "Materialize all" launches one run (no partitions dialog),
    which the example's resource sends to `dev`."""
    import example_project.definitions as example

    graph = example.defs.resolve_asset_graph()
    partitioned = [key for key in graph.materializable_asset_keys if graph.get(key).partitions_def is not None]
    assert not partitioned
    assert {key.to_user_string() for key in graph.materializable_asset_keys} == {
        "taxi/trips_and_zones", "taxi/stats_by_taxi_zones", "taxi/zone_report", "taxi/borough_summary"
    }
    assert example.defs.resolve_implicit_global_asset_job_def().partitions_def is None
    assert example.lakehouse.branch == "dev"
