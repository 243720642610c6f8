"""`read`, `read_arrow` and `scan` return the columns in the order `columns=` names them, with or without a filter,
on the native Parquet scan and on the `pl.scan_iceberg` fallback alike."""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import pytest

from dagster_lakehouse.lakehouse import Lakehouse
from dagster_lakehouse.lakehouse.errors import ColumnNotFound



def trips() -> pl.DataFrame:
    return pl.DataFrame(
        {"day": [1, 1, 2, 3], "zone id": [10, 11, 12, 13], "trip_miles": [1.5, 2.5, 3.5, 4.5], "note": list("abcd")}
    )


def frames(lh: Lakehouse, table: str, columns: list[str], filter: str | None) -> dict[str, pl.DataFrame]:
    """What each read returns, as Polars frames (the Arrow table converted, the LazyFrame collected)."""
    arrow = lh.read_arrow(table, ref="dev", columns=columns, filter=filter)
    assert isinstance(arrow, pa.Table)
    lazy = lh.scan(table, ref="dev", columns=columns, filter=filter)
    assert lazy.collect_schema().names() == columns  # known before anything is read
    converted = pl.from_arrow(arrow)
    assert isinstance(converted, pl.DataFrame)
    return {"read": lh.read(table, ref="dev", columns=columns, filter=filter), "read_arrow": converted, "scan": lazy.collect()}


@pytest.mark.parametrize("filter", [None, "day >= 2"])
def test_columns_come_back_in_the_order_asked_for(lakehouse: Lakehouse, filter: str | None) -> None:
    lakehouse.create_branch("dev")
    lakehouse.write("taxi.trips", trips().filter(pl.col("day") < 2), branch="dev")
    lakehouse.write("taxi.trips", trips().filter(pl.col("day") >= 2), branch="dev", mode="append")  # two files
    columns = ["trip_miles", "zone id", "day"]
    expected = trips().filter(pl.col("day") >= 2) if filter else trips()
    for kind, frame in frames(lakehouse, "taxi.trips", columns, filter).items():
        assert frame.columns == columns, kind
        assert frame.sort("zone id").equals(expected.select(columns)), kind
    arrow = lakehouse.read_arrow("taxi.trips", ref="dev", columns=["note", "day"], filter=filter)
    assert arrow.schema.names == ["note", "day"] and arrow.schema.field("day").type == pa.int64()


def test_order_asked_for_on_the_scan_iceberg_fallback(lakehouse: Lakehouse) -> None:
    """A column name Parquet stores sanitized ('a.b') sends the read through `pl.scan_iceberg`: same order."""
    lakehouse.create_branch("dev")
    data = pl.DataFrame({"a.b": [1, 2, 3], "x": ["p", "q", "r"], "y": [0.5, 1.5, 2.5]})
    lakehouse.write("t.odd", data, branch="dev")
    for filter in (None, "x != 'q'"):
        expected = data.filter(pl.col("x") != "q") if filter else data
        for kind, frame in frames(lakehouse, "t.odd", ["y", "a.b"], filter).items():
            assert frame.columns == ["y", "a.b"], kind
            assert frame.equals(expected.select("y", "a.b")), kind


def test_a_column_asked_for_twice_comes_once_where_first_named(lakehouse: Lakehouse) -> None:
    lakehouse.create_branch("dev")
    lakehouse.write("taxi.trips", trips(), branch="dev")
    assert lakehouse.read("taxi.trips", ref="dev", columns=["note", "day", "note"]).columns == ["note", "day"]
    with pytest.raises(ColumnNotFound, match="no column 'nope'; columns are: day, zone id, trip_miles, note"):
        lakehouse.scan("taxi.trips", ref="dev", columns=["day", "nope"])
