"""File-level three-way merges: work on one table from two branches combines when it commutes, else a named conflict."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import polars as pl
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.table import Table
from sqlalchemy import select

from dagster_lakehouse.lakehouse import Lakehouse, MergeConflict
from dagster_lakehouse.lakehouse.catalog import IcebergTables

DAYS = [f"2024-01-0{i}" for i in range(1, 6)]


def seed(lh: Lakehouse, table: str = "t.trips") -> pl.DataFrame:
    """One bulk write holding every day, so all days share one data file (the hard case for file-level merges)."""
    frame = pl.DataFrame({"day": [d for d in DAYS for _ in range(3)], "v": list(range(15))})
    lh.write(table, frame, branch="main", allow_main=True)
    return frame


def forked(lh: Lakehouse) -> pl.DataFrame:
    """Seed `t.trips` on main and fork branches `a` and `b` from it; returns the seed."""
    frame = seed(lh)
    lh.create_branch("a")
    lh.create_branch("b")
    return frame


def day(d: str, *values: int) -> pl.DataFrame:
    return pl.DataFrame({"day": [d] * len(values), "v": list(values)})


def rows(lh: Lakehouse, table: str = "t.trips", ref: str = "main") -> list[tuple]:
    return sorted(lh.read(table, ref=ref).select("day", "v").iter_rows())


def expected(frame: pl.DataFrame, *, replaced: dict[str, pl.DataFrame] | None = None, appended=()) -> list[tuple]:
    result = frame
    for d, new in (replaced or {}).items():
        result = pl.concat([result.filter(pl.col("day") != d), new])
    for new in appended:
        result = pl.concat([result, new])
    return sorted(result.select("day", "v").iter_rows())


def pointers(lh: Lakehouse) -> list[tuple]:
    with lh.engine.connect() as conn:
        return sorted(conn.execute(select(IcebergTables.catalog_name, IcebergTables.table_name, IcebergTables.metadata_location)))


@contextmanager
def foreign(lh: Lakehouse, ref: str, table: str) -> Iterator[Table]:
    """`table` through another engine's plain SQL catalog of `ref` (tables the lakehouse hands out are read-only)."""
    catalog = SqlCatalog(ref, uri=lh.config.catalog_uri, warehouse=lh.config.warehouse, **lh.config.properties)
    try:
        yield catalog.load_table(table)
    finally:
        catalog.close()


def data_files(lh: Lakehouse, table: str, ref: str) -> set[str]:
    return {task.file.file_path for task in lh.table(table, ref).scan().plan_files()}


@pytest.fixture
def lh(lakehouse: Lakehouse) -> Lakehouse:
    return lakehouse


def test_disjoint_appends_from_two_branches_both_merge(lh: Lakehouse) -> None:
    base = forked(lh)
    lh.write("t.trips", day("2024-01-06", 60), branch="a", mode="append")
    lh.write("t.trips", day("2024-01-07", 70), branch="b", mode="append")
    lh.merge("a")
    result = lh.merge("b")
    assert result.replayed == ["t.trips"]
    assert rows(lh) == expected(base, appended=[day("2024-01-06", 60), day("2024-01-07", 70)])


def test_disjoint_partition_replaces_of_a_shared_file_both_merge(lh: Lakehouse) -> None:
    base = forked(lh)
    lh.write("t.trips", day("2024-01-02", 100, 101), branch="a", where="day = '2024-01-02'")
    lh.write("t.trips", day("2024-01-03", 200), branch="b", where="day = '2024-01-03'")
    lh.merge("a")
    lh.merge("b")
    assert rows(lh) == expected(base, replaced={"2024-01-02": day("2024-01-02", 100, 101), "2024-01-03": day("2024-01-03", 200)})
    snapshot = lh.table("t.trips").current_snapshot()
    assert snapshot.summary["lakehouse.merge-source"] == "b"
    assert int(snapshot.summary["lakehouse.source-snapshot"]) == lh.snapshot_id("t.trips", "b")


def test_append_and_replace_of_another_partition_merge_either_way(lh: Lakehouse) -> None:
    base = forked(lh)
    lh.write("t.trips", day("2024-01-04", 400), branch="a", where="day = '2024-01-04'")
    lh.write("t.trips", day("2024-01-09", 900), branch="b", mode="append")
    lh.merge("b")
    lh.merge("a")
    assert rows(lh) == expected(base, replaced={"2024-01-04": day("2024-01-04", 400)}, appended=[day("2024-01-09", 900)])


def test_appended_files_are_added_by_reference_not_copied(lh: Lakehouse) -> None:
    forked(lh)
    lh.write("t.trips", day("2024-01-06", 60), branch="a", mode="append")
    lh.write("t.trips", day("2024-01-07", 70), branch="b", mode="append")
    lh.merge("a")
    before = data_files(lh, "t.trips", "main")
    lh.merge("b")
    assert data_files(lh, "t.trips", "main") == before | (data_files(lh, "t.trips", "b") - before)


def test_multi_table_merge_mixes_pointer_switches_and_replays_in_one_commit(lh: Lakehouse) -> None:
    base = seed(lh)
    lh.write("t.zones", pl.DataFrame({"id": [1, 2]}), branch="main", allow_main=True)
    lh.create_branch("a")
    lh.create_branch("b")
    lh.write("t.trips", day("2024-01-01", 10), branch="a", where="day = '2024-01-01'")
    lh.write("t.trips", day("2024-01-05", 50), branch="b", where="day = '2024-01-05'")
    lh.write("t.zones", pl.DataFrame({"id": [3]}), branch="b", mode="append")
    lh.write("t.new", pl.DataFrame({"x": [1]}), branch="b")
    lh.merge("a")
    result = lh.merge("b")
    assert result.tables == ["t.new", "t.trips", "t.zones"] and result.replayed == ["t.trips"]
    assert rows(lh) == expected(base, replaced={"2024-01-01": day("2024-01-01", 10), "2024-01-05": day("2024-01-05", 50)})
    assert sorted(lh.read("t.zones")["id"]) == [1, 2, 3]
    assert lh.read("t.new")["x"].to_list() == [1]
    assert len([c for c in lh.log("main") if c.kind == "merge"]) == 2


def test_a_column_added_on_one_side_merges_and_reads_null_for_the_other(lh: Lakehouse) -> None:
    forked(lh)
    lh.write("t.trips", pl.DataFrame({"day": ["2024-01-08"], "v": [80], "tip": [1.5]}), branch="a", mode="append")
    lh.write("t.trips", day("2024-01-09", 90), branch="b", mode="append")
    lh.merge("b")
    lh.merge("a")
    merged = lh.read("t.trips")
    assert merged.columns == ["day", "v", "tip"]
    assert merged.filter(pl.col("tip").is_not_null()).rows() == [("2024-01-08", 80, 1.5)]
    assert merged.height == 17


def test_merging_main_into_a_long_lived_branch_takes_in_new_data_and_merges_back(lh: Lakehouse) -> None:
    base = seed(lh)
    lh.create_branch("dev")
    lh.create_branch("ingest")
    lh.write("t.trips", day("2024-01-02", 20), branch="dev", where="day = '2024-01-02'")
    lh.write("t.trips", day("2024-01-10", 1000), branch="ingest", mode="append")
    lh.merge("ingest")
    lh.merge("main", into="dev")
    want = expected(base, replaced={"2024-01-02": day("2024-01-02", 20)}, appended=[day("2024-01-10", 1000)])
    assert rows(lh, ref="dev") == want
    lh.merge("dev")
    assert rows(lh) == want
    assert lh.merge("dev").tables == []  # nothing left to merge


def test_replays_are_not_merged_twice_in_a_round_trip(lh: Lakehouse) -> None:
    base = seed(lh)
    lh.create_branch("dev")
    lh.create_branch("other")
    lh.write("t.trips", day("2024-01-06", 60), branch="dev", mode="append")
    lh.write("t.trips", day("2024-01-07", 70), branch="other", mode="append")
    lh.merge("other")
    lh.merge("dev")  # replays dev's append on main
    lh.write("t.trips", day("2024-01-08", 80), branch="dev", mode="append")
    lh.merge("main", into="dev")  # dev takes other's append, not its own one back
    lh.merge("dev")
    assert rows(lh) == expected(base, appended=[day("2024-01-06", 60), day("2024-01-07", 70), day("2024-01-08", 80)])
    assert rows(lh, ref="dev") == rows(lh)


# ----- conflicts: each names the table and the reason, and leaves both refs as they were ---------------------


def assert_conflict(lh: Lakehouse, source: str, match: str, table: str = "t.trips") -> MergeConflict:
    before = pointers(lh)
    with pytest.raises(MergeConflict, match=match) as info:
        lh.merge(source)
    assert info.value.tables == [table]
    assert pointers(lh) == before
    return info.value


def test_both_replacing_the_same_partition_conflict(lh: Lakehouse) -> None:
    forked(lh)
    lh.write("t.trips", day("2024-01-02", 1), branch="a", where="day = '2024-01-02'")
    lh.write("t.trips", day("2024-01-02", 2), branch="b", where="day = '2024-01-02'")
    lh.merge("a")
    conflict = assert_conflict(lh, "b", r"t.trips: both replaced rows where day = '2024-01-02'; nothing was merged")
    assert conflict.conflicts[0].table == "t.trips"
    assert rows(lh) == rows(lh, ref="a")


def test_appending_rows_the_other_side_replaced_conflicts(lh: Lakehouse) -> None:
    forked(lh)
    lh.write("t.trips", day("2024-01-03", 1), branch="a", where="day = '2024-01-03'")
    lh.write("t.trips", day("2024-01-03", 2), branch="b", mode="append")
    lh.merge("b")
    assert_conflict(lh, "a", r"both changed rows where day = '2024-01-03': 'a' replaced them, 'main' appended rows")


def test_a_full_replace_against_any_change_conflicts(lh: Lakehouse) -> None:
    forked(lh)
    lh.write("t.trips", day("2024-01-01", 1), branch="a")
    lh.write("t.trips", day("2024-01-09", 2), branch="b", mode="append")
    lh.merge("b")
    assert_conflict(lh, "a", r"'a' replaced all rows while 'main' also changed the table")


def test_dropped_on_one_side_changed_on_the_other_conflicts(lh: Lakehouse) -> None:
    forked(lh)
    lh.drop_table("t.trips", branch="a")
    lh.write("t.trips", day("2024-01-09", 2), branch="b", mode="append")
    lh.merge("b")
    assert_conflict(lh, "a", r"'a' dropped the table while 'main' changed it")


def test_created_on_both_sides_conflicts(lh: Lakehouse) -> None:
    forked(lh)
    lh.write("t.fresh", pl.DataFrame({"x": [1]}), branch="a")
    lh.write("t.fresh", pl.DataFrame({"x": [2]}), branch="b")
    lh.merge("a")
    assert_conflict(lh, "b", r"both 'b' and 'main' created it", table="t.fresh")


def test_both_changing_the_schema_conflicts(lh: Lakehouse) -> None:
    forked(lh)
    lh.write("t.trips", pl.DataFrame({"day": ["2024-01-08"], "v": [1], "tip": [1.0]}), branch="a", mode="append")
    lh.write("t.trips", pl.DataFrame({"day": ["2024-01-09"], "v": [2], "fare": [2.0]}), branch="b", mode="append")
    lh.merge("a")
    assert_conflict(lh, "b", r"both changed the schema")


def test_a_dropped_column_against_a_change_conflicts(lh: Lakehouse) -> None:
    seed(lh)
    lh.write("t.wide", pl.DataFrame({"day": ["2024-01-01"], "v": [1], "extra": [1]}), branch="main", allow_main=True)
    lh.create_branch("a")
    lh.create_branch("b")
    with foreign(lh, "a", "t.wide") as table, table.update_schema() as update:  # another engine's change on branch a
        update.delete_column("extra")
    lh.write("t.wide", pl.DataFrame({"day": ["2024-01-02"], "v": [2]}), branch="a", mode="append")
    lh.write("t.wide", pl.DataFrame({"day": ["2024-01-03"], "v": [3], "extra": [3]}), branch="b", mode="append")
    lh.merge("b")
    assert_conflict(lh, "a", r"'a' dropped column 'extra'", table="t.wide")


def test_a_different_partition_spec_conflicts(lh: Lakehouse) -> None:
    forked(lh)
    with foreign(lh, "a", "t.trips") as table, table.update_spec() as spec:
        spec.add_identity("day")
    lh.write("t.trips", day("2024-01-08", 1), branch="a", mode="append")
    lh.write("t.trips", day("2024-01-09", 2), branch="b", mode="append")
    lh.merge("b")
    assert_conflict(lh, "a", r"partition the table differently")


def test_a_foreign_commit_that_removed_files_conflicts(lh: Lakehouse) -> None:
    forked(lh)
    with foreign(lh, "a", "t.trips") as table:
        table.delete("day = '2024-01-01'")  # another engine's delete: no lakehouse summary
    lh.write("t.trips", day("2024-01-09", 2), branch="b", mode="append")
    lh.merge("b")
    assert_conflict(lh, "a", r"outside this package")


# ----- the explicit way out ------------------------------------------------------------------------------------


def test_on_conflict_takes_the_source_or_keeps_the_target_per_table(lh: Lakehouse) -> None:
    seed(lh)
    lh.write("t.zones", pl.DataFrame({"id": [1]}), branch="main", allow_main=True)
    lh.create_branch("a")
    lh.create_branch("b")
    for branch, value in (("a", 1), ("b", 2)):
        lh.write("t.trips", day("2024-01-02", value), branch=branch, where="day = '2024-01-02'")
        lh.write("t.zones", pl.DataFrame({"id": [value * 10]}), branch=branch)
    lh.merge("a")
    result = lh.merge("b", on_conflict={"t.trips": "source", "t.zones": "target"})
    assert result.resolved == {"t.trips": "source", "t.zones": "target"}
    assert rows(lh) == rows(lh, ref="b")
    assert lh.read("t.zones")["id"].to_list() == [10]
    assert lh.merge("b").tables == []  # settled: the branch point moved


def test_on_conflict_for_the_whole_merge(lh: Lakehouse) -> None:
    forked(lh)
    lh.write("t.trips", day("2024-01-02", 1), branch="a", where="day = '2024-01-02'")
    lh.write("t.trips", day("2024-01-02", 2), branch="b", where="day = '2024-01-02'")
    lh.merge("a")
    lh.merge("b", on_conflict="target")
    assert rows(lh) == rows(lh, ref="a")


def test_a_write_to_the_target_during_the_merge_is_kept(lh: Lakehouse, monkeypatch) -> None:
    from dagster_lakehouse.lakehouse import commits

    base = seed(lh)
    lh.create_branch("a")
    lh.write("t.trips", day("2024-01-07", 70), branch="a", mode="append")
    lh.write("t.trips", day("2024-01-06", 60), branch="main", mode="append", allow_main=True)
    original, raced = commits.checkpoint, []

    def racing(step: str) -> None:
        if step == "staged" and not raced:
            raced.append(step)  # a writer commits to main between the merge's plan and its pointer swap
            lh.write("t.trips", day("2024-01-08", 80), branch="main", mode="append", allow_main=True)
        original(step)

    monkeypatch.setattr(commits, "checkpoint", racing)
    result = lh.merge("a")
    assert result.replayed == ["t.trips"]
    assert rows(lh) == expected(base, appended=[day("2024-01-06", 60), day("2024-01-07", 70), day("2024-01-08", 80)])


def test_diff_reports_rows_and_files_added_and_removed(lh: Lakehouse) -> None:
    seed(lh)
    lh.create_branch("a")
    lh.write("t.trips", day("2024-01-02", 1, 2), branch="a", where="day = '2024-01-02'")
    lh.write("t.trips", day("2024-01-09", 9), branch="a", mode="append")
    (change,) = lh.diff("main", "a")
    assert change.table == "t.trips" and change.change == "modified"
    assert (change.rows_added, change.rows_removed) == (3, 3)
    assert change.files_added == 3 and change.files_removed == 1


def test_a_long_lived_branch_replays_its_operations_as_a_few_snapshots(lh: Lakehouse) -> None:
    base = forked(lh)
    serial = base
    for i in range(1, 25):
        d = f"2024-02-{i:02d}"
        if i % 3 == 0:
            new = day(d, 100 + i)
            lh.write("t.trips", new, branch="b", mode="append")
        else:
            new = day(d, 200 + i, 300 + i)
            lh.write("t.trips", new, branch="b", where=f"day = '{d}'")
            serial = serial.filter(pl.col("day") != d)
        serial = pl.concat([serial, new])
    lh.write("t.trips", day("2024-02-03", 999), branch="b", where="day = '2024-02-03'")  # replaces its own append
    serial = pl.concat([serial.filter(pl.col("day") != "2024-02-03"), day("2024-02-03", 999)])
    lh.write("t.trips", day("2024-03-01", 1), branch="a", mode="append")
    lh.merge("a")
    before = len(lh.table("t.trips").snapshots())
    assert lh.merge("b").replayed == ["t.trips"]
    want = expected(serial, appended=[day("2024-03-01", 1)])
    assert rows(lh) == want
    assert len(lh.table("t.trips").snapshots()) - before <= 4  # two runs: (deletes, appends), then the re-replace
    lh.merge("main", into="b")
    assert rows(lh, ref="b") == want
    assert lh.merge("b").tables == []
