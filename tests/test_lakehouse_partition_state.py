"""`partition_state`: one partition's exact rows on a ref and the snapshot that added its newest data."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest
from pyiceberg.expressions import EqualTo

from dagster_lakehouse.lakehouse import Lakehouse
from dagster_lakehouse.lakehouse.partition_state import PartitionState, partition_state

T = "t.events"


def day(d: str, n: int, start: int = 0) -> pl.DataFrame:
    return pl.DataFrame({"day": [date.fromisoformat(d)] * n, "v": list(range(start, start + n))})


def where(d: str) -> str:
    return f"day = '{d}'"


@pytest.mark.parametrize("partition_by", [None, ["day"]])
def test_where_replace_and_append(lakehouse: Lakehouse, partition_by: list[str] | None) -> None:
    jan = lakehouse.write(T, day("2013-01-01", 16), where=where("2013-01-01"), allow_main=True, partition_by=partition_by)
    feb = lakehouse.write(T, day("2013-02-01", 5), where=where("2013-02-01"), allow_main=True)
    assert partition_state(lakehouse, T, "main", where("2013-01-01")) == PartitionState(16, jan.snapshot_id)
    assert partition_state(lakehouse, T, "main", where("2013-02-01")) == PartitionState(5, feb.snapshot_id)
    more = lakehouse.write(T, day("2013-02-01", 3, 100), mode="append", allow_main=True)
    assert partition_state(lakehouse, T, "main", where("2013-02-01")) == PartitionState(8, more.snapshot_id)
    assert partition_state(lakehouse, T, "main", where("2013-01-01")) == PartitionState(16, jan.snapshot_id)
    assert partition_state(lakehouse, T, "main", EqualTo("day", "2013-01-01")) == PartitionState(16, jan.snapshot_id)


def test_bulk_file_counts_only_matching_rows(lakehouse: Lakehouse) -> None:
    bulk = pl.concat([day("2013-01-01", 4), day("2013-01-02", 6), day("2013-01-03", 1)])
    written = lakehouse.write(T, bulk, allow_main=True)
    assert partition_state(lakehouse, T, "main", where("2013-01-02")) == PartitionState(6, written.snapshot_id)
    assert partition_state(lakehouse, T, "main", where("2013-01-03")) == PartitionState(1, written.snapshot_id)
    assert partition_state(lakehouse, T, "main", "day >= '2013-01-02'") == PartitionState(7, written.snapshot_id)
    assert partition_state(lakehouse, T, "main", where("2013-01-09")) is None


def test_replaced_partition_gets_the_new_snapshot(lakehouse: Lakehouse) -> None:
    lakehouse.write(T, pl.concat([day("2013-01-01", 4), day("2013-01-02", 6)]), allow_main=True)
    again = lakehouse.write(T, day("2013-01-02", 2), where=where("2013-01-02"), allow_main=True)
    assert partition_state(lakehouse, T, "main", where("2013-01-02")) == PartitionState(2, again.snapshot_id)
    first = partition_state(lakehouse, T, "main", where("2013-01-01"))
    assert first is not None and first.rows == 4 and first.snapshot_id != again.snapshot_id


def test_absent_partition_table_and_empty_table(lakehouse: Lakehouse) -> None:
    assert partition_state(lakehouse, T, "main", where("2013-01-01")) is None
    lakehouse.write(T, day("2013-01-01", 2), allow_main=True)
    assert partition_state(lakehouse, T, "main", where("2013-02-01")) is None
    lakehouse.write(T, day("2013-01-01", 1).clear(), allow_main=True)
    assert partition_state(lakehouse, T, "main", where("2013-01-01")) is None


def test_refs_branch_tag_and_past_commit(lakehouse: Lakehouse) -> None:
    first = lakehouse.write(T, day("2013-01-01", 2), where=where("2013-01-01"), allow_main=True)
    lakehouse.create_branch("dev")
    on_dev = lakehouse.write(T, day("2013-01-01", 7), where=where("2013-01-01"), branch="dev")
    assert partition_state(lakehouse, T, "dev", where("2013-01-01")) == PartitionState(7, on_dev.snapshot_id)
    assert partition_state(lakehouse, T, f"main@{first.commit_id}", where("2013-01-01")) == PartitionState(2, first.snapshot_id)
    lakehouse.tag("v1", "dev")
    assert partition_state(lakehouse, T, "v1", where("2013-01-01")) == PartitionState(7, on_dev.snapshot_id)


def test_fast_forward_merge_keeps_the_branch_snapshot(lakehouse: Lakehouse) -> None:
    lakehouse.write(T, day("2013-01-01", 16), where=where("2013-01-01"), allow_main=True)
    lakehouse.create_branch("dev")
    feb = lakehouse.write(T, day("2013-02-01", 5), where=where("2013-02-01"), branch="dev")
    assert partition_state(lakehouse, T, "main", where("2013-02-01")) is None
    result = lakehouse.merge("dev", into="main")
    assert result.fast_forward
    assert partition_state(lakehouse, T, "main", where("2013-02-01")) == PartitionState(5, feb.snapshot_id)


def test_replayed_merge_takes_mains_replayed_snapshot(lakehouse: Lakehouse) -> None:
    jan = lakehouse.write(T, day("2013-01-01", 16), where=where("2013-01-01"), allow_main=True)
    lakehouse.create_branch("dev")
    lakehouse.create_branch("other")
    feb = lakehouse.write(T, day("2013-02-01", 5), where=where("2013-02-01"), branch="dev")
    mar = lakehouse.write(T, day("2013-03-01", 3), where=where("2013-03-01"), branch="other")
    lakehouse.merge("other", into="main")
    result = lakehouse.merge("dev", into="main")
    assert result.replayed == [T]
    state = partition_state(lakehouse, T, "main", where("2013-02-01"))
    assert state is not None and state.rows == 5
    assert state.snapshot_id != feb.snapshot_id
    assert state.snapshot_id == lakehouse.snapshot_id(T, "main")
    assert partition_state(lakehouse, T, "main", where("2013-03-01")) == PartitionState(3, mar.snapshot_id)
    assert partition_state(lakehouse, T, "main", where("2013-01-01")) == PartitionState(16, jan.snapshot_id)
