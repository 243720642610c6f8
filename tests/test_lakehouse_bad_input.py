"""Bad input: every refused call raises a named `LakehouseError` (the CLI: an exit code, no traceback) and leaves
every catalog row and every warehouse file as it was; valid but unusual input succeeds and round-trips."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import shutil
import subprocess
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.schema import Schema
from pyiceberg.types import LongType, NestedField
from sqlalchemy import MetaData, select

from dagster_lakehouse.cli import main
from dagster_lakehouse.lakehouse import (
    ColumnNotFound,
    InvalidFilter,
    InvalidRefName,
    InvalidTableName,
    Lakehouse,
    LakehouseError,
    ProtectedBranchError,
    RefAlreadyExists,
    RefNotFound,
    SchemaMismatch,
    TableNotFound,
)
from dagster_lakehouse.lakehouse.errors import InvalidData, InvalidWrite, ReadOnlyError, RowsOutsideFilter

TRIPS = pl.DataFrame(
    {
        "day": ["a", "a", "b"],
        "x": [1, 2, 3],
        "ts": [dt.datetime(2024, 1, d) for d in (1, 2, 3)],
    }
)


def nested(day: str, n: int, *, extra: bool = False, wide: bool = True) -> pa.Table:
    """One row with a list, a struct, a map, and each nested within another; `extra` adds a struct field."""
    it = pa.int64() if wide else pa.int32()
    struct = pa.struct([("a", it), *([("b", pa.string())] if extra else [])])
    return pa.table(
        {
            "day": pa.array([day]),
            "l": pa.array([[n, n + 1]], pa.list_(it)),
            "s": pa.array([{"a": n, **({"b": "x"} if extra else {})}], struct),
            "m": pa.array([[("k", n)]], pa.map_(pa.string(), it)),
            "ls": pa.array([[{"q": n}]], pa.list_(pa.struct([("q", it)]))),
            "sl": pa.array([{"z": [n]}], pa.struct([("z", pa.list_(it))])),
            "ml": pa.array([[("k", [n])]], pa.map_(pa.string(), pa.list_(it))),
        }
    )


@pytest.fixture
def lh(lakehouse: Lakehouse) -> Lakehouse:
    """`main` holds t.trips and t.nested; tag `v1` and branch `dev` are forked from it."""
    lakehouse.write("t.trips", TRIPS, branch="main", allow_main=True)
    lakehouse.write("t.nested", nested("a", 1), branch="main", allow_main=True)
    lakehouse.tag("v1")
    lakehouse.create_branch("dev")
    return lakehouse


def _warehouse_files(backend: Any, request: pytest.FixtureRequest) -> list[tuple[str, int]]:
    if backend.name == "local":
        root = Path(urllib.parse.urlsplit(backend.warehouse).path)
        return sorted((str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*") if p.is_file())
    bucket, _, prefix = backend.warehouse.removeprefix("s3://").partition("/")
    s3 = request.getfixturevalue("moto_server").client("s3")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted((o["Key"], o["Size"]) for page in pages for o in page.get("Contents", []))


def _catalog_rows(lh: Lakehouse) -> dict[str, list[str]]:
    """Every row of every table of the catalog database (refs, Iceberg pointers and namespaces, the commit log, ...)."""
    tables = MetaData()
    tables.reflect(bind=lh.engine)
    with lh.engine.connect() as conn:
        return {
            name: sorted(repr(tuple(row)) for row in conn.execute(select(t)))
            for name, t in sorted(tables.tables.items())
        }


@pytest.fixture
def unchanged(
    lh: Lakehouse, backend: Any, request: pytest.FixtureRequest
) -> Callable[[], AbstractContextManager[None]]:
    """`with unchanged():` asserts that the hash of all catalog rows and the sorted warehouse listing is the same after."""

    def state() -> tuple[str, dict[str, Any]]:
        snapshot = {"catalog": _catalog_rows(lh), "warehouse": _warehouse_files(backend, request)}
        return hashlib.sha256(json.dumps(snapshot, sort_keys=True).encode()).hexdigest(), snapshot

    @contextmanager
    def check() -> Iterator[None]:
        before, before_state = state()
        yield
        after, after_state = state()
        assert after_state == before_state
        assert after == before

    return check


def refused(
    lh: Lakehouse, unchanged: Callable[[], AbstractContextManager[None]], run: Callable, error: type, match: str
):
    """Run `run(lh)`: it must raise `error` (a `LakehouseError`) matching `match` and change nothing."""
    assert issubclass(error, LakehouseError)
    with unchanged(), pytest.raises(error, match=match) as info:
        run(lh)
    return info.value


# ----- branch and tag names -------------------------------------------------------------------------------------

BAD_REF_NAMES = [
    "-x",
    "--force",
    "a..b",
    "a@{b",
    "@",
    "x.lock",
    "a/b.lock/c",
    "a/",
    "/a",
    "a//b",
    "a.",
    ".a",
    "a/.b",
    "a b",
    "a~b",
    "a^b",
    "a:b",
    "a?b",
    "a*b",
    "a[b",
    "a\\b",
    "a\tb",
    "a\nb",
    "a\x7fb",
    "x" * 300,
    "main'; DROP TABLE lakehouse_refs; --",
]
GOOD_REF_NAMES = ["feature/x", "v1.0", "user@host", "a-b_c", "ünïcode", "a.b/c-d", "x" * 200]


@pytest.mark.parametrize("name", BAD_REF_NAMES, ids=lambda n: repr(n)[:30])
@pytest.mark.parametrize("create", ["create_branch", "tag"])
def test_bad_ref_names_are_refused(lh: Lakehouse, unchanged, name: str, create: str) -> None:
    refused(lh, unchanged, lambda lh: getattr(lh, create)(name), InvalidRefName, "invalid branch/tag name")


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_ref_names_follow_git() -> None:
    """The names refused above are refused by git, the accepted ones accepted (`--branch` for a leading '-')."""

    def git_accepts(name: str) -> bool:
        check = ["--branch"] if name.startswith("-") else ["--allow-onelevel"]
        return subprocess.run(["git", "check-ref-format", *check, name], capture_output=True).returncode == 0

    assert [n for n in BAD_REF_NAMES if git_accepts(n) and "'" not in n and len(n) <= 200] == []
    assert [n for n in GOOD_REF_NAMES if not git_accepts(n)] == []


def test_good_ref_names_are_accepted(lh: Lakehouse) -> None:
    for i, name in enumerate(GOOD_REF_NAMES):
        assert lh.create_branch(name).name == name
        lh.write("t.trips", TRIPS.head(1), branch=name, mode="append")
        assert lh.read("t.trips", ref=name).height == 4
        lh.tag(f"tag-{i}", name)
    assert set(GOOD_REF_NAMES) <= set(lh.branches())


UNKNOWN_REFS = ["ghost", "a\x00b", "x" * 300, "main'; DROP TABLE lakehouse_refs; --", "-x"]


@pytest.mark.parametrize("ref", UNKNOWN_REFS, ids=lambda n: repr(n)[:30])
@pytest.mark.parametrize(
    "run",
    [
        pytest.param(lambda lh, ref: lh.tables(ref), id="tables"),
        pytest.param(lambda lh, ref: lh.ref(ref), id="ref"),
        pytest.param(lambda lh, ref: lh.catalog(ref), id="catalog"),
        pytest.param(lambda lh, ref: lh.table("t.trips", ref), id="table"),
        pytest.param(lambda lh, ref: lh.read("t.trips", ref=ref), id="read"),
        pytest.param(lambda lh, ref: lh.log(ref), id="log"),
        pytest.param(lambda lh, ref: lh.write("t.trips", TRIPS, branch=ref), id="write"),
        pytest.param(lambda lh, ref: lh.write("t.new", TRIPS, branch=ref, where="day = 'a'"), id="write-new"),
        pytest.param(lambda lh, ref: lh.drop_table("t.trips", branch=ref), id="drop_table"),
        pytest.param(lambda lh, ref: lh.create_branch("fresh", ref), id="create_branch-from"),
        pytest.param(lambda lh, ref: lh.delete_branch(ref), id="delete_branch"),
        pytest.param(lambda lh, ref: lh.merge(ref, "dev"), id="merge"),
    ],
)
def test_unknown_refs_are_refused(lh: Lakehouse, unchanged, ref: str, run: Callable, backend: Any, request) -> None:
    error = refused(lh, unchanged, lambda lh: run(lh, ref), RefNotFound, "does not exist")
    assert (ref[:20] if "\x00" not in ref else "a\\x00b") in str(error)


def test_existing_refs_are_refused_as_new_names(lh: Lakehouse, unchanged) -> None:
    refused(lh, unchanged, lambda lh: lh.create_branch("dev"), RefAlreadyExists, "'dev'")
    refused(lh, unchanged, lambda lh: lh.tag("v1"), RefAlreadyExists, "'v1'")
    refused(lh, unchanged, lambda lh: lh.create_branch("v1"), RefAlreadyExists, "'v1'")


# ----- table names ----------------------------------------------------------------------------------------------

BAD_TABLE_NAMES = [
    "trips",
    "t.trips.x",
    ".trips",
    "t.",
    "",
    "t.tr ips",
    "1t.trips",
    "t.trips; DROP TABLE iceberg_tables",
    "t.trips'--",
    "t." + "x" * 300,
    "x" * 300 + ".trips",
    "t.tr\x00ips",
    "t.trïps",
    None,
    5,
]


@pytest.mark.parametrize("name", BAD_TABLE_NAMES, ids=lambda n: repr(n)[:30])
@pytest.mark.parametrize(
    "run",
    [
        pytest.param(lambda lh, name: lh.write(name, TRIPS, branch="dev"), id="write"),
        pytest.param(lambda lh, name: lh.write(name, TRIPS, branch="dev", where="day = 'a'"), id="write-where"),
        pytest.param(lambda lh, name: lh.read(name, ref="dev"), id="read"),
        pytest.param(lambda lh, name: lh.table(name, "dev"), id="table"),
        pytest.param(lambda lh, name: lh.exists(name, "dev"), id="exists"),
        pytest.param(lambda lh, name: lh.drop_table(name, branch="dev"), id="drop_table"),
    ],
)
def test_bad_table_names_are_refused(lh: Lakehouse, unchanged, name: Any, run: Callable) -> None:
    error = refused(lh, unchanged, lambda lh: run(lh, name), InvalidTableName, "invalid table name")
    assert len(str(error)) < 400  # a 300-character name is cut in the message


def test_a_name_longer_than_the_catalog_holds_names_the_limit(lh: Lakehouse, unchanged) -> None:
    refused(lh, unchanged, lambda lh: lh.write("t." + "x" * 256, TRIPS, branch="dev"), InvalidTableName, "at most 255")
    lh.write("t." + "x" * 255, TRIPS, branch="dev")  # the longest name the catalog holds works
    assert lh.read("t." + "x" * 255, ref="dev").height == 3


def test_unknown_tables_are_refused(lh: Lakehouse, unchanged) -> None:
    refused(lh, unchanged, lambda lh: lh.read("t.nope", ref="dev"), TableNotFound, "'t.nope' does not exist on 'dev'")
    refused(lh, unchanged, lambda lh: lh.drop_table("t.nope", branch="dev"), TableNotFound, "'t.nope'")


# ----- filters --------------------------------------------------------------------------------------------------

BAD_FILTERS = [
    pytest.param("day = 5", InvalidFilter, "does not fit", id="string-vs-number"),
    pytest.param("x = 'abc'", InvalidFilter, "does not fit", id="number-vs-string"),
    pytest.param("ts > 'not-a-date'", InvalidFilter, "does not fit", id="bad-timestamp"),
    pytest.param("day in (1, 2)", InvalidFilter, "does not fit", id="set-of-wrong-type"),
    pytest.param("nope = 1", ColumnNotFound, "nope", id="unknown-column"),
    pytest.param("Day = 'a'", ColumnNotFound, "Day", id="wrong-case"),
    pytest.param("(day = 'a'", InvalidFilter, "cannot parse", id="unbalanced-open"),
    pytest.param("day = 'a'))", InvalidFilter, "cannot parse", id="unbalanced-close"),
    pytest.param("day = 'a", InvalidFilter, "cannot parse", id="unterminated-string"),
    pytest.param("day ==== 'a'", InvalidFilter, "cannot parse", id="operator"),
    pytest.param("day = 'a'; DROP TABLE iceberg_tables", InvalidFilter, "cannot parse", id="sql-injection"),
    pytest.param("__import__('os').system('true')", InvalidFilter, "cannot parse", id="python"),
    pytest.param("x" * 10_000, InvalidFilter, "cannot parse", id="10k-garbage"),
    pytest.param("(" * 10_000, InvalidFilter, "cannot parse", id="10k-parentheses"),
    pytest.param(" or ".join(["day = 'a'"] * 1000) + " or", InvalidFilter, "cannot parse", id="10k-trailing-or"),
    pytest.param(42, InvalidFilter, "must be a string", id="not-a-string"),
    pytest.param(
        "ts >= '2024-01-01T00:00:00-05:00' AND day = 'a'",
        InvalidFilter,
        "column 'ts' is timestamp \\(no time zone\\).*filter=\"ts >= '2024-01-01T00:00:00' AND day = 'a'\"",
        id="offset-on-naive-timestamp",
    ),
]


@pytest.mark.parametrize(("expression", "error", "match"), BAD_FILTERS)
@pytest.mark.parametrize(
    "run",
    [
        pytest.param(lambda lh, f: lh.read("t.trips", ref="dev", filter=f), id="read"),
        pytest.param(lambda lh, f: lh.scan("t.trips", ref="dev", filter=f).collect(), id="scan"),
        pytest.param(lambda lh, f: lh.write("t.trips", TRIPS.head(0), branch="dev", where=f), id="write-where"),
        pytest.param(lambda lh, f: lh.write("t.new", TRIPS.head(0), branch="dev", where=f), id="write-where-new"),
    ],
)
def test_bad_filters_are_refused(
    lh: Lakehouse, unchanged, expression: Any, error: type, match: str, run: Callable
) -> None:
    raised = refused(lh, unchanged, lambda lh: run(lh, expression), error, match)
    assert "t.trips" in str(raised) or "t.new" in str(raised)
    assert len(str(raised)) < 1000  # a 10,000-character filter is cut in the message
    if expression in ("day = 5", "x = 'abc'"):
        assert raised.__cause__ is not None  # PyIceberg's own error is chained


def test_a_valid_10k_character_filter_works(lh: Lakehouse) -> None:
    days = ", ".join(f"'d{i}'" for i in range(1500)) + ", 'a'"
    assert len(days) > 10_000
    assert lh.read("t.trips", ref="dev", filter=f"day in ({days})").height == 2
    lh.write("t.trips", TRIPS.filter(pl.col("day") == "a"), branch="dev", where=f"day in ({days})")
    assert lh.read("t.trips", ref="dev").height == 3


# ----- writes ---------------------------------------------------------------------------------------------------

UINT64 = pa.table({"u": pa.array([2**63 + 5], pa.uint64())})
NS = pa.table({"t": pa.array([1_700_000_000_000_000_001], pa.timestamp("ns"))})
BAD_WRITES = [
    pytest.param(lambda lh: lh.write("t.trips", TRIPS, branch="dev", mode="merge"), InvalidWrite, "mode", id="mode"),
    pytest.param(
        lambda lh: lh.write("t.trips", TRIPS, branch="dev", mode="append", where="day = 'a'"),
        InvalidWrite,
        "takes no where",
        id="append-with-where",
    ),
    pytest.param(
        lambda lh: lh.write("t.trips", TRIPS, branch="dev", where="day = 'a'"),
        RowsOutsideFilter,
        r"1 of 3 rows are outside where \"day = 'a'\", e.g. a row with \{'day': 'b'\}",
        id="rows-outside-where",
    ),
    pytest.param(
        lambda lh: lh.write("t.new", TRIPS, branch="dev", where="day = 'a'"),
        RowsOutsideFilter,
        "1 of 3 rows",
        id="rows-outside-where-new-table",
    ),
    pytest.param(
        lambda lh: lh.write("t.trips", TRIPS.select("x"), branch="dev", where="day = 'a'"),
        RowsOutsideFilter,
        "3 of 3 rows",
        id="where-column-missing-from-data",
    ),
    pytest.param(
        lambda lh: lh.write("t.trips", TRIPS, branch="dev", where="  "), InvalidFilter, "empty", id="blank-where"
    ),
    pytest.param(
        lambda lh: lh.write("t.new", pl.DataFrame(), branch="dev"), InvalidData, "no columns", id="no-columns"
    ),
    pytest.param(
        lambda lh: lh.write("t.new", pa.table({}), branch="dev"), InvalidData, "no columns", id="no-columns-arrow"
    ),
    pytest.param(
        lambda lh: lh.write("t.trips", pl.DataFrame(), branch="dev", mode="append"),
        InvalidData,
        "no columns",
        id="append-no-columns",
    ),
    pytest.param(
        lambda lh: lh.write("t.new", pa.table([pa.array([1]), pa.array([2])], names=["a", "a"]), branch="dev"),
        InvalidData,
        "more than one column named 'a'",
        id="duplicate-columns",
    ),
    pytest.param(
        lambda lh: lh.write("t.new", pa.table([pa.array([1])], names=[""]), branch="dev"),
        InvalidData,
        "empty name",
        id="empty-column-name",
    ),
    pytest.param(
        lambda lh: lh.write(
            "t.new",
            pa.table({"s": pa.array([{"a": 1}], pa.struct([("a", pa.int64()), ("a", pa.int64())]))}),
            branch="dev",
        ),
        InvalidData,
        "more than one column named 'a' inside column 's'",
        id="duplicate-struct-fields",
    ),
    pytest.param(
        lambda lh: lh.write(
            "t.new", pa.table({"l": pa.array([[{"": 1}]], pa.list_(pa.struct([("", pa.int64())])))}), branch="dev"
        ),
        InvalidData,
        "empty name inside column 'l",
        id="empty-nested-name",
    ),
    pytest.param(
        lambda lh: lh.write("t.new", UINT64, branch="dev"),
        SchemaMismatch,
        "column 'u'.*not in range",
        id="uint64-out-of-range",
    ),
    pytest.param(
        lambda lh: lh.write("t.new", NS, branch="dev"), SchemaMismatch, "column 't'.*lose data", id="nanoseconds"
    ),
    pytest.param(
        lambda lh: lh.write("t.new", pl.DataFrame({"a": [1], "b": [None]}), branch="dev"),
        SchemaMismatch,
        "column 'b' holds only nulls and has no type",
        id="untyped-null-column",
    ),
    pytest.param(
        lambda lh: lh.write("t.new", pa.table({"d": pa.array([1], pa.duration("s"))}), branch="dev"),
        SchemaMismatch,
        "unsupported type: duration",
        id="duration",
    ),
    pytest.param(
        lambda lh: lh.write("t.new", pa.table({"d": pa.array([1], pa.decimal256(50, 2))}), branch="dev"),
        SchemaMismatch,
        "decimal256",
        id="decimal-precision-50",
    ),
    pytest.param(
        lambda lh: lh.write("t.new", pa.table({"s": pa.array([{}], pa.struct([]))}), branch="dev"),
        SchemaMismatch,
        "struct with no fields",
        id="empty-struct",
    ),
    pytest.param(
        lambda lh: lh.write("t.new", {"a": [1]}, branch="dev"), InvalidData, "cannot write a builtins.dict", id="dict"
    ),
    pytest.param(lambda lh: lh.write("t.new", None, branch="dev"), InvalidData, "NoneType", id="none"),
    pytest.param(
        lambda lh: lh.write("t.new", pl.LazyFrame({"a": ["x"]}).select(pl.col("a").str.to_integer()), branch="dev"),
        InvalidData,
        "cannot read the data",
        id="lazyframe-that-fails",
    ),
    pytest.param(
        lambda lh: lh.write("t.trips", TRIPS.with_columns(x=pl.lit("one")), branch="dev", mode="append"),
        SchemaMismatch,
        "column 'x' is long in the table but string",
        id="append-wrong-type",
    ),
    pytest.param(
        lambda lh: lh.write("t.nested", pa.table({"day": ["b"], "l": pa.array([["x"]])}), branch="dev", mode="append"),
        SchemaMismatch,
        "column 'l' is list<long> in the table but list<string>.*'l.element'",
        id="append-nested-wrong-type",
    ),
    pytest.param(
        lambda lh: lh.write("t.nested", pa.table({"day": ["b"], "s": pa.array([[1]])}), branch="dev", mode="append"),
        SchemaMismatch,
        "column 's' is struct",
        id="append-list-into-struct",
    ),
    pytest.param(
        lambda lh: lh.write("t.nested", nested("b", 2), branch="dev", where="day = 'a'"),
        RowsOutsideFilter,
        "1 of 1 rows",
        id="nested-rows-outside-where",
    ),
    pytest.param(
        lambda lh: lh.write("t.trips", TRIPS, branch="dev", where="day = 'a'", mode="replace", partition_by=["nope"]),
        ColumnNotFound,
        "partition_by names 'nope'",
        id="partition-by-unknown",
    ),
    pytest.param(
        lambda lh: lh.write("t.new", nested("a", 1), branch="dev", partition_by=["l"]),
        InvalidWrite,
        "cannot partition by column 'l'",
        id="partition-by-list",
    ),
    pytest.param(
        lambda lh: lh.write("t.new", TRIPS, branch="dev", partition_by=["day", "day"]),
        InvalidWrite,
        "twice",
        id="partition-by-twice",
    ),
    pytest.param(
        lambda lh: lh.write("t.new", TRIPS, branch="dev", snapshot_properties={1: "x"}),
        InvalidWrite,
        "snapshot_properties",
        id="property-key",
    ),
    pytest.param(
        lambda lh: lh.write("t.new", TRIPS, branch="dev", run_id="r" * 300), InvalidWrite, "run_id", id="long-run-id"
    ),
    pytest.param(
        lambda lh: lh.write("t.new", TRIPS, branch="dev", message="a\x00b"),
        InvalidWrite,
        "message",
        id="nul-in-message",
    ),
    pytest.param(
        lambda lh: lh.write("t.trips", pl.DataFrame({"zone": ["z"], "n": [1]}), branch="dev", mode="append"),
        SchemaMismatch,
        "shares no column with the table. Table columns: day, x, ts; data columns: zone, n",
        id="append-sharing-no-column",
    ),
    pytest.param(
        lambda lh: lh.write("t.trips", pl.LazyFrame({"zone": ["z"]}), branch="dev", where="day = 'a'"),
        SchemaMismatch,
        "shares no column",
        id="lazy-where-sharing-no-column",
    ),
    pytest.param(
        lambda lh: lh.write("t.trips", pl.DataFrame({"x": [9], "zone": ["z"], "n": [1]}), branch="dev", mode="append"),
        SchemaMismatch,
        "carries only 1 of the table's 3 columns",
        id="append-adding-columns-with-too-few",
    ),
    pytest.param(
        lambda lh: lh.write("t.trips", TRIPS, branch="dev", mode="upsert"), InvalidWrite, "needs key", id="upsert-no-key"
    ),
    pytest.param(
        lambda lh: lh.write("t.trips", TRIPS, branch="dev", mode="upsert", key=["nope"]),
        ColumnNotFound,
        "key column 'nope' is not a column of the data",
        id="upsert-key-not-in-data",
    ),
    pytest.param(
        lambda lh: lh.write("t.trips", TRIPS.with_columns(k=pl.lit(1)), branch="dev", mode="upsert", key=["k"]),
        InvalidWrite,
        "on more than one row",
        id="upsert-duplicate-keys",
    ),
    pytest.param(
        lambda lh: lh.write("x.new", TRIPS, branch="dev", mode="upsert", key=["day"]),
        InvalidWrite,
        "on more than one row",
        id="upsert-duplicate-keys-new-table",
    ),
    pytest.param(
        lambda lh: lh.write("t.trips", TRIPS.with_columns(k=pl.Series([1, 2, 3])), branch="dev", mode="upsert", key=["k"]),
        ColumnNotFound,
        "key column 'k' is not a column of the table",
        id="upsert-key-not-in-table",
    ),
    pytest.param(
        lambda lh: lh.write("t.trips", TRIPS.drop("ts"), branch="dev", mode="upsert", key=["x"]),
        SchemaMismatch,
        "every column of the table; it lacks ts",
        id="upsert-lacking-a-column",
    ),
    pytest.param(
        lambda lh: lh.write("t.trips", TRIPS.lazy(), branch="dev", mode="upsert", key=["x"], where="x = 1"),
        InvalidWrite,
        "takes no where",
        id="upsert-with-where",
    ),
    pytest.param(
        lambda lh: lh.write("t.trips", TRIPS, branch="main"), ProtectedBranchError, "'main' is protected", id="main"
    ),
    pytest.param(lambda lh: lh.write("t.trips", TRIPS, branch="v1"), ProtectedBranchError, "'v1' is a tag", id="tag"),
    pytest.param(
        lambda lh: lh.write("t.trips", TRIPS, branch="v1", allow_main=True),
        ProtectedBranchError,
        "tag",
        id="tag-allow-main",
    ),
    pytest.param(lambda lh: lh.drop_table("t.trips", branch="v1"), ProtectedBranchError, "tag", id="drop-on-tag"),
    pytest.param(
        lambda lh: lh.drop_table("t.trips", branch="main"), ProtectedBranchError, "protected", id="drop-on-main"
    ),
    pytest.param(lambda lh: lh.delete_branch("main"), ProtectedBranchError, "'main'", id="delete-main"),
    pytest.param(lambda lh: lh.delete_branch("v1"), RefNotFound, "'v1' is a tag", id="delete-tag-as-branch"),
]


@pytest.mark.parametrize(("run", "error", "match"), BAD_WRITES)
def test_bad_writes_are_refused(lh: Lakehouse, unchanged, run: Callable, error: type, match: str) -> None:
    refused(lh, unchanged, run, error, match)


@pytest.mark.parametrize(
    ("data", "cause"),
    [
        pytest.param(UINT64, pa.ArrowInvalid, id="uint64"),
        pytest.param(NS, pa.ArrowInvalid, id="nanoseconds"),
        pytest.param(pa.table({"d": pa.array([1], pa.duration("s"))}), Exception, id="duration"),
        pytest.param(
            pl.LazyFrame({"a": ["x"]}).select(pl.col("a").str.to_integer()), pl.exceptions.PolarsError, id="lazy"
        ),
    ],
)
def test_wrapped_errors_chain_the_original(lh: Lakehouse, unchanged, data: Any, cause: type) -> None:
    raised = refused(
        lh, unchanged, lambda lh: lh.write("t.new", data, branch="dev"), LakehouseError, "table 't.new' on branch 'dev'"
    )
    assert isinstance(raised.__cause__, cause)


# ----- PyIceberg objects handed out ---------------------------------------------------------------------------

ARROW = TRIPS.head(1).to_arrow()
HANDED_OUT_WRITES = [
    pytest.param(lambda lh, ref: lh.table("t.trips", ref).append(ARROW), id="append"),
    pytest.param(lambda lh, ref: lh.table("t.trips", ref).overwrite(ARROW), id="overwrite"),
    pytest.param(lambda lh, ref: lh.table("t.trips", ref).delete("day = 'a'"), id="delete"),
    pytest.param(lambda lh, ref: lh.table("t.trips", ref).transaction(), id="transaction"),
    pytest.param(
        lambda lh, ref: lh.table("t.trips", ref).update_schema().add_column("y", LongType()).commit(),
        id="update_schema",
    ),
    pytest.param(lambda lh, ref: lh.table("t.trips", ref).update_spec(), id="update_spec"),
    pytest.param(lambda lh, ref: lh.table("t.trips", ref).manage_snapshots(), id="manage_snapshots"),
    pytest.param(lambda lh, ref: lh.table("t.trips", ref).refresh().append(ARROW), id="refreshed-append"),
    pytest.param(lambda lh, ref: lh.catalog(ref).load_table("t.trips").append(ARROW), id="catalog-load-append"),
    pytest.param(
        lambda lh, ref: lh.catalog(ref).create_table("t.other", schema=Schema(NestedField(1, "a", LongType()))),
        id="create_table",
    ),
    pytest.param(
        lambda lh, ref: lh.catalog(ref).create_table_transaction("t.other", schema=ARROW.schema),
        id="create_table_transaction",
    ),
    pytest.param(lambda lh, ref: lh.catalog(ref).create_namespace("z"), id="create_namespace"),
    pytest.param(lambda lh, ref: lh.catalog(ref).drop_table("t.trips"), id="drop_table"),
    pytest.param(lambda lh, ref: lh.catalog(ref).purge_table("t.trips"), id="purge_table"),
    pytest.param(lambda lh, ref: lh.catalog(ref).rename_table("t.trips", "t.moved"), id="rename_table"),
    pytest.param(
        lambda lh, ref: lh.catalog(ref).register_table("t.copy", lh.table("t.trips", ref).metadata_location),
        id="register_table",
    ),
    pytest.param(lambda lh, ref: lh.catalog(ref).drop_namespace("t"), id="drop_namespace"),
    pytest.param(
        lambda lh, ref: lh.catalog(ref).update_namespace_properties("t", updates={"k": "v"}), id="namespace_properties"
    ),
    pytest.param(lambda lh, ref: lh.catalog(ref).destroy_tables(), id="destroy_tables"),
]


@pytest.mark.parametrize("ref", ["v1", "main", "dev"])
@pytest.mark.parametrize("run", HANDED_OUT_WRITES)
def test_writes_through_handed_out_tables_and_catalogs_are_refused(
    lh: Lakehouse, unchanged, ref: str, run: Callable
) -> None:
    error = refused(lh, unchanged, lambda lh: run(lh, ref), ReadOnlyError, "read-only.*Lakehouse.write")
    assert f"'{ref}'" in str(error)


def test_handed_out_objects_still_read(lh: Lakehouse) -> None:
    table = lh.table("t.trips", "v1")
    assert table.scan().to_arrow().num_rows == 3
    assert lh.catalog("v1").list_tables("t") == [("t", "nested"), ("t", "trips")]
    assert lh.catalog("dev").load_table("t.trips").refresh().scan(row_filter="day = 'a'").to_arrow().num_rows == 2


def test_the_table_a_write_returns_is_read_only_too(lh: Lakehouse, unchanged) -> None:
    result = lh.write("t.trips", TRIPS, branch="dev", mode="append")
    assert result.iceberg_table.scan().to_arrow().num_rows == 6
    refused(lh, unchanged, lambda lh: result.iceberg_table.append(ARROW), ReadOnlyError, "'t.trips' on 'dev'")


def test_unknown_ref_catalog_is_refused_and_leaves_no_stray_row(lh: Lakehouse, unchanged) -> None:
    refused(lh, unchanged, lambda lh: lh.catalog("ghost"), RefNotFound, "'ghost' does not exist")
    lh.create_branch("ghost")
    assert lh.tables("ghost") == lh.tables("main")


# ----- valid but unusual input succeeds and round-trips --------------------------------------------------------


def test_a_thousand_columns_round_trip(lh: Lakehouse) -> None:
    wide = pl.DataFrame({f"c{i}": [i, i + 1] for i in range(1000)})
    lh.write("t.wide", wide, branch="dev")
    lh.write("t.wide", wide, branch="dev", mode="append")
    back = lh.read("t.wide", ref="dev")
    assert back.columns == wide.columns and back.height == 4
    assert back.sort("c0").equals(pl.concat([wide, wide]).sort("c0"))


def test_all_null_columns_round_trip(lh: Lakehouse) -> None:
    frame = pl.DataFrame(
        {
            "day": ["a", "b"],
            "n": pl.Series([None, None], dtype=pl.Int64),
            "s": pl.Series([None, None], dtype=pl.Utf8),
            "l": pl.Series([None, None], dtype=pl.List(pl.Int64)),
            "st": pl.Series([None, None], dtype=pl.Struct({"a": pl.Int64})),
        }
    )
    lh.write("t.nulls", frame, branch="dev")
    lh.write("t.nulls", frame, branch="dev", mode="append")
    lh.write("t.nulls", frame.filter(pl.col("day") == "a"), branch="dev", where="day = 'a'")
    back = lh.read("t.nulls", ref="dev").sort("day")
    assert back.schema == frame.schema
    assert back.equals(pl.concat([frame, frame.filter(pl.col("day") == "b")]).sort("day"))


def test_nested_types_append_overwrite_and_evolve(lh: Lakehouse) -> None:
    ids = {f.name: f.field_id for f in lh.table("t.nested", "dev").schema().fields}
    lh.write("t.nested", nested("b", 2), branch="dev", mode="append")
    lh.write("t.nested", nested("c", 3, wide=False), branch="dev", mode="append")  # narrower leaves: read as long
    lh.write("t.nested", nested("a", 4), branch="dev", where="day = 'a'")
    lh.write("t.nested", nested("d", 5, extra=True), branch="dev", mode="append")  # a new struct field evolves
    lh.write("t.nested", nested("e", 6), branch="dev", mode="append")  # and is null where absent
    lh.write("t.nested", nested("e", 6, extra=True), branch="dev", where="s.a = 6")  # a filter inside a struct
    table = lh.table("t.nested", "dev")
    assert {f.name: f.field_id for f in table.schema().fields} == ids  # columns kept their ids
    assert str(table.schema().find_field("s").field_type).startswith("struct<") and "b: optional string" in str(
        table.schema()
    )
    back = lh.read("t.nested", ref="dev").sort("day")
    assert back["day"].to_list() == ["a", "b", "c", "d", "e"]
    assert back["l"].to_list() == [[4, 5], [2, 3], [3, 4], [5, 6], [6, 7]]
    assert back["s"].to_list() == [
        {"a": 4, "b": None},
        {"a": 2, "b": None},
        {"a": 3, "b": None},
        {"a": 5, "b": "x"},
        {"a": 6, "b": "x"},
    ]
    assert lh.read_arrow("t.nested", ref="dev").sort_by("day").column("ml").to_pylist()[3] == [("k", [5])]
    assert lh.read("t.nested", ref="main").height == 1  # main untouched
    lh.write("t.nested", nested("z", 9), branch="dev")  # a replace with the same nested types keeps the columns
    assert {f.name: f.field_id for f in lh.table("t.nested", "dev").schema().fields} == ids
    assert lh.read("t.nested", ref="dev")["s"].to_list() == [{"a": 9}]  # ... and drops the field the data lacks


def test_unusual_but_valid_data_round_trips(lh: Lakehouse) -> None:
    frame = pa.table(
        {
            "a b": [1],
            "a.b": [2],
            "ünï": [3],
            "select": [4],
            "u": pa.array([2**63 - 1], pa.uint64()),
            "d": pa.array([dt.date(2024, 1, 1)], pa.date64()),
            "t": pa.array([1_700_000_000_000_000_000], pa.timestamp("ns")),
            "f": pa.array([[1, 2]], pa.list_(pa.int64(), 2)),
            "m": pa.array([[("k", dt.datetime(2024, 1, 1))]], pa.map_(pa.string(), pa.timestamp("ns"))),
        }
    )
    lh.write("t.odd", frame, branch="dev")
    back = lh.read("t.odd", ref="dev")
    assert back.columns == frame.column_names
    assert back.row(0)[:5] == (1, 2, 3, 4, 2**63 - 1)
    assert back["t"][0] == dt.datetime(2023, 11, 14, 22, 13, 20)
    empty = lh.write("t.empty", TRIPS.head(0), branch="dev")  # zero rows but columns: an empty table
    assert empty.rows == 0 and lh.read("t.empty", ref="dev").columns == TRIPS.columns
    lh.write("t.trips", TRIPS.head(0), branch="dev", where="day = 'a'")  # zero rows in scope empty the partition
    assert lh.read("t.trips", ref="dev")["day"].to_list() == ["b"]


# ----- the same through the CLI ---------------------------------------------------------------------------------


@pytest.fixture
def cli(
    lh: Lakehouse, backend: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
):
    """Runs `lakehouse --catalog-uri URI --warehouse W ARGV...` on the seeded lakehouse; returns (code, stdout, stderr)."""
    for var in ("LAKEHOUSE_CATALOG_URI", "LAKEHOUSE_WAREHOUSE", "LAKEHOUSE_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LAKEHOUSE_PROPERTIES", json.dumps(backend.properties))
    TRIPS.write_parquet(tmp_path / "trips.parquet")
    pq.write_table(UINT64, tmp_path / "uint64.parquet")
    pq.write_table(pa.table({"day": ["b"], "l": pa.array([["x"]])}), tmp_path / "nested.parquet")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        argv = tuple(a.replace("{tmp}", str(tmp_path)) for a in argv)
        code = main(["--catalog-uri", backend.catalog_uri, "--warehouse", backend.warehouse, *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


BAD_COMMANDS = [
    pytest.param(["branch", "create", "--", "-x"], 1, "starts with '-'", id="branch-leading-dash"),
    pytest.param(["branch", "create", "a..b"], 1, "'a..b'", id="branch-dots"),
    pytest.param(["branch", "create", "x" * 300], 1, "longer than 200", id="branch-long"),
    pytest.param(["branch", "create", "dev"], 1, "exists", id="branch-exists"),
    pytest.param(["branch", "create", "x", "--from", "ghost"], 1, "'ghost'", id="branch-from-ghost"),
    pytest.param(["branch", "delete", "main"], 1, "'main'", id="delete-main"),
    pytest.param(["branch", "delete", "v1"], 1, "'v1' is a tag", id="delete-tag-as-branch"),
    pytest.param(["branch", "delete", "ghost"], 1, "'ghost'", id="delete-ghost"),
    pytest.param(["branch", "merge", "ghost"], 1, "'ghost'", id="merge-ghost"),
    pytest.param(["branch", "diff", "ghost", "main"], 1, "'ghost'", id="diff-ghost"),
    pytest.param(["branch", "log", "ghost"], 1, "'ghost'", id="log-ghost"),
    pytest.param(["branch", "log", "-n", "0"], 2, "at least 1", id="log-zero"),
    pytest.param(["tag", "a b"], 1, "'a b'", id="tag-space"),
    pytest.param(["tag", "v2", "ghost"], 1, "'ghost'", id="tag-of-ghost"),
    pytest.param(["tag", "v1"], 1, "exists", id="tag-exists"),
    pytest.param(["tag", "--delete", "ghost"], 1, "'ghost'", id="tag-delete-ghost"),
    pytest.param(["table", "show", "bad name"], 1, "invalid table name", id="show-bad-name"),
    pytest.param(["table", "show", "t.nope"], 1, "'t.nope'", id="show-unknown"),
    pytest.param(["table", "show", "t.trips", "--ref", "ghost"], 1, "'ghost'", id="show-ghost-ref"),
    pytest.param(["table", "head", "t.trips", "--filter", "day = 5"], 1, "does not fit", id="head-type-mismatch"),
    pytest.param(["table", "head", "t.trips", "--filter", "nope = 1"], 1, "nope", id="head-unknown-column"),
    pytest.param(["table", "head", "t.trips", "--filter", "(" * 10_000], 1, "cannot parse", id="head-10k-filter"),
    pytest.param(["table", "head", "t.trips", "--columns", "nope"], 1, "'nope'", id="head-unknown-columns"),
    pytest.param(["table", "head", "t.trips", "--columns", ","], 2, "column names", id="head-empty-columns"),
    pytest.param(["table", "head", "t.trips", "-n", "0"], 2, "at least 1", id="head-zero-rows"),
    pytest.param(["query", "DROP TABLE t.trips"], 2, "read-only.*not DROP", id="query-drop"),
    pytest.param(["query", "/* x */ DELETE FROM t.trips"], 2, "read-only.*not DELETE", id="query-delete"),
    pytest.param(["query", "CREATE TABLE x AS SELECT 1"], 2, "read-only", id="query-create"),
    pytest.param(
        ["query", "SELECT * FROM t.trips; DROP TABLE t.trips"], 1, "only one.* statement", id="query-two-statements"
    ),
    pytest.param(["query", "SELEC * FROM t.trips"], 1, "query on 'main' failed", id="query-typo"),
    pytest.param(["query", "  -- nothing"], 2, "needs a statement", id="query-empty"),
    pytest.param(["query", "EXPLAIN TRUNCATE t.trips"], 2, "read-only.*not TRUNCATE", id="query-explain-truncate"),
    pytest.param(["query", "SELECT * FROM nope"], 1, "nope", id="query-unknown-table"),
    pytest.param(["query", "SELECT 1", "--ref", "ghost"], 1, "'ghost'", id="query-ghost-ref"),
    pytest.param(
        ["import", "{tmp}/trips.parquet", "bad name", "--branch", "dev"], 1, "invalid table name", id="import-bad-table"
    ),
    pytest.param(
        ["import", "{tmp}/missing.parquet", "bad name", "--branch", "dev"],
        1,
        "invalid table name",
        id="import-bad-table-first",
    ),
    pytest.param(["import", "{tmp}/trips.parquet", "t.trips", "--branch", "ghost"], 1, "'ghost'", id="import-ghost"),
    pytest.param(["import", "{tmp}/trips.parquet", "t.trips", "--branch", "main"], 1, "--allow-main", id="import-main"),
    pytest.param(
        ["import", "{tmp}/broken.parquet", "t.new", "--branch", "dev"],
        1,
        "cannot read '.*broken.parquet'",
        id="import-broken",
    ),
    pytest.param(
        ["import", "{tmp}/uint64.parquet", "t.new", "--branch", "dev"],
        1,
        "column 'u'.*(not in range|cannot store)",
        id="import-uint64",
    ),
    pytest.param(
        ["import", "{tmp}/nested.parquet", "t.nested", "--branch", "dev", "--mode", "append"],
        1,
        "list<string>",
        id="import-nested-mismatch",
    ),
    pytest.param(
        ["import", "{tmp}/trips.parquet", "t.trips", "--branch", "dev", "--mode", "merge"],
        2,
        "invalid choice",
        id="import-bad-mode",
    ),
]


@pytest.mark.parametrize(("argv", "code", "match"), BAD_COMMANDS)
def test_bad_cli_input_is_refused(lh: Lakehouse, unchanged, cli, argv: list[str], code: int, match: str) -> None:
    with unchanged():
        exit_code, _, err = cli(*argv)
    assert exit_code == code, err
    assert "Traceback" not in err
    assert err.startswith("error: ") or "usage:" in err, err
    assert re.search(match, err), err


def test_importing_into_a_tag_suggests_a_branch_not_allow_main(lh: Lakehouse, unchanged, cli) -> None:
    with unchanged():
        code, _, err = cli("import", "{tmp}/trips.parquet", "t.trips", "--branch", "v1")
    assert code == 1 and "'v1' is a tag" in err
    assert "--allow-main" not in err and "branch create NAME --from v1" in err


def test_cli_columns_listed_twice_show_once(lh: Lakehouse, cli) -> None:
    code, out, err = cli("table", "head", "t.trips", "--ref", "dev", "--columns", "day,day", "--format", "csv")
    assert code == 0, err
    assert out.splitlines()[0] == "day"
    assert lh.read("t.trips", ref="dev", columns=["day", "day"]).columns == ["day"]


# ----- a write racing delete_branch ---------------------------------------------------------------------------


def _rows_of(lh: Lakehouse, ref: str) -> list[str]:
    """The pointer, namespace and ref rows of `ref` (its commit log stays after `delete_branch`, by design)."""
    tables = ("iceberg_tables", "iceberg_namespace_properties", "lakehouse_refs")
    return [row for name, rows in _catalog_rows(lh).items() if name in tables for row in rows if f"'{ref}'" in row]


@pytest.mark.parametrize("table", ["t.trips", "t.brand_new"])
@pytest.mark.parametrize("when", ["prepare", "staged"])
def test_a_write_racing_delete_branch_names_the_branch(
    lh: Lakehouse, monkeypatch: pytest.MonkeyPatch, table: str, when: str
) -> None:
    """The branch goes while the write prepares, or once its files are staged: `RefNotFound` names it, no row stays."""
    from dagster_lakehouse.lakehouse import commits
    from dagster_lakehouse.lakehouse.writes import WriteCommit

    def delete_dev() -> None:
        if lh.has_branch("dev"):
            lh.delete_branch("dev")

    if when == "prepare":
        prepare = WriteCommit.prepare
        monkeypatch.setattr(WriteCommit, "prepare", lambda self: (delete_dev(), prepare(self))[1])
    else:
        checkpoint = commits.checkpoint
        monkeypatch.setattr(commits, "checkpoint", lambda step: (step == "staged" and delete_dev(), checkpoint(step)))
    with pytest.raises(RefNotFound, match="'dev'"):
        lh.write(table, TRIPS, branch="dev")
    assert _rows_of(lh, "dev") == []
    monkeypatch.undo()
    lh.create_branch("dev")  # a branch of that name again inherits nothing from the failed write
    assert lh.tables("dev") == ["t.nested", "t.trips"] and lh.read("t.trips", ref="dev").height == 3
