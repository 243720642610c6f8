"""`write(mode="upsert", key=[...])`: rows whose key matches are updated, the rest inserted, in one commit, on both
backends; checked against a plain Polars frame under random upserts and appends, across lost races and merges, and
every refusal leaves the table as it was."""

from __future__ import annotations

import datetime as dt
import random

import polars as pl
import pytest

from dagster_lakehouse.lakehouse import (
    ColumnNotFound,
    InvalidWrite,
    Lakehouse,
    MergeConflict,
    SchemaMismatch,
    commits,
)

KEY = ["id"]


@pytest.fixture
def lh(lakehouse: Lakehouse) -> Lakehouse:
    lakehouse.create_branch("dev")
    return lakehouse


def rows(ids: list[int], version: int, day: dt.date = dt.date(2024, 1, 1)) -> pl.DataFrame:
    return pl.DataFrame(
        {"id": ids, "value": [f"v{version}-{i}" for i in ids], "n": [i * version for i in ids], "day": [day] * len(ids)}
    )


def reference_upsert(table: pl.DataFrame, data: pl.DataFrame, key: list[str]) -> pl.DataFrame:
    """What an upsert means, in Polars: the table's rows whose key the data lacks, then every row of the data."""
    return pl.concat([table.join(data.select(key), on=key, how="anti"), data], how="diagonal_relaxed")


def same_rows(got: pl.DataFrame, expected: pl.DataFrame, key: list[str]) -> None:
    assert got.columns == expected.columns
    assert got.sort(key).equals(expected.sort(key)), (got.sort(key), expected.sort(key))


def state(lh: Lakehouse, table: str, branch: str = "dev") -> tuple[str, int]:
    return lh.table(table, branch).metadata_location, len(lh.log(branch))


def test_upsert_updates_matching_keys_and_inserts_the_rest(lh: Lakehouse) -> None:
    first = lh.write("t.items", rows([1, 2, 3], 1), branch="dev", mode="upsert", key=KEY)  # creates the table
    assert (first.rows_updated, first.rows_inserted, first.mode) == (0, 3, "upsert")
    data = pl.concat([rows([2], 1), rows([3, 4], 2)])  # 2 unchanged, 3 changed, 4 new
    result = lh.write("t.items", data, branch="dev", mode="upsert", key=KEY)
    assert (result.rows, result.rows_updated, result.rows_inserted) == (3, 1, 1)
    same_rows(lh.read("t.items", ref="dev"), reference_upsert(rows([1, 2, 3], 1), data, KEY), KEY)
    entry = lh.log("dev", limit=1)[0]
    assert entry.message == "upsert t.items" and entry.id == result.commit_id
    assert result.iceberg_table.metadata_location == lh.table("t.items", "dev").metadata_location

    lh.revert(result.commit_id, on="dev")  # undone file by file like any write
    same_rows(lh.read("t.items", ref="dev"), rows([1, 2, 3], 1), KEY)
    lh.write("t.items", data, branch="dev", mode="upsert", key=KEY)
    before = state(lh, "t.items")
    again = lh.write("t.items", data, branch="dev", mode="upsert", key=KEY)  # nothing changes: no commit
    assert (again.rows_updated, again.rows_inserted, again.commit_id) == (0, 0, "")
    assert state(lh, "t.items") == before


@pytest.mark.parametrize("seed", [1, 2])
def test_random_upserts_and_appends_match_a_polars_reference(lh: Lakehouse, seed: int) -> None:
    rng = random.Random(seed)
    key = ["region", "id"]  # a composite key, one of its columns text
    expected = pl.DataFrame(schema={"region": pl.String, "id": pl.Int64, "score": pl.Float64, "tag": pl.String})
    next_id = 0
    for step in range(8):
        if step and rng.random() < 0.3:  # an append of new keys only
            ids = list(range(next_id, next_id + rng.randint(1, 20)))
            next_id += len(ids)
            data = pl.DataFrame({"region": [rng.choice("ab") for _ in ids], "id": ids})
            data = data.with_columns(score=pl.lit(float(step)), tag=pl.lit(f"append {step}"))
            lh.write("t.scores", data, branch="dev", mode="append")
            expected = pl.concat([expected, data])
            continue
        known = expected.select(key).rows()
        picked = rng.sample(known, min(len(known), rng.randint(0, 30)))
        fresh = [(rng.choice("ab"), i) for i in range(next_id, next_id + rng.randint(0, 30))]
        next_id += len(fresh)
        keys = picked + fresh
        data = pl.DataFrame(
            {
                "region": [r for r, _ in keys],
                "id": [i for _, i in keys],
                "score": [rng.choice([1.0, 2.0, float(step)]) for _ in keys],
                "tag": [rng.choice(["same", f"step {step}", None]) for _ in keys],
            },
            schema=expected.schema,
        )
        partition_by = ["region"] if seed == 2 else None  # seed 2: a partitioned table (taken when it is created)
        lh.write("t.scores", data.lazy() if step % 2 else data, branch="dev", mode="upsert", key=key, partition_by=partition_by)
        expected = reference_upsert(expected, data, key)
        same_rows(lh.read("t.scores", ref="dev"), expected, key)
    assert lh.read("t.scores", ref="dev").select(key).is_duplicated().sum() == 0
    assert [f.name for f in lh.table("t.scores", "dev").spec().fields] == (["region"] if seed == 2 else [])


def test_dates_timestamps_and_new_columns(lh: Lakehouse) -> None:
    key = ["day", "at"]
    start = dt.datetime(2022, 12, 15, tzinfo=dt.timezone.utc)
    base = pl.DataFrame(
        {"day": [dt.date(2024, 1, d) for d in (1, 1, 2)], "at": [start + dt.timedelta(hours=h) for h in (0, 1, 0)]}
    ).with_columns(v=pl.Series([1, 2, 3]))
    lh.write("t.events", base, branch="dev")
    data = base.tail(2).with_columns(v=pl.Series([20, 30]), note=pl.lit("new column"))  # adds a column
    lh.write("t.events", data, branch="dev", mode="upsert", key=key)
    got = lh.read("t.events", ref="dev")
    assert got.columns == ["day", "at", "v", "note"]
    assert sorted(got["v"].to_list()) == [1, 20, 30] and got.filter(pl.col("v") == 1)["note"].to_list() == [None]


def test_a_lost_race_recomputes_the_matches_on_the_fresh_table(lh: Lakehouse, monkeypatch) -> None:
    lh.write("t.items", rows([1, 2], 1), branch="dev")
    original, fired = commits.checkpoint, []

    def hooked(step: str) -> None:  # another writer inserts key 3 after this upsert matched, before it commits
        if step == "staged" and not fired:
            fired.append(step)
            lh.write("t.items", rows([3], 5), branch="dev", mode="upsert", key=KEY)
        original(step)

    monkeypatch.setattr(commits, "checkpoint", hooked)
    result = lh.write("t.items", rows([2, 3, 4], 9), branch="dev", mode="upsert", key=KEY)
    assert fired and result.attempts == 2
    assert (result.rows_updated, result.rows_inserted) == (2, 1)  # key 3 is matched on the second attempt
    same_rows(lh.read("t.items", ref="dev"), pl.concat([rows([1], 1), rows([2, 3, 4], 9)]), KEY)


def test_refusals_name_the_fault_and_change_nothing(lh: Lakehouse) -> None:
    lh.write("t.items", rows([1, 2, 3], 1), branch="dev")
    before = state(lh, "t.items")
    cases = [
        (dict(key=[]), InvalidWrite, "mode='upsert' needs key=\\[...\\]"),
        (dict(key=None), InvalidWrite, "mode='upsert' needs key=\\[...\\]"),
        (dict(key=["id", "id"]), InvalidWrite, "distinct column names"),
        (dict(key=["nope"]), ColumnNotFound, "upsert key column 'nope' is not a column of the data; its columns are: id"),
        (dict(data=rows([1, 1, 2], 2)), InvalidWrite, "1 key on more than one row \\(e.g. {'id': 1} on 2 rows\\)"),
        (dict(data=rows([1, 2], 2).with_columns(id=pl.Series([1, None]))), InvalidWrite, "'id' has 1 null value"),
        (dict(data=rows([4], 2).with_columns(sku=pl.lit("x")), key=["sku"]), ColumnNotFound,
         "upsert key column 'sku' is not a column of the table; its columns are: id, value, n, day"),
        (dict(data=rows([4], 2).drop("n")), SchemaMismatch, "must have every column of the table; it lacks n"),
        (dict(data=pl.DataFrame({"zone": [1]}), key=["zone"]), SchemaMismatch, "shares no column with the table"),
        (dict(where="id = 1"), InvalidWrite, "takes no where= filter"),
    ]
    for args, error, message in cases:
        call = {"data": rows([2, 4], 2), "key": KEY, **args}
        with pytest.raises(error, match=message) as caught:
            lh.write("t.items", call.pop("data"), branch="dev", mode="upsert", **call)
        assert "table 't.items' on branch 'dev'" in str(caught.value)
        assert state(lh, "t.items") == before
    with pytest.raises(InvalidWrite, match="key= names the columns of mode='upsert'"):
        lh.write("t.items", rows([4], 2), branch="dev", mode="append", key=KEY)
    lh.write("t.items", rows([1], 7), branch="dev", mode="append")  # the table now holds key 1 twice
    with pytest.raises(InvalidWrite, match="the table has more than one row for some keys"):
        lh.write("t.items", rows([1], 8), branch="dev", mode="upsert", key=KEY)
    assert lh.read("t.items", ref="dev", filter="id = 1")["n"].sort().to_list() == [1, 7]


def test_an_upsert_merges_into_a_main_that_changed_other_keys(lh: Lakehouse) -> None:
    lh.write("t.items", rows(list(range(10)), 1), branch="main", allow_main=True)
    lh.create_branch("feature")
    on_branch = pl.concat([rows([1, 2], 2), rows([100, 101], 2)])  # two updates, two inserts
    lh.write("t.items", on_branch, branch="feature", mode="upsert", key=KEY)
    on_main = rows([5, 200], 3)
    lh.write("t.items", on_main, branch="main", mode="upsert", key=KEY, allow_main=True)
    lh.write("t.items", rows([300], 4), branch="main", mode="append", allow_main=True)
    result = lh.merge("feature", into="main")
    assert result.replayed == ["t.items"]
    expected = reference_upsert(reference_upsert(rows(list(range(10)), 1), on_main, KEY), on_branch, KEY)
    same_rows(lh.read("t.items"), pl.concat([expected, rows([300], 4)]), KEY)
    lh.merge("main", into="feature")  # and back: the branch takes main's work, nothing twice
    same_rows(lh.read("t.items", ref="feature"), lh.read("t.items"), KEY)


@pytest.mark.parametrize("on_main", ["upsert the same key", "append the same new key", "append an updated key"])
def test_an_upsert_whose_keys_main_also_wrote_is_a_conflict(lh: Lakehouse, on_main: str) -> None:
    lh.write("t.items", rows(list(range(10)), 1), branch="main", allow_main=True)
    lh.create_branch("feature")
    lh.write("t.items", pl.concat([rows([3], 2), rows([50], 2)]), branch="feature", mode="upsert", key=KEY)
    if on_main == "upsert the same key":
        lh.write("t.items", rows([3], 3), branch="main", mode="upsert", key=KEY, allow_main=True)
    elif on_main == "append the same new key":
        lh.write("t.items", rows([50], 3), branch="main", mode="append", allow_main=True)
    else:
        lh.write("t.items", rows([3], 3), branch="main", mode="append", allow_main=True)
    before = lh.table("t.items").metadata_location
    with pytest.raises(MergeConflict) as caught:
        lh.merge("feature", into="main")
    assert caught.value.tables == ["t.items"] and "both changed rows where" in str(caught.value)
    assert lh.table("t.items").metadata_location == before


def test_concurrent_upserts_of_overlapping_keys_lose_and_double_nothing(lh: Lakehouse) -> None:
    """Four writers upsert the same ten keys and five of their own at once: every key once, the shared ones all
    from the last writer to commit (each loser matched again on the table the winner left)."""
    from concurrent.futures import ThreadPoolExecutor

    lh.write("t.items", rows(list(range(10)), 0), branch="dev")

    def upsert(writer: int) -> int:
        own = list(range(100 * writer, 100 * writer + 5))
        data = rows(list(range(10)) + own, 0).with_columns(n=pl.lit(writer, dtype=pl.Int64))
        return lh.write("t.items", data, branch="dev", mode="upsert", key=KEY).attempts

    with ThreadPoolExecutor(4) as pool:
        attempts = list(pool.map(upsert, range(1, 5)))
    got = lh.read("t.items", ref="dev")
    assert got.height == 10 + 4 * 5 and got["id"].is_duplicated().sum() == 0
    for writer in range(1, 5):
        assert got.filter(pl.col("id") // 100 == writer)["n"].to_list() == [writer] * 5
    assert set(got.filter(pl.col("id") < 10)["n"]) <= {1, 2, 3, 4} and len(set(got.filter(pl.col("id") < 10)["n"])) == 1
    assert sum(attempts) >= 4
