"""Notebook assets run through the real LakehouseIOManager: inputs pushed down, outputs written on the branch."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from dagster_lakehouse import Lakehouse
from dagster_lakehouse.notebook import load_notebook_assets

NOTEBOOKS = Path(__file__).parent / "notebooks"

layer = pytest.importorskip("dagster_lakehouse.dagster")
if not hasattr(layer, "LakehouseIOManager"):
    pytest.skip("dagster_lakehouse.dagster does not export LakehouseIOManager yet", allow_module_level=True)


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


