"""`@model(automation_condition=...)` reaches the asset; writes carry column lineage for passed-through columns."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest
from test_dagster_support import (  # noqa: F401  (fresh_lakehouse_cache is an autouse fixture)
    TRIPS,
    fresh_lakehouse_cache,
    materialization,
    materialize,
    seed_trips,
)
from test_notebook_loader import line_of, spec_of, write_notebook

from dagster_lakehouse.dagster import lakehouse_table_spec
from dagster_lakehouse.dagster.lineage import column_lineage
from dagster_lakehouse.lakehouse import Lakehouse
from dagster_lakehouse.notebook import NotebookLoadError, load_notebook_assets

TRIPS_KEY = dg.AssetKey(["taxi", "trips"])
ZONES_KEY = dg.AssetKey(["taxi", "zones"])
ZONES = pl.DataFrame({"PULocationID": [1, 2, 3], "zone": ["Astoria", "Bronx Park", "Midtown"], "area": [1, 2, 3]})
DEV = {"lakehouse/branch": "dev"}


def _store(backend: Any) -> Lakehouse:
    return Lakehouse(backend.catalog_uri, backend.warehouse, dict(backend.properties))


def _lineage(event: dg.AssetMaterialization) -> dict[str, list[tuple[str, str]]]:
    """Column -> [(parent asset, parent column)] of a materialization's `dagster/column_lineage`."""
    lineage = event.metadata["dagster/column_lineage"].value
    return {
        column: [(dep.asset_key.to_user_string(), dep.column_name) for dep in deps]
        for column, deps in lineage.deps_by_column.items()
    }


# ----- automation_condition --------------------------------------------------------------------------


def test_automation_condition_reaches_the_asset(tmp_path: Path) -> None:
    path = write_notebook(
        tmp_path,
        "auto",
        """
        @app.function
        @model(inputs={"events": Input("raw.events")})
        def cleaned(events: pl.DataFrame) -> pl.DataFrame:
            return events


        @app.function
        @model(automation_condition=EAGER)
        def summary(cleaned: pl.DataFrame) -> pl.DataFrame:
            return cleaned
        """,
        setup="import dagster as dg\nEAGER = dg.AutomationCondition.eager()",
    )
    assets = load_notebook_assets(path)
    models = {a.key.path[-1]: a for a in assets if isinstance(a, dg.AssetsDefinition)}
    eager = spec_of(models["summary"]).automation_condition
    assert eager == dg.AutomationCondition.eager() and eager.get_label() == "eager"
    assert spec_of(models["cleaned"]).automation_condition is None
    graph = dg.Definitions(assets=assets).resolve_asset_graph()
    assert graph.get(models["summary"].key).automation_condition == eager


def test_a_value_that_is_not_an_automation_condition_fails_at_load_naming_the_model(tmp_path: Path) -> None:
    path = write_notebook(
        tmp_path,
        "bad_auto",
        """
        @app.function
        @model(name="nightly_summary", automation_condition="eager")
        def summary() -> pl.DataFrame:
            return pl.DataFrame({"x": [1]})
        """,
    )
    with pytest.raises(NotebookLoadError, match="model 'nightly_summary'") as raised:
        load_notebook_assets(path)
    error = raised.value
    assert "AutomationCondition" in error.message and "str 'eager'" in error.message
    assert error.path == str(path) and error.line == line_of(path, "@model(name=")


def test_importing_and_using_model_still_does_not_import_dagster() -> None:
    code = (
        "import sys\n"
        "from dagster_lakehouse import Input, model\n"
        "@model(inputs={'t': Input('raw.t', columns=['a'])})\n"
        "def m(t):\n"
        "    return t\n"
        "assert 'dagster' not in sys.modules, 'dagster was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ----- column lineage ---------------------------------------------------------------------------------


def test_column_lineage_maps_only_columns_named_like_a_declared_input_column() -> None:
    lineage = column_lineage(["id", "zone", "total"], {TRIPS_KEY: ["id", "miles"], ZONES_KEY: ["id", "zone"]})
    assert lineage == dg.TableColumnLineage(
        deps_by_column={
            "id": [dg.TableColumnDep(TRIPS_KEY, "id"), dg.TableColumnDep(ZONES_KEY, "id")],
            "zone": [dg.TableColumnDep(ZONES_KEY, "zone")],
        }
    )
    assert column_lineage(["total"], {TRIPS_KEY: ["id"]}) is None
    assert column_lineage(["id"], {}) is None


def test_a_plain_asset_gets_lineage_for_passed_through_columns_only(local_backend: Any) -> None:
    seed_trips(_store(local_backend))

    @dg.asset(
        key=["taxi", "trip_km"],
        ins={"trips": dg.AssetIn(key=TRIPS_KEY, metadata={"columns": ["trip_id", "trip_miles", "borough"]})},
    )
    def trip_km(trips: pl.DataFrame) -> pl.DataFrame:
        return trips.select("trip_id", "trip_miles", km=pl.col("trip_miles") * 1.609)

    result = materialize([lakehouse_table_spec("taxi.trips"), trip_km], local_backend, tags=DEV)
    assert result.success
    assert _lineage(materialization(result, "taxi__trip_km")) == {
        "trip_id": [("taxi/trips", "trip_id")],
        "trip_miles": [("taxi/trips", "trip_miles")],
    }


def test_an_asset_whose_inputs_declare_no_columns_gets_no_lineage(local_backend: Any) -> None:
    seed_trips(_store(local_backend))

    @dg.asset(key=["taxi", "long_trips"], ins={"trips": dg.AssetIn(key=TRIPS_KEY)})
    def long_trips(trips: pl.DataFrame) -> pl.DataFrame:
        return trips.filter(pl.col("trip_miles") > 2)

    result = materialize([lakehouse_table_spec("taxi.trips"), long_trips], local_backend, tags=DEV)
    assert result.success
    assert "dagster/column_lineage" not in materialization(result, "taxi__long_trips").metadata


def test_a_notebook_model_gets_lineage_from_its_inputs_declared_columns(tmp_path: Path, local_backend: Any) -> None:
    store = _store(local_backend)
    seed_trips(store)
    store.write("taxi.zones", ZONES, branch="main", allow_main=True)
    path = write_notebook(
        tmp_path,
        "rides",
        """
        @app.function
        @model(
            inputs={
                "trips": Input("taxi.trips", columns=["trip_id", "PULocationID", "trip_miles"]),
                "zones": Input("taxi.zones", columns=["PULocationID", "zone"]),
            }
        )
        def trips_by_zone(trips: pl.DataFrame, zones: pl.DataFrame) -> pl.DataFrame:
            return trips.join(zones, on="PULocationID").with_columns(long=pl.col("trip_miles") > 2)


        @app.function
        @model(inputs={"trips_by_zone": Input("rides.trips_by_zone", columns=["zone", "long"])})
        def long_by_zone(trips_by_zone: pl.DataFrame) -> pl.DataFrame:
            return trips_by_zone.group_by("zone").agg(long_trips=pl.col("long").sum())
        """,
    )
    result = materialize(load_notebook_assets(path), local_backend, tags=DEV)
    assert result.success
    assert _lineage(materialization(result, "rides__trips_by_zone")) == {
        "trip_id": [("taxi/trips", "trip_id")],
        "PULocationID": [("taxi/trips", "PULocationID"), ("taxi/zones", "PULocationID")],
        "trip_miles": [("taxi/trips", "trip_miles")],
        "zone": [("taxi/zones", "zone")],
    }
    assert _lineage(materialization(result, "rides__long_by_zone")) == {"zone": [("rides/trips_by_zone", "zone")]}
    assert TRIPS.height == store.read("rides.trips_by_zone", ref="dev").height
