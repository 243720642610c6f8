"""Column and filter pushdown: a selective read opens fewer files and reads fewer bytes than a full scan."""

from __future__ import annotations

import io
import re
from collections import Counter

import polars as pl
import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.io.pyarrow import PyArrowFileIO

from dagster_lakehouse.lakehouse import Lakehouse


class _CountingFile(io.RawIOBase):
    """Wraps an Arrow input file and counts the bytes actually read from it."""

    def __init__(self, native, counter: Counter, path: str):
        self._native, self._counter, self._path = native, counter, path

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._native.seek(offset, whence)

    def tell(self) -> int:
        return self._native.tell()

    def readinto(self, buffer) -> int:
        data = self._native.read(len(buffer))
        buffer[: len(data)] = data
        self._counter[self._path] += len(data)
        return len(data)

    def close(self) -> None:
        self._native.close()
        super().close()


@pytest.fixture
def reads(monkeypatch) -> Counter:
    """Bytes read per data file through PyIceberg's FileIO during the test."""
    counter: Counter = Counter()
    original = PyArrowFileIO.new_input

    def new_input(self, location: str):
        input_file = original(self, location)
        if not location.endswith(".parquet"):
            return input_file
        opened = input_file.open

        def counting_open(seekable: bool = True):
            counter[location] += 0
            return pa.PythonFile(_CountingFile(opened(seekable), counter, location), mode="r")

        input_file.open = counting_open
        return input_file

    monkeypatch.setattr(PyArrowFileIO, "new_input", new_input)
    return counter


def sorted_trips(day: int, rows: int = 2000) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "day": [day] * rows,
            "PULocationID": [(i * 7) % 265 + 1 for i in range(rows)],
            "trip_miles": [float(i % 50) for i in range(rows)],
            "note": [f"trip {day}-{i} " * 4 for i in range(rows)],
        }
    )


def test_selective_filter_reads_fewer_files_and_bytes(lakehouse: Lakehouse, reads: Counter) -> None:
    lakehouse.create_branch("dev")
    for day in range(8):  # eight appends of data sorted by day: eight files with disjoint day ranges
        lakehouse.write("taxi.trips", sorted_trips(day), branch="dev", mode="append")

    reads.clear()
    full = lakehouse.read("taxi.trips", ref="dev")
    full_files, full_bytes = len(reads), sum(reads.values())

    reads.clear()
    some = lakehouse.read("taxi.trips", ref="dev", columns=["PULocationID"], filter="day = 3")
    some_files, some_bytes = len(reads), sum(reads.values())

    assert full.height == 16000 and some.height == 2000 and some.columns == ["PULocationID"]
    assert full_files == 8 and some_files == 1
    assert some_bytes * 8 < full_bytes



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
    # the Iceberg file pruning happened before the Parquet scan: one file of eight, the one holding day 3
    assert _scanned_sources(plan) == day3_files, plan
    # the predicate is evaluated inside the scan (row-group statistics), not as a separate FILTER over its output
    assert 'SELECTION: col("day") == 3' in plan and "FILTER" not in plan, plan
    # only the selected column and the one the predicate needs are read
    assert "PROJECT 2/4 COLUMNS" in plan, plan

    out = lazy.collect()
    assert out.columns == ["PULocationID"] and out.height == 2000
    assert out.equals(sorted_trips(3).select("PULocationID"))


def test_row_groups_that_cannot_match_are_skipped(lakehouse: Lakehouse, reads: Counter) -> None:
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

    reads.clear()
    lakehouse.read("taxi.trips", ref="dev", columns=["note"])
    one_column_files, all_row_groups = len(reads), sum(reads.values())
    reads.clear()
    out = lakehouse.read("taxi.trips", ref="dev", columns=["note"], filter="day = 4")
    assert out.height == 40_000
    assert one_column_files == len(reads) == 1
    # one row group of five, plus Arrow's fixed 64 KiB speculative footer read
    assert sum(reads.values()) * 3 < all_row_groups
