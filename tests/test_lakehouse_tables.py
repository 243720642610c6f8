"""Writes, reads and schema handling of lakehouse tables, on both backends (SQLite+local, PostgreSQL+S3)."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pyarrow as pa
import pytest
from polars.testing import assert_frame_equal
from pyiceberg.expressions import GreaterThanOrEqual, In

from dagster_lakehouse.lakehouse import (
    ColumnNotFound,
    InvalidFilter,
    InvalidTableName,
    Lakehouse,
    ProtectedBranchError,
    RefNotFound,
    SchemaMismatch,
    TableNotFound,
)


def trips(n: int = 6, start: int = 0) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "PULocationID": [start + i for i in range(n)],
            "trip_miles": [float(i) + 0.5 for i in range(n)],
            "pickup_datetime": [dt.datetime(2023, 12, 30) + dt.timedelta(days=i) for i in range(n)],
            "borough": [["Bronx", "Queens"][i % 2] for i in range(n)],
        }
    )


@pytest.fixture
def lh(lakehouse: Lakehouse) -> Lakehouse:
    lakehouse.create_branch("dev")
    return lakehouse


def test_write_creates_namespace_and_table_and_reads_back(lh: Lakehouse) -> None:
    result = lh.write("taxi.trips", trips(), branch="dev")
    assert result.rows == 6 and result.snapshot_id == lh.snapshot_id("taxi.trips", "dev")
    assert lh.tables("dev") == ["taxi.trips"]
    assert_frame_equal(lh.read("taxi.trips", ref="dev"), trips())


@pytest.mark.parametrize("kind", ["lazy", "arrow"])
def test_write_accepts_lazyframes_and_arrow_tables(lh: Lakehouse, kind: str) -> None:
    data = trips().lazy() if kind == "lazy" else trips().to_arrow()
    lh.write("taxi.trips", data, branch="dev")
    assert_frame_equal(lh.read("taxi.trips", ref="dev"), trips())
    assert isinstance(lh.read_arrow("taxi.trips", ref="dev"), pa.Table)


def test_replace_swaps_contents_and_append_adds_rows(lh: Lakehouse) -> None:
    lh.write("taxi.trips", trips(3), branch="dev")
    lh.write("taxi.trips", trips(2, start=100), branch="dev", mode="append")
    assert sorted(lh.read("taxi.trips", ref="dev")["PULocationID"]) == [0, 1, 2, 100, 101]
    lh.write("taxi.trips", trips(1, start=7), branch="dev")
    assert lh.read("taxi.trips", ref="dev")["PULocationID"].to_list() == [7]


def test_append_with_new_column_evolves_schema(lh: Lakehouse) -> None:
    lh.write("taxi.trips", trips(2), branch="dev")
    lh.write("taxi.trips", trips(1, start=9).with_columns(tips=pl.lit(2.5)), branch="dev", mode="append")
    out = lh.read("taxi.trips", ref="dev").sort("PULocationID")
    assert out.columns[-1] == "tips"
    assert out["tips"].to_list() == [None, None, 2.5]


def test_append_with_narrower_int_is_accepted_and_wider_evolves(lh: Lakehouse) -> None:
    lh.write("t.n", pl.DataFrame({"x": pl.Series([1], dtype=pl.Int32)}), branch="dev")
    lh.write("t.n", pl.DataFrame({"x": pl.Series([2], dtype=pl.Int64)}), branch="dev", mode="append")
    lh.write("t.n", pl.DataFrame({"x": pl.Series([3], dtype=pl.Int32)}), branch="dev", mode="append")
    out = lh.read("t.n", ref="dev")
    assert out["x"].dtype == pl.Int64 and sorted(out["x"]) == [1, 2, 3]


def test_append_with_incompatible_type_names_the_column(lh: Lakehouse) -> None:
    lh.write("taxi.trips", trips(2), branch="dev")
    bad = trips(1).with_columns(pl.col("trip_miles").cast(pl.Utf8))
    with pytest.raises(SchemaMismatch, match=r"column 'trip_miles' is double in the table but string") as info:
        lh.write("taxi.trips", bad, branch="dev", mode="append")
    assert "taxi.trips" in str(info.value) and "'dev'" in str(info.value)
    assert lh.read("taxi.trips", ref="dev").height == 2


def test_replace_may_change_types_and_drop_columns(lh: Lakehouse) -> None:
    lh.write("taxi.trips", trips(2), branch="dev")
    lh.write("taxi.trips", pl.DataFrame({"trip_miles": ["far", "near"]}), branch="dev")
    out = lh.read("taxi.trips", ref="dev")
    assert out.schema == pl.Schema({"trip_miles": pl.String})


def test_columns_and_filter_are_applied(lh: Lakehouse) -> None:
    lh.write("taxi.trips", trips(), branch="dev")
    out = lh.read(
        "taxi.trips",
        ref="dev",
        columns=["PULocationID", "trip_miles"],
        filter="pickup_datetime >= '2024-01-01' and PULocationID in (2, 3, 5)",
    )
    assert out.columns == ["PULocationID", "trip_miles"]
    assert sorted(out["PULocationID"]) == [2, 3, 5]


def test_filter_accepts_pyiceberg_expressions(lh: Lakehouse) -> None:
    lh.write("taxi.trips", trips(), branch="dev")
    expr = GreaterThanOrEqual("trip_miles", 2.0) & In("borough", {"Bronx"})
    out = lh.read("taxi.trips", ref="dev", filter=expr)
    assert sorted(out["PULocationID"]) == [2, 4]


def test_scan_is_lazy_and_matches_read(lh: Lakehouse) -> None:
    lh.write("taxi.trips", trips(), branch="dev")
    filt = "pickup_datetime >= '2024-01-01 00:00:00' and borough = 'Bronx' or PULocationID = 1"
    lazy = lh.scan("taxi.trips", ref="dev", columns=["PULocationID"], filter=filt)
    assert isinstance(lazy, pl.LazyFrame)
    eager = lh.read("taxi.trips", ref="dev", columns=["PULocationID"], filter=filt)
    assert_frame_equal(lazy.collect().sort("PULocationID"), eager.sort("PULocationID"))
    assert sorted(eager["PULocationID"]) == [1, 2, 4]


def test_filter_strings_are_parsed_never_evaluated(lh: Lakehouse, tmp_path) -> None:
    lh.write("taxi.trips", trips(), branch="dev")
    marker = tmp_path / "pwned"
    with pytest.raises(InvalidFilter, match="cannot parse filter"):
        lh.read("taxi.trips", ref="dev", filter=f"__import__('pathlib').Path('{marker}').touch()")
    assert not marker.exists()


def test_errors_name_table_column_and_ref(lh: Lakehouse) -> None:
    lh.write("taxi.trips", trips(), branch="dev")
    with pytest.raises(ColumnNotFound, match=r"taxi.trips.*'dev'.*no column 'nope'"):
        lh.read("taxi.trips", ref="dev", columns=["nope"])
    with pytest.raises(ColumnNotFound, match=r"taxi.trips.*'nope = 1'.*columns are: PULocationID"):
        lh.read("taxi.trips", ref="dev", filter="nope = 1")
    with pytest.raises(InvalidFilter, match=r"taxi.trips.*at character"):
        lh.read("taxi.trips", ref="dev", filter="trip_miles >>= 1")
    with pytest.raises(TableNotFound, match=r"taxi.zones.*'dev'"):
        lh.read("taxi.zones", ref="dev")
    with pytest.raises(RefNotFound, match="'nobranch'"):
        lh.read("taxi.trips", ref="nobranch")
    with pytest.raises(InvalidTableName, match="namespace.table"):
        lh.write("trips", trips(), branch="dev")
    with pytest.raises(ValueError, match=r"table 'taxi.trips' on branch 'dev': write mode must be"):
        lh.write("taxi.trips", trips(), branch="dev", mode="merge")


def test_main_is_protected_unless_allowed(lh: Lakehouse) -> None:
    with pytest.raises(ProtectedBranchError, match="'main' is protected"):
        lh.write("taxi.trips", trips(), branch="main")
    assert lh.tables("main") == []
    lh.write("taxi.trips", trips(), branch="main", allow_main=True)
    assert lh.tables("main") == ["taxi.trips"]


def test_partition_scoped_overwrite_replaces_only_matching_rows(lh: Lakehouse) -> None:
    lh.write("taxi.trips", trips(), branch="dev")
    before = len(lh.table("taxi.trips", "dev").metadata.metadata_log)
    day = trips(1, start=50).with_columns(pickup_datetime=pl.lit(dt.datetime(2024, 1, 1, 12)))
    lh.write(
        "taxi.trips",
        day,
        branch="dev",
        where="pickup_datetime >= '2024-01-01' and pickup_datetime < '2024-01-02'",
    )
    ids = sorted(lh.read("taxi.trips", ref="dev")["PULocationID"])
    assert ids == [0, 1, 3, 4, 5, 50]
    # one catalog commit (one new metadata file), even though Iceberg records a delete and an append
    assert len(lh.table("taxi.trips", "dev").metadata.metadata_log) == before + 1


def test_snapshot_summary_carries_run_id_and_properties(lh: Lakehouse) -> None:
    lh.write("taxi.trips", trips(), branch="dev", run_id="run-123", snapshot_properties={"dagster.partition-key": "p1"})
    summary = lh.table("taxi.trips", "dev").current_snapshot().summary
    assert summary["dagster.run-id"] == "run-123"
    assert summary["dagster.partition-key"] == "p1"
    assert summary["lakehouse.branch"] == "dev"


def test_unsigned_counts_are_stored_as_signed_ints_and_scan_lazily(lh: Lakehouse) -> None:
    counts = trips().group_by("borough").agg(trips=pl.len(), small=pl.lit(1, dtype=pl.UInt8))
    assert counts["trips"].dtype == pl.UInt32
    lh.write("taxi.counts", counts, branch="dev")
    out = lh.scan("taxi.counts", ref="dev").collect().sort("borough")
    assert out.schema["trips"] == pl.Int64 and out.schema["small"] == pl.Int32
    assert out["trips"].to_list() == [3, 3]
