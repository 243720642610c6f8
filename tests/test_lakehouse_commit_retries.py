"""A commit that loses a race prepares again on fresh metadata and reuses the Parquet files it already wrote; on
PostgreSQL the losers of a ref take turns (`turns.CommitTurn`, an advisory lock) instead of preparing again at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import polars as pl
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from dagster_lakehouse.lakehouse import Lakehouse, commits, turns, writes
from dagster_lakehouse.lakehouse import refs as refstore
from dagster_lakehouse.lakehouse.gc import list_warehouse

TABLE = "r.events"


def frame(writer: int, day: str = "2024-01-01", n: int = 3) -> pl.DataFrame:
    return pl.DataFrame({"day": [day] * n, "writer": [writer] * n, "i": list(range(n))})


def parquet_files(lh: Lakehouse) -> set[str]:
    """Every Parquet file under the table's data folder."""
    return {uri for uri, _ in list_warehouse(lh.config.properties, lh.config.warehouse) if "/r/events/data/" in uri and uri.endswith(".parquet")}


def files_of(lh: Lakehouse, writer: int) -> set[str]:
    """The data files of the branch's table holding `writer`'s rows."""
    return {t.file.file_path for t in lh.table(TABLE, "dev").scan(row_filter=f"writer = {writer}").plan_files()}


def at_staged(monkeypatch: pytest.MonkeyPatch, hooks: dict[int, Callable[[], Any]]) -> list[int]:
    """Run `hooks[n]` when the next commit has staged its metadata for the n-th time, before it swaps the pointer."""
    original, seen = commits.checkpoint, []

    def hooked(step: str) -> None:
        if step == "staged":
            seen.append(len(seen) + 1)
            if seen[-1] in hooks:
                hooks[seen[-1]]()
        original(step)

    monkeypatch.setattr(commits, "checkpoint", hooked)
    return seen


def count_parquet_writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The writer ids of every frame handed to PyIceberg's Parquet writer from now on."""
    original, written = writes._dataframe_to_data_files, []

    def counting(**kwargs: Any) -> Any:
        written.extend(set(kwargs["df"].column("writer").to_pylist()))
        return original(**kwargs)

    monkeypatch.setattr(writes, "_dataframe_to_data_files", counting)
    return written


def count_manifest_writes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The path of every added-files manifest a write writes from now on (`appends.write_added_manifest`)."""
    original, paths = writes.write_added_manifest, []

    def counting(*args: Any, **kwargs: Any) -> Any:
        written = original(*args, **kwargs)
        paths.append(written.manifest.manifest_path)
        return written

    monkeypatch.setattr(writes, "write_added_manifest", counting)
    return paths


def committed_manifests(lh: Lakehouse) -> set[str]:
    """The manifests of the branch's current snapshot of the table."""
    table = lh.table(TABLE, "dev")
    return {m.manifest_path for m in table.current_snapshot().manifests(table.io)}


def advisory_locks(lh: Lakehouse) -> int:
    """Advisory locks granted in the catalog database now (commit turns held)."""
    with lh.engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
        ).scalar_one()


def test_a_retried_append_writes_its_data_files_once_and_commits_them(lakehouse: Lakehouse, monkeypatch) -> None:
    lh = lakehouse
    lh.create_branch("dev")
    lh.write(TABLE, frame(0), branch="dev", mode="append")
    written = count_parquet_writes(monkeypatch)
    manifests = count_manifest_writes(monkeypatch)
    first_attempt: set[str] = set()

    def other_writer_wins() -> None:
        first_attempt.update(parquet_files(lh))
        lh.write(TABLE, frame(2), branch="dev", mode="append")

    seen = at_staged(monkeypatch, {1: other_writer_wins})
    result = lh.write(TABLE, frame(1), branch="dev", mode="append")
    monkeypatch.undo()

    assert seen == [1, 2, 3]  # ours, the winner's, ours again
    assert result.attempts == 2
    assert sorted(written) == [1, 2]  # one Parquet write of ours, one of the winner's: none on the retry
    assert len(manifests) == 2  # one added-files manifest of ours, one of the winner's: none on the retry
    assert set(manifests) <= committed_manifests(lh)  # ours, written on the first attempt, is the one committed
    ours = files_of(lh, 1)
    assert len(ours) == 1 and ours <= first_attempt  # the committed snapshot holds the file of the first attempt
    assert len(parquet_files(lh)) == 3  # seed, winner, ours: the lost attempt left no second copy
    rows = lh.read(TABLE, ref="dev")
    assert sorted(rows["writer"].to_list()) == [0] * 3 + [1] * 3 + [2] * 3
    log = [c for c in lh.log("dev") if c.kind == "write"]
    assert len(log) == 3
    assert log[0].id == result.commit_id and log[0].snapshots == {TABLE: result.snapshot_id}
    assert lh.table(TABLE, "dev").current_snapshot().parent_snapshot_id == log[1].snapshots[TABLE]


def test_a_retried_partition_replace_reuses_its_files_when_the_winner_replaced_another_day(lakehouse: Lakehouse, monkeypatch) -> None:
    lh = lakehouse
    lh.create_branch("dev")
    for day in ("2024-01-01", "2024-01-02"):
        lh.write(TABLE, frame(0, day), branch="dev", mode="append")
    written = count_parquet_writes(monkeypatch)
    first_attempt: set[str] = set()

    def other_day_replaced() -> None:
        first_attempt.update(parquet_files(lh))
        lh.write(TABLE, frame(2, "2024-01-02"), branch="dev", where="day = '2024-01-02'")

    at_staged(monkeypatch, {1: other_day_replaced})
    result = lh.write(TABLE, frame(1, "2024-01-01"), branch="dev", where="day = '2024-01-01'")
    monkeypatch.undo()

    assert result.attempts == 2
    assert written.count(1) == 1
    assert files_of(lh, 1) <= first_attempt
    rows = lh.read(TABLE, ref="dev")
    assert sorted(zip(rows["day"], rows["writer"], strict=True)) == [("2024-01-01", 1)] * 3 + [("2024-01-02", 2)] * 3


def test_a_write_stages_its_snapshot_holding_the_refs_turn_and_gives_it_back(pg_s3_backend) -> None:
    b = pg_s3_backend
    with Lakehouse(b.catalog_uri, b.warehouse, b.properties) as lh, pytest.MonkeyPatch.context() as monkeypatch:
        lh.create_branch("dev")
        lh.write(TABLE, frame(0), branch="dev", mode="append")
        held: list[int] = []
        at_staged(monkeypatch, {1: lambda: held.append(advisory_locks(lh))})
        result = lh.write(TABLE, frame(1), branch="dev", mode="append")
        monkeypatch.undo()
        assert result.attempts == 1
        assert held == [1]  # its files written, it built and staged the snapshot in turn
        assert advisory_locks(lh) == 0  # and gave the turn back when it committed
        assert sorted(lh.read(TABLE, ref="dev")["writer"].to_list()) == [0] * 3 + [1] * 3


def test_a_turn_held_elsewhere_past_the_wait_bound_does_not_stall_the_commit(pg_s3_backend, postgres_server) -> None:
    b = pg_s3_backend
    with Lakehouse(b.catalog_uri, b.warehouse, b.properties) as lh, pytest.MonkeyPatch.context() as monkeypatch:
        lh.create_branch("dev")
        lh.write(TABLE, frame(0), branch="dev", mode="append")
        monkeypatch.setattr(turns, "TURN_WAIT", 0.5)
        with postgres_server.connect(make_url(b.catalog_uri).database, autocommit=True) as stuck:
            stuck.execute("SELECT pg_advisory_lock(%s)", (refstore.commit_turn_key("dev"),))
            at_staged(monkeypatch, {1: lambda: lh.write(TABLE, frame(2), branch="dev", mode="append")})
            result = lh.write(TABLE, frame(1), branch="dev", mode="append")
            monkeypatch.undo()
            assert result.attempts == 2  # it waited for the turn, gave up on it, and committed without it
            assert advisory_locks(lh) == 1  # only the stuck session's
        assert sorted(lh.read(TABLE, ref="dev")["writer"].to_list()) == [0] * 3 + [1] * 3 + [2] * 3


def test_a_prepare_taking_its_turn_after_writing_its_files_restarts_in_turn_when_the_table_moved(
    pg_s3_backend, postgres_server, monkeypatch
) -> None:
    """A write takes the ref's turn once its Parquet files exist: it waits for it, finds that a commit that took no
    turn (another engine, an older version) moved the table meanwhile, and prepares again in turn, reusing its files."""
    b = pg_s3_backend
    lh = Lakehouse(b.catalog_uri, b.warehouse, b.properties)
    other = Lakehouse(b.catalog_uri, b.warehouse, b.properties)
    try:
        lh.create_branch("dev")
        lh.write(TABLE, frame(0), branch="dev", mode="append")
        written = count_parquet_writes(monkeypatch)
        manifests = count_manifest_writes(monkeypatch)
        take = turns.CommitTurn.take
        monkeypatch.setattr(turns.CommitTurn, "take", lambda self, deadline: self.engine is not other.engine and take(self, deadline))
        database = make_url(b.catalog_uri).database
        with postgres_server.connect(database, autocommit=True) as holder:
            holder.execute("SELECT pg_advisory_lock(%s)", (refstore.commit_turn_key("dev"),))
            results: list[Any] = []
            writer = threading.Thread(target=lambda: results.append(lh.write(TABLE, frame(1), branch="dev", mode="append")))
            writer.start()
            for _ in range(600):  # until our write waits for the turn
                waiting = holder.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                ).fetchone()
                if waiting and waiting[0]:
                    break
                time.sleep(0.05)
            else:
                pytest.fail("the write never waited for its turn")
            assert len(manifests) == 1  # its files' manifest was written before it queued for the turn
            other.write(TABLE, frame(2), branch="dev", mode="append")  # moves the table while ours waits
            holder.execute("SELECT pg_advisory_unlock(%s)", (refstore.commit_turn_key("dev"),))
            writer.join()
        (result,) = results
        assert result.attempts == 2
        assert written.count(1) == 1
        assert len(manifests) == 2 and manifests[0] in committed_manifests(lh)  # ours (reused) and the other's
        assert sorted(lh.read(TABLE, ref="dev")["writer"].to_list()) == [0] * 3 + [1] * 3 + [2] * 3
        assert advisory_locks(lh) == 0
    finally:
        lh.close()
        other.close()


def test_without_turns_a_lost_race_sleeps_a_short_bounded_backoff() -> None:
    sleeps = [turns.backoff(attempt) for attempt in range(1, 40) for _ in range(20)]
    assert all(0.0 <= s <= turns.BACKOFF_CAP for s in sleeps)
    assert max(sleeps) > turns.BACKOFF_CAP / 4  # it grows with the attempts up to the cap
    assert all(turns.backoff(1) <= 0.02 for _ in range(50))
