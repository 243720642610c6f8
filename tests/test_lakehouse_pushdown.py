"""Column and filter pushdown: a selective read plans only the files its filter can match (Iceberg statistics), and
Polars reads only the row groups and columns it needs of them."""

from __future__ import annotations

import re

import polars as pl
from pyiceberg.catalog.sql import SqlCatalog

from dagster_lakehouse.lakehouse import Lakehouse
from dagster_lakehouse.lakehouse.locations import native_path


def row_groups_read(output: str) -> list[tuple[int, int]]:
    """(read, of) per Parquet file from Polars' verbose log: "Predicate pushdown: reading 1 / 5 row groups"."""
    return [(int(r), int(t)) for r, t in re.findall(r"Predicate pushdown: reading (\d+) / (\d+) row groups", output)]


def sorted_trips(day: int, rows: int = 2000) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "day": [day] * rows,
            "PULocationID": [(i * 7) % 265 + 1 for i in range(rows)],
            "trip_miles": [float(i % 50) for i in range(rows)],
            "note": [f"trip {day}-{i} " * 4 for i in range(rows)],
        }
    )


def test_selective_filter_reads_only_the_files_it_can_match(lakehouse: Lakehouse) -> None:
    lakehouse.create_branch("dev")
    for day in range(8):  # eight appends of data sorted by day: eight files with disjoint day ranges
        lakehouse.write("taxi.trips", sorted_trips(day), branch="dev", mode="append")

    full = lakehouse.read("taxi.trips", ref="dev")
    some = lakehouse.read("taxi.trips", ref="dev", columns=["PULocationID"], filter="day = 3")
    assert full.height == 16000 and some.height == 2000 and some.columns == ["PULocationID"]

    plan = read_plan(lakehouse, "taxi.trips", "dev", "day = 3")
    day3 = [t.file.file_path for t in lakehouse.table("taxi.trips", "dev").scan(row_filter="day = 3").plan_files()]
    assert [f.file_path for f in plan.files] == day3 and len(day3) == 1
    assert len(read_plan(lakehouse, "taxi.trips", "dev", None).files) == 8


def read_plan(lakehouse: Lakehouse, name: str, ref: str, row_filter: str | None):
    """The files `Lakehouse.read` plans to read (the same planning `read`, `scan` and `read_arrow` use)."""
    from pyiceberg.expressions import AlwaysTrue

    from dagster_lakehouse.lakehouse.filters import parse_filter
    from dagster_lakehouse.lakehouse.read_plan import plan_read

    table = lakehouse.table(name, ref)
    return plan_read(table, table.current_snapshot(), table.schema(), parse_filter(row_filter) if row_filter else AlwaysTrue())


def _scanned_sources(plan: str) -> list[str]:
    """Data files of the Parquet scan in a Polars plan: "Parquet SCAN [a.parquet, ... 7 other sources]"."""
    match = re.search(r"Parquet SCAN \[([^\]]*)\]", plan)
    assert match, f"no Parquet scan in the plan:\n{plan}"
    listed = match.group(1)
    more = re.search(r",? \.\.\. (\d+) other sources?$", listed)
    shown = [p.strip() for p in listed[: more.start() if more else None].split(",") if p.strip()]
    return shown + ["<not shown>"] * (int(more.group(1)) if more else 0)


def test_scan_pushes_the_filter_and_columns_into_the_file_scan(lakehouse: Lakehouse) -> None:
    lakehouse.create_branch("dev")
    for day in range(8):
        lakehouse.write("taxi.trips", sorted_trips(day), branch="dev", mode="append")
    table = lakehouse.table("taxi.trips", "dev")
    day3_files = [task.file.file_path for task in table.scan(row_filter="day = 3").plan_files()]
    assert len(day3_files) == 1

    full_plan = lakehouse.scan("taxi.trips", ref="dev").explain()
    assert len(_scanned_sources(full_plan)) == 8, full_plan

    lazy = lakehouse.scan("taxi.trips", ref="dev", columns=["PULocationID"], filter="day = 3")
    plan = lazy.explain()
    # the Iceberg file pruning happened before the Parquet scan: one file of eight, the one holding day 3 (Polars is
    # handed a local file by its native path, `locations`)
    assert _scanned_sources(plan) == [native_path(path) for path in day3_files], plan
    # the predicate is evaluated inside the scan (row-group statistics), not as a separate FILTER over its output
    assert 'SELECTION: col("day") == 3' in plan and "FILTER" not in plan, plan
    # only the selected column and the one the predicate needs are read
    assert "PROJECT 2/4 COLUMNS" in plan, plan

    out = lazy.collect()
    assert out.columns == ["PULocationID"] and out.height == 2000
    assert out.equals(sorted_trips(3).select("PULocationID"))


def test_row_groups_that_cannot_match_are_skipped(lakehouse: Lakehouse, capfd) -> None:
    lakehouse.create_branch("dev")
    data = pl.concat([sorted_trips(day, rows=40_000) for day in range(5)])
    lakehouse.write("taxi.trips", data, branch="dev")
    config = lakehouse.config
    other_engine = SqlCatalog("dev", uri=config.catalog_uri, warehouse=config.warehouse, **config.properties)
    try:
        with other_engine.load_table("taxi.trips").transaction() as tx:  # small row groups so one file holds several
            tx.set_properties({"write.parquet.row-group-limit": "40000"})
    finally:
        other_engine.close()
    lakehouse.write("taxi.trips", data, branch="dev")

    capfd.readouterr()
    with pl.Config(verbose=True):
        out = lakehouse.read("taxi.trips", ref="dev", columns=["note"], filter="day = 4")
        # one file, of whose five row groups (one per day) the column statistics leave one to read
        assert out.height == 40_000 and row_groups_read(capfd.readouterr().err) == [(1, 5)]
        lazy = lakehouse.scan("taxi.trips", ref="dev", columns=["note"], filter="day >= 3").collect(engine="streaming")
        assert lazy.height == 80_000 and row_groups_read(capfd.readouterr().err) == [(2, 5)]
