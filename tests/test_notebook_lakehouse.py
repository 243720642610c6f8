"""Notebook assets run through the real LakehouseIOManager: inputs pushed down, outputs written on the branch."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl
import pytest

import dagster_lakehouse.dagster as layer
from dagster_lakehouse import Lakehouse
from dagster_lakehouse.notebook import load_notebook_assets

NOTEBOOKS = Path(__file__).parent / "notebooks"

DAILY_NOTEBOOK = """\
import marimo

app = marimo.App()

with app.setup:
    import dagster as dg
    import polars as pl

    from dagster_lakehouse import Input, model


@app.function
@model(
    inputs={"events": Input("raw.events", columns=["ts", "n"], partition_column="ts")},
    partitions=dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-05"),
    partition_column="ts",
)
def daily_totals(events: pl.DataFrame) -> pl.DataFrame:
    \"\"\"Each day's events: a partitioned model over an unpartitioned raw table.\"\"\"
    return events.group_by(pl.col("ts").dt.truncate("1d")).agg(total=pl.col("n").sum())
"""


@pytest.fixture
def seeded(tmp_path) -> Path:
    """A local lakehouse with raw trips and zones on main and a `dev` branch."""
    path = tmp_path / "lakehouse"
    lakehouse = Lakehouse.local(path)
    trips = pl.DataFrame(
        {"PULocationID": [1, 2, 2], "trip_miles": [1.5, 3.0, 0.0], "fare": [10.0, 20.0, 7.5], "vendor": ["a", "b", "c"]}
    )
    lakehouse.write("raw.trips", trips, branch="main", allow_main=True)
    lakehouse.write("raw.zones", pl.DataFrame({"LocationID": [1, 2], "Borough": ["Bronx", "Queens"]}), branch="main", allow_main=True)
    lakehouse.create_branch("dev")
    return path


def test_notebooks_materialize_into_the_lakehouse_on_a_branch(seeded):
    assets = load_notebook_assets([NOTEBOOKS / "taxi.py", NOTEBOOKS / "revenue.py"])
    io_manager = layer.LakehouseIOManager(lakehouse=layer.LakehouseResource(path=str(seeded), branch="dev"))

    result = dg.materialize(assets, resources={"io_manager": io_manager})

    assert result.success
    lakehouse = Lakehouse.local(seeded)
    joined = lakehouse.read("taxi.trips_and_zones", ref="dev")
    assert joined.columns == ["PULocationID", "trip_miles", "fare", "Borough"]  # projected: no vendor
    assert joined["trip_miles"].to_list() == [1.5, 3.0]  # filtered: trip_miles > 0
    assert lakehouse.read("taxi.borough_fares", ref="dev").sort("Borough").to_dicts() == [
        {"Borough": "Bronx", "fares": 10.0, "trips": 1},
        {"Borough": "Queens", "fares": 20.0, "trips": 1},
    ]
    assert lakehouse.read("finance.revenue_share", ref="dev").sort("Borough")["share"].round(4).to_list() == [0.3333, 0.6667]
    assert lakehouse.exists("taxi.trips_and_zones", ref="dev")
    assert not lakehouse.exists("taxi.trips_and_zones", ref="main")  # the branch is isolated until merged


def test_append_materialization_appends(seeded):
    assets = load_notebook_assets(NOTEBOOKS / "taxi.py")
    io_manager = layer.LakehouseIOManager(lakehouse=layer.LakehouseResource(path=str(seeded), branch="dev"))
    for _ in range(2):
        assert dg.materialize(assets, resources={"io_manager": io_manager}).success

    lakehouse = Lakehouse.local(seeded)
    assert lakehouse.read("taxi.trips_and_zones", ref="dev").height == 2  # replace
    assert lakehouse.read("taxi.borough_fares", ref="dev").height == 4  # append




def test_partitioned_model_reads_only_its_partition_of_a_raw_table(tmp_path):
    import datetime as dt

    path = tmp_path / "lakehouse"
    lakehouse = Lakehouse.local(path)
    stamps = [dt.datetime(2024, 1, day, hour) for day in (1, 2, 3) for hour in (2, 20)]
    lakehouse.write("raw.events", pl.DataFrame({"ts": stamps, "n": [1, 2, 10, 20, 100, 200]}), allow_main=True)
    notebook = tmp_path / "daily.py"
    notebook.write_text(DAILY_NOTEBOOK)
    assets = load_notebook_assets(notebook)
    io_manager = layer.LakehouseIOManager(lakehouse=layer.LakehouseResource(path=str(path), branch="dev"))

    for day in ("2024-01-02", "2024-01-03"):
        assert dg.materialize(assets, resources={"io_manager": io_manager}, partition_key=day).success

    totals = Lakehouse.local(path).read("daily.daily_totals", ref="dev").sort("ts")
    assert totals["total"].to_list() == [30, 300]
