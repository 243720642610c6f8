"""Frame handlers of the IO manager: pandas inputs and outputs, and input metadata `load_as` over annotations."""

import sys
from typing import Any

import dagster as dg
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from test_dagster_support import (  # noqa: F401  (fresh_lakehouse_cache is an autouse fixture)
    TRIPS,
    failure_text,
    fresh_lakehouse_cache,
    materialize,
    seed_trips,
)

from dagster_lakehouse.lakehouse import Lakehouse

TRIPS_SPEC = dg.AssetSpec(key=["taxi", "trips"], metadata={"lakehouse/table": "taxi.trips"})
DEV = {"lakehouse/branch": "dev"}
DAILY = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-05")


def _lakehouse(backend: Any) -> Lakehouse:
    return Lakehouse(backend.catalog_uri, backend.warehouse, dict(backend.properties))


def _consumer(annotation: Any, metadata: dict[str, Any], seen: dict[str, Any]) -> dg.AssetsDefinition:
    """An asset `consumer` reading `taxi.trips` with input metadata `metadata`, annotated `annotation` (None: not)."""

    def body(trips):  # type: ignore[no-untyped-def]
        seen["type"] = type(trips)
        seen["value"] = trips
        return pl.DataFrame({"rows": [1]})

    if annotation is not None:
        body.__annotations__ = {"trips": annotation}
    return dg.asset(name="consumer", ins={"trips": dg.AssetIn(key=["taxi", "trips"], metadata=metadata)})(body)


# ----- inputs: load_as picks the handler ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("load_as", "expected"),
    [("polars", pl.DataFrame), ("lazy", pl.LazyFrame), ("arrow", pa.Table), ("pandas", pd.DataFrame)],
)
def test_load_as_picks_the_type_of_an_unannotated_input(local_backend: Any, load_as: str, expected: type) -> None:
    seen: dict[str, Any] = {}
    consumer = _consumer(None, {"load_as": load_as, "columns": ["trip_id", "borough"], "filter": "trip_id > 4"}, seen)
    seed_trips(_lakehouse(local_backend))
    assert materialize([TRIPS_SPEC, consumer], local_backend, tags=DEV).success
    assert seen["type"] is expected
    value = seen["value"]
    frame = pl.from_pandas(value) if load_as == "pandas" else pl.DataFrame(value) if load_as == "arrow" else value
    frame = frame.collect() if load_as == "lazy" else frame
    assert frame.sort("trip_id").to_dict(as_series=False) == {"trip_id": [5, 6], "borough": ["Bronx", "Manhattan"]}


@pytest.mark.parametrize(
    ("annotation", "load_as"),
    [(pa.Table, "arrow"), (pl.LazyFrame, "lazy"), (pd.DataFrame, "pandas"), (pl.DataFrame, "polars"), (Any, "arrow")],
)
def test_load_as_agreeing_with_the_annotation(local_backend: Any, annotation: Any, load_as: str) -> None:
    seen: dict[str, Any] = {}
    seed_trips(_lakehouse(local_backend))
    assert materialize([TRIPS_SPEC, _consumer(annotation, {"load_as": load_as}, seen)], local_backend, tags=DEV).success
    assert seen["type"] is (pa.Table if annotation is Any else annotation)


def test_pandas_input_by_annotation(backend: Any, lakehouse: Lakehouse) -> None:
    seen: dict[str, Any] = {}

    @dg.asset(ins={"trips": dg.AssetIn(key=["taxi", "trips"], metadata={"filter": "trip_miles >= 2"})})
    def miles(trips: pd.DataFrame) -> pd.DataFrame:
        seen["dtypes"] = {c: str(t) for c, t in trips.dtypes.items() if c != "borough"}
        seen["strings"] = pd.api.types.is_string_dtype(trips["borough"])
        return trips.groupby("borough", as_index=False)["trip_miles"].sum()

    seed_trips(lakehouse)
    assert materialize([TRIPS_SPEC, miles], backend, tags=DEV).success
    assert seen["dtypes"] == {"trip_id": "int64", "PULocationID": "int64", "trip_miles": "float64"} and seen["strings"]
    written = lakehouse.read("public.miles", ref="dev").sort("borough")
    assert written.to_dict(as_series=False) == {"borough": ["Bronx", "Manhattan"], "trip_miles": [9.25, 7.5]}


def test_pandas_input_of_a_partitioned_parent(local_backend: Any) -> None:
    """A partitioned read loads the table first (for its schema): the pandas handler converts that read too."""

    @dg.asset(partitions_def=DAILY, metadata={"lakehouse/partition_column": "day"})
    def days(context: dg.AssetExecutionContext) -> pl.DataFrame:
        day = context.partition_time_window.start.date()
        return pl.DataFrame({"day": [day, day], "n": [1, 2]})

    @dg.asset(partitions_def=DAILY, metadata={"lakehouse/partition_column": "day"})
    def doubled(days: pd.DataFrame) -> pd.DataFrame:
        return days.assign(n=days["n"] * 2)

    for day in ("2024-01-01", "2024-01-02"):
        assert materialize([days, doubled], local_backend, tags=DEV, partition_key=day).success
    frame = _lakehouse(local_backend).read("public.doubled", ref="dev").sort("day", "n")
    assert frame["n"].to_list() == [2, 4, 2, 4] and frame["day"].n_unique() == 2


# ----- inputs: errors --------------------------------------------------------------------------------


def test_unknown_load_as_names_the_input_and_the_allowed_values(local_backend: Any) -> None:
    seed_trips(_lakehouse(local_backend))
    text = failure_text(materialize([TRIPS_SPEC, _consumer(None, {"load_as": "numpy"}, {})], local_backend, tags=DEV))
    assert "LakehouseIOError" in text
    assert "asset 'consumer' input 'trips'" in text and "load_as='numpy'" in text
    assert "'polars', 'lazy', 'arrow', 'pandas'" in text


def test_load_as_contradicting_the_annotation_names_both(local_backend: Any) -> None:
    seed_trips(_lakehouse(local_backend))
    consumer = _consumer(pl.DataFrame, {"load_as": "arrow"}, {})
    text = failure_text(materialize([TRIPS_SPEC, consumer], local_backend, tags=DEV))
    assert "asset 'consumer' input 'trips'" in text
    assert "annotated pl.DataFrame but input metadata load_as='arrow' asks for pa.Table" in text


def test_pandas_missing_gives_the_install_command(local_backend: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    seed_trips(_lakehouse(local_backend))
    monkeypatch.setitem(sys.modules, "pandas", None)  # `import pandas` now raises ImportError, as when not installed
    text = failure_text(materialize([TRIPS_SPEC, _consumer(None, {"load_as": "pandas"}, {})], local_backend, tags=DEV))
    assert "asset 'consumer' input 'trips'" in text
    assert "pip install 'dagster-lakehouse[pandas]'" in text


# ----- outputs ----------------------------------------------------------------------------------------


def test_pandas_output_is_written_without_its_index(backend: Any, lakehouse: Lakehouse) -> None:
    @dg.asset
    def far() -> pd.DataFrame:
        frame = TRIPS.to_pandas()
        return frame[frame["trip_miles"] > 3]  # index 2, 4, 5: unnamed, dropped

    assert materialize([far], backend, tags=DEV).success
    written = lakehouse.read("public.far", ref="dev")
    assert written.columns == TRIPS.columns
    assert sorted(written["trip_id"].to_list()) == [3, 5, 6]
    assert [f.name for f in lakehouse.table("public.far", "dev").schema().fields] == TRIPS.columns


def test_pandas_output_with_a_named_index_is_refused_and_changes_nothing(local_backend: Any) -> None:
    lakehouse = _lakehouse(local_backend)
    lakehouse.create_branch("dev")
    lakehouse.write("public.totals", pl.DataFrame({"borough": ["x"], "trip_miles": [1.0]}), branch="dev")
    before = lakehouse.snapshot_id("public.totals", "dev")

    @dg.asset
    def totals() -> pd.DataFrame:
        return TRIPS.to_pandas().groupby("borough")[["trip_miles"]].sum()  # index 'borough' holds the keys

    text = failure_text(materialize([totals], local_backend, tags=DEV))
    assert "LakehouseIOError" in text and "asset 'totals'" in text and "'borough'" in text
    assert ".reset_index()" in text
    assert lakehouse.snapshot_id("public.totals", "dev") == before


def test_pandas_series_output_is_refused(local_backend: Any) -> None:
    @dg.asset
    def counts() -> Any:
        return TRIPS.to_pandas()["borough"].value_counts()

    text = failure_text(materialize([counts], local_backend, tags=DEV))
    assert "asset 'counts'" in text and "pandas Series" in text and "to_frame()" in text
    assert not _lakehouse(local_backend).exists("public.counts", "dev")


def test_record_batch_reader_output_is_written(local_backend: Any) -> None:
    @dg.asset
    def batches() -> Any:
        table = pa.table({"a": [1, 2, 3]})
        return pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=1))

    assert materialize([batches], local_backend, tags=DEV).success
    assert _lakehouse(local_backend).read("public.batches", ref="dev")["a"].to_list() == [1, 2, 3]
