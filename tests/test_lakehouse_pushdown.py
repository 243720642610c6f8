"""Column and filter pushdown: a selective read opens fewer files and reads fewer bytes than a full scan."""

from __future__ import annotations

import io
from collections import Counter

import polars as pl
import pyarrow as pa
import pytest
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

    reads.clear()
    lazy = lakehouse.scan("taxi.trips", ref="dev", columns=["PULocationID"], filter="day = 3").collect()
    assert lazy.height == 2000


def test_row_groups_that_cannot_match_are_skipped(lakehouse: Lakehouse, reads: Counter) -> None:
    lakehouse.create_branch("dev")
    data = pl.concat([sorted_trips(day, rows=40_000) for day in range(5)])
    lakehouse.write("taxi.trips", data, branch="dev")
    table = lakehouse.table("taxi.trips", "dev")
    with table.transaction() as tx:  # small row groups so one file holds several
        tx.set_properties({"write.parquet.row-group-limit": "40000"})
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
