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
FIXTURES = [
    NOTEBOOKS / "taxi.py",
    NOTEBOOKS / "revenue.py",
    NOTEBOOKS / "dg_project" / "notebook_project" / "defs" / "rides" / "rides.py",
]
MARIMO = Path(sys.executable).parent / "marimo"


def _import(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("notebook", FIXTURES, ids=lambda p: p.name)
def test_marimo_check_is_clean(notebook):
    result = subprocess.run(
        [str(MARIMO), "check", "--strict", str(notebook)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""
    assert "warning" not in result.stderr.lower() and "error" not in result.stderr.lower()


@pytest.mark.parametrize("notebook", FIXTURES, ids=lambda p: p.name)
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

