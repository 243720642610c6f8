"""Filter literals with a zone offset (`'2022-12-15T00:00:00-05:00'`, as bauplan notebooks write them): converted to
UTC for columns with a time zone, refused on columns without one with an error naming the column, its type and
both fixes."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import polars as pl
import pytest

from dagster_lakehouse.lakehouse import Lakehouse
from dagster_lakehouse.lakehouse.errors import InvalidFilter

START = datetime(2022, 12, 14, 12, 0)  # UTC
WINDOW = "pickup_datetime >= '2022-12-15T00:00:00-05:00' AND pickup_datetime < '2023-01-01T00:00:00-05:00'"


def trips(tz: str | None) -> pl.DataFrame:
    """A trip every 6 hours from 2022-12-14 12:00 UTC to 2023-01-02; `tz`: the column's time zone (None: naive)."""
    times = pl.datetime_range(START, START + timedelta(days=19), "6h", eager=True, time_unit="us")
    if tz is not None:
        times = times.dt.replace_time_zone("UTC").dt.convert_time_zone(tz)
    return pl.DataFrame({"trip_id": range(len(times)), "pickup_datetime": times, "miles": [1.0] * len(times)})


def in_window(frame: pl.DataFrame) -> list[int]:
    """Trip ids inside WINDOW, computed in Python from UTC instants (-05:00 is 05:00 UTC)."""
    low = datetime(2022, 12, 15, 5, tzinfo=timezone.utc)
    high = datetime(2023, 1, 1, 5, tzinfo=timezone.utc)
    times = frame["pickup_datetime"].dt.convert_time_zone("UTC").to_list()
    return [i for i, t in zip(frame["trip_id"].to_list(), times, strict=True) if low <= t < high]


@pytest.mark.parametrize("tz", ["UTC", "America/New_York"])
def test_offset_literals_are_converted_for_a_column_with_a_time_zone(lakehouse: Lakehouse, tz: str) -> None:
    lakehouse.create_branch("dev")
    data = trips(tz)
    lakehouse.write("taxi.trips", data, branch="dev")
    expected = in_window(data)
    assert 0 < len(expected) < data.height
    for filter in (WINDOW, WINDOW.replace("AND", "and"), WINDOW.replace("-05:00", "-0500")):
        got = lakehouse.read("taxi.trips", ref="dev", filter=filter, columns=["trip_id"])
        assert sorted(got["trip_id"].to_list()) == expected, filter
        assert lakehouse.scan("taxi.trips", ref="dev", filter=filter).collect().height == len(expected)
        assert lakehouse.read_arrow("taxi.trips", ref="dev", filter=filter).num_rows == len(expected)
    both = f"({WINDOW}) OR trip_id = 0"
    assert sorted(lakehouse.read("taxi.trips", ref="dev", filter=both)["trip_id"].to_list()) == [0, *expected]
    zulu = lakehouse.read("taxi.trips", ref="dev", filter="pickup_datetime = '2022-12-15T00:00:00Z'")
    assert zulu["trip_id"].to_list() == [2]  # 12:00 + 2 x 6 h, UTC
    lakehouse.write("taxi.streamed", data.lazy(), branch="dev")  # any zone is stored as UTC instants (timestamptz)
    assert str(lakehouse.table("taxi.streamed", "dev").schema().find_field("pickup_datetime").field_type) == "timestamptz"
    assert sorted(lakehouse.read("taxi.streamed", ref="dev", filter=WINDOW)["trip_id"].to_list()) == expected


def test_partition_replace_with_an_offset_filter(lakehouse: Lakehouse) -> None:
    lakehouse.create_branch("dev")
    data = trips("UTC")
    lakehouse.write("taxi.trips", data, branch="dev")
    window = data.filter(pl.col("trip_id").is_in(in_window(data))).with_columns(miles=pl.lit(2.0))
    lakehouse.write("taxi.trips", window, branch="dev", where=WINDOW)
    after = lakehouse.read("taxi.trips", ref="dev").sort("trip_id")
    assert after.height == data.height
    assert after.filter(pl.col("miles") == 2.0)["trip_id"].to_list() == in_window(data)


def test_offset_on_a_column_without_time_zone_names_the_column_and_both_fixes(lakehouse: Lakehouse) -> None:
    lakehouse.create_branch("dev")
    data = trips(None)
    lakehouse.write("taxi.trips", data, branch="dev")
    with pytest.raises(InvalidFilter) as caught:
        lakehouse.read("taxi.trips", ref="dev", filter=WINDOW)
    message = str(caught.value)
    assert "table 'taxi.trips' on 'dev'" in message
    assert "column 'pickup_datetime' is timestamp (no time zone)" in message
    rewritten = "pickup_datetime >= '2022-12-15T00:00:00' AND pickup_datetime < '2023-01-01T00:00:00'"
    assert f'filter="{rewritten}"' in message  # every offset dropped, the rest of the filter as written
    assert "'2022-12-15T05:00:00' if the column holds UTC times" in message
    assert "lakehouse import --timestamp-tz UTC" in message and "replace_time_zone('UTC')" in message
    with pytest.raises(InvalidFilter, match="column 'pickup_datetime'"):
        lakehouse.scan("taxi.trips", ref="dev", filter="pickup_datetime in ('2022-12-15T00:00:00+01:00')")
    with pytest.raises(InvalidFilter, match="column 'pickup_datetime'"):  # a where= write refused before anything
        lakehouse.write("taxi.trips", data.head(0), branch="dev", where=WINDOW)
    assert lakehouse.read("taxi.trips", ref="dev").height == data.height

    fixed = lakehouse.read("taxi.trips", ref="dev", filter=rewritten)  # the first fix, as the message wrote it
    naive_low, naive_high = datetime(2022, 12, 15), datetime(2023, 1, 1)
    assert fixed["trip_id"].to_list() == [
        i for i, t in zip(data["trip_id"], data["pickup_datetime"], strict=True) if naive_low <= t < naive_high
    ]
