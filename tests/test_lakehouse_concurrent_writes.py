"""Writers racing on one table of one branch: commuting work is re-applied, true conflicts are named and change nothing."""

from __future__ import annotations

import multiprocessing as mp

import polars as pl
import pytest

from dagster_lakehouse.lakehouse import Lakehouse, WriteConflict, commits

DAYS = [f"2024-01-0{i}" for i in range(1, 9)]


def seed(lh: Lakehouse) -> None:
    """All days in one bulk-loaded file of an unpartitioned table, as a first backfill leaves it."""
    lh.create_branch("dev", exist_ok=True)
    frame = pl.DataFrame({"day": [d for d in DAYS for _ in range(4)], "writer": [-1] * 4 * len(DAYS)})
    lh.write("p.daily", frame, branch="dev")


def partition(day: str, writer: int, n: int = 3) -> pl.DataFrame:
    return pl.DataFrame({"day": [day] * n, "writer": [writer] * n})


def race_at_staged(monkeypatch, other) -> list[str]:
    """Run `other` once, right after the next commit has staged its metadata and before it swaps the pointer."""
    original, fired = commits.checkpoint, []

    def hooked(step: str) -> None:
        if step == "staged" and not fired:
            fired.append(step)
            other()
        original(step)

    monkeypatch.setattr(commits, "checkpoint", hooked)
    return fired


def test_replacing_another_day_while_a_write_is_between_plan_and_commit_succeeds_for_both(lakehouse, monkeypatch) -> None:
    seed(lakehouse)
    fired = race_at_staged(
        monkeypatch, lambda: lakehouse.write("p.daily", partition(DAYS[1], 2), branch="dev", where=f"day = '{DAYS[1]}'")
    )
    result = lakehouse.write("p.daily", partition(DAYS[0], 1), branch="dev", where=f"day = '{DAYS[0]}'")
    assert fired and result.attempts == 2
    rows = lakehouse.read("p.daily", ref="dev")
    for d, writer in ((DAYS[0], 1), (DAYS[1], 2), (DAYS[2], -1)):
        assert rows.filter(pl.col("day") == d)["writer"].to_list() == [writer] * (3 if writer > 0 else 4)
    assert rows.height == 3 + 3 + 4 * (len(DAYS) - 2)


def test_an_append_racing_a_replace_of_its_rows_is_kept(lakehouse, monkeypatch) -> None:
    seed(lakehouse)
    race_at_staged(monkeypatch, lambda: lakehouse.write("p.daily", partition(DAYS[0], 5), branch="dev", where=f"day = '{DAYS[0]}'"))
    lakehouse.write("p.daily", partition(DAYS[0], 6, 1), branch="dev", mode="append")
    assert sorted(lakehouse.read("p.daily", ref="dev", filter=f"day = '{DAYS[0]}'")["writer"]) == [5, 5, 5, 6]


def test_replacing_the_same_day_as_a_concurrent_winner_is_a_named_conflict(lakehouse, monkeypatch) -> None:
    seed(lakehouse)
    race_at_staged(
        monkeypatch, lambda: lakehouse.write("p.daily", partition(DAYS[3], 7), branch="dev", where=f"day = '{DAYS[3]}'")
    )
    with pytest.raises(WriteConflict, match=r"table 'p.daily' on branch 'dev': it replaces rows where day = '2024-01-04'") as info:
        lakehouse.write("p.daily", partition(DAYS[3], 8), branch="dev", where=f"day = '{DAYS[3]}'")
    assert (info.value.table, info.value.branch) == ("p.daily", "dev")
    assert lakehouse.read("p.daily", ref="dev", filter=f"day = '{DAYS[3]}'")["writer"].to_list() == [7, 7, 7]
    assert len([c for c in lakehouse.log("dev") if c.kind == "write"]) == 2  # the seed and the winner: the loser logged nothing


def test_a_full_replace_racing_an_append_is_a_named_conflict(lakehouse, monkeypatch) -> None:
    seed(lakehouse)
    race_at_staged(monkeypatch, lambda: lakehouse.write("p.daily", partition(DAYS[0], 9, 1), branch="dev", mode="append"))
    with pytest.raises(WriteConflict, match="it replaces all rows"):
        lakehouse.write("p.daily", partition(DAYS[0], 10), branch="dev")
    assert lakehouse.read("p.daily", ref="dev").height == 4 * len(DAYS) + 1


def _replace_day(catalog_uri: str, warehouse: str, properties: dict[str, str], writer: int, start) -> int:
    start.wait()
    with Lakehouse(catalog_uri, warehouse, properties) as lh:
        day = DAYS[writer]
        return lh.write("p.daily", partition(day, writer), branch="dev", where=f"day = '{day}'").attempts


def test_eight_processes_replacing_distinct_days_of_one_unpartitioned_table(pg_s3_backend) -> None:
    b = pg_s3_backend
    with Lakehouse(b.catalog_uri, b.warehouse, b.properties) as lh:
        seed(lh)
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        start = manager.Barrier(len(DAYS))
        with ctx.Pool(len(DAYS)) as pool:
            attempts = pool.starmap(_replace_day, [(b.catalog_uri, b.warehouse, b.properties, w, start) for w in range(len(DAYS))])
    with Lakehouse(b.catalog_uri, b.warehouse, b.properties) as lh:
        rows = lh.read("p.daily", ref="dev")
        for writer, day in enumerate(DAYS):
            assert rows.filter(pl.col("day") == day)["writer"].to_list() == [writer] * 3, day
        assert rows.height == 3 * len(DAYS)
        assert len([c for c in lh.log("dev") if c.kind == "write"]) == 1 + len(DAYS)
    assert sum(attempts) >= len(DAYS)
