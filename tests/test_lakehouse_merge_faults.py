"""Faults during a replaying merge: an exception at each commit step, or SIGKILL of the merging process, leaves
`main` wholly as it was (or, once the pointer transaction committed, wholly merged), and `gc()` reclaims the debris."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import timedelta

import polars as pl
import pytest
from sqlalchemy import select

from dagster_lakehouse.lakehouse import Lakehouse
from dagster_lakehouse.lakehouse.catalog import IcebergTables
from dagster_lakehouse.lakehouse.commits import InjectedFault

STEPS = ["staged", "before-swap", "swapping", "before-commit"]


def prepare(lh: Lakehouse) -> dict[str, list[tuple]]:
    """`main` and branch `b` both changed `t.trips` (a replay) and `b` alone changed `t.zones` (a pointer switch)."""
    days = [f"2024-03-0{i}" for i in range(1, 5)]
    lh.write("t.trips", pl.DataFrame({"day": [d for d in days for _ in range(2)], "v": list(range(8))}), branch="main", allow_main=True)
    lh.write("t.zones", pl.DataFrame({"id": [1]}), branch="main", allow_main=True)
    lh.create_branch("a")
    lh.create_branch("b")
    lh.write("t.trips", pl.DataFrame({"day": [days[0]], "v": [100]}), branch="a", where=f"day = '{days[0]}'")
    lh.merge("a")
    lh.write("t.trips", pl.DataFrame({"day": [days[1]], "v": [200]}), branch="b", where=f"day = '{days[1]}'")
    lh.write("t.zones", pl.DataFrame({"id": [2]}), branch="b", mode="append")
    return contents(lh)


def contents(lh: Lakehouse) -> dict[str, list[tuple]]:
    return {t: sorted(lh.read(t).iter_rows()) for t in lh.tables("main")}


def main_rows(lh: Lakehouse) -> list[tuple]:
    with lh.engine.connect() as conn:
        query = select(IcebergTables.table_name, IcebergTables.metadata_location).where(IcebergTables.catalog_name == "main")
        return sorted(conn.execute(query))


def merged_contents(before: dict[str, list[tuple]]) -> dict[str, list[tuple]]:
    trips = [r for r in before["t.trips"] if r[0] != "2024-03-02"] + [("2024-03-02", 200)]
    return {"t.trips": sorted(trips), "t.zones": sorted(before["t.zones"] + [(2,)])}


@pytest.mark.parametrize("step", STEPS)
def test_an_exception_at_each_step_of_a_replaying_merge_changes_nothing(lakehouse: Lakehouse, step: str, monkeypatch) -> None:
    before = prepare(lakehouse)
    pointers, log = main_rows(lakehouse), lakehouse.log("main")
    monkeypatch.setenv("LAKEHOUSE_FAULT", step)
    with pytest.raises(InjectedFault, match=step):
        lakehouse.merge("b")
    monkeypatch.delenv("LAKEHOUSE_FAULT")
    assert main_rows(lakehouse) == pointers
    assert lakehouse.log("main") == log
    assert contents(lakehouse) == before
    lakehouse.gc(older_than=timedelta(0), force=True)  # the staged metadata files of the failed merge are collected
    assert contents(lakehouse) == before
    result = lakehouse.merge("b")
    assert result.replayed == ["t.trips"] and result.tables == ["t.trips", "t.zones"]
    assert contents(lakehouse) == merged_contents(before)


def test_gc_collects_the_metadata_files_a_failed_merge_left(local_backend, monkeypatch) -> None:
    with Lakehouse(local_backend.catalog_uri, local_backend.warehouse, local_backend.properties) as lh:
        prepare(lh)
        lh.gc(older_than=timedelta(0), force=True)
        monkeypatch.setenv("LAKEHOUSE_FAULT", "before-swap")
        with pytest.raises(InjectedFault):
            lh.merge("b")
        monkeypatch.delenv("LAKEHOUSE_FAULT")
        collected = lh.gc(older_than=timedelta(0), force=True)
        assert any(uri.endswith(".metadata.json") and "/t/trips/" in uri for uri in collected)


MERGE_SCRIPT = """
import sys
from dagster_lakehouse.lakehouse import Lakehouse
import json
b = json.loads(sys.argv[1])
Lakehouse(b["catalog_uri"], b["warehouse"], b["properties"]).merge("b")
"""


@pytest.mark.parametrize("step", [*STEPS, "committed"])
def test_sigkill_of_the_merging_process_leaves_main_wholly_old_or_wholly_new(backend, step: str) -> None:
    import json

    with Lakehouse(backend.catalog_uri, backend.warehouse, backend.properties) as lh:
        before = prepare(lh)
        pointers, log = main_rows(lh), lh.log("main")
    env = {**os.environ, "LAKEHOUSE_FAULT": f"{step}:kill"}
    config = json.dumps({"catalog_uri": backend.catalog_uri, "warehouse": backend.warehouse, "properties": backend.properties})
    process = subprocess.run([sys.executable, "-c", MERGE_SCRIPT, config], env=env, capture_output=True, timeout=300)
    assert process.returncode == -signal.SIGKILL, process.stderr.decode()[-2000:]
    with Lakehouse(backend.catalog_uri, backend.warehouse, backend.properties) as lh:
        if step == "committed":
            assert contents(lh) == merged_contents(before)
            assert lh.log("main")[1:] == log and lh.log("main")[0].kind == "merge"
            assert lh.merge("b").tables == []
        else:
            assert main_rows(lh) == pointers and contents(lh) == before
            assert lh.log("main") == log
            lh.merge("b")
        assert contents(lh) == merged_contents(before)
