# ruff: noqa: F811  (the fixture imported from test_lakehouse_bad_input is requested by its name as a parameter)
"""Partition values of every character class round-trip on every backend; a name no store can hold is refused.

With identity partitioning (`partition_by=`) a value is part of its data files' paths (`column=value` folders, named
by PyIceberg and read back by the one rule of `locations`). A folder name longer than the file system holds (255
bytes on the local warehouse) or an object key past 1024 bytes is refused before anything is written.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import polars as pl
import pytest
from pyiceberg.expressions import EqualTo
from test_lakehouse_bad_input import unchanged  # noqa: F401  (fixture: catalog rows and warehouse listing unchanged)

from dagster_lakehouse.lakehouse import Lakehouse
from dagster_lakehouse.lakehouse.errors import InvalidWrite, LakehouseError, PartitionPathTooLong

VALUES = [
    "Zürich",
    "São Paulo",
    "a+b",
    "50%",
    "a/b",
    "two  spaces ",
    "#hash",
    "why?",
    "😀 emoji",
    "%41 not an escape",
    "%2F",
    "../../../../escape",
    "ü" * 100,  # 200 bytes: its escaped form (600 characters) is longer than a file name, the name itself is not
]
LONG = "x" * 300
"""300 bytes: more than a local file name holds, an S3 key does."""
TOO_LONG = "ü" * 300
"""600 bytes, 1,800 characters escaped: more than a local file name or an S3 key holds."""


def _frame(values: list[str], first: int = 0) -> pl.DataFrame:
    return pl.DataFrame({"city": values, "n": list(range(first, first + len(values)))})


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _values_for(backend: Any) -> list[str]:
    """Every value this backend can hold."""
    return VALUES if backend.name == "local" else [*VALUES, LONG]


def _check_round_trip(lh: Lakehouse, name: str, frame: pl.DataFrame) -> None:
    """A full read, a filter on each value (string and PyIceberg), and PyIceberg's own reader give the rows back."""
    assert lh.read(name).sort("n").equals(frame.sort("n"))
    for value in frame["city"].unique().to_list():
        expected = frame.filter(pl.col("city") == value).sort("n")
        assert lh.read(name, filter=f"city = {_quoted(value)}").sort("n").equals(expected), value
        assert lh.read(name, filter=EqualTo("city", value)).sort("n").equals(expected), value
        assert lh.scan(name).filter(pl.col("city") == value).collect().sort("n").equals(expected), value
    assert sorted(lh.table(name).scan().to_arrow().column("city").to_pylist()) == sorted(frame["city"].to_list())


@pytest.fixture
def lh(lakehouse: Lakehouse) -> Lakehouse:
    """The backend's lakehouse, its namespace `p` made by a first table (`unchanged` compares every catalog row)."""
    lakehouse.write("p.seed", _frame(["x"]), branch="main", allow_main=True)
    return lakehouse


def test_values_round_trip_in_memory(lh: Lakehouse, backend: Any) -> None:
    frame = _frame(_values_for(backend))
    lh.write("p.cities", frame, branch="main", allow_main=True, partition_by=["city"])
    _check_round_trip(lh, "p.cities", frame)


def test_values_round_trip_streamed(lh: Lakehouse, backend: Any) -> None:
    frame = _frame(_values_for(backend))
    lh.write("p.cities", frame.lazy(), branch="main", allow_main=True, partition_by=["city"])
    _check_round_trip(lh, "p.cities", frame)


def test_where_replaces_each_value(lh: Lakehouse, backend: Any) -> None:
    values = _values_for(backend)
    frame = _frame(values)
    lh.write("p.cities", frame, branch="main", allow_main=True, partition_by=["city"])
    lh.create_branch("dev")
    for i, value in enumerate(values):
        lh.write("p.cities", _frame([value, value], first=100 + 2 * i), branch="dev", where=f"city = {_quoted(value)}")
    replaced = pl.concat([_frame([v, v], first=100 + 2 * i) for i, v in enumerate(values)])
    _check_round_trip(lh, "p.cities", frame)  # main as it was
    assert lh.read("p.cities", ref="dev").sort("n").equals(replaced)
    lh.merge("dev")
    _check_round_trip(lh, "p.cities", replaced)
    lh.gc(older_than=timedelta(0), force=True, keep_history=timedelta(0))
    _check_round_trip(lh, "p.cities", replaced)
    assert lh.read("p.cities", ref="main~1").sort("n").equals(frame)  # the snapshots before the merge, too


def test_a_partition_column_with_an_awkward_name(lh: Lakehouse) -> None:
    frame = pl.DataFrame({"Stadt / Ort #1?": VALUES, "n": list(range(len(VALUES)))})
    lh.write("p.named", frame, branch="main", allow_main=True, partition_by=["Stadt / Ort #1?"])
    assert lh.read("p.named").sort("n").equals(frame)
    assert lh.read("p.named", filter=EqualTo("Stadt / Ort #1?", "a/b"))["n"].to_list() == [VALUES.index("a/b")]


def test_a_long_value_is_refused_only_where_it_cannot_be_held(lh: Lakehouse, backend: Any, unchanged) -> None:
    lh.write("p.cities", _frame(VALUES), branch="main", allow_main=True, partition_by=["city"])
    if backend.name == "pg_s3":
        lh.write("p.cities", _frame([LONG], first=100), branch="main", allow_main=True, mode="append")
        assert lh.read("p.cities", filter=EqualTo("city", LONG))["n"].to_list() == [100]
        return
    mixed, alone = _frame(["ok", LONG], first=100), _frame([LONG], first=100)
    writes = [(mixed, {"mode": "append"}), (mixed, {"mode": "replace"}), (alone, {"where": f"city = {_quoted(LONG)}"})]
    for frame, kwargs in writes:
        for data in (frame, frame.lazy()):
            with unchanged(), pytest.raises(PartitionPathTooLong) as info:
                lh.write("p.cities", data, branch="main", allow_main=True, **kwargs)
            _check_refusal(info.value, "p.cities", "city", LONG, "255")


@pytest.mark.parametrize("how", ["in memory", "streamed", "upsert"])
def test_a_value_no_store_holds_is_refused(lh: Lakehouse, backend: Any, unchanged, how: str) -> None:
    frame = _frame(["ok", TOO_LONG])
    data = frame.lazy() if how == "streamed" else frame
    upsert: dict[str, Any] = {"mode": "upsert", "key": ["n"]} if how == "upsert" else {}
    with unchanged(), pytest.raises(PartitionPathTooLong) as info:
        lh.write("p.new", data, branch="main", allow_main=True, partition_by=["city"], **upsert)
    _check_refusal(info.value, "p.new", "city", TOO_LONG, "255" if backend.name == "local" else "1024")
    assert not lh.exists("p.new")


def test_a_column_name_the_file_system_cannot_hold_is_refused(lh: Lakehouse, backend: Any, unchanged) -> None:
    column = "c" * 300
    frame = pl.DataFrame({column: ["a"], "n": [1]})
    if backend.name == "pg_s3":  # an S3 key holds it
        lh.write("p.wide", frame, branch="main", allow_main=True, partition_by=[column])
        assert lh.read("p.wide", filter=EqualTo(column, "a")).equals(frame)
        return
    with unchanged(), pytest.raises(PartitionPathTooLong) as info:
        lh.write("p.wide", frame, branch="main", allow_main=True, partition_by=[column])
    _check_refusal(info.value, "p.wide", column, "a", "255")


def _check_refusal(error: PartitionPathTooLong, table: str, column: str, value: str, limit: str) -> None:
    assert isinstance(error, InvalidWrite) and isinstance(error, LakehouseError)
    assert (error.table, error.branch, error.column, error.value) == (table, "main", column, value)
    message = str(error)
    assert f"table '{table}' on branch 'main'" in message
    assert column[:60] in message and value[:60] in message
    assert "at most a" in message and limit in message and "nothing was written" in message
