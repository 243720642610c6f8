"""Optimistic concurrency under real contention, and branch-aware garbage collection."""

from __future__ import annotations

import multiprocessing as mp
from datetime import timedelta

import polars as pl
import pytest
from pyiceberg.io import load_file_io

from dagster_lakehouse.lakehouse import Lakehouse
from dagster_lakehouse.lakehouse.gc import list_warehouse

WRITERS, APPENDS = 4, 20


def _append_many(catalog_uri: str, warehouse: str, properties: dict[str, str], writer: int, start) -> int:
    start.wait()
    attempts = 0
    with Lakehouse(catalog_uri, warehouse, properties) as lh:
        for i in range(APPENDS):
            result = lh.write("c.events", pl.DataFrame({"writer": [writer], "i": [i]}), branch="dev", mode="append")
            attempts += result.attempts
    return attempts


def test_concurrent_appends_from_four_processes_all_land(backend) -> None:
    with Lakehouse(backend.catalog_uri, backend.warehouse, backend.properties) as lh:
        lh.create_branch("dev")
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        start = manager.Barrier(WRITERS)
        with ctx.Pool(WRITERS) as pool:
            args = [(backend.catalog_uri, backend.warehouse, backend.properties, w, start) for w in range(WRITERS)]
            attempts = pool.starmap(_append_many, args)
    with Lakehouse(backend.catalog_uri, backend.warehouse, backend.properties) as lh:
        rows = lh.read("c.events", ref="dev")
        assert rows.height == WRITERS * APPENDS
        assert rows.unique().height == WRITERS * APPENDS
        assert len(lh.table("c.events", "dev").snapshots()) == WRITERS * APPENDS
        assert len([c for c in lh.log("dev") if c.kind == "write"]) == WRITERS * APPENDS
    assert sum(attempts) > WRITERS * APPENDS, "the writers never raced: the test proved nothing"


def _files(lh: Lakehouse) -> set[str]:
    return {uri for uri, _ in list_warehouse(lh.config.properties, lh.config.warehouse)}


def _data_files(lh: Lakehouse, table: str, ref: str) -> set[str]:
    return {task.file.file_path for task in lh.table(table, ref).scan().plan_files()}


def test_gc_keeps_files_of_a_branch_when_another_branch_drops_the_table(lakehouse: Lakehouse) -> None:
    lh = lakehouse
    lh.create_branch("dev")
    lh.write("g.kept", pl.DataFrame({"x": [1, 2]}), branch="dev")
    lh.merge("dev")
    lh.create_branch("cleanup")
    lh.drop_table("g.kept", branch="cleanup")
    lh.merge("cleanup")  # main drops the table, dev still has it
    kept = _data_files(lh, "g.kept", "dev")
    assert lh.gc(older_than=timedelta(0), force=True) == []
    assert kept <= _files(lh)
    assert lh.read("g.kept", ref="dev")["x"].to_list() == [1, 2]


def test_gc_removes_what_no_branch_or_tag_reaches(lakehouse: Lakehouse) -> None:
    lh = lakehouse
    lh.create_branch("tmp")
    lh.write("g.tagged", pl.DataFrame({"x": [2]}), branch="tmp")
    lh.tag("keep-me", "tmp")
    lh.write("g.gone", pl.DataFrame({"x": [1]}), branch="tmp")
    gone = _data_files(lh, "g.gone", "tmp")
    tagged = _data_files(lh, "g.tagged", "tmp")
    lh.delete_branch("tmp")

    stray = f"{lh.config.warehouse.rstrip('/')}/README.txt"  # not a table file: gc must never touch it
    with load_file_io(lh.config.properties, stray).new_output(stray).create() as out:
        out.write(b"shared prefix")
    assert lh.gc() == []  # fresh files are younger than the default grace period
    would = lh.gc(older_than=timedelta(0), dry_run=True)
    assert gone <= set(would) and gone <= _files(lh)
    deleted = lh.gc(older_than=timedelta(0), force=True)
    assert set(deleted) == set(would)
    assert not gone & _files(lh)
    assert tagged <= _files(lh)
    assert lh.read("g.tagged", ref="keep-me")["x"].to_list() == [2]
    assert all("/g/gone/" in uri for uri in deleted)
    assert stray in _files(lh)


@pytest.mark.parametrize("mode", ["replace", "append"])
def test_write_failing_at_commit_leaves_table_unchanged(lakehouse: Lakehouse, mode: str, monkeypatch) -> None:
    from dagster_lakehouse.lakehouse import commits

    lakehouse.create_branch("dev")
    lakehouse.write("f.t", pl.DataFrame({"x": [1]}), branch="dev")
    before = lakehouse.table("f.t", "dev").metadata_location

    def crash(*args, **kwargs):
        raise RuntimeError("catalog went away")

    monkeypatch.setattr(commits, "swap_pointer", crash)
    with pytest.raises(RuntimeError, match="catalog went away"):
        lakehouse.write("f.t", pl.DataFrame({"x": [2, 3]}), branch="dev", mode=mode)
    monkeypatch.undo()
    assert lakehouse.table("f.t", "dev").metadata_location == before
    assert lakehouse.read("f.t", ref="dev")["x"].to_list() == [1]


def test_untyped_column_is_refused_before_anything_is_written(lakehouse: Lakehouse) -> None:
    lakehouse.create_branch("dev")
    with pytest.raises(TypeError, match="table 'f.t' on branch 'dev': column 'x' holds only nulls"):
        lakehouse.write("f.t", pl.DataFrame({"x": [None]}), branch="dev")
    assert lakehouse.tables("dev") == []


def _open_and_branch(catalog_uri: str, warehouse: str, properties: dict[str, str], start) -> list[str]:
    start.wait()
    with Lakehouse(catalog_uri, warehouse, properties) as lh:
        lh.create_branch("shared", exist_ok=True)
        return lh.branches()


def test_processes_racing_on_a_fresh_catalog_and_one_branch_all_succeed(backend) -> None:
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        start = manager.Barrier(WRITERS)
        with ctx.Pool(WRITERS) as pool:
            args = [(backend.catalog_uri, backend.warehouse, backend.properties, start)] * WRITERS
            results = pool.starmap(_open_and_branch, args)
    assert results == [["main", "shared"]] * WRITERS
