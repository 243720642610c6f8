"""Partition specs: a full replace swaps the spec with the schema (data lacking, renaming or retyping a partition column
works), `partition_by` on an existing table evolves its spec in the write's own commit, merges see a spec change as a
conflict when the other side has pending work, and refused calls change nothing."""

from __future__ import annotations

import polars as pl
import pytest
from pyiceberg.transforms import IdentityTransform
from test_lakehouse_bad_input import refused, unchanged  # noqa: F401  (unchanged is a fixture)

from dagster_lakehouse.lakehouse import ColumnNotFound, Lakehouse
from dagster_lakehouse.lakehouse.errors import InvalidWrite, MergeConflict

T = "p.events"
DAYS = pl.DataFrame({"day": ["a", "a", "b"], "v": [1, 2, 3]})


@pytest.fixture
def lh(lakehouse: Lakehouse) -> Lakehouse:
    """Branch `dev` holds `p.events`, partitioned by identity on `day`."""
    lakehouse.create_branch("dev")
    lakehouse.write(T, DAYS, branch="dev", partition_by=["day"])
    return lakehouse


def spec_of(lh: Lakehouse, ref: str = "dev", name: str = T) -> list[tuple[str, str]]:
    """The current spec as (source column, transform) pairs."""
    table = lh.table(name, ref)
    return [(table.schema().find_column_name(f.source_id), str(f.transform)) for f in table.spec().fields]


def rows(lh: Lakehouse, *columns: str, ref: str = "dev", name: str = T, **kw) -> list[tuple]:
    """The rows of `columns` (in that order), sorted."""
    return sorted(lh.read(name, ref=ref, columns=list(columns), **kw).rows(), key=repr)


def data_files(lh: Lakehouse, ref: str = "dev") -> list[int]:
    """The spec id of each live data file."""
    return sorted(task.file.spec_id for task in lh.table(T, ref).scan().plan_files())


def test_a_replace_lacking_the_partition_column_leaves_the_table_unpartitioned(lh) -> None:
    lh.write(T, pl.DataFrame({"v": [7, 8]}), branch="dev")
    assert spec_of(lh) == []
    assert rows(lh, "v") == [(7,), (8,)]
    lh.write(T, pl.DataFrame({"v": [9], "day": ["z"]}), branch="dev", mode="append")  # the column may come back
    assert rows(lh, "v", "day") == [(7, None), (8, None), (9, "z")]


def test_a_replace_renaming_the_partition_column_drops_it_from_the_spec_or_takes_partition_by(lh) -> None:
    lh.write(T, pl.DataFrame({"date": ["x", "y"], "v": [1, 2]}), branch="dev")
    assert spec_of(lh) == [] and rows(lh, "date", "v") == [("x", 1), ("y", 2)]
    lh.write(T, pl.DataFrame({"when": ["x", "y"], "v": [1, 2]}), branch="dev", partition_by=["when"])
    assert spec_of(lh) == [("when", "identity")]
    assert rows(lh, "when", "v", filter="when = 'y'") == [("y", 2)]


def test_a_replace_retyping_the_partition_column_keeps_it_partitioned_by_the_new_column(lh) -> None:
    lh.write(T, pl.DataFrame({"day": [1, 2, 2], "v": [4, 5, 6]}), branch="dev")
    assert spec_of(lh) == [("day", "identity")]
    table = lh.table(T, "dev")
    assert str(table.schema().find_field("day").field_type) == "long"
    assert rows(lh, "v", "day", filter="day = 2") == [(5, 2), (6, 2)]
    assert set(data_files(lh)) == {table.spec().spec_id}
    lh.write(T, pl.DataFrame({"day": [3], "v": [7], "extra": [True]}), branch="dev", mode="append")  # evolves again
    assert rows(lh, "v", "day", "extra", filter="day >= 2") == [(5, 2, None), (6, 2, None), (7, 3, True)]


def test_a_replace_keeping_the_partition_column_keeps_the_spec(lh) -> None:
    spec_id = lh.table(T, "dev").spec().spec_id
    lh.write(T, pl.DataFrame({"day": ["c"], "v": [1], "w": [0.5]}), branch="dev")
    assert lh.table(T, "dev").spec().spec_id == spec_id and spec_of(lh) == [("day", "identity")]
    lh.write(T, pl.DataFrame({"day": ["c"], "v": [1]}), branch="dev", partition_by=[])
    assert spec_of(lh) == []


def test_partition_by_on_an_append_evolves_the_spec_in_the_same_commit(lh) -> None:
    lh.write("p.flat", DAYS, branch="dev")
    commits = len(lh.log("dev"))
    lh.write("p.flat", pl.DataFrame({"day": ["c"], "v": [4]}), branch="dev", mode="append", partition_by=["day"])
    assert len(lh.log("dev")) == commits + 1  # one commit: the spec change and the rows
    table = lh.table("p.flat", "dev")
    assert spec_of(lh, name="p.flat") == [("day", "identity")]
    files = sorted((t.file.spec_id, t.file.record_count) for t in table.scan().plan_files())
    assert files == [(0, 3), (table.spec().spec_id, 1)]  # earlier files keep the spec they were written with
    assert rows(lh, "day", "v", name="p.flat") == [("a", 1), ("a", 2), ("b", 3), ("c", 4)]
    assert rows(lh, "day", "v", name="p.flat", filter="day = 'c'") == [("c", 4)]


def test_partition_by_on_a_scoped_replace_and_an_upsert_evolves_the_spec(lh) -> None:
    lh.write(T, pl.DataFrame({"day": ["b"], "v": [30]}), branch="dev", where="day = 'b'", partition_by=["v"])
    assert spec_of(lh) == [("v", "identity")]
    assert rows(lh, "day", "v") == [("a", 1), ("a", 2), ("b", 30)]
    lh.write(T, pl.DataFrame({"day": ["c"], "v": [2]}), branch="dev", mode="upsert", key=["v"], partition_by=["day", "v"])
    assert spec_of(lh) == [("day", "identity"), ("v", "identity")]
    assert rows(lh, "day", "v") == [("a", 1), ("b", 30), ("c", 2)]


def test_partition_by_equal_to_the_spec_changes_nothing_but_the_rows(lh) -> None:
    before = lh.table(T, "dev").metadata
    lh.write(T, pl.DataFrame({"day": ["c"], "v": [4]}), branch="dev", mode="append", partition_by=["day"])
    after = lh.table(T, "dev").metadata
    assert after.default_spec_id == before.default_spec_id and len(after.partition_specs) == len(before.partition_specs)


@pytest.mark.parametrize(
    ("partition_by", "error", "match"),
    [
        (["nope"], ColumnNotFound, r"partition_by names 'nope', which is not a column of the data"),
        (["day", "day"], InvalidWrite, "partition_by names a column twice"),
        (["s"], InvalidWrite, "cannot partition by column 's'"),
    ],
)
@pytest.mark.parametrize("mode", ["append", "replace"])
def test_bad_partition_by_on_an_existing_table_is_refused_and_changes_nothing(lh, unchanged, partition_by, error, match, mode):
    frame = pl.DataFrame({"day": ["c"], "v": [4], "s": [{"a": 1}]})
    refused(lh, unchanged, lambda lh: lh.write(T, frame, branch="dev", mode=mode, partition_by=partition_by), error, match)


def test_a_spec_change_on_one_side_conflicts_with_pending_work_on_the_other(lh, unchanged) -> None:
    lh.create_branch("side", from_ref="dev")
    lh.write(T, pl.DataFrame({"day": ["c"], "v": [4]}), branch="side", mode="append", partition_by=["v"])
    lh.write(T, pl.DataFrame({"day": ["d"], "v": [5]}), branch="dev", mode="append")
    conflict = refused(lh, unchanged, lambda lh: lh.merge("side", "dev"), MergeConflict, "partition the table differently")
    assert conflict.tables == [T]


def test_a_spec_change_merges_where_the_other_side_did_not_change_the_table(lh) -> None:
    lh.create_branch("side", from_ref="dev")
    lh.write(T, pl.DataFrame({"day": ["c"], "v": [4]}), branch="side", mode="append", partition_by=["v"])
    lh.merge("side", "dev")
    assert spec_of(lh) == [("v", "identity")]
    assert rows(lh, "day", "v") == [("a", 1), ("a", 2), ("b", 3), ("c", 4)]


def test_a_replace_swapping_the_spec_on_a_new_branch_leaves_the_parent_as_it_was(lh) -> None:
    lh.create_branch("side", from_ref="dev")
    lh.write(T, pl.DataFrame({"v": [1]}), branch="side")
    assert spec_of(lh, "side") == [] and spec_of(lh, "dev") == [("day", "identity")]
    assert isinstance(lh.table(T, "dev").spec().fields[0].transform, IdentityTransform)
    assert rows(lh, "day", "v") == [("a", 1), ("a", 2), ("b", 3)]
