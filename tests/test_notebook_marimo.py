"""In marimo a `@model` function behaves exactly as undecorated: `marimo check` is clean and the notebook runs."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

NOTEBOOKS = Path(__file__).parent / "notebooks"
EXAMPLE_NOTEBOOK = Path(__file__).resolve().parent.parent / "example_project" / "notebooks" / "taxi.py"
FIXTURES = [
    NOTEBOOKS / "taxi.py",
    NOTEBOOKS / "revenue.py",
    NOTEBOOKS / "dg_project" / "notebook_project" / "defs" / "rides" / "rides.py",
    EXAMPLE_NOTEBOOK,
]
MARIMO = Path(sys.executable).parent / "marimo"


def _import(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _id(path: Path) -> str:
    return "example/taxi.py" if path == EXAMPLE_NOTEBOOK else path.name


@pytest.mark.parametrize("notebook", FIXTURES, ids=_id)
def test_marimo_check_is_clean(notebook):
    result = subprocess.run(
        [str(MARIMO), "check", "--strict", str(notebook)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""
    assert "warning" not in result.stderr.lower() and "error" not in result.stderr.lower()


@pytest.mark.parametrize("notebook", FIXTURES, ids=_id)
def test_marimo_fix_keeps_the_model_decorators(notebook, tmp_path):
    """marimo rewrites notebooks it does not understand; ours (decorator below @app.function) stay as they are."""
    copy = tmp_path / notebook.name
    shutil.copy(notebook, copy)
    result = subprocess.run(
        [str(MARIMO), "check", "--fix", "--unsafe-fixes", str(copy)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert copy.read_text() == notebook.read_text()


def test_notebook_runs_as_a_script():
    result = subprocess.run(
        [sys.executable, str(NOTEBOOKS / "taxi.py")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_app_run_calls_the_models_as_plain_functions():
    notebook = _import(NOTEBOOKS / "taxi.py", "taxi_marimo_run")
    _, defs = notebook.app.run()
    fares = defs["fares"]
    assert fares.sort("Borough").to_dicts() == [
        {"Borough": "Bronx", "fares": 10.0, "trips": 1},
        {"Borough": "Queens", "fares": 27.5, "trips": 2},
    ]


def test_model_functions_are_the_plain_functions():
    notebook = _import(NOTEBOOKS / "taxi.py", "taxi_marimo_direct")
    trips = pl.DataFrame({"PULocationID": [1], "trip_miles": [2.0], "fare": [9.0]})
    zones = pl.DataFrame({"LocationID": [1], "Borough": ["Bronx"]})

    joined = notebook.trips_and_zones(trips, zones)

    assert type(notebook.trips_and_zones).__name__ == "function"
    assert notebook.trips_and_zones.__name__ == "trips_and_zones"
    assert notebook.trips_and_zones.__doc__ == "Trips joined to their pickup zone."
    assert joined.to_dicts() == [{"PULocationID": 1, "trip_miles": 2.0, "fare": 9.0, "Borough": "Bronx"}]
    assert notebook.borough_fares.__lakehouse_model__.materialization == "append"
    assert notebook.borough_fares(joined.lazy()).to_dicts() == [{"Borough": "Bronx", "fares": 9.0, "trips": 1}]



def test_example_notebook_runs_on_a_seeded_lakehouse(tmp_path, monkeypatch):
    """The example's cells read `taxi.trips`/`taxi.zones` from the lakehouse named by LAKEHOUSE_PATH."""
    from dagster_lakehouse import Lakehouse
    from example_project.seed import make_trips, make_zones, seed

    path = tmp_path / "lakehouse"
    with Lakehouse.local(path) as lakehouse:
        assert seed(lakehouse, trips=2000)
        lakehouse.create_branch("dev")
    for var in ("LAKEHOUSE_CATALOG_URI", "LAKEHOUSE_WAREHOUSE", "LAKEHOUSE_PROPERTIES"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LAKEHOUSE_PATH", str(path))

    notebook = _import(EXAMPLE_NOTEBOOK, "example_taxi_marimo_run")
    _, defs = notebook.app.run()

    assert defs["branch"].value == "main"
    assert set(defs["branch"].options) == {"main", "dev"}  # the dropdown lists the seeded lakehouse's branches
    assert defs["trips"].height == 2000 and defs["zones"].height == 265
    stats = defs["stats"]
    # computed independently from the generator: trips with 0 < miles < 200, per pickup zone
    expected = (
        make_trips(2000)
        .filter((pl.col("trip_miles") > 0) & (pl.col("trip_miles") < 200))
        .join(make_zones(), left_on="PULocationID", right_on="LocationID")
        .group_by("PULocationID")
        .agg(trips=pl.len(), mean_fare=pl.col("base_passenger_fare").mean())
    )
    got = stats.select("PULocationID", "trips", "mean_fare").sort("PULocationID")
    assert got["PULocationID"].to_list() == expected.sort("PULocationID")["PULocationID"].to_list()
    assert got["trips"].to_list() == expected.sort("PULocationID")["trips"].to_list()
    assert got["mean_fare"].to_list() == pytest.approx(expected.sort("PULocationID")["mean_fare"].to_list())
    assert stats["Borough"].n_unique() == 5
    assert stats["trips"].to_list() == sorted(stats["trips"].to_list(), reverse=True)
