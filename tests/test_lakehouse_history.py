"""Lake history (issue 12): `main@<commit>` / `dev~n` reads against a reference model, revert, reset, bad refs, and
GC that keeps what the history window reaches.

The reference model records, after every commit on `main`, every table of `main` as a plain Polars frame (schema
included); reading the lake at that commit later, after more writes, merges, drops and schema changes, must give back
exactly those frames.
"""

from __future__ import annotations

import hashlib
import json
import random
from datetime import timedelta

import polars as pl
import pytest
from sqlalchemy import select, text

from dagster_lakehouse.lakehouse import (
    InvalidRefName,
    Lakehouse,
    ProtectedBranchError,
    RefNotFound,
)
from dagster_lakehouse.lakehouse.catalog import IcebergTables
from dagster_lakehouse.lakehouse.errors import CommitExpired, CommitNotFound, PinnedRefError, RevertConflict

DAYS = ["2024-03-01", "2024-03-02", "2024-03-03"]


def frame(day: str, values: list[int], **extra: list) -> pl.DataFrame:
    return pl.DataFrame({"day": [day] * len(values), "v": values, **extra})


def snapshot_lake(lh: Lakehouse, ref: str) -> dict[str, pl.DataFrame]:
    return {name: canonical(lh.read(name, ref=ref)) for name in lh.tables(ref)}


def canonical(df: pl.DataFrame) -> pl.DataFrame:
    return df.sort(df.columns)


def assert_lake(lh: Lakehouse, ref: str, expected: dict[str, pl.DataFrame]) -> None:
    assert lh.tables(ref) == sorted(expected), ref
    for name, want in expected.items():
        got = canonical(lh.read(name, ref=ref))
        assert got.schema == want.schema, f"{name} at {ref}"
        assert got.equals(want), f"{name} at {ref}:\n{got}\n!=\n{want}"


def pointer_rows(lh: Lakehouse) -> str:
    """A digest of every ref's table pointers: equal digests mean nothing moved."""
    with lh.engine.connect() as conn:
        rows = conn.execute(
            select(IcebergTables.catalog_name, IcebergTables.table_namespace, IcebergTables.table_name, IcebergTables.metadata_location)
        ).all()
    return hashlib.sha256(json.dumps(sorted(map(list, rows))).encode()).hexdigest()


def random_history(lh: Lakehouse, rng: random.Random, steps: int) -> list[tuple[str, dict[str, pl.DataFrame]]]:
    """Random writes, partition replaces, schema changes, drops and merges of `dev` on `main`; after each commit on
    main: (commit id, every table of main as frames)."""
    recorded: list[tuple[str, dict[str, pl.DataFrame]]] = []
    counter = iter(range(10**6))
    lh.create_branch("dev")
    for _ in range(steps):
        op = rng.choice(["append", "replace_day", "replace_all", "widen", "drop", "merge"])
        table = f"h.{rng.choice(['a', 'b', 'c'])}"
        exists = lh.exists(table)
        day = rng.choice(DAYS)
        values = [next(counter) for _ in range(rng.randint(1, 3))]
        if op == "merge":
            lh.write(table, frame(day, values), branch="dev", mode="append" if lh.exists(table, "dev") else "replace")
            try:
                lh.merge("dev", "main")
            except Exception:
                lh.merge("dev", "main", on_conflict="source")
            lh.merge("main", "dev", on_conflict="source")  # dev follows main again
        elif op == "drop":
            if not exists:
                continue
            lh.drop_table(table, allow_main=True)
        elif op == "widen" and exists:
            current = lh.read(table)
            wide = current.with_columns(pl.lit(values[0]).alias(f"w{values[0]}"))
            lh.write(table, wide, allow_main=True)
        elif op == "replace_day" and exists:
            extra = {c: [None] * len(values) for c in lh.read(table).columns if c not in ("day", "v")}
            lh.write(table, frame(day, values, **extra), where=f"day = '{day}'", allow_main=True)
        elif op == "replace_all" or not exists:
            lh.write(table, frame(day, values), allow_main=True)
        else:
            lh.write(table, frame(day, values), mode="append", allow_main=True)
        recorded.append((lh.log("main", limit=1)[0].id, snapshot_lake(lh, "main")))
    return recorded


@pytest.mark.parametrize("seed", [1, 2])
def test_reading_a_past_commit_returns_the_lake_exactly_as_it_was(backend, seed: int) -> None:
    lh = Lakehouse(backend.catalog_uri, backend.warehouse, backend.properties)
    steps = 22 if backend.name == "local" else 12
    recorded = random_history(lh, random.Random(seed), steps)
    for commit_id, lake in recorded:
        assert_lake(lh, f"main@{commit_id[:8]}", lake)
    head = lh.log("main", limit=1)[0]
    assert_lake(lh, "main~0", recorded[-1][1])
    commits = lh.log("main")
    for back in (1, 3):
        spec = f"main~{back}"
        target = commits[back].id
        match = [lake for commit_id, lake in recorded if commit_id == target]
        if match:
            assert_lake(lh, spec, match[0])
        assert lh.view(spec).commit.id == target
        assert lh.view(f"main@{head.id}~{back}").commit.id == target


def test_past_commit_reads_every_api(lakehouse: Lakehouse) -> None:
    lh = lakehouse
    lh.write("p.t", frame("2024-03-01", [1, 2]), allow_main=True)
    first = lh.log(limit=1)[0]
    lh.write("p.t", frame("2024-03-01", [3], extra=["x"]), mode="append", allow_main=True)  # widens the schema
    lh.write("p.u", frame("2024-03-02", [9]), allow_main=True)
    spec = f"main@{first.id[:6]}"
    assert lh.read("p.t", ref=spec)["v"].sort().to_list() == [1, 2]
    assert lh.read_arrow("p.t", ref=spec, columns=["v"], filter="v > 1").column("v").to_pylist() == [2]
    assert lh.scan("p.t", ref=spec).collect().columns == ["day", "v"]
    assert lh.table("p.t", spec).schema().column_names == ["day", "v"]
    assert lh.catalog(spec).list_tables("p") == [("p", "t")]
    assert lh.tables(spec) == ["p.t"] and not lh.exists("p.u", spec)
    with pytest.raises(Exception, match="p.u"):
        lh.read("p.u", ref=spec)
    diffs = {d.table: d for d in lh.diff(spec, "main")}
    assert diffs["p.u"].change == "added" and diffs["p.t"].change == "modified" and diffs["p.t"].rows_added == 1
    assert [c.id for c in lh.log(spec)] == [first.id] + [c.id for c in lh.log("main")[3:]]
    fix = lh.create_branch("fix", from_ref=spec)
    assert fix.parent == "main" and lh.read("p.t", ref="fix")["v"].sort().to_list() == [1, 2]
    lh.write("p.t", frame("2024-03-04", [4]), branch="fix", mode="append")
    lh.tag("then", ref="main~1")
    assert lh.tables("then") == ["p.t"] and lh.read("p.t", ref="then").columns == ["day", "v", "extra"]


def test_writes_to_a_past_commit_are_refused_naming_it(lakehouse: Lakehouse) -> None:
    lh = lakehouse
    lh.write("p.t", frame("2024-03-01", [1]), allow_main=True)
    lh.write("p.t", frame("2024-03-01", [2]), mode="append", allow_main=True)
    lh.create_branch("dev")
    before = pointer_rows(lh)
    for call in (
        lambda: lh.write("p.t", frame("2024-03-01", [5]), branch="main~1", allow_main=True),
        lambda: lh.write("p.t", frame("2024-03-01", [5]), branch="dev~1"),
        lambda: lh.merge("dev", "main~1"),
        lambda: lh.drop_table("p.t", branch="dev~1"),
        lambda: lh.reset("dev~1", to="main"),
        lambda: lh.revert(lh.log()[0].id, on="dev~1"),
    ):
        with pytest.raises(PinnedRefError, match=r"~1' names a past commit, which is read-only"):
            call()
    assert pointer_rows(lh) == before


def test_ref_names_with_at_signs_still_work_and_take_specs(lakehouse: Lakehouse) -> None:
    lh = lakehouse  # git allows '@' in ref names: a ref named by the whole spec wins
    lh.create_branch("user@host")
    lh.write("p.t", frame("2024-03-01", [1]), branch="user@host")
    lh.write("p.t", frame("2024-03-01", [2]), branch="user@host", mode="append")
    first = lh.log("user@host")[1]
    assert lh.read("p.t", ref="user@host~1")["v"].to_list() == [1]
    assert lh.read("p.t", ref=f"user@host@{first.id[:6]}")["v"].to_list() == [1]
    assert lh.read("p.t", ref="user@host")["v"].sort().to_list() == [1, 2]
    with pytest.raises(RefNotFound, match="does not exist"):
        lh.write("p.t", frame("2024-03-01", [3]), branch="someone@else")
    with pytest.raises(InvalidRefName, match="~"):
        lh.create_branch("a~b")


def test_bad_refs_name_the_ref(lakehouse: Lakehouse) -> None:
    lh = lakehouse
    lh.write("p.t", frame("2024-03-01", [1]), allow_main=True)
    lh.create_branch("dev")
    lh.write("p.t", frame("2024-03-01", [2]), branch="dev", mode="append")
    dev_commit = lh.log("dev", limit=1)[0]
    cases = {
        "main@nope": r"ref 'main@nope': 'nope' is not a commit id",
        "main@ab": r"ref 'main@ab': 'ab' is not a commit id \(at least 4 hex digits",
        "dev~999": r"ref 'dev~999': 'dev' has only 4 commits in its history, so it cannot go back 999",
        "dev~x": r"ref 'dev~x': '~x' must be '~' followed by a number",
        "nope@abcd": r"ref 'nope@abcd': branch or tag 'nope' does not exist",
        "main@abcdef12": r"ref 'main@abcdef12': no commit 'abcdef12' in the history of 'main'",
        f"main@{dev_commit.id[:8]}": rf"commit '{dev_commit.id[:8]}' is not in the history of 'main' \({dev_commit.short_id} on 'dev'\)",
    }
    for spec, message in cases.items():
        for call in (lambda s=spec: lh.tables(s), lambda s=spec: lh.read("p.t", ref=s), lambda s=spec: lh.diff("main", s)):
            with pytest.raises(RefNotFound, match=message):
                call()
    with pytest.raises(CommitNotFound):
        lh.revert("abcdef12", on="main")


def _merge_of(lh: Lakehouse, changes: dict[str, pl.DataFrame], base: dict[str, pl.DataFrame]) -> str:
    lh.create_branch("dev", exist_ok=True)
    for name, df in changes.items():
        lh.write(name, df, branch="dev", mode="append")
    result = lh.merge("dev", "main")
    assert result.commit_id
    return result.commit_id


def test_revert_of_a_merge_restores_exactly_the_tables_it_changed(backend) -> None:
    lh = Lakehouse(backend.catalog_uri, backend.warehouse, backend.properties)
    for name in ("r.a", "r.b", "r.c"):
        lh.write(name, frame("2024-03-01", [1, 2]), allow_main=True)
    before = snapshot_lake(lh, "main")
    lh.create_branch("dev")
    lh.write("r.a", frame("2024-03-02", [3], extra=[1.5]), branch="dev", mode="append")  # widens a's schema
    lh.write("r.b", frame("2024-03-01", [7]), branch="dev", where="day = '2024-03-01'")
    lh.write("r.new", frame("2024-03-01", [1]), branch="dev")
    merge = lh.merge("dev", "main")
    lh.write("r.c", frame("2024-03-05", [5]), allow_main=True, mode="append")  # a later commit on another table
    later_c = canonical(lh.read("r.c"))
    result = lh.revert(merge.commit_id[:7])
    assert result.tables == ["r.a", "r.b", "r.new"] and not result.inverted
    assert_lake(lh, "main", {**before, "r.c": later_c})
    before_merge = lh.table("r.a", f"main@{merge.commit_id}~1").current_snapshot().snapshot_id
    assert result.restored["r.a"] == lh.snapshot_id("r.a") == before_merge
    revert = lh.log(limit=1)[0]
    assert revert.kind == "revert" and sorted(revert.changes) == ["r.a", "r.b", "r.new"]
    assert revert.message.startswith(f"revert {merge.commit_id[:10]}")
    assert lh.merge("dev", "main").commit_id is None  # the reverted merge is not taken back in by merging again
    lh.revert(revert.id)  # and a revert of the revert brings it back
    assert canonical(lh.read("r.b"))["v"].to_list() == [7]


def test_revert_undoes_a_commit_file_by_file_under_later_commits(lakehouse: Lakehouse) -> None:
    lh = lakehouse
    lh.write("r.t", frame("2024-03-01", [1, 2]), allow_main=True)
    lh.create_branch("dev")
    lh.write("r.t", frame("2024-03-02", [10, 11]), branch="dev", mode="append")
    merge = lh.merge("dev", "main")
    lh.write("r.t", frame("2024-03-03", [20]), mode="append", allow_main=True)
    lh.write("r.t", frame("2024-03-01", [30]), where="day = '2024-03-01'", allow_main=True)
    expected = pl.concat([frame("2024-03-03", [20]), frame("2024-03-01", [30])])
    result = lh.revert(merge.commit_id)
    assert list(result.inverted) == ["r.t"] and not result.restored
    assert canonical(lh.read("r.t")).equals(canonical(expected))
    assert lh.table("r.t").current_snapshot().summary["lakehouse.revert-of"] == merge.commit_id


def test_revert_is_refused_when_a_later_commit_rewrote_its_files(backend) -> None:
    lh = Lakehouse(backend.catalog_uri, backend.warehouse, backend.properties)
    lh.write("r.t", frame("2024-03-01", [1]), allow_main=True)
    lh.write("r.u", frame("2024-03-01", [1]), allow_main=True)
    lh.create_branch("dev")
    lh.write("r.t", frame("2024-03-02", [10]), branch="dev", mode="append")
    lh.write("r.u", frame("2024-03-02", [10]), branch="dev", mode="append")
    merge = lh.merge("dev", "main")
    lh.write("r.t", frame("2024-03-02", [99]), where="day = '2024-03-02'", allow_main=True)  # rewrites the merged rows
    before, rows = pointer_rows(lh), snapshot_lake(lh, "main")
    with pytest.raises(RevertConflict, match=r"r\.t: later commits rewrote or removed 1 of the 1 data files") as caught:
        lh.revert(merge.commit_id)
    assert caught.value.tables == ["r.t"]
    assert pointer_rows(lh) == before
    assert_lake(lh, "main", rows)
    lh.write("r.s", frame("2024-03-01", [1]), allow_main=True)
    lh.write("r.s", frame("2024-03-01", [1], more=[2]), allow_main=True)  # a schema change...
    schema_change = lh.log(limit=1)[0]
    lh.write("r.s", frame("2024-03-01", [3], more=[4]), mode="append", allow_main=True)  # ...with a later commit
    with pytest.raises(RevertConflict, match="changed the table's schema"):
        lh.revert(schema_change.id)
    with pytest.raises(Exception, match="created 'main'"):
        lh.revert(lh.log()[-1].id)


def test_reset_moves_a_branch_back_or_onto_another_ref(backend) -> None:
    lh = Lakehouse(backend.catalog_uri, backend.warehouse, backend.properties)
    lh.write("s.t", frame("2024-03-01", [1]), allow_main=True)
    lh.create_branch("dev")
    lh.write("s.t", frame("2024-03-02", [2]), branch="dev", mode="append")
    at_one = snapshot_lake(lh, "dev")
    lh.write("s.t", frame("2024-03-03", [3]), branch="dev", mode="append")
    lh.write("s.extra", frame("2024-03-03", [3]), branch="dev")
    head = lh.log("dev", limit=1)[0]
    result = lh.reset("dev", to="dev~2")
    assert_lake(lh, "dev", at_one)
    assert result.tables == ["s.extra", "s.t"] and result.restored["s.extra"] is None
    assert lh.log("dev", limit=1)[0].kind == "reset"
    assert_lake(lh, f"dev@{head.id}", {"s.extra": canonical(frame("2024-03-03", [3])), "s.t": canonical(pl.concat([frame("2024-03-01", [1]), frame("2024-03-02", [2]), frame("2024-03-03", [3])]))})
    lh.reset("dev", to=f"dev@{head.id}")  # and forward again
    assert lh.tables("dev") == ["s.extra", "s.t"]
    lh.write("s.t", frame("2024-03-04", [4]), allow_main=True, mode="append")
    lh.reset("dev", to="main")
    assert_lake(lh, "dev", snapshot_lake(lh, "main"))
    lh.write("s.t", frame("2024-03-05", [5]), branch="dev", mode="append")
    main_before = snapshot_lake(lh, "main")
    lh.merge("dev", "main")
    assert canonical(lh.read("s.t"))["v"].to_list() == sorted(main_before["s.t"]["v"].to_list() + [5])
    with pytest.raises(ProtectedBranchError, match="branch 'main' is protected: resetting it"):
        lh.reset("main", to="main~1")
    lh.tag("v1")
    with pytest.raises(ProtectedBranchError, match="'v1' is a tag"):
        lh.reset("v1", to="main~1")
    lh.reset("main", to="main~1", allow_main=True)
    assert lh.read("s.t")["v"].sort().to_list() == sorted(main_before["s.t"]["v"].to_list())


def test_reset_backwards_does_not_let_a_merge_undo_the_other_side(lakehouse: Lakehouse) -> None:
    lh = lakehouse
    lh.write("s.t", frame("2024-03-01", [1]), allow_main=True)
    lh.create_branch("dev")
    lh.write("s.t", frame("2024-03-02", [2]), branch="dev", mode="append")
    lh.write("s.new", frame("2024-03-02", [2]), branch="dev")
    lh.merge("dev", "main")
    main_rows = snapshot_lake(lh, "main")
    lh.reset("dev", to="dev~2")  # back before both writes, which main holds now
    assert lh.tables("dev") == ["s.t"]
    lh.write("s.t", frame("2024-03-09", [9]), branch="dev", mode="append")
    lh.merge("dev", "main")
    assert lh.tables("main") == ["s.new", "s.t"]  # the reset did not drop main's table
    assert sorted(lh.read("s.t")["v"].to_list()) == sorted(main_rows["s.t"]["v"].to_list() + [9])


def test_gc_keeps_what_the_history_window_reaches_and_deletes_the_rest(backend) -> None:
    lh = Lakehouse(backend.catalog_uri, backend.warehouse, backend.properties)
    lh.create_branch("dev")
    lh.write("g.t", frame("2024-03-01", [1, 2]), branch="dev")
    first = lh.log("dev", limit=1)[0]
    lh.write("g.t", frame("2024-03-01", [3]), branch="dev")  # full replace: v1's data file leaves the table
    lh.write("g.gone", frame("2024-03-01", [4]), branch="dev")
    gone_commit = lh.log("dev", limit=1)[0]
    lh.drop_table("g.gone", branch="dev")
    lh.reset("dev", to="main")  # nothing on dev reaches any of it now but its log
    assert lh.gc(older_than=timedelta(0), force=True) == []
    assert lh.read("g.t", ref=f"dev@{first.id[:8]}")["v"].sort().to_list() == [1, 2]
    assert lh.read("g.gone", ref=f"dev@{gone_commit.id[:8]}")["v"].to_list() == [4]
    lh.reset("dev", to=f"dev@{gone_commit.id}")  # restorable while in the window
    assert lh.tables("dev") == ["g.gone", "g.t"]
    lh.reset("dev", to="main")
    deleted = lh.gc(older_than=timedelta(0), force=True, keep_history=timedelta(0))
    kinds = {uri.rsplit(".", 1)[-1] for uri in deleted}
    assert {"parquet", "json", "avro"} <= kinds
    assert any("/g/gone/" in uri for uri in deleted) and any("/g/t/" in uri for uri in deleted)
    assert lh.gc(older_than=timedelta(0), force=True, keep_history=timedelta(0)) == []


def test_commits_older_than_the_window_are_refused_with_how_to_keep_them(lakehouse: Lakehouse, backend, monkeypatch) -> None:
    lh = lakehouse
    lh.write("w.t", frame("2024-03-01", [1]), allow_main=True)
    lh.write("w.t", frame("2024-03-01", [2]), allow_main=True)
    old = lh.log(limit=2)[1]
    with lh.engine.begin() as conn:
        conn.execute(text("UPDATE lakehouse_commits SET created_at = created_at - 8 * 86400 WHERE id = :id"), {"id": old.id})
    with pytest.raises(CommitExpired, match=r"older than the history retention window \(7 days\).*LAKEHOUSE_HISTORY_RETENTION_DAYS"):
        lh.read("w.t", ref=f"main@{old.id[:8]}")
    monkeypatch.setenv("LAKEHOUSE_HISTORY_RETENTION_DAYS", "30")
    longer = Lakehouse(backend.catalog_uri, backend.warehouse, backend.properties)
    assert longer.config.history_retention == timedelta(days=30)
    assert longer.read("w.t", ref=f"main@{old.id[:8]}")["v"].to_list() == [1]
    monkeypatch.setenv("LAKEHOUSE_HISTORY_RETENTION_DAYS", "soon")
    with pytest.raises(Exception, match="LAKEHOUSE_HISTORY_RETENTION_DAYS must be a number of days, not 'soon'"):
        Lakehouse(backend.catalog_uri, backend.warehouse, backend.properties)


def test_a_catalog_from_before_the_pointer_log_is_upgraded(tmp_path) -> None:
    lh = Lakehouse.local(tmp_path)
    lh.write("u.t", frame("2024-03-01", [1]), allow_main=True)
    with lh.engine.begin() as conn:
        conn.execute(text("ALTER TABLE lakehouse_commits DROP COLUMN changes"))
    lh.close()
    lh = Lakehouse.local(tmp_path)
    old = lh.log(limit=1)[0]
    assert old.changes is None
    lh.write("u.t", frame("2024-03-01", [2]), allow_main=True)
    assert lh.read("u.t", ref="main~1")["v"].to_list() == [1]  # rebuilt from the new commit's record
    lh.write("u.t", frame("2024-03-01", [3]), allow_main=True)
    with pytest.raises(CommitNotFound, match="logged by a version of this package that did not record table pointers"):
        lh.tables(f"main@{lh.log()[-1].id}")
