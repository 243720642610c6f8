"""Inputs bauplan style: `Input(...)` as a parameter's default, Inputs naming other models, and `load_as`."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

import dagster_lakehouse.dagster as layer
from dagster_lakehouse import Lakehouse
from dagster_lakehouse.notebook import Input, NotebookLoadError, load_notebook_assets

SETUP = "import polars as pl\nimport pyarrow as pa\n\nfrom dagster_lakehouse import Input, model\n"


def write_notebook(folder: Path, name: str, cells: str) -> Path:
    """Write a marimo notebook `name`.py (no PEP 723 header) with a setup cell importing polars, pyarrow and our API."""
    setup = "".join(f"    {line}\n" if line else "\n" for line in SETUP.splitlines())
    text = (
        f"import marimo\n\napp = marimo.App()\n\nwith app.setup:\n{setup}\n\n"
        f"{textwrap.dedent(cells).strip()}\n\n\nif __name__ == \"__main__\":\n    app.run()\n"
    )
    path = folder / f"{name}.py"
    path.write_text(text)
    return path


def line_of(path: Path, snippet: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), start=1) if snippet in line)


def by_key(assets) -> dict[tuple[str, ...], dg.AssetsDefinition | dg.AssetSpec]:
    return {tuple(a.key.path): a for a in assets}


def input_metadata(asset: dg.AssetsDefinition) -> dict[str, dict]:
    return {name: dict(i.metadata or {}) for name, i in asset.node_def.input_dict.items()}


def load_error(paths) -> NotebookLoadError:
    with pytest.raises(NotebookLoadError) as info:
        load_notebook_assets(paths)
    return info.value


def assert_located(error: NotebookLoadError, path: Path, line: int, *fragments: str) -> None:
    assert str(error).startswith(f"{path.resolve()}:{line}: "), str(error)
    for fragment in fragments:
        assert fragment in str(error), str(error)


@pytest.fixture
def seeded(tmp_path) -> Path:
    """A local lakehouse with raw trips and zones on main, and a `dev` branch."""
    path = tmp_path / "lakehouse"
    lakehouse = Lakehouse.local(path)
    trips = pl.DataFrame(
        {"PULocationID": [1, 2, 2, 1], "trip_miles": [1.5, 3.0, 0.0, 4.0], "fare": [10.0, 20.0, 7.5, 30.0]}
    )
    lakehouse.write("raw.trips", trips, branch="main", allow_main=True)
    zones = pl.DataFrame({"LocationID": [1, 2], "Borough": ["Bronx", "Queens"]})
    lakehouse.write("raw.zones", zones, branch="main", allow_main=True)
    lakehouse.create_branch("dev")
    lakehouse.close()
    return path


def run(assets, lakehouse_path: Path) -> dg.ExecuteInProcessResult:
    io_manager = layer.LakehouseIOManager(lakehouse=layer.LakehouseResource(path=str(lakehouse_path), branch="dev"))
    return dg.materialize(assets, resources={"io_manager": io_manager})


# --- 1. Input(...) as a parameter's default value ------------------------------------------------------------------

DEFAULTS_CELLS = '''
@app.function
@model()
def trips_and_zones(
    trips: pl.DataFrame = Input("raw.trips", columns=["PULocationID", "fare"], filter="trip_miles > 0"),
    zones: pl.DataFrame = Input("raw.zones"),
) -> pl.DataFrame:
    return trips.join(zones, left_on="PULocationID", right_on="LocationID")
'''

INPUTS_CELLS = '''
@app.function
@model(
    inputs={
        "trips": Input("raw.trips", columns=["PULocationID", "fare"], filter="trip_miles > 0"),
        "zones": Input("raw.zones"),
    }
)
def trips_and_zones(trips: pl.DataFrame, zones: pl.DataFrame) -> pl.DataFrame:
    return trips.join(zones, left_on="PULocationID", right_on="LocationID")
'''


def test_input_defaults_mean_what_model_inputs_mean(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    defaults = by_key(load_notebook_assets(write_notebook(tmp_path / "a", "taxi", DEFAULTS_CELLS)))
    declared = by_key(load_notebook_assets(write_notebook(tmp_path / "b", "taxi", INPUTS_CELLS)))

    assert defaults.keys() == declared.keys() == {("raw", "trips"), ("raw", "zones"), ("taxi", "trips_and_zones")}
    one, other = defaults[("taxi", "trips_and_zones")], declared[("taxi", "trips_and_zones")]
    assert one.keys_by_input_name == other.keys_by_input_name == {
        "trips": dg.AssetKey(["raw", "trips"]),
        "zones": dg.AssetKey(["raw", "zones"]),
    }
    assert input_metadata(one) == input_metadata(other) == {
        "trips": {"columns": ["PULocationID", "fare"], "filter": "trip_miles > 0"},
        "zones": {},
    }
    assert isinstance(defaults[("raw", "trips")], dg.AssetSpec)


def test_input_defaults_materialize_with_pushdown(tmp_path, seeded):
    assets = load_notebook_assets(write_notebook(tmp_path, "taxi", DEFAULTS_CELLS))
    assert run(assets, seeded).success
    joined = Lakehouse.local(seeded).read("taxi.trips_and_zones", ref="dev").sort("fare")
    assert joined.columns == ["PULocationID", "fare", "Borough"]
    assert joined["fare"].to_list() == [10.0, 20.0, 30.0]  # trip_miles > 0 dropped the 7.5 fare


def test_a_parameter_declared_both_ways_is_an_error(tmp_path):
    path = write_notebook(
        tmp_path,
        "twice",
        '''
        @app.function
        @model(inputs={"trips": Input("raw.trips")})
        def first(trips=Input("raw.trips", columns=["fare"])):
            return trips
        ''',
    )
    assert_located(
        load_error(path), path, line_of(path, "@model("), "parameter 'trips' is declared twice", "keep one of them"
    )


def test_a_default_that_is_not_an_input_is_named_as_ignored(tmp_path):
    path = write_notebook(
        tmp_path,
        "not_input",
        '''
        @app.function
        @model
        def first(trips="raw.trips"):
            return trips
        ''',
    )
    assert_located(
        load_error(path),
        path,
        line_of(path, "def first"),
        "parameter 'trips' is not a model",
        "its default value 'raw.trips' is not an Input(...), so it was ignored",
        "trips=Input('namespace.table')",
    )


def test_input_defaults_do_not_stop_the_notebook_running_as_a_script(tmp_path):
    path = write_notebook(
        tmp_path,
        "script",
        DEFAULTS_CELLS
        + '''

@app.cell
def _():
    trips = pl.DataFrame({"PULocationID": [1], "fare": [2.0]})
    zones = pl.DataFrame({"LocationID": [1], "Borough": ["Bronx"]})
    print(trips_and_zones(trips, zones).to_dicts())
    print(hash(trips_and_zones.__defaults__[0]) == hash(Input("raw.trips", columns=["PULocationID", "fare"], filter="trip_miles > 0")))
    return
''',
    )
    result = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "[{'PULocationID': 1, 'fare': 2.0, 'Borough': 'Bronx'}]" in result.stdout
    assert "True" in result.stdout


# --- 2. an Input naming another model -----------------------------------------------------------------------------

UPSTREAM_CELLS = '''
@app.function
@model
def trips_and_zones(
    trips: pl.DataFrame = Input("raw.trips", columns=["PULocationID", "trip_miles", "fare"]),
    zones: pl.DataFrame = Input("raw.zones"),
) -> pl.DataFrame:
    return trips.join(zones, left_on="PULocationID", right_on="LocationID")
'''


@pytest.mark.parametrize("name", ["taxi.trips_and_zones", "trips_and_zones"], ids=["by-table", "by-bare-name"])
def test_an_input_naming_a_model_links_to_it_and_keeps_its_pushdown(tmp_path, seeded, name):
    taxi = write_notebook(tmp_path, "taxi", UPSTREAM_CELLS)
    report = write_notebook(
        tmp_path,
        "report",
        f'''
        @app.function
        @model
        def long_trips(rows: pl.DataFrame = Input("{name}", columns=["Borough", "fare"], filter="trip_miles > 2")):
            return rows.sort("fare")
        ''',
    )
    assets = load_notebook_assets([taxi, report])
    keys = by_key(assets)
    long_trips = keys[("report", "long_trips")]
    assert long_trips.keys_by_input_name == {"rows": dg.AssetKey(["taxi", "trips_and_zones"])}
    assert input_metadata(long_trips) == {"rows": {"columns": ["Borough", "fare"], "filter": "trip_miles > 2"}}
    assert isinstance(keys[("taxi", "trips_and_zones")], dg.AssetsDefinition)  # the model, not an external table
    assert ("trips_and_zones",) not in keys

    assert run(assets, seeded).success  # a fresh branch: the model's table is written first, then read
    rows = Lakehouse.local(seeded).read("report.long_trips", ref="dev")
    assert rows.to_dicts() == [{"Borough": "Queens", "fare": 20.0}, {"Borough": "Bronx", "fare": 30.0}]


def test_a_bare_name_two_notebooks_define_is_ambiguous(tmp_path):
    one = write_notebook(tmp_path, "one", UPSTREAM_CELLS)
    two = write_notebook(tmp_path, "two", UPSTREAM_CELLS)
    report = write_notebook(
        tmp_path,
        "report",
        '''
        @app.function
        @model
        def report(
            rows=Input("trips_and_zones"),
        ):
            return rows
        ''',
    )
    assert_located(
        load_error([one, two, report]),
        report,
        line_of(report, 'rows=Input("trips_and_zones")'),
        "several loaded notebooks define",
        f"table 'one.trips_and_zones' at {one.resolve()}:",
        f"table 'two.trips_and_zones' at {two.resolve()}:",
        "Input('one.trips_and_zones')",
    )


def test_a_parameter_named_like_models_of_two_notebooks_is_ambiguous(tmp_path):
    one = write_notebook(tmp_path, "one", UPSTREAM_CELLS)
    two = write_notebook(tmp_path, "two", UPSTREAM_CELLS)
    report = write_notebook(tmp_path, "report", "@app.function\n@model\ndef report(trips_and_zones):\n    return 1\n")
    error = load_error([one, two, report])
    assert_located(error, report, line_of(report, "def report"), "parameter 'trips_and_zones'", "one.trips_and_zones")


def test_a_bare_name_no_notebook_defines_is_an_error(tmp_path):
    path = write_notebook(
        tmp_path,
        "orphan",
        '''
        @app.function
        @model(inputs={
            "rows": Input("events"),
        })
        def report(rows):
            return rows
        ''',
    )
    assert_located(
        load_error(path),
        path,
        line_of(path, 'Input("events")'),
        "Input('events') (parameter 'rows' of model 'report') names no model of the loaded notebooks",
        "Input('namespace.events')",
    )


# --- 3. load_as -----------------------------------------------------------------------------------------------------

LOAD_AS_CELLS = '''
@app.function
@model(load_as="arrow")
def mixed(
    trips=Input("raw.trips", columns=["fare"]),
    zones=Input("raw.zones", load_as="pandas"),
    lazy: pl.LazyFrame = Input("raw.events", load_as="lazy"),
):
    return trips


@app.function
@model
def plain(mixed, typed: pl.DataFrame = Input("raw.zones", load_as="polars")):
    return mixed


@app.function
@model(load_as="lazy")
def downstream(mixed, plain: pl.LazyFrame):
    return mixed
'''


def test_load_as_goes_into_the_input_metadata_the_inputs_own_winning(tmp_path):
    assets = by_key(load_notebook_assets(write_notebook(tmp_path, "types", LOAD_AS_CELLS)))
    assert input_metadata(assets[("types", "mixed")]) == {
        "trips": {"columns": ["fare"], "load_as": "arrow"},
        "zones": {"load_as": "pandas"},
        "lazy": {"load_as": "lazy"},
    }
    assert input_metadata(assets[("types", "plain")]) == {"mixed": {}, "typed": {"load_as": "polars"}}
    assert input_metadata(assets[("types", "downstream")]) == {"mixed": {"load_as": "lazy"}, "plain": {"load_as": "lazy"}}


def test_two_parameters_reading_one_table_differently_is_an_error(tmp_path):
    """Dagster keeps one input metadata per upstream asset: the second read would silently get the first's."""
    path = write_notebook(
        tmp_path,
        "twice",
        """
        @app.function
        @model
        def first(
            a=Input("raw.trips", columns=["fare"]),
            b=Input("raw.trips", load_as="arrow"),
        ):
            return a
        """,
    )
    assert_located(load_error(path), path, line_of(path, "b=Input("), "parameters 'a' and 'b' read table 'raw.trips'")
    same = write_notebook(
        tmp_path, "same", '@app.function\n@model\ndef first(a=Input("raw.t"), b=Input("raw.t")):\n    return a\n'
    )
    assert [a.key.path for a in load_notebook_assets(same) if isinstance(a, dg.AssetsDefinition)] == [["same", "first"]]


def test_input_load_as_is_recorded_and_hashed():
    assert Input("raw.trips", load_as="pandas").metadata == {"load_as": "pandas"}
    assert Input("raw.trips", load_as="arrow") != Input("raw.trips", load_as="pandas")
    assert len({Input("raw.trips", load_as="arrow"), Input("raw.trips", load_as="arrow")}) == 1
    assert repr(Input("raw.trips", load_as="arrow")) == "Input('raw.trips', load_as='arrow')"


@pytest.mark.parametrize(
    "cell, snippet",
    [
        ('@app.function\n@model(load_as="numpy")\ndef first(x=Input("raw.x")):\n    return x\n', "@model("),
        ('@app.function\n@model\ndef first(\n    x=Input("raw.x", load_as="DataFrame"),\n):\n    return x\n', "x=Input("),
    ],
    ids=["model", "input"],
)
def test_a_bad_load_as_names_the_allowed_values(tmp_path, cell, snippet):
    path = write_notebook(tmp_path, "bad_load_as", cell)
    assert_located(
        load_error(path), path, line_of(path, snippet), "is not a type an input can arrive as", "'polars', 'lazy', 'arrow', 'pandas'"
    )


def test_an_annotation_contradicting_load_as_names_the_parameter(tmp_path):
    path = write_notebook(
        tmp_path,
        "contradiction",
        '''
        @app.function
        @model(load_as="arrow")
        def first(
            fine: pa.Table = Input("raw.x"),
            wrong: pl.DataFrame = Input("raw.y"),
        ):
            return fine
        ''',
    )
    assert_located(
        load_error(path),
        path,
        line_of(path, "wrong: pl.DataFrame"),
        "parameter 'wrong' is annotated DataFrame but loads as load_as='arrow' (pa.Table)",
        "annotate it pa.Table, drop the annotation, or change load_as",
    )


def test_unannotated_inputs_with_default_types_materialize(tmp_path, seeded):
    """load_as 'polars' and 'lazy' are what the IO manager gives for these annotations today: an end-to-end run."""
    path = write_notebook(
        tmp_path,
        "typed",
        '''
        @app.function
        @model(load_as="lazy")
        def fares(trips: pl.LazyFrame = Input("raw.trips", columns=["fare"])) -> pl.DataFrame:
            return trips.select(pl.col("fare").sum()).collect()
        ''',
    )
    assert run(load_notebook_assets(path), seeded).success
    assert Lakehouse.local(seeded).read("typed.fares", ref="dev")["fare"].to_list() == [67.5]
