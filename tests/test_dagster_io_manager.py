"""LakehouseIOManager end to end: `dg.materialize` on a real lakehouse, checked with the core API afterwards."""

from __future__ import annotations

from typing import Any

import dagster as dg
import polars as pl
import pyarrow as pa
import pytest
from test_dagster_support import (  # noqa: F401  (fresh_lakehouse_cache is an autouse fixture)
    TRIPS,
    failure_text,
    fresh_lakehouse_cache,
    io_manager_for,
    materialization,
    materialize,
    resource_for,
    seed_trips,
)

from dagster_lakehouse.dagster import LakehouseIOManager, lakehouse_table_spec, table_name_for
from dagster_lakehouse.lakehouse import Lakehouse

TRIPS_SPEC = dg.AssetSpec(key=["taxi", "trips"], metadata={"lakehouse/table": "taxi.trips"})


@dg.asset(key_prefix="taxi")
def long_trips(trips: pl.DataFrame) -> pl.DataFrame:
    """Trips of more than two miles."""
    return trips.filter(pl.col("trip_miles") > 2)


@dg.asset(key_prefix="taxi")
def trip_count(long_trips: pl.DataFrame) -> pl.DataFrame:
    """How many long trips there are."""
    return pl.DataFrame({"n": [long_trips.height]})


# ----- where outputs go -------------------------------------------------------------------------------


def test_output_written_on_run_branch_and_main_untouched(backend: Any, lakehouse: Lakehouse) -> None:
    seed_trips(lakehouse)
    main_snapshot = lakehouse.snapshot_id("taxi.trips", "main")
    result = materialize([TRIPS_SPEC, long_trips, trip_count], backend, tags={"lakehouse/branch": "dev"})
    assert result.success
    assert lakehouse.has_branch("dev"), "the run's branch is created from main"
    assert lakehouse.read("taxi.long_trips", ref="dev")["trip_id"].sort().to_list() == [3, 5, 6]
    assert lakehouse.read("taxi.trip_count", ref="dev")["n"].to_list() == [3]
    assert not lakehouse.exists("taxi.long_trips", "main")
    assert not lakehouse.exists("taxi.trip_count", "main")
    assert lakehouse.snapshot_id("taxi.trips", "main") == main_snapshot


def test_parents_are_read_from_the_run_branch(local_backend: Any) -> None:
    lakehouse = Lakehouse(local_backend.catalog_uri, local_backend.warehouse)
    seed_trips(lakehouse)
    lakehouse.create_branch("dev")
    lakehouse.write("taxi.trips", TRIPS.head(3), branch="dev")
    assert materialize([TRIPS_SPEC, long_trips], local_backend, tags={"lakehouse/branch": "dev"}).success
    assert lakehouse.read("taxi.long_trips", ref="dev")["trip_id"].to_list() == [3], "dev's trips, not main's"


def test_append_mode_adds_rows(local_backend: Any) -> None:
    @dg.asset(metadata={"lakehouse/mode": "append"})
    def events() -> pl.DataFrame:
        return pl.DataFrame({"id": [1, 2]})

    for _ in range(3):
        assert materialize([events], local_backend, tags={"lakehouse/branch": "dev"}).success
    lakehouse = Lakehouse(local_backend.catalog_uri, local_backend.warehouse)
    assert lakehouse.read("public.events", ref="dev").height == 6
    operations = [s.summary.operation.value for s in lakehouse.table("public.events", "dev").metadata.snapshots]
    assert operations == ["append", "append", "append"]


def test_replace_mode_replaces_the_table(local_backend: Any) -> None:
    values = iter([[1, 2, 3], [4]])

    @dg.asset
    def numbers() -> pl.DataFrame:
        return pl.DataFrame({"n": next(values)})

    for _ in range(2):
        assert materialize([numbers], local_backend, tags={"lakehouse/branch": "dev"}).success
    lakehouse = Lakehouse(local_backend.catalog_uri, local_backend.warehouse)
    assert lakehouse.read("public.numbers", ref="dev")["n"].to_list() == [4]


def test_none_output_writes_nothing(local_backend: Any) -> None:
    @dg.asset
    def nothing_yet():
        return None

    result = materialize([nothing_yet], local_backend, tags={"lakehouse/branch": "dev"})
    assert result.success
    lakehouse = Lakehouse(local_backend.catalog_uri, local_backend.warehouse)
    assert not lakehouse.has_branch("dev"), "nothing to write, so no branch either"
    assert lakehouse.tables("main") == []


def test_arrow_and_lazy_outputs_are_written(local_backend: Any) -> None:
    @dg.asset
    def from_arrow() -> pa.Table:
        return pa.table({"a": [1, 2]})

    @dg.asset
    def from_lazy() -> pl.LazyFrame:
        return pl.LazyFrame({"b": ["x"]})

    assert materialize([from_arrow, from_lazy], local_backend, tags={"lakehouse/branch": "dev"}).success
    lakehouse = Lakehouse(local_backend.catalog_uri, local_backend.warehouse)
    assert lakehouse.read("public.from_arrow", ref="dev")["a"].to_list() == [1, 2]
    assert lakehouse.read("public.from_lazy", ref="dev")["b"].to_list() == ["x"]


@pytest.mark.parametrize(
    ("key", "metadata", "expected"),
    [
        (["orders"], {}, "public.orders"),
        (["sales", "orders"], {}, "sales.orders"),
        (["eu", "sales", "orders"], {}, "eu_sales.orders"),
        (["orders"], {"lakehouse/table": "raw.orders_v2"}, "raw.orders_v2"),
        (["orders"], {"lakehouse/table": dg.MetadataValue.text("raw.orders")}, "raw.orders"),
    ],
)
def test_table_names(key: list[str], metadata: dict[str, Any], expected: str) -> None:
    assert table_name_for(dg.AssetKey(key), metadata, "public") == expected


def test_default_namespace_and_table_metadata(local_backend: Any) -> None:
    @dg.asset
    def plain() -> pl.DataFrame:
        return pl.DataFrame({"a": [1]})

    @dg.asset(metadata={"lakehouse/table": "marts.renamed"})
    def renamed() -> pl.DataFrame:
        return pl.DataFrame({"a": [1]})

    io_manager = io_manager_for(local_backend)
    io_manager = LakehouseIOManager(lakehouse=io_manager.lakehouse, default_namespace="analytics")
    result = dg.materialize([plain, renamed], resources={"io_manager": io_manager}, tags={"lakehouse/branch": "dev"})
    assert result.success
    lakehouse = Lakehouse(local_backend.catalog_uri, local_backend.warehouse)
    assert lakehouse.tables("dev") == ["analytics.plain", "marts.renamed"]


# ----- inputs -----------------------------------------------------------------------------------------


def test_input_columns_and_filter_are_pushed_down(backend: Any, lakehouse: Lakehouse) -> None:
    seen: dict[str, Any] = {}

    @dg.asset(
        ins={
            "trips": dg.AssetIn(
                key=["taxi", "trips"],
                metadata={"columns": ["trip_id", "trip_miles"], "filter": "PULocationID in (1, 2) and trip_miles >= 1"},
            )
        }
    )
    def near(trips: pl.DataFrame) -> pl.DataFrame:
        seen["columns"] = trips.columns
        return trips

    seed_trips(lakehouse)
    assert materialize([TRIPS_SPEC, near], backend, tags={"lakehouse/branch": "dev"}).success
    assert seen["columns"] == ["trip_id", "trip_miles"]
    assert lakehouse.read("public.near", ref="dev")["trip_id"].sort().to_list() == [1, 2, 5]


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [(pl.DataFrame, pl.DataFrame), (pl.LazyFrame, pl.LazyFrame), (pa.Table, pa.Table), (None, pl.DataFrame)],
    ids=["DataFrame", "LazyFrame", "pa.Table", "unannotated"],
)
def test_input_type_follows_the_annotation(local_backend: Any, annotation: Any, expected: type) -> None:
    seen: dict[str, Any] = {}

    def body(trips):  # type: ignore[no-untyped-def]
        seen["type"] = type(trips)
        return pl.DataFrame({"rows": [len(trips.collect()) if isinstance(trips, pl.LazyFrame) else len(trips)]})

    if annotation is not None:
        body.__annotations__ = {"trips": annotation}
    consumer = dg.asset(
        name="consumer", ins={"trips": dg.AssetIn(key=["taxi", "trips"], metadata={"filter": "trip_id > 4"})}
    )(body)
    lakehouse = Lakehouse(local_backend.catalog_uri, local_backend.warehouse)
    seed_trips(lakehouse)
    assert materialize([TRIPS_SPEC, consumer], local_backend, tags={"lakehouse/branch": "dev"}).success
    assert seen["type"] is expected
    assert lakehouse.read("public.consumer", ref="dev")["rows"].to_list() == [2]


def test_external_table_spec_helper(backend: Any, lakehouse: Lakehouse) -> None:
    spec = lakehouse_table_spec("taxi.trips", group_name="raw", description="Raw trips.")
    assert spec.key == dg.AssetKey(["taxi", "trips"])
    assert spec.metadata["lakehouse/table"] == "taxi.trips"
    assert spec.group_name == "raw" and "iceberg" in spec.kinds

    @dg.asset(deps=[], ins={"raw": dg.AssetIn(key=["taxi", "trips"])})
    def copied(raw: pl.DataFrame) -> pl.DataFrame:
        return raw

    seed_trips(lakehouse)
    assert materialize([spec, copied], backend, tags={"lakehouse/branch": "dev"}).success
    assert lakehouse.read("public.copied", ref="dev").height == TRIPS.height


def test_external_spec_with_its_own_table_name_and_io_manager_key(local_backend: Any) -> None:
    spec = lakehouse_table_spec("taxi.trips", key=["raw_trips"], io_manager_key="lake")

    @dg.asset(io_manager_key="lake")
    def copied(raw_trips: pl.DataFrame) -> pl.DataFrame:
        return raw_trips

    lakehouse = Lakehouse(local_backend.catalog_uri, local_backend.warehouse)
    seed_trips(lakehouse)
    result = dg.materialize(
        [spec, copied], resources={"lake": io_manager_for(local_backend)}, tags={"lakehouse/branch": "dev"}
    )
    assert result.success
    assert lakehouse.read("public.copied", ref="dev").height == TRIPS.height


# ----- what a materialization records -----------------------------------------------------------------


def test_materialization_metadata_and_data_version(backend: Any, lakehouse: Lakehouse) -> None:
    seed_trips(lakehouse)
    instance = dg.DagsterInstance.ephemeral()
    result = materialize([TRIPS_SPEC, long_trips], backend, tags={"lakehouse/branch": "dev"}, instance=instance)
    assert result.success
    event = materialization(result, "taxi__long_trips")
    snapshot_id = lakehouse.snapshot_id("taxi.long_trips", "dev")
    table = lakehouse.table("taxi.long_trips", "dev")
    md = event.metadata
    assert md["dagster/row_count"].value == 3
    assert md["dagster/table_name"].value == "taxi.long_trips"
    assert md["lakehouse/branch"].value == "dev"
    assert md["lakehouse/snapshot_id"].value == snapshot_id
    assert md["lakehouse/uri"].value == table.location()
    assert md["lakehouse/metadata_location"].value == table.metadata_location
    schema = md["dagster/column_schema"].value
    assert [(c.name, c.type) for c in schema.columns] == [
        ("trip_id", "long"),
        ("PULocationID", "long"),
        ("trip_miles", "double"),
        ("borough", "string"),
    ]
    assert event.tags["dagster/data_version"] == str(snapshot_id)
    stored = instance.get_latest_materialization_event(dg.AssetKey(["taxi", "long_trips"]))
    assert stored is not None and stored.asset_materialization is not None
    assert stored.asset_materialization.metadata["lakehouse/snapshot_id"].value == snapshot_id
    assert stored.asset_materialization.tags["dagster/data_version"] == str(snapshot_id)


def test_snapshot_summary_and_log_carry_the_run(local_backend: Any) -> None:
    lakehouse = Lakehouse(local_backend.catalog_uri, local_backend.warehouse)
    seed_trips(lakehouse)
    result = materialize([TRIPS_SPEC, long_trips], local_backend, tags={"lakehouse/branch": "dev"})
    assert result.success
    summary = lakehouse.table("taxi.long_trips", "dev").current_snapshot().summary
    assert summary["dagster.run-id"] == result.run_id
    assert summary["dagster.asset-key"] == "taxi/long_trips"
    assert summary["lakehouse.branch"] == "dev"
    assert "dagster.partition-key" not in summary.additional_properties
    (write,) = [c for c in lakehouse.log("dev") if "taxi.long_trips" in c.tables]
    assert write.run_id == result.run_id


# ----- errors name the asset, the table, the branch and the column --------------------------------------


def test_missing_table_on_branch(local_backend: Any) -> None:
    result = materialize([TRIPS_SPEC, long_trips], local_backend, tags={"lakehouse/branch": "dev"})
    text = failure_text(result)
    assert "TableNotFound" in text
    assert "asset 'taxi/long_trips' input 'trips'" in text
    assert "table 'taxi.trips'" in text and "branch 'dev'" in text
    assert "for a raw table, write 'taxi.trips' first" in text


def test_unknown_column_in_input(local_backend: Any) -> None:
    @dg.asset(ins={"trips": dg.AssetIn(key=["taxi", "trips"], metadata={"columns": ["trip_id", "fare"]})})
    def fares(trips: pl.DataFrame) -> pl.DataFrame:
        return trips

    seed_trips(Lakehouse(local_backend.catalog_uri, local_backend.warehouse))
    text = failure_text(materialize([TRIPS_SPEC, fares], local_backend, tags={"lakehouse/branch": "dev"}))
    assert "ColumnNotFound" in text
    assert "asset 'fares' input 'trips'" in text and "'taxi.trips' on branch 'dev'" in text and "'fare'" in text


def test_unknown_column_in_filter(local_backend: Any) -> None:
    @dg.asset(ins={"trips": dg.AssetIn(key=["taxi", "trips"], metadata={"filter": "fare > 3"})})
    def fares(trips: pl.DataFrame) -> pl.DataFrame:
        return trips

    seed_trips(Lakehouse(local_backend.catalog_uri, local_backend.warehouse))
    text = failure_text(materialize([TRIPS_SPEC, fares], local_backend, tags={"lakehouse/branch": "dev"}))
    assert "ColumnNotFound" in text and "asset 'fares' input 'trips'" in text and "fare" in text


def test_unparsable_filter(local_backend: Any) -> None:
    @dg.asset(ins={"trips": dg.AssetIn(key=["taxi", "trips"], metadata={"filter": "trip_miles >>> 2"})})
    def broken(trips: pl.DataFrame) -> pl.DataFrame:
        return trips

    seed_trips(Lakehouse(local_backend.catalog_uri, local_backend.warehouse))
    text = failure_text(materialize([TRIPS_SPEC, broken], local_backend, tags={"lakehouse/branch": "dev"}))
    assert "InvalidFilter" in text
    assert "asset 'broken' input 'trips'" in text and "branch 'dev'" in text and "trip_miles >>> 2" in text
    assert "'taxi.trips'" in text


def test_unsupported_input_annotation(local_backend: Any) -> None:
    @dg.asset(ins={"trips": dg.AssetIn(key=["taxi", "trips"])})
    def as_dict(trips: dict) -> pl.DataFrame:
        return pl.DataFrame()

    seed_trips(Lakehouse(local_backend.catalog_uri, local_backend.warehouse))
    text = failure_text(materialize([TRIPS_SPEC, as_dict], local_backend, tags={"lakehouse/branch": "dev"}))
    assert "LakehouseIOError" in text and "asset 'as_dict' input 'trips'" in text and "pl.LazyFrame" in text


def test_unsupported_output_value(local_backend: Any) -> None:
    @dg.asset
    def odd():
        return {"a": 1}

    text = failure_text(materialize([odd], local_backend, tags={"lakehouse/branch": "dev"}))
    assert "LakehouseIOError" in text and "asset 'odd'" in text and "branch 'dev'" in text and "builtins.dict" in text


def test_bad_write_mode(local_backend: Any) -> None:
    @dg.asset(metadata={"lakehouse/mode": "merge"})
    def merged() -> pl.DataFrame:
        return pl.DataFrame({"a": [1]})

    text = failure_text(materialize([merged], local_backend, tags={"lakehouse/branch": "dev"}))
    assert "asset 'merged'" in text and "'merge'" in text and "replace, append, upsert" in text


def test_io_manager_works_with_dagster_test_contexts_outside_a_run(local_backend: Any) -> None:
    """Users unit-test assets with dg.build_input_context / build_output_context: no run, no step."""
    resource = resource_for(local_backend, branch="dev")
    io_manager = LakehouseIOManager(lakehouse=resource)
    store = resource.get_lakehouse()
    store.create_branch("dev")
    store.write("taxi.trips", pl.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]}), branch="dev")

    loaded = io_manager.load_input(
        dg.build_input_context(asset_key=dg.AssetKey(["taxi", "trips"]), definition_metadata={"columns": ["a"], "filter": "a >= 2"})
    )
    assert loaded.to_dict(as_series=False) == {"a": [2, 3]}

    io_manager.handle_output(dg.build_output_context(asset_key=dg.AssetKey(["taxi", "out"])), pl.DataFrame({"c": [7]}))
    assert store.read("taxi.out", ref="dev")["c"].to_list() == [7]
    assert "taxi.out" not in store.tables("main")
    with pytest.raises(Exception, match=r"input from 'taxi/missing'.*taxi.missing"):
        io_manager.load_input(dg.build_input_context(asset_key=dg.AssetKey(["taxi", "missing"])))
