"""`load_inputs` reads a model's declared inputs from a branch of a real lakehouse, as the model would get them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from dagster_lakehouse import Lakehouse, load_inputs
from dagster_lakehouse.notebook import NotebookLoadError

NOTEBOOK = '''import marimo

app = marimo.App()

with app.setup:
    import polars as pl

    from dagster_lakehouse import Input, model


@app.function
@model(load_as="arrow")
def trips_and_zones(
    trips=Input("raw.trips", columns=["fare", "PULocationID"], filter="trip_miles > 0 AND fare < 25"),
    zones=Input("raw.zones", load_as="pandas"),
):
    return trips


@app.function
@model
def report(
    trips_and_zones,
    by_name: pl.LazyFrame = Input("trips_and_zones", columns=["fare"], load_as="lazy"),
):
    return trips_and_zones


@app.function
@model(inputs={"orphan": Input("nothing_here")})
def broken(orphan):
    return orphan


if __name__ == "__main__":
    app.run()
'''


@pytest.fixture
def notebook(tmp_path):
    """The notebook imported as `python taxi.py` would run it (its `__file__` is the notebook)."""
    path = tmp_path / "taxi.py"
    path.write_text(NOTEBOOK)
    spec = importlib.util.spec_from_file_location("taxi_notebook_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def lakehouse_path(tmp_path) -> Path:
    path = tmp_path / "work" / ".lakehouse"
    with Lakehouse.local(path) as lakehouse:
        trips = pl.DataFrame(
            {"PULocationID": [1, 2, 2], "trip_miles": [1.5, 3.0, 0.0], "fare": [10.0, 30.0, 7.5], "vendor": ["a", "b", "c"]}
        )
        lakehouse.write("raw.trips", trips, branch="main", allow_main=True)
        lakehouse.write("raw.zones", pl.DataFrame({"LocationID": [1, 2], "Borough": ["Bronx", "Queens"]}), branch="main", allow_main=True)
        lakehouse.create_branch("dev")
        lakehouse.write("raw.zones", pl.DataFrame({"LocationID": [3], "Borough": ["Dev"]}), branch="dev")
        lakehouse.write("taxi.trips_and_zones", pl.DataFrame({"fare": [1.0, 2.0], "x": [0, 0]}), branch="dev")
    return path


def test_inputs_come_with_their_columns_filter_and_type(notebook, lakehouse_path):
    with Lakehouse.local(lakehouse_path) as lakehouse:
        frames = load_inputs(notebook.trips_and_zones, ref="dev", lakehouse=lakehouse)
    assert list(frames) == ["trips", "zones"]
    assert isinstance(frames["trips"], pa.Table)  # the model's load_as
    assert sorted(frames["trips"].column_names) == ["PULocationID", "fare"]
    assert frames["trips"].column("fare").to_pylist() == [10.0]  # trip_miles > 0 AND fare < 25
    assert isinstance(frames["zones"], pd.DataFrame)  # the Input's load_as wins
    assert frames["zones"]["Borough"].tolist() == ["Dev"]  # read from dev, not main
    # and the frames feed the function as Dagster would
    assert notebook.trips_and_zones(**frames) is frames["trips"]


def test_inputs_naming_models_read_their_tables(notebook, lakehouse_path):
    with Lakehouse.local(lakehouse_path) as lakehouse:
        frames = load_inputs(notebook.report, ref="dev", lakehouse=lakehouse)
    assert isinstance(frames["trips_and_zones"], pl.DataFrame)
    assert frames["trips_and_zones"].columns == ["fare", "x"]
    assert isinstance(frames["by_name"], pl.LazyFrame)
    assert frames["by_name"].collect().to_dict(as_series=False) == {"fare": [1.0, 2.0]}


def test_the_default_lakehouse_is_the_one_docs_open_in_a_notebook(notebook, lakehouse_path, monkeypatch):
    for variable in ("LAKEHOUSE_CATALOG_URI", "LAKEHOUSE_WAREHOUSE", "LAKEHOUSE_PATH"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.chdir(lakehouse_path.parent)  # Lakehouse(): .lakehouse/ in this folder
    frames = load_inputs(notebook.trips_and_zones)  # ref defaults to main
    assert frames["zones"]["Borough"].tolist() == ["Bronx", "Queens"]


def test_an_input_naming_no_model_and_a_plain_function_are_errors(notebook, lakehouse_path):
    with Lakehouse.local(lakehouse_path) as lakehouse:
        with pytest.raises(NotebookLoadError, match=r"parameter 'orphan': Input\('nothing_here'\) names no @model"):
            load_inputs(notebook.broken, ref="dev", lakehouse=lakehouse)
    with pytest.raises(NotebookLoadError, match="not a function marked with @model"):
        load_inputs(len)
