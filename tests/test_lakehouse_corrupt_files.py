"""Damaged and missing table files (issue 24, item 6): reads, writes and merges that meet one raise
`CorruptTableFile` (`MissingTableFile` for a file that is gone) naming table, ref and file, with the reader's error
chained, and change nothing; other tables and branches keep working; `gc` reports what it met (API and CLI), keeps
every file of a table whose metadata did not read, and collects the rest. On both backends: on S3 a file is damaged
by overwriting its object on the moto server."""

# ruff: noqa: F811  (the fixtures imported from test_lakehouse_bad_input are requested by their names as parameters)

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import polars as pl
import pytest
from test_lakehouse_bad_input import unchanged  # noqa: F401  (fixture: hash of catalog rows and warehouse listing)

from dagster_lakehouse.cli import main
from dagster_lakehouse.lakehouse import Lakehouse
from dagster_lakehouse.lakehouse.errors import CorruptTableFile, MissingTableFile
from dagster_lakehouse.lakehouse.gc import list_warehouse
from dagster_lakehouse.lakehouse.read_cache import cache

DAY_A = pl.DataFrame({"day": ["a", "a"], "v": [1, 2]})
DAY_B = pl.DataFrame({"day": ["b"], "v": [3]})


class Store:
    """Reads and overwrites one warehouse file, on the local folder or on the moto S3 server."""

    def __init__(self, backend: Any, request: pytest.FixtureRequest):
        self.s3 = request.getfixturevalue("moto_server").client("s3") if backend.name == "pg_s3" else None

    def get(self, uri: str) -> bytes:
        if self.s3 is None:
            return Path(urlparse(uri).path).read_bytes()
        parsed = urlparse(uri)
        return self.s3.get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))["Body"].read()

    def put(self, uri: str, data: bytes) -> None:
        if self.s3 is None:
            Path(urlparse(uri).path).write_bytes(data)
        else:
            parsed = urlparse(uri)
            self.s3.put_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"), Body=data)

    def delete(self, uri: str) -> None:
        if self.s3 is None:
            Path(urlparse(uri).path).unlink()
        else:
            parsed = urlparse(uri)
            self.s3.delete_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))

    def damage(self, uri: str, how: str) -> None:
        """`truncate` to half, `footer` (the Parquet magic bytes), `garble` (an Avro file's header), or `delete`."""
        if how == "delete":
            self.delete(uri)
            return
        data = self.get(uri)
        damaged = {
            "truncate": data[: len(data) // 2],
            "footer": data[:-8] + b"XXXXXXXX",
            "garble": b"garbage" + data[40:],
        }
        self.put(uri, damaged[how])
        cache.clear()  # this process parsed it intact before; another process would read it fresh


@pytest.fixture
def store(backend: Any, request: pytest.FixtureRequest) -> Store:
    return Store(backend, request)


@pytest.fixture
def lh(lakehouse: Lakehouse) -> Lakehouse:
    """`main` holds c.t (day a, then day b appended, one data file each) and c.other; `dev` forked from it."""
    lakehouse.write("c.t", DAY_A, allow_main=True)
    lakehouse.write("c.t", DAY_B, allow_main=True, mode="append")
    lakehouse.write("c.other", pl.DataFrame({"x": [7]}), allow_main=True)
    lakehouse.create_branch("dev")
    return lakehouse


def data_file(lh: Lakehouse, day: str, ref: str = "main") -> str:
    """The data file of c.t on `ref` holding rows of `day`."""
    table = lh.table("c.t", ref)
    (path,) = [t.file.file_path for t in table.scan(row_filter=f"day == '{day}'").plan_files()]
    return path


def added_manifest(lh: Lakehouse, ref: str) -> str:
    """The manifest that the current snapshot of c.t on `ref` added."""
    table = lh.table("c.t", ref)
    snapshot = table.current_snapshot()
    assert snapshot is not None
    (path,) = [m.manifest_path for m in snapshot.manifests(table.io) if m.added_snapshot_id == snapshot.snapshot_id]
    return path


def files(lh: Lakehouse) -> set[str]:
    return {uri for uri, _ in list_warehouse(lh.config.properties, lh.config.warehouse)}


def named(caught: pytest.ExceptionInfo, ref: str, path: str, kind: str, error: type = CorruptTableFile) -> None:
    """The error names table c.t, `ref` and `path` (a `kind`), and chains the reader's own error."""
    exc = caught.value
    assert type(exc) is error, repr(exc)
    assert (exc.table, exc.ref, exc.path, exc.kind) == ("c.t", ref, path, kind)
    assert str(exc).startswith(f"table 'c.t' on '{ref}': its {kind} {path} ")
    assert exc.__cause__ is not None and not isinstance(exc.__cause__, CorruptTableFile)


def others_work(lh: Lakehouse, *, dev: bool = True) -> None:
    assert lh.read("c.other")["x"].to_list() == [7]
    lh.write("c.other", pl.DataFrame({"x": [8]}), branch="dev", mode="append")
    assert sorted(lh.read("c.other", ref="dev")["x"].to_list()) == [7, 8]
    if dev:
        assert sorted(lh.read("c.t", ref="dev")["v"].to_list()) == [1, 2, 3]


def garbage(lh: Lakehouse) -> None:
    """Files no ref reaches: a deleted branch's table."""
    lh.create_branch("junk")
    lh.write("j.junk", pl.DataFrame({"v": [1]}), branch="junk")
    lh.delete_branch("junk")


def collect(lh: Lakehouse) -> tuple[list[str], list]:
    """gc forced to 0 with the default history window: what it deleted (all of it j.junk's) and its problems."""
    before = files(lh)
    result = lh.gc(older_than=timedelta(0), force=True)
    assert result and all("/j/junk/" in uri for uri in result), result
    assert before - files(lh) == set(result)
    return list(result), result.problems


# ----- a truncated metadata file ---------------------------------------------------------------------------


def test_truncated_metadata_json(lh: Lakehouse, store: Store, unchanged) -> None:
    lh.write("c.t", DAY_B, branch="dev", mode="append")
    lh.write("c.t", pl.DataFrame({"day": ["d"], "v": [4]}), allow_main=True, mode="append")  # both sides changed c.t
    location = lh.table("c.t").metadata_location
    store.damage(location, "truncate")
    for run in (
        lambda: lh.read("c.t"),
        lambda: lh.scan("c.t"),
        lambda: lh.read_arrow("c.t", columns=["v"]),
        lambda: lh.table("c.t"),
        lambda: lh.write("c.t", DAY_B, allow_main=True, mode="append"),
        lambda: lh.write("c.t", DAY_A, allow_main=True, where="day = 'a'"),
        lambda: lh.merge("dev", "main"),
    ):
        with unchanged(), pytest.raises(CorruptTableFile) as caught:
            run()
        named(caught, "main", location, "metadata file")
        assert "ValidationError" in str(caught.value) and "reset the branch" in str(caught.value)
    assert sorted(lh.read("c.t", ref="dev")["v"].to_list()) == [1, 2, 3, 3]
    others_work(lh, dev=False)
    garbage(lh)
    deleted, problems = collect(lh)
    (problem,) = problems
    assert (problem.table, problem.refs, problem.path, problem.kind) == ("c.t", ("main",), location, "metadata file")
    assert problem.kept_table and problem.problem.startswith("is unreadable (ValidationError")
    lh.reset("main", to="dev", allow_main=True)  # what the error suggests: move the table off the file
    assert sorted(lh.read("c.t")["v"].to_list()) == [1, 2, 3, 3]


# ----- a deleted data file, a damaged Parquet footer -----------------------------------------------------


@pytest.mark.parametrize("how", ["delete", "footer"])
def test_damaged_or_deleted_parquet_file(lh: Lakehouse, store: Store, unchanged, how: str) -> None:
    path = data_file(lh, "a")
    store.damage(path, how)
    error, kind = (MissingTableFile, "data file") if how == "delete" else (CorruptTableFile, "data file")
    for ref in ("main", "dev"):  # dev shares the file
        for run in (
            lambda ref=ref: lh.read("c.t", ref=ref),
            lambda ref=ref: lh.read_arrow("c.t", ref=ref),
            lambda ref=ref: lh.read("c.t", ref=ref, filter="day = 'a'"),
        ):
            with unchanged(), pytest.raises(error) as caught:
                run()
            named(caught, ref, path, kind, error)
    assert lh.read("c.t", filter="day = 'b'")["v"].to_list() == [3]  # files the read does not need still read
    lh.write("c.t", pl.DataFrame({"day": ["a"], "v": [9]}), branch="dev", mode="append")
    with unchanged(), pytest.raises(error) as caught:  # rewriting the damaged file's other rows needs them
        lh.write("c.t", pl.DataFrame({"day": ["a"], "v": [1]}), branch="dev", where="v = 1")
    named(caught, "dev", path, kind, error)
    if how == "delete":
        assert isinstance(caught.value, FileNotFoundError)
    others_work(lh, dev=False)
    garbage(lh)
    _, problems = collect(lh)
    if how == "delete":  # gc sees that the listing lacks a file a ref reaches; it never reads data files
        (problem,) = problems
        assert (problem.table, problem.refs, problem.kind, problem.problem) == (
            "c.t",
            ("dev", "main"),
            "data file",
            "is missing",
        )
        assert problem.path.endswith(urlparse(path).path) and not problem.kept_table
    else:
        assert problems == []
    lh.write("c.t", DAY_A, branch="dev")  # a full replace drops the damaged file without reading it
    assert lh.read("c.t", ref="dev")["v"].to_list() == [1, 2]


# ----- a damaged manifest, a damaged manifest list -------------------------------------------------------


def test_damaged_manifest(lh: Lakehouse, store: Store, unchanged) -> None:
    fork = lh.log("dev", limit=1)[0]
    lh.write("c.t", pl.DataFrame({"day": ["c"], "v": [4]}), branch="dev", mode="append")
    lh.write("c.t", pl.DataFrame({"day": ["d"], "v": [5]}), allow_main=True, mode="append")  # both changed c.t
    path = added_manifest(lh, "dev")
    store.damage(path, "garble")
    for run in (lambda: lh.read("c.t", ref="dev"), lambda: lh.merge("dev", "main"), lambda: lh.diff("main", "dev")):
        with unchanged(), pytest.raises(CorruptTableFile) as caught:
            run()
        named(caught, "dev", path, "manifest")
    assert sorted(lh.read("c.t")["v"].to_list()) == [1, 2, 3, 5]  # main does not reach it
    others_work(lh, dev=False)
    garbage(lh)
    _, problems = collect(lh)
    (problem,) = problems
    assert (problem.table, problem.refs, problem.path, problem.kind) == ("c.t", ("dev",), path, "manifest")
    assert problem.kept_table
    lh.reset("dev", to=f"dev@{fork.id}")  # what the error suggests: move the table off the file
    lh.merge("dev", "main")
    assert sorted(lh.read("c.t")["v"].to_list()) == [1, 2, 3, 5]


def test_damaged_manifest_list_refuses_an_append_and_leaves_no_file(lh: Lakehouse, store: Store, unchanged) -> None:
    snapshot = lh.table("c.t").current_snapshot()
    assert snapshot is not None
    store.damage(snapshot.manifest_list, "truncate")
    for run in (
        lambda: lh.read("c.t"),
        lambda: lh.write("c.t", DAY_B, allow_main=True, mode="append"),  # writes its files first, then meets it
        lambda: lh.write("c.t", pl.LazyFrame(DAY_B), allow_main=True, mode="append"),
    ):
        with unchanged(), pytest.raises(CorruptTableFile) as caught:
            run()
        named(caught, "main", snapshot.manifest_list, "manifest list")
    others_work(lh, dev=False)


# ----- the CLI's gc report -----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["local"], indirect=True)
def test_cli_gc_names_table_ref_and_file(
    lh: Lakehouse, store: Store, backend: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("LAKEHOUSE_CATALOG_URI", "LAKEHOUSE_WAREHOUSE", "LAKEHOUSE_PATH", "LAKEHOUSE_PROPERTIES"):
        monkeypatch.delenv(var, raising=False)
    location = lh.table("c.t").metadata_location
    store.damage(location, "truncate")
    garbage(lh)
    connection = ["--catalog-uri", backend.catalog_uri, "--warehouse", backend.warehouse]
    run: Callable[..., int] = lambda *argv: main([*argv, *connection])  # noqa: E731
    capsys.readouterr()
    assert run("gc", "--older-than-hours", "0", "--force", "--dry-run", "--json") == 1
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert report["files"] and all("/j/junk/" in uri for uri in report["files"])
    (problem,) = report["problems"]
    assert problem["table"] == "c.t" and problem["refs"] in (["dev"], ["main"]) and problem["file"] == location
    assert problem["kind"] == "metadata file" and problem["kept_table"] is True
    assert run("gc", "--older-than-hours", "0", "--force") == 1
    out, err = capsys.readouterr()
    assert (
        f"damaged: table 'c.t' on '{problem['refs'][0]}': metadata file {location} is unreadable (ValidationError"
        in out
    )
    assert "gc kept every file of the table" in out and "deleted " in out
    assert err.startswith("error: gc met 1 missing or unreadable file(s)") and "hint: restore" in err
    assert all("/j/junk/" not in uri for uri in files(lh))
