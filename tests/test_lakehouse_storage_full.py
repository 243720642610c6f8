"""Out of space: a full warehouse disk or catalog database fails writes, merges, branch and tag creation at once with
`StorageFull` naming the table or ref (never `CommitTimeout` after `commit_timeout` of "races"), commits nothing,
and deletes the files the failed operation wrote; once space is back the lakehouse works as before.

Two kinds of test: a real full disk (a small tmpfs holding an embedded lakehouse, root only), and faults injected at
each step on both backends (the Parquet writer, the opening of each kind of file, each SQL statement of a commit and
its COMMIT) raising what a full disk raises: ENOSPC, SQLite's "database or disk is full", PostgreSQL's DiskFull.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.io.pyarrow import PyArrowFile
from sqlalchemy import MetaData, select

from dagster_lakehouse.cli import main
from dagster_lakehouse.lakehouse import Lakehouse
from dagster_lakehouse.lakehouse.errors import StorageFull
from dagster_lakehouse.lakehouse.gc import list_warehouse
from dagster_lakehouse.lakehouse.storage_full import is_storage_full

FAST = 20.0
"""Seconds a failure for lack of space may take (the default `commit_timeout` is 300)."""

ROWS = pl.DataFrame({"id": [1, 2, 3], "day": ["2024-01-01", "2024-01-01", "2024-01-02"], "v": [1.0, 2.0, 3.0]})
MORE = pl.DataFrame({"id": [4, 5], "day": ["2024-01-03", "2024-01-03"], "v": [4.0, 5.0]})
LATER = pl.DataFrame({"id": [6], "day": ["2024-01-04"], "v": [6.0]})


def state(lh: Lakehouse) -> tuple[str, frozenset[str]]:
    """A hash of every row of every table of the catalog database, and the set of warehouse files."""
    digest = hashlib.sha256()
    metadata = MetaData()
    metadata.reflect(lh.engine)
    with lh.engine.connect() as conn:
        for name in sorted(metadata.tables):
            rows = sorted(repr(tuple(r)) for r in conn.execute(select(metadata.tables[name])))
            digest.update(f"{name}:{rows}".encode())
    files = frozenset(uri for uri, _ in list_warehouse(lh.config.properties, lh.config.warehouse))
    return digest.hexdigest(), files


def seeded(lh: Lakehouse) -> None:
    """`t.trips` and `t.other` on main, branch `dev` with rows main lacks, and later appends on main: merging dev
    replays both tables (planned on two threads)."""
    for table in ("t.trips", "t.other"):
        lh.write(table, ROWS, branch="main", allow_main=True)
    lh.create_branch("dev")
    for table in ("t.trips", "t.other"):
        lh.write(table, MORE, branch="dev", mode="append")
        lh.write(table, LATER, branch="main", mode="append", allow_main=True)


def contents(lh: Lakehouse, ref: str) -> list[tuple]:
    return sorted(lh.read("t.trips", ref=ref).iter_rows())


OPERATIONS: dict[str, tuple[Callable[[Lakehouse], Any], tuple[str, ...]]] = {
    "write": (lambda lh: lh.write("t.trips", MORE, branch="dev"), ("t.trips", "dev")),
    "append": (lambda lh: lh.write("t.trips", MORE, branch="dev", mode="append"), ("t.trips", "dev")),
    "new-table": (lambda lh: lh.write("t.fresh", MORE, branch="dev", partition_by=["day"]), ("t.fresh", "dev")),
    "stream": (
        lambda lh: lh.write("t.trips", pa.RecordBatchReader.from_batches(MORE.to_arrow().schema, MORE.to_arrow().to_batches()),
                            branch="dev", where="day = '2024-01-03'"),
        ("t.trips", "dev"),
    ),
    "merge": (lambda lh: lh.merge("dev"), ("dev", "main")),
    "create_branch": (lambda lh: lh.create_branch("feature"), ("feature",)),
    "tag": (lambda lh: lh.tag("v1", "dev"), ("v1",)),
}


def expect_full(lh: Lakehouse, operation: str) -> StorageFull:
    """Run `operation`: it must raise `StorageFull` naming its table/refs, within `FAST` seconds."""
    run, names = OPERATIONS[operation]
    started = time.monotonic()
    with pytest.raises(StorageFull) as caught:
        run(lh)
    assert time.monotonic() - started < FAST
    message = str(caught.value)
    for name in names:
        assert f"'{name}'" in message, message
    assert "out of space" in message and "Free space" in message
    return caught.value


def assert_recovers(lh: Lakehouse, operation: str, before: tuple[str, frozenset[str]]) -> None:
    """Nothing half-done (catalog rows and warehouse files as before), and the operation now succeeds."""
    assert state(lh) == before
    run, _ = OPERATIONS[operation]
    run(lh)
    if operation == "merge":
        assert contents(lh, "main") == sorted(pl.concat([ROWS, MORE, LATER]).iter_rows())
    assert lh.gc(older_than=timedelta(0), force=True) == []


# ----- faults injected on both backends --------------------------------------------------------------------------


def _disk_full() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device")


@pytest.fixture
def lh(lakehouse: Lakehouse) -> Lakehouse:
    seeded(lakehouse)
    return lakehouse


FILE_KINDS = {
    "data": re.compile(r"\.parquet$"),
    "manifest": re.compile(r"/metadata/(?!snap-)[^/]*-m\d+\.avro$"),
    "manifest-list": re.compile(r"/metadata/snap-[^/]*\.avro$"),
    "metadata": re.compile(r"\.metadata\.json$"),
}


@pytest.mark.parametrize("kind", sorted(FILE_KINDS))
@pytest.mark.parametrize("operation", ["write", "append", "new-table", "stream", "merge"])
def test_full_disk_opening_a_file(lh: Lakehouse, monkeypatch: pytest.MonkeyPatch, operation: str, kind: str) -> None:
    """A file of `kind` cannot be created (ENOSPC): StorageFull at once, the files already written deleted."""
    if operation == "merge" and kind == "data":
        pytest.skip("a replayed append adds the source's data files by reference: a merge writes no data file here")
    before = state(lh)
    create = PyArrowFile.create
    hits: list[str] = []

    def full_create(self: PyArrowFile, overwrite: bool = False) -> Any:
        if FILE_KINDS[kind].search(self.location):
            hits.append(self.location)
            raise _disk_full()
        return create(self, overwrite)

    monkeypatch.setattr(PyArrowFile, "create", full_create)
    error = expect_full(lh, operation)
    assert hits, f"no {kind} file was opened"
    assert "warehouse" in error.full
    monkeypatch.undo()
    assert_recovers(lh, operation, before)


@pytest.mark.parametrize("operation", ["write", "new-table", "stream"])
def test_full_disk_inside_the_parquet_writer(lh: Lakehouse, monkeypatch: pytest.MonkeyPatch, operation: str) -> None:
    """The disk fills while a data file is being written: the partial file is deleted with the rest."""
    before = state(lh)
    opened: list[str] = []
    create = PyArrowFile.create

    def noting_create(self: PyArrowFile, overwrite: bool = False) -> Any:
        if self.location.endswith(".parquet"):
            opened.append(self.location)
        return create(self, overwrite)

    def full_write(self: pq.ParquetWriter, *args: Any, **kwargs: Any) -> None:
        raise _disk_full()

    monkeypatch.setattr(PyArrowFile, "create", noting_create)
    monkeypatch.setattr(pq.ParquetWriter, "write_table", full_write)
    monkeypatch.setattr(pq.ParquetWriter, "write_batch", full_write)
    expect_full(lh, operation)
    assert opened, "no data file was begun"
    monkeypatch.undo()
    assert state(lh) == before  # the partial data file is gone
    assert_recovers(lh, operation, before)


def _driver_full_error(lh: Lakehouse) -> BaseException:
    if lh.engine.dialect.name == "sqlite":
        error = sqlite3.OperationalError("database or disk is full")
        error.sqlite_errorcode = 13  # type: ignore[attr-defined]  # SQLITE_FULL, as sqlite3 sets it
        return error
    import psycopg

    return psycopg.errors.DiskFull('could not extend file "base/16384/16400": No space left on device')


def _fail_statements(lh: Lakehouse, monkeypatch: pytest.MonkeyPatch, pattern: str) -> list[str]:
    """Make the catalog database report itself full on each statement matching `pattern` ('COMMIT': the commit)."""
    dialect = lh.engine.dialect
    seen: list[str] = []
    if pattern == "COMMIT":
        do_commit = dialect.do_commit

        def full_commit(dbapi_connection: Any) -> None:
            seen.append("COMMIT")
            raise _driver_full_error(lh)

        monkeypatch.setattr(dialect, "do_commit", full_commit)
        del do_commit
        return seen
    matcher = re.compile(pattern, re.IGNORECASE)
    for method in ("do_execute", "do_execute_no_params", "do_executemany"):
        original = getattr(dialect, method)

        def failing(cursor: Any, statement: str, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            if matcher.search(" ".join(statement.split())):
                seen.append(statement)
                raise _driver_full_error(lh)
            return _original(cursor, statement, *args, **kwargs)

        monkeypatch.setattr(dialect, method, failing)
    return seen


COMMIT_STATEMENTS = {
    "lease": r"^INSERT INTO lakehouse_write_leases",
    "pointer": r"^UPDATE iceberg_tables",
    "log": r"^INSERT INTO lakehouse_commits",
    "commit": "COMMIT",
}


@pytest.mark.parametrize("step", sorted(COMMIT_STATEMENTS))
@pytest.mark.parametrize("operation", ["write", "stream", "merge"])
def test_full_catalog_database_in_a_commit(lh: Lakehouse, monkeypatch: pytest.MonkeyPatch, operation: str, step: str) -> None:
    """The catalog cannot grow at `step` of the commit: StorageFull at once (no retries as a race), nothing committed,
    the Parquet, manifest and metadata files the commit wrote deleted."""
    before = state(lh)
    seen = _fail_statements(lh, monkeypatch, COMMIT_STATEMENTS[step])
    error = expect_full(lh, operation)
    assert seen and len(seen) <= 2, seen  # not retried as a lost race
    assert "catalog database" in error.full
    assert is_storage_full(error.__cause__)
    monkeypatch.undo()
    assert_recovers(lh, operation, before)


REF_STATEMENTS = {
    "pointers": r"^INSERT INTO iceberg_tables",
    "ref": r"^INSERT INTO lakehouse_refs",
    "log": r"^INSERT INTO lakehouse_commits",
    "commit": "COMMIT",
}


@pytest.mark.parametrize("step", sorted(REF_STATEMENTS))
@pytest.mark.parametrize("operation", ["create_branch", "tag"])
def test_full_catalog_database_creating_a_ref(lh: Lakehouse, monkeypatch: pytest.MonkeyPatch, operation: str, step: str) -> None:
    """Branch and tag creation: StorageFull naming the ref, not a raw SQLAlchemy error; no ref half-made."""
    before = state(lh)
    seen = _fail_statements(lh, monkeypatch, REF_STATEMENTS[step])
    expect_full(lh, operation)
    assert seen
    monkeypatch.undo()
    assert_recovers(lh, operation, before)


def test_cli_reports_storage_full(local_backend: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`lakehouse import` on a full disk: exit code 1, a message saying what is full and what to do, no traceback."""
    root = tmp_path / "lh"
    source = tmp_path / "rows.parquet"
    ROWS.write_parquet(source)
    assert main(["--path", str(root), "branch", "create", "dev"]) == 0
    create = PyArrowFile.create

    def full_create(self: PyArrowFile, overwrite: bool = False) -> Any:
        if self.location.endswith(".metadata.json"):
            raise _disk_full()
        return create(self, overwrite)

    monkeypatch.setattr(PyArrowFile, "create", full_create)
    capsys.readouterr()
    assert main(["--path", str(root), "import", str(source), "t.trips", "--branch", "dev"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: table 't.trips' on branch 'dev': the warehouse") and "out of space" in err
    assert "Free space" in err and "Traceback" not in err
    monkeypatch.undo()
    with Lakehouse(path=root) as lh:
        assert list_warehouse(lh.config.properties, lh.config.warehouse) == []
    assert main(["--path", str(root), "import", str(source), "t.trips", "--branch", "dev"]) == 0


# ----- a real full disk ------------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs mounted for this test (root only), unmounted afterwards whatever happens."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip() or done.returncode}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(disk: Path, leave: int = 0) -> Path:
    """Fill `disk` with one file, to the last byte but `leave`; returns it (delete it to free the space)."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as out:
        for size in (1 << 16, 1 << 12, 1 << 9, 1):
            try:
                while True:
                    out.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        out.truncate(max(0, out.tell() - leave))
    return filler


@pytest.mark.parametrize("operation", ["write", "stream", "merge", "create_branch", "tag", "lazy"])
def test_real_full_disk(small_disk: Path, operation: str) -> None:
    """An embedded lakehouse on a tmpfs filled to the last byte: the operation fails with StorageFull naming its
    table or ref within seconds; after the space is freed every catalog row and warehouse file is as before, and the
    operation succeeds."""
    OPERATIONS["lazy"] = (lambda lh: lh.write("t.trips", MORE.lazy(), branch="dev", mode="append"), ("t.trips", "dev"))
    lh = Lakehouse.local(small_disk / "lh")
    try:
        seeded(lh)
        before = state(lh)
        filler = fill(small_disk)
        expect_full(lh, operation)
        filler.unlink()
        assert_recovers(lh, operation, before)
    finally:
        lh.close()
        OPERATIONS.pop("lazy", None)


BIG = pl.DataFrame({"id": range(200_000), "day": "2024-01-05"}).with_columns(v=pl.col("id").hash().cast(pl.Float64))
"""About 3 MB of Parquet: more than the space left, so the disk fills while a data file is being written."""


@pytest.mark.parametrize(
    "how",
    [
        "in-memory",
        "lazy",
        "reader",
    ],
)
def test_real_full_disk_mid_data_file(small_disk: Path, how: str) -> None:
    """Room for the catalog's lease but not the data: the Parquet writer (PyIceberg's, Polars' sink, or the chunked
    stream) hits ENOSPC; StorageFull names the table and branch and the warehouse, the partial file is deleted at once
    (the space is free again without gc), and the catalog is as before."""
    data: Any = {"in-memory": BIG, "lazy": BIG.lazy(), "reader": BIG.to_arrow().to_reader()}[how]
    lh = Lakehouse.local(small_disk / "lh")
    try:
        seeded(lh)
        before = state(lh)
        filler = fill(small_disk, leave=512 * 1024)
        free = os.statvfs(small_disk).f_bavail
        started = time.monotonic()
        with pytest.raises(StorageFull) as caught:
            lh.write("t.trips", data, branch="dev", mode="append")
        assert time.monotonic() - started < FAST
        message = str(caught.value)
        assert "table 't.trips' on branch 'dev'" in message and "warehouse" in caught.value.full, message
        assert os.statvfs(small_disk).f_bavail >= free - 8  # what it wrote is gone (a few blocks of WAL may stay)
        filler.unlink()
        assert state(lh) == before
        lh.write("t.trips", MORE, branch="dev", mode="append")
        assert len(lh.read("t.trips", ref="dev")) == len(ROWS) + 2 * len(MORE)
    finally:
        lh.close()
