"""A bauplan marimo notebook ported by changing its import line only (issue 14's acceptance notebook).

`notebooks/bauplan/bauplan_original.txt` is the notebook in its bauplan form: inputs declared as `bauplan.Model(...)`
parameter defaults, a PyArrow body, a pandas output, an uppercase `AND` filter with `-05:00` offsets on a
time-zone column. `bauplan_taxi.py` is the same file with `import bauplan` replaced by
`from dagster_lakehouse.notebook import bauplan`; it loads, passes `marimo check`, runs as a script, and
materializes in Dagster with its lineage, on both backends. Results are checked against PyArrow/pandas run on the
seed data by hand.
"""

from __future__ import annotations

import difflib
import importlib.util
import subprocess
import sys
import warnings
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import dagster_lakehouse.dagster as layer
from dagster_lakehouse import Lakehouse
from dagster_lakehouse.notebook import NotebookLoadError, load_inputs, load_notebook_assets
from dagster_lakehouse.notebook import bauplan as compat

HERE = Path(__file__).parent / "notebooks" / "bauplan"
ORIGINAL = HERE / "bauplan_original.txt"
PORTED = HERE / "bauplan_taxi.py"
MARIMO = Path(sys.executable).with_name("marimo")

UTC = timezone.utc
TRIPS = pl.DataFrame(
    {
        "pickup_datetime": [
            datetime(2022, 12, 15, 4, 59, tzinfo=UTC),  # 23:59 on Dec 14 in New York: before the filter
            datetime(2022, 12, 15, 5, 0, tzinfo=UTC),  # midnight of Dec 15 in New York: the first one in
            datetime(2022, 12, 20, 12, 0, tzinfo=UTC),
            datetime(2022, 12, 24, 18, 30, tzinfo=UTC),
            datetime(2022, 12, 31, 23, 0, tzinfo=UTC),
            datetime(2023, 1, 1, 4, 59, tzinfo=UTC),  # 23:59 on Dec 31 in New York: the last one in
            datetime(2023, 1, 1, 5, 0, tzinfo=UTC),  # midnight of Jan 1 in New York: after the filter
            datetime(2022, 12, 28, 9, 0, tzinfo=UTC),
        ],
        "PULocationID": [1, 1, 2, 2, 3, 1, 2, 3],
        "DOLocationID": [2, 3, 1, 1, 2, 2, 3, 1],
        "trip_miles": [5.0, 1.5, 3.0, 0.0, 2.5, 4.0, 7.0, 6.0],
        "base_passenger_fare": [20.0, 8.0, 14.0, 5.0, 11.0, 18.0, 30.0, 25.0],
    },
    schema_overrides={"pickup_datetime": pl.Datetime("us", "UTC")},
)
ZONES = pl.DataFrame(
    {
        "LocationID": [1, 2, 3],
        "Borough": ["Manhattan", "Queens", "Brooklyn"],
        "Zone": ["Midtown", "Astoria", "Park Slope"],
        "service_zone": ["Yellow Zone", "Boro Zone", "Boro Zone"],
    }
)


def expected_top() -> pd.DataFrame:
    """The second model's output, computed from the seed data with PyArrow and pandas, no lakehouse involved."""
    trips = TRIPS.to_arrow()
    start, end = datetime(2022, 12, 15, 5, tzinfo=UTC), datetime(2023, 1, 1, 5, tzinfo=UTC)
    trips = trips.filter(
        pa.compute.and_(
            pa.compute.greater_equal(trips["pickup_datetime"], pa.scalar(start, pa.timestamp("us", "UTC"))),
            pa.compute.less(trips["pickup_datetime"], pa.scalar(end, pa.timestamp("us", "UTC"))),
        )
    )
    df = trips.select(["pickup_datetime", "PULocationID", "trip_miles"]).to_pandas()
    df = df[df["trip_miles"] > 0].merge(ZONES.select(["LocationID", "Borough", "Zone"]).to_pandas(), left_on="PULocationID", right_on="LocationID")
    return (
        df.groupby(["PULocationID", "Borough", "Zone"])
        .agg(number_of_trips=("pickup_datetime", "count"), miles=("trip_miles", "sum"))
        .reset_index()
        .sort_values(["number_of_trips", "PULocationID"], ascending=[False, True])
        .reset_index(drop=True)
    )


def test_the_port_changes_only_the_import_line() -> None:
    changed = [
        line
        for line in difflib.unified_diff(ORIGINAL.read_text().splitlines(), PORTED.read_text().splitlines(), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert changed == ["-    import bauplan", "+    from dagster_lakehouse.notebook import bauplan"]


def test_the_port_passes_marimo_check_and_runs_as_a_script() -> None:
    check = subprocess.run([str(MARIMO), "check", "--strict", str(PORTED)], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    run = subprocess.run([sys.executable, str(PORTED)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr


def test_the_port_loads_with_bauplans_lineage() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the pandas pin of @bauplan.python: tested below
        defs = dg.Definitions(assets=load_notebook_assets(PORTED))
    graph = defs.resolve_asset_graph()
    top, joined = dg.AssetKey(["bauplan", "top_pickup_locations"]), dg.AssetKey(["bauplan", "trips_and_zones"])
    assert graph.get(top).parent_keys == {joined}  # bauplan.Model("trips_and_zones") is the model, not a raw table
    assert graph.get(joined).parent_keys == {dg.AssetKey(["bauplan", "taxi_fhvhv"]), dg.AssetKey(["bauplan", "taxi_zones"])}
    assert not graph.get(dg.AssetKey(["bauplan", "taxi_fhvhv"])).is_materializable  # raw tables: external


def test_the_port_materializes_in_dagster(backend) -> None:
    lakehouse = Lakehouse(backend.catalog_uri, backend.warehouse, dict(backend.properties))
    try:
        lakehouse.write("bauplan.taxi_fhvhv", TRIPS, branch="main", allow_main=True)
        lakehouse.write("bauplan.taxi_zones", ZONES, branch="main", allow_main=True)
        lakehouse.create_branch("dev")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            assets = load_notebook_assets(PORTED)
        resource = layer.LakehouseResource(
            catalog_uri=backend.catalog_uri, warehouse=backend.warehouse, properties=dict(backend.properties), branch="dev"
        )
        result = dg.materialize(assets, resources={"io_manager": layer.LakehouseIOManager(lakehouse=resource)})
        assert result.success

        joined = lakehouse.read("bauplan.trips_and_zones", ref="dev")
        assert joined.columns == ["pickup_datetime", "PULocationID", "trip_miles", "Borough", "Zone"]
        assert sorted(joined["pickup_datetime"].to_list())[0] == datetime(2022, 12, 15, 5, 0, tzinfo=UTC)
        assert sorted(joined["pickup_datetime"].to_list())[-1] == datetime(2023, 1, 1, 4, 59, tzinfo=UTC)
        top = lakehouse.read("bauplan.top_pickup_locations", ref="dev").to_pandas()
        pd.testing.assert_frame_equal(top, expected_top(), check_dtype=False)
        assert not lakehouse.exists("bauplan.top_pickup_locations", ref="main")  # the branch is isolated

        # an exploratory cell gets a model's inputs as the model does, from a branch, without repeating them
        notebook = importlib.util.module_from_spec(spec := importlib.util.spec_from_file_location("bauplan_taxi", PORTED))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            spec.loader.exec_module(notebook)
        frames = load_inputs(notebook.trips_and_zones, ref="dev", lakehouse=lakehouse)
        assert {k: (type(v), v.num_rows) for k, v in frames.items()} == {"trips": (pa.Table, 6), "zones": (pa.Table, 3)}
        assert notebook.trips_and_zones(**frames).to_pydict() == lakehouse.read_arrow("bauplan.trips_and_zones", ref="dev").to_pydict()
        (data,) = load_inputs(notebook.top_pickup_locations, ref="dev", lakehouse=lakehouse).values()
        assert data.num_rows == joined.height  # the model's input is the other model's table on the branch
    finally:
        lakehouse.close()


def test_bauplan_strategies_and_refusals() -> None:
    def body(data=compat.Model("t")):
        return data

    spec = compat.model(materialization_strategy="APPEND")(body).__lakehouse_model__
    assert spec.materialization == "append"
    with pytest.raises(NotebookLoadError, match="OVERWRITE_PARTITIONS.*overwrite_filter"):
        compat.model(materialization_strategy="OVERWRITE_PARTITIONS")
    with pytest.raises(NotebookLoadError, match="'MERGE'.*expected one of"):
        compat.model(materialization_strategy="MERGE")
    with pytest.raises(NotebookLoadError, match="partitioned_by.*partition_column"):
        compat.model(partitioned_by="day")
    with pytest.raises(NotebookLoadError, match="ref='dev'.*run's branch"):
        compat.Model("taxi_fhvhv", ref="dev")
    assert compat.Model("taxi_fhvhv").table == "bauplan.taxi_fhvhv"
    assert compat.Model("other.trips").table == "other.trips"


def test_bauplan_python_checks_packages_against_this_environment() -> None:
    with pytest.raises(NotebookLoadError, match="no-such-package-xyz==1.0 not installed.*PEP 723"):
        compat.python("3.11", pip={"no-such-package-xyz": "1.0"})
    with pytest.warns(UserWarning, match=r"polars==0\.0\.1 \(installed: "):
        compat.python(pip={"polars": "0.0.1"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compat.python(f"{sys.version_info.major}.{sys.version_info.minor}", pip={"polars": pl.__version__})
