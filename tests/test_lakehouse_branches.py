"""Lake-wide branches: creation without data copies, isolation, three-way merges, conflicts, diff, log, tags."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from sqlalchemy import select

from dagster_lakehouse.lakehouse import (
    InvalidRefName,
    Lakehouse,
    LakehouseError,
    MergeConflict,
    ProtectedBranchError,
    RefAlreadyExists,
    RefNotFound,
    TableNotFound,
    commits,
)
from dagster_lakehouse.lakehouse.catalog import IcebergTables
from dagster_lakehouse.lakehouse.gc import list_warehouse


def frame(*values: int) -> pl.DataFrame:
    return pl.DataFrame({"x": list(values)})


def xs(lh: Lakehouse, table: str, ref: str) -> list[int]:
    return sorted(lh.read(table, ref=ref)["x"])


@pytest.fixture
def lh(lakehouse: Lakehouse) -> Lakehouse:
    """A lakehouse whose main holds a.one = [1] and a.two = [2]."""
    lakehouse.write("a.one", frame(1), branch="main", allow_main=True)
    lakehouse.write("a.two", frame(2), branch="main", allow_main=True)
    return lakehouse


def catalog_rows(lh: Lakehouse) -> set[tuple[str, str, str, str]]:
    with lh.engine.connect() as conn:
        rows = conn.execute(
            select(
                IcebergTables.catalog_name,
                IcebergTables.table_namespace,
                IcebergTables.table_name,
                IcebergTables.metadata_location,
            )
        )
        return {tuple(row) for row in rows}


def test_create_branch_copies_pointers_not_files(lh: Lakehouse) -> None:
    files_before = list_warehouse(lh.config.properties, lh.config.warehouse)
    lh.create_branch("dev")
    assert list_warehouse(lh.config.properties, lh.config.warehouse) == files_before
    assert lh.branches() == ["dev", "main"]
    assert lh.tables("dev") == ["a.one", "a.two"]
    for table in ("a.one", "a.two"):
        assert lh.table(table, "dev").metadata_location == lh.table(table, "main").metadata_location


def test_branch_names_follow_git_rules(lh: Lakehouse) -> None:
    for good in ("dev", "feature/new-zones", "run-1234", "user.name/x_y"):
        lh.create_branch(good)
    for bad in ("", "a..b", "a b", "x~1", "y^", "a:b", "q?", "s*", "b[0]", "back\\slash", "/lead", "trail/",
                "a//b", ".hidden", "a/.b", "x.lock", "ends.", "@", "a@{b}", "tab\tname"):
        with pytest.raises(InvalidRefName, match="invalid branch/tag name"):
            lh.create_branch(bad)


def test_branch_errors(lh: Lakehouse) -> None:
    lh.create_branch("dev")
    with pytest.raises(RefAlreadyExists, match="'dev'"):
        lh.create_branch("dev")
    assert lh.create_branch("dev", exist_ok=True).name == "dev"
    with pytest.raises(RefNotFound, match="'ghost'"):
        lh.create_branch("x", from_ref="ghost")
    with pytest.raises(ProtectedBranchError):
        lh.delete_branch("main")
    with pytest.raises(RefNotFound):
        lh.write("a.one", frame(1), branch="ghost")


def test_table_created_on_branch_is_invisible_elsewhere_until_merge(lh: Lakehouse) -> None:
    lh.create_branch("dev")
    lh.create_branch("other")
    lh.write("b.new", frame(7), branch="dev")
    assert "b.new" not in lh.tables("main") and "b.new" not in lh.tables("other")
    with pytest.raises(TableNotFound):
        lh.read("b.new", ref="main")
    lh.merge("dev", into="main")
    assert xs(lh, "b.new", "main") == [7]
    assert "b.new" not in lh.tables("other")


def test_replace_and_schema_change_on_branch_stay_on_branch(lh: Lakehouse) -> None:
    lh.create_branch("dev")
    lh.write("a.one", frame(10, 11), branch="dev")
    lh.write("a.two", frame(3).with_columns(y=pl.lit("new")), branch="dev", mode="append")
    assert xs(lh, "a.one", "main") == [1]
    assert lh.read("a.two", ref="main").columns == ["x"]
    assert lh.read("a.two", ref="dev").columns == ["x", "y"]
    lh.merge("dev")
    assert xs(lh, "a.one", "main") == [10, 11]
    assert lh.read("a.two", ref="main").columns == ["x", "y"]


def test_three_way_merge_takes_each_side_that_changed(lh: Lakehouse) -> None:
    lh.create_branch("dev")
    lh.write("a.one", frame(100), branch="dev")
    lh.write("a.two", frame(200), branch="main", allow_main=True)
    result = lh.merge("dev", into="main")
    assert result.tables == ["a.one"] and not result.fast_forward
    assert xs(lh, "a.one", "main") == [100]
    assert xs(lh, "a.two", "main") == [200]
    # merging again is a no-op: the branch point moved to the merged state
    assert lh.merge("dev", into="main").tables == []
    # and main's change can flow back into the branch
    assert lh.merge("main", into="dev").tables == ["a.two"]
    assert xs(lh, "a.two", "dev") == [200]


def test_conflict_names_tables_and_changes_nothing(lh: Lakehouse) -> None:
    lh.create_branch("dev")
    lh.write("a.one", frame(5), branch="dev")
    lh.write("a.two", frame(6), branch="dev")
    lh.write("b.extra", frame(7), branch="dev")
    lh.write("a.two", frame(60), branch="main", allow_main=True)
    before = catalog_rows(lh)
    with pytest.raises(MergeConflict) as info:
        lh.merge("dev", into="main")
    assert info.value.tables == ["a.two"]
    assert "a.two" in str(info.value) and "nothing was merged" in str(info.value)
    assert catalog_rows(lh) == before
    assert xs(lh, "a.one", "main") == [1] and "b.extra" not in lh.tables("main")


def test_merge_is_one_transaction_even_when_the_last_table_fails(lh: Lakehouse, monkeypatch) -> None:
    lh.create_branch("dev")
    lh.write("a.one", frame(5), branch="dev")
    lh.write("a.two", frame(6), branch="dev")
    before = catalog_rows(lh)
    original = commits.swap_pointer
    calls = []

    def flaky(conn, ref, pointer):
        calls.append(pointer.table)
        if len(calls) == 2:  # the catalog fails under the second table's pointer swap
            raise RuntimeError("catalog went away")
        return original(conn, ref, pointer)

    monkeypatch.setattr(commits, "swap_pointer", flaky)
    with pytest.raises(RuntimeError, match="catalog went away"):
        lh.merge("dev")
    assert calls == ["a.one", "a.two"]
    assert catalog_rows(lh) == before


def test_dropped_table_merges_as_a_drop(lh: Lakehouse) -> None:
    lh.create_branch("dev")
    lh.drop_table("a.two", branch="dev")
    assert lh.tables("main") == ["a.one", "a.two"]
    lh.merge("dev")
    assert lh.tables("main") == ["a.one"]


def test_diff_lists_added_removed_modified_with_snapshots(lh: Lakehouse) -> None:
    lh.create_branch("dev")
    lh.write("a.one", frame(9), branch="dev")
    lh.drop_table("a.two", branch="dev")
    lh.write("c.new", frame(1), branch="dev")
    diffs = {d.table: d for d in lh.diff("main", "dev")}
    assert {t: d.change for t, d in diffs.items()} == {"a.one": "modified", "a.two": "removed", "c.new": "added"}
    assert diffs["a.one"].before_snapshot_id == lh.snapshot_id("a.one", "main")
    assert diffs["a.one"].after_snapshot_id == lh.snapshot_id("a.one", "dev")
    assert lh.diff("main", "main") == []


def test_log_shows_commits_with_tables_messages_and_run_ids(lh: Lakehouse) -> None:
    lh.create_branch("dev")
    lh.write("a.one", frame(3), branch="dev", message="fix one", run_id="run-42")
    lh.write("a.two", frame(4), branch="main", allow_main=True, message="after fork")
    log = lh.log("dev")
    assert log[0].message == "fix one" and log[0].tables == ["a.one"] and log[0].run_id == "run-42"
    assert log[0].snapshots == {"a.one": lh.snapshot_id("a.one", "dev")}
    messages = [c.message for c in log]
    assert "after fork" not in messages  # main's commit after the fork is not dev's history
    assert any(c.kind == "create" and "dev" in c.message for c in log)
    assert [c.time for c in log] == sorted((c.time for c in log), reverse=True)
    lh.merge("dev")
    merge = lh.log("main")[0]
    assert merge.kind == "merge" and merge.tables == ["a.one"]
    assert merge.snapshots == {"a.one": lh.snapshot_id("a.one", "main")}


def test_tags_are_immutable_snapshots_of_a_ref(lh: Lakehouse) -> None:
    lh.tag("v1", "main")
    lh.write("a.one", frame(50), branch="main", allow_main=True)
    assert xs(lh, "a.one", "v1") == [1]
    assert lh.tags() == ["v1"]
    with pytest.raises(ProtectedBranchError, match="tag"):
        lh.write("a.one", frame(2), branch="v1")
    with pytest.raises(RefAlreadyExists):
        lh.tag("v1", "main")
    with pytest.raises(ProtectedBranchError):
        lh.merge("main", into="v1")
    with pytest.raises(LakehouseError):
        lh.merge("main", into="main")


def test_delete_branch_keeps_main_and_files(lh: Lakehouse) -> None:
    lh.create_branch("dev")
    lh.write("a.one", frame(3), branch="dev")
    lh.delete_branch("dev")
    assert lh.branches() == ["main"]
    assert xs(lh, "a.one", "main") == [1]
    with pytest.raises(RefNotFound):
        lh.tables("dev")


def test_branch_is_a_plain_iceberg_catalog_for_other_readers(lh: Lakehouse) -> None:
    """Another engine reads a branch as a SQL/JDBC catalog of that name: no lakehouse code needed."""
    from pyiceberg.catalog.sql import SqlCatalog

    lh.create_branch("dev")
    lh.write("a.one", frame(42), branch="dev")
    plain = SqlCatalog("dev", uri=lh.config.catalog_uri, warehouse=lh.config.warehouse, **lh.config.properties)
    try:
        assert plain.load_table("a.one").scan().to_arrow().column("x").to_pylist() == [42]
    finally:
        plain.close()


def test_local_default_and_env_configuration(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for var in ("LAKEHOUSE_CATALOG_URI", "LAKEHOUSE_WAREHOUSE", "LAKEHOUSE_PATH"):
        monkeypatch.delenv(var, raising=False)
    with Lakehouse() as default:
        assert default.config.catalog_uri == f"sqlite:///{tmp_path / '.lakehouse' / 'catalog.db'}"
    monkeypatch.setenv("LAKEHOUSE_PATH", str(tmp_path / "elsewhere"))
    with Lakehouse() as from_env:
        from_env.write("a.b", frame(1), branch="main", allow_main=True)
    assert (tmp_path / "elsewhere" / "catalog.db").exists()
    with Lakehouse.local(tmp_path / "elsewhere") as again:
        assert again.tables() == ["a.b"]


def test_merging_into_a_child_keeps_the_branch_point_with_the_parent(lh: Lakehouse) -> None:
    """Regression: a merge into another ref must not move the source's branch point with its own parent."""
    lh.create_branch("feat")
    lh.create_branch("dev", from_ref="feat")
    lh.write("a.v", frame(1), branch="feat")
    assert lh.merge("feat", into="dev").tables == ["a.v"]
    assert lh.merge("feat", into="main").tables == ["a.v"]
    assert xs(lh, "a.v", "main") == [1]
    lh.write("a.v", frame(2), branch="dev")
    assert lh.merge("dev", into="feat").tables == ["a.v"]
    assert lh.merge("feat", into="main").tables == ["a.v"]
    assert xs(lh, "a.v", "main") == [2]


def test_refs_that_never_met_cannot_be_merged_directly(lh: Lakehouse) -> None:
    lh.create_branch("left")
    lh.create_branch("right")
    lh.write("a.one", frame(9), branch="left")
    before = catalog_rows(lh)
    with pytest.raises(LakehouseError, match=r"'left' into 'right'.*no branch point in common.*merge 'left' into 'main' first"):
        lh.merge("left", into="right")
    assert catalog_rows(lh) == before
    lh.merge("left", into="main")
    assert lh.merge("main", into="right").tables == ["a.one"]


def test_half_configured_connections_are_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for var in ("LAKEHOUSE_CATALOG_URI", "LAKEHOUSE_WAREHOUSE", "LAKEHOUSE_PATH", "LAKEHOUSE_PROPERTIES"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(LakehouseError, match="catalog_uri was given but no warehouse"):
        Lakehouse(catalog_uri="postgresql+psycopg://u@127.0.0.1:1/x")
    monkeypatch.setenv("LAKEHOUSE_WAREHOUSE", "s3://bucket/wh")
    with pytest.raises(LakehouseError, match="warehouse was given but no catalog_uri"):
        Lakehouse()
    monkeypatch.delenv("LAKEHOUSE_WAREHOUSE")
    monkeypatch.setenv("LAKEHOUSE_PROPERTIES", "{not json")
    with pytest.raises(LakehouseError, match="LAKEHOUSE_PROPERTIES is not valid JSON"):
        Lakehouse()
    assert not (tmp_path / ".lakehouse").exists()
