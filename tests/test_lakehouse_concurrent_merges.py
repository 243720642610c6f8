"""Two identical merges at once: the later one finds the work done and is a no-op, never a spurious conflict."""

from __future__ import annotations

import multiprocessing as mp

import polars as pl
import pytest
from test_lakehouse_concurrent_writes import race_at_staged

from dagster_lakehouse.lakehouse import Lakehouse


def seed(lh: Lakehouse) -> pl.DataFrame:
    """`dev` and `main` both append to c.events (a replay), `dev` alone changes c.users and creates c.new."""
    lh.write("c.events", pl.DataFrame({"id": [1, 2]}), branch="main", allow_main=True)
    lh.write("c.users", pl.DataFrame({"name": ["a"]}), branch="main", allow_main=True)
    lh.create_branch("dev")
    lh.write("c.events", pl.DataFrame({"id": [10, 11]}), branch="dev", mode="append")
    lh.write("c.users", pl.DataFrame({"name": ["a", "b"]}), branch="dev")
    lh.write("c.new", pl.DataFrame({"x": [1]}), branch="dev")
    lh.write("c.events", pl.DataFrame({"id": [20]}), branch="main", mode="append", allow_main=True)
    return pl.DataFrame({"id": [1, 2, 10, 11, 20]})


def _assert_merged_once(lh: Lakehouse, events: pl.DataFrame) -> None:
    assert sorted(lh.read("c.events", ref="main")["id"]) == events["id"].to_list()  # dev's rows once, not twice
    assert lh.read("c.users", ref="main")["name"].to_list() == ["a", "b"]
    assert lh.read("c.new", ref="main")["x"].to_list() == [1]
    merges = [c for c in lh.log("main") if c.kind == "merge"]
    assert len(merges) == 1 and sorted(merges[0].tables) == ["c.events", "c.new", "c.users"]


def test_a_merge_that_lost_the_race_to_the_same_merge_is_a_no_op(lakehouse, monkeypatch) -> None:
    events = seed(lakehouse)
    fired = race_at_staged(monkeypatch, lambda: lakehouse.merge("dev", into="main"))
    later = lakehouse.merge("dev", into="main")
    assert fired
    assert later.tables == [] and later.commit_id is None
    _assert_merged_once(lakehouse, events)
    assert lakehouse.merge("dev", into="main").tables == []


def _merge(catalog_uri: str, warehouse: str, properties: dict[str, str], start) -> str:
    start.wait()
    with Lakehouse(catalog_uri, warehouse, properties) as lh:
        result = lh.merge("dev", into="main")
    return ",".join(result.tables)


@pytest.mark.parametrize("attempt", range(3))  # the race is won differently each time: each must merge once
def test_two_processes_merging_dev_into_main_at_once(pg_s3_backend, attempt: int) -> None:
    b = pg_s3_backend
    with Lakehouse(b.catalog_uri, b.warehouse, dict(b.properties)) as lh:
        events = seed(lh)
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        start = manager.Barrier(2)
        with ctx.Pool(2) as pool:
            outcomes = pool.starmap(_merge, [(b.catalog_uri, b.warehouse, dict(b.properties), start)] * 2)
    assert sorted(outcomes) == ["", "c.events,c.new,c.users"]
    with Lakehouse(b.catalog_uri, b.warehouse, dict(b.properties)) as lh:
        _assert_merged_once(lh, events)
