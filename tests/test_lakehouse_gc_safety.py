"""Garbage collection beside commits in flight: it never takes a file committed metadata of any ref references,
nor one a write or merge in flight will commit, whatever `older_than` is; a grace period below the minimum needs
`force=True`."""

from __future__ import annotations

import itertools
import multiprocessing as mp
import queue
import random
import threading
import time
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import polars as pl
import pyarrow.parquet as pq
import pytest
from pyiceberg.io import load_file_io
from sqlalchemy import select
from test_lakehouse_concurrent_writes import race_at_staged

from dagster_lakehouse.lakehouse import Lakehouse, LakehouseError, RefNotFound, commits, gc
from dagster_lakehouse.lakehouse.commits import swap_pointer
from dagster_lakehouse.lakehouse.errors import UnsafeGC, WriteLeaseExpired
from dagster_lakehouse.lakehouse.gc import Marker, list_warehouse, read_catalog
from dagster_lakehouse.lakehouse.refs import write_leases_table

SKEW = timedelta(seconds=2)
"""The clock-skew margin in these tests: writers, `gc` and the store (local files, moto) share one clock, and S3
modification times have whole seconds. The default (minutes) would keep every file these short tests write."""

RACE_SECONDS = 8.0
"""How long the race runs per backend (plus a few seconds to start its processes and to check everything)."""


@pytest.fixture(autouse=True)
def small_skew(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gc, "CLOCK_SKEW", SKEW)


def files(lh: Lakehouse) -> set[str]:
    return {uri for uri, _ in list_warehouse(lh.config.properties, lh.config.warehouse)}


def missing_reachable(lh: Lakehouse) -> set[str]:
    """Files that some ref's metadata reaches but the warehouse no longer holds."""
    marker = Marker(lh.config.properties)
    marker.mark(read_catalog(lh.engine, exclusive=False))
    return marker.reached - {gc._key(uri) for uri in files(lh)}


def leases(lh: Lakehouse) -> list:
    with lh.engine.connect() as conn:
        return conn.execute(select(write_leases_table)).all()


def garbage(lh: Lakehouse, name: str = "tmp") -> None:
    """Files no ref reaches once the branch is deleted, aged past the skew margin."""
    lh.create_branch(name)
    lh.write("g.gone", pl.DataFrame({"x": [1]}), branch=name)
    lh.delete_branch(name)
    time.sleep(SKEW.total_seconds() + 1.1)


at_staged = race_at_staged  # run `other` once, after the next commit staged its files, before its transaction


# ----- the grace period ---------------------------------------------------------------------------------------


def test_a_grace_period_below_the_minimum_is_refused_unless_forced(local_backend) -> None:
    with Lakehouse(local_backend.catalog_uri, local_backend.warehouse) as lh:
        garbage(lh)
        too_small = gc.MIN_OLDER_THAN - timedelta(seconds=1)
        with pytest.raises(UnsafeGC, match=rf"gc of {lh.config.warehouse}: older_than=0:09:59 is below the minimum"):
            lh.gc(older_than=too_small)
        with pytest.raises(UnsafeGC, match="older_than must be 0 or more"):
            lh.gc(older_than=timedelta(seconds=-1), force=True)
        assert lh.gc(older_than=gc.MIN_OLDER_THAN) == []  # the minimum itself is allowed; the garbage is too young
        would = lh.gc(older_than=timedelta(0), dry_run=True)  # a dry run deletes nothing, so it needs no force
        assert would and all("/g/gone/" in uri for uri in would) and set(would) <= files(lh)
        assert lh.gc(older_than=timedelta(0), force=True) == would
        assert not set(would) & files(lh)


# ----- commits in flight ------------------------------------------------------------------------------------------


def test_gc_forced_to_zero_keeps_the_files_of_a_write_in_flight(lakehouse: Lakehouse, monkeypatch) -> None:
    lh = lakehouse
    lh.create_branch("dev")
    lh.write("w.t", pl.DataFrame({"x": [1]}), branch="dev")
    garbage(lh)
    collected: list[str] = []
    fired = at_staged(monkeypatch, lambda: collected.extend(lh.gc(older_than=timedelta(0), force=True)))
    result = lh.write("w.t", pl.DataFrame({"x": [2]}), branch="dev", mode="append")
    assert fired and collected and all("/g/gone/" in uri for uri in collected)
    assert result.attempts == 2  # the collection revoked its lease: it prepared again on the state after it
    assert sorted(lh.read("w.t", ref="dev")["x"]) == [1, 2]
    assert missing_reachable(lh) == set()
    assert leases(lh) == []


def test_a_merge_of_a_table_its_source_drops_meanwhile_does_not_publish_collected_files(lakehouse, monkeypatch) -> None:
    """Without revoking the merge's lease, it would point `dev` at the metadata the collection just deleted."""
    lh = lakehouse
    lh.create_branch("dev")
    lh.create_branch("feat", "dev")
    lh.write("m.only", pl.DataFrame({"x": [1, 2]}), branch="feat")
    time.sleep(SKEW.total_seconds() + 1.1)  # the source's files are older than the merge's lease

    def drop_and_collect() -> None:
        lh.drop_table("m.only", branch="feat")
        assert any("/m/only/" in uri for uri in lh.gc(older_than=timedelta(0), force=True, keep_history=timedelta(0)))

    fired = at_staged(monkeypatch, drop_and_collect)
    result = lh.merge("feat", "dev")
    assert fired and result.tables == []  # prepared again: the table is on neither side any more
    assert lh.tables("dev") == []
    assert missing_reachable(lh) == set()


def test_a_write_that_outlived_its_lease_is_refused_and_changes_nothing(lakehouse, monkeypatch) -> None:
    lh = lakehouse
    lh.create_branch("dev")
    lh.write("w.t", pl.DataFrame({"x": [1]}), branch="dev")
    before = lh.table("w.t", "dev").metadata_location
    monkeypatch.setattr(commits, "LEASE_TTL", 0.5)
    monkeypatch.setattr(gc, "CLOCK_SKEW", timedelta(0))
    collected: list[str] = []

    def expire_and_collect() -> None:
        time.sleep(0.6)
        collected.extend(lh.gc(older_than=timedelta(0), force=True))

    at_staged(monkeypatch, expire_and_collect)
    with pytest.raises(WriteLeaseExpired, match="table 'w.t' on branch 'dev': an attempt took longer than its 0.5s write lease"):
        lh.write("w.t", pl.DataFrame({"x": [2]}), branch="dev", mode="append")
    assert any(uri.endswith(".parquet") for uri in collected)  # the expired write's own files were fair game
    assert lh.table("w.t", "dev").metadata_location == before
    assert lh.read("w.t", ref="dev")["x"].to_list() == [1]
    assert missing_reachable(lh) == set() and leases(lh) == []


def test_a_commit_failing_for_good_drops_its_lease(lakehouse, monkeypatch) -> None:
    lh = lakehouse
    lh.create_branch("dev")
    monkeypatch.setenv("LAKEHOUSE_FAULT", "before-swap")
    with pytest.raises(LakehouseError, match="before-swap"):
        lh.write("w.t", pl.DataFrame({"x": [1]}), branch="dev")
    assert leases(lh) == []
    monkeypatch.delenv("LAKEHOUSE_FAULT")

    def crash(*args, **kwargs):
        raise RuntimeError("catalog went away")

    monkeypatch.setattr(commits, "swap_pointer", crash)
    with pytest.raises(RuntimeError, match="catalog went away"):
        lh.write("w.t", pl.DataFrame({"x": [2]}), branch="dev")
    assert leases(lh) == []
    monkeypatch.setattr(commits, "swap_pointer", swap_pointer)
    assert lh.gc(older_than=timedelta(0), force=True)  # what both failed writes staged is garbage at once
    assert lh.tables("dev") == []


def test_a_write_retried_after_a_storage_error_keeps_its_lease_for_the_files_it_reuses(local_backend, monkeypatch) -> None:
    """The retry reuses the Parquet files of the failed run: they stay protected because the lease (and the time it
    started) outlives the failure. The skew margin is only the 20 ms of the kernel's coarse file-time clock (a file
    written just after the lease began may carry a time a few ms before it), and the retry starts 200 ms after the
    files were written, so a lease begun anew by the retry would leave them unprotected and fail the test."""
    monkeypatch.setattr(gc, "CLOCK_SKEW", timedelta(milliseconds=20))
    lh = Lakehouse(local_backend.catalog_uri, local_backend.warehouse)
    lh.create_branch("dev")
    lh.write("w.t", pl.DataFrame({"x": [1]}), branch="dev")
    original, seen, collected = commits.checkpoint, [], []

    def hooked(step: str) -> None:
        if step == "staged" and len(seen) < 2:
            seen.append([(lease.id, lease.started_at) for lease in leases(lh)])
            if len(seen) == 1:
                time.sleep(0.2)
                raise ConnectionError("connection refused")  # transient: the caller runs the commit again
            time.sleep(0.05)
            collected.extend(lh.gc(older_than=timedelta(0), force=True))
        original(step)

    monkeypatch.setattr(commits, "checkpoint", hooked)
    result = lh.write("w.t", pl.DataFrame({"x": [2]}), branch="dev", mode="append")
    assert len(seen) == 2 and len(seen[0]) == 1 and seen[0] == seen[1]
    assert not any(uri.endswith(".parquet") for uri in collected)
    assert result.attempts == 2
    assert sorted(lh.read("w.t", ref="dev")["x"]) == [1, 2]
    assert missing_reachable(lh) == set() and leases(lh) == []
    lh.close()


# ----- the race -----------------------------------------------------------------------------------------------------


def _appender(lh: Lakehouse, committed: list[int], writer: int) -> Callable[[], None]:
    ids = itertools.count(writer * 1_000_000)

    def step() -> None:
        i = next(ids)
        lh.write("r.events", pl.DataFrame({"id": [i]}), branch="dev", mode="append")
        committed.append(i)

    return step


def _replacer(lh: Lakehouse, committed: list[int], _: int) -> Callable[[], None]:
    return lambda: lh.write("r.latest", pl.DataFrame({"v": [random.random()] * 3}), branch="dev")


def _brancher(lh: Lakehouse, merged: list[int], _: int) -> Callable[[], None]:
    """Fork, write (also a table created and dropped), tag every fourth, merge into `dev`; every other `feat-*`
    branch is deleted after its merge, the `_deleter` process deletes others at any moment (also mid-merge)."""
    numbers = itertools.count()

    def work(n: int, name: str) -> None:
        lh.create_branch(name, "dev")
        lh.write("r.side", pl.DataFrame({"id": [n, -n - 1]}), branch=name, mode="append")
        lh.write("r.scratch", pl.DataFrame({"x": [n]}), branch=name)
        lh.drop_table("r.scratch", branch=name)
        if n % 4 == 0:
            lh.tag(f"kept-{n}", name)
        lh.merge(name, "dev")
        merged.extend([n, -n - 1])

    def step() -> None:
        n = next(numbers)
        name = f"keep-{n}" if n % 3 == 0 else f"feat-{n}"
        try:
            work(n, name)
        except LakehouseError:
            if lh.has_branch(name):
                raise
            return  # the deleter took the branch midway
        if n % 2 and lh.has_branch(name):
            lh.delete_branch(name)

    return step


def _deleter(lh: Lakehouse, deleted: list[int], _: int) -> Callable[[], None]:
    def step() -> None:
        time.sleep(random.uniform(0.05, 0.3))
        candidates = [b for b in lh.branches() if b.startswith("feat-")]
        if candidates:
            lh.delete_branch(random.choice(candidates))

    return step


def _collector(lh: Lakehouse, runs: list[list[str]], _: int) -> Callable[[], None]:
    """Collections in a loop: forced to zero each time, at the minimum grace every third time."""
    counter = itertools.count()

    def step() -> None:
        if next(counter) % 3 == 0:
            lh.gc(older_than=gc.MIN_OLDER_THAN)
        runs.append(lh.gc(older_than=timedelta(0), force=True))

    return step


ROLES = {"append": _appender, "replace": _replacer, "branch": _brancher, "delete": _deleter, "collect": _collector}


def _race_group(backend: tuple[str, str, dict[str, str]], roles: list[tuple[str, int]], seconds: float, start, out) -> None:
    """One group of the race (a process, or a thread): a thread per role repeating its step until `seconds` after
    every group started; puts {role: (results, errors)} on `out`."""
    gc.CLOCK_SKEW = SKEW  # in a fresh process the fixture's patch is not there
    outcome: dict[str, tuple[list, list[str]]] = {f"{role}-{i}": ([], []) for role, i in roles}
    with Lakehouse(*backend) as lh:

        def run(role: str, index: int) -> None:
            results, errors = outcome[f"{role}-{index}"]
            step = ROLES[role](lh, results, index)
            while time.monotonic() < deadline and not errors:
                try:
                    step()
                except RefNotFound:
                    pass  # its branch was deleted by another process first
                except Exception:
                    errors.append(f"{role} {index}: {traceback.format_exc()}")

        threads = [threading.Thread(target=run, args=role) for role in roles]
        start.wait()
        deadline = time.monotonic() + seconds
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    out.put(outcome)


def race(lh: Lakehouse, seconds: float, *, processes: bool) -> dict[str, Any]:
    """Writers, branch work and a collector in a loop, in three groups (processes, or threads), all for `seconds`."""
    groups = [[("append", 0), ("append", 1), ("replace", 0)], [("branch", 0), ("delete", 0)], [("collect", 0)]]
    backend = (lh.config.catalog_uri, lh.config.warehouse, dict(lh.config.properties))
    ctx: Any = mp.get_context("spawn") if processes else None
    start = ctx.Barrier(len(groups)) if ctx else threading.Barrier(len(groups))
    out = ctx.Queue() if ctx else queue.Queue()
    runners = [
        (ctx.Process if ctx else threading.Thread)(target=_race_group, args=(backend, roles, seconds, start, out))
        for roles in groups
    ]
    for runner in runners:
        runner.start()
    outcome: dict[str, tuple[list, list[str]]] = {}
    for _ in runners:
        outcome.update(out.get(timeout=seconds + 120))
    for runner in runners:
        runner.join(timeout=30)
    errors = [e for _, errs in outcome.values() for e in errs]
    assert not errors, errors[0]
    results = {role: found for role, (found, _) in outcome.items()}
    return {"events": results["append-0"] + results["append-1"], "merged": results["branch-0"], "runs": results["collect-0"]}


def read_everything(lh: Lakehouse) -> int:
    """Every table of every ref reads in full; at every snapshot its metadata keeps (time travel), planning the scan
    finds files holding all of the snapshot's rows, and each of those data files reads in full. Returns the snapshots.

    Each distinct data file is read once, not once per snapshot holding it: that is what keeps this check fast."""
    checked: set[tuple[str, int]] = set()
    data_files: dict[str, int] = {}
    for ref in [*lh.branches(), *lh.tags()]:
        for name in lh.tables(ref):
            table = lh.table(name, ref)
            current = table.current_snapshot()
            assert lh.read(name, ref=ref).height == (int(current.summary["total-records"]) if current else 0)
            for snapshot in table.snapshots():
                if (table.metadata.table_uuid.hex, snapshot.snapshot_id) in checked:
                    continue
                tasks = list(table.scan(snapshot_id=snapshot.snapshot_id).plan_files())
                assert not any(task.delete_files for task in tasks)
                assert sum(task.file.record_count for task in tasks) == int(snapshot.summary["total-records"])
                data_files.update((task.file.file_path, task.file.record_count) for task in tasks)
                checked.add((table.metadata.table_uuid.hex, snapshot.snapshot_id))
    io = load_file_io(lh.config.properties, lh.config.warehouse)
    for path, rows in data_files.items():
        with io.new_input(path).open() as stream:
            assert pq.read_table(stream).num_rows == rows, path
    return len(checked)


def test_gc_in_a_loop_beside_writers_merges_and_branch_deletions_loses_nothing(lakehouse: Lakehouse) -> None:
    """Acceptance: collections at the minimum grace and forced to zero, in a loop for a bounded time, beside writers
    appending and replacing, and branches forked, written, tagged, merged and deleted (also mid-merge).

    Collections at the minimum grace delete nothing in so short a race (every file is younger); the forced ones take
    what deleted branches, dropped tables and lost races left, while commits are in flight."""
    lh = lakehouse
    lh.create_branch("dev")
    lh.write("r.events", pl.DataFrame({"id": [-1]}), branch="dev")
    lh.create_branch("old", "dev")  # garbage beside the files of `dev`'s tables, old enough once the race is running
    for i in range(3):
        lh.write("r.events", pl.DataFrame({"id": [i]}), branch="old", mode="append")
    lh.delete_branch("old")
    time.sleep(SKEW.total_seconds() + 1.1)  # older than any lease the race takes, minus the skew margin: collectable
    # moto serves S3 from this process, where CPU-bound threads would starve it: on S3 the race runs in processes
    outcome = race(lh, RACE_SECONDS, processes=lh.config.warehouse.startswith("s3://"))

    runs = outcome["runs"]
    assert len(runs) >= 3 and sum(map(len, runs)) > 0, "the collections deleted nothing: the race proved nothing"
    assert outcome["events"] and outcome["merged"]
    assert sorted(lh.read("r.events", ref="dev")["id"]) == sorted([-1, *outcome["events"]])
    assert sorted(lh.read("r.side", ref="dev")["id"]) == sorted(outcome["merged"])
    assert read_everything(lh) > len(outcome["events"])
    lh.gc(older_than=timedelta(0), force=True)  # walks every ref's metadata again: a missing one would raise
    assert missing_reachable(lh) == set()
    assert leases(lh) == []
