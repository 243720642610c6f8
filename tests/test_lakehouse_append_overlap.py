"""Rows added to a table must be recognisably its rows: an append (or `where=` replace) that shares no column with the
table, or adds columns while carrying fewer than half of the table's, is refused naming both column lists, the table
and the branch, and leaves the table exactly as it was. Adding columns with enough of the table stays allowed."""

from __future__ import annotations

import polars as pl
import pytest

from dagster_lakehouse.lakehouse import Lakehouse, SchemaMismatch


def zones() -> pl.DataFrame:
    return pl.DataFrame({"LocationID": [1, 2, 3], "Borough": ["EWR", "Queens", "Bronx"], "Zone": ["a", "b", "c"]})


def trips() -> pl.DataFrame:
    return pl.DataFrame({"PULocationID": [1, 2], "DOLocationID": [3, 1], "trip_miles": [1.5, 2.5], "fare": [9.0, 11.0]})


@pytest.fixture
def lh(lakehouse: Lakehouse) -> Lakehouse:
    lakehouse.create_branch("dev")
    lakehouse.write("taxi.zones", zones(), branch="dev")
    return lakehouse


def unchanged(lh: Lakehouse, before: tuple) -> None:
    """The table still has the metadata file, columns and rows it had before the refused write."""
    table = lh.table("taxi.zones", "dev")
    assert (table.metadata_location, [f.name for f in table.schema().fields]) == before
    assert lh.read("taxi.zones", ref="dev").equals(zones())


def state(lh: Lakehouse) -> tuple:
    table = lh.table("taxi.zones", "dev")
    return table.metadata_location, [f.name for f in table.schema().fields]


@pytest.mark.parametrize("kind", ["frame", "lazy"])
def test_an_append_sharing_no_column_is_refused_naming_both_column_lists(lh: Lakehouse, kind: str) -> None:
    before, commits = state(lh), len(lh.log("dev"))
    data = trips() if kind == "frame" else trips().lazy()
    with pytest.raises(SchemaMismatch) as caught:
        lh.write("taxi.zones", data, branch="dev", mode="append")
    message = str(caught.value)
    assert "table 'taxi.zones' on branch 'dev'" in message and "shares no column with the table" in message
    assert "Table columns: LocationID, Borough, Zone; data columns: PULocationID, DOLocationID, trip_miles, fare" in message
    assert "mode='replace'" in message and "nothing was written" in message
    unchanged(lh, before)
    assert len(lh.log("dev")) == commits


def test_a_where_replace_sharing_no_column_is_refused(lh: Lakehouse) -> None:
    before = state(lh)
    with pytest.raises(SchemaMismatch, match="shares no column"):
        lh.write("taxi.zones", trips(), branch="dev", where="LocationID = 1")
    unchanged(lh, before)


def test_adding_columns_needs_half_of_the_table(lh: Lakehouse) -> None:
    before = state(lh)
    few = pl.DataFrame({"LocationID": [4], "service_zone": ["Yellow"], "geometry": ["POINT(0 0)"]})  # 1 of 3
    with pytest.raises(SchemaMismatch) as caught:
        lh.write("taxi.zones", few, branch="dev", mode="append")
    message = str(caught.value)
    assert "adds 2 columns (service_zone, geometry) but carries only 1 of the table's 3 columns (LocationID)" in message
    assert "at least half of the table's columns (2)" in message
    assert "Table columns: LocationID, Borough, Zone; data columns: LocationID, service_zone, geometry" in message
    unchanged(lh, before)

    enough = pl.DataFrame({"LocationID": [4], "Zone": ["d"], "service_zone": ["Yellow"]})  # 2 of 3: evolves
    lh.write("taxi.zones", enough, branch="dev", mode="append")
    after = lh.read("taxi.zones", ref="dev").sort("LocationID")
    assert after.columns == ["LocationID", "Borough", "Zone", "service_zone"]
    assert after.row(3) == (4, None, "d", "Yellow")

    subset = pl.DataFrame({"Zone": ["e"]})  # one shared column and nothing new: the rest is null
    lh.write("taxi.zones", subset, branch="dev", mode="append")
    assert lh.read("taxi.zones", ref="dev", filter="Zone = 'e'").row(0) == (None, None, "e", None)


def test_a_replace_may_change_every_column(lh: Lakehouse) -> None:
    lh.write("taxi.zones", trips(), branch="dev")
    assert lh.read("taxi.zones", ref="dev").columns == trips().columns
