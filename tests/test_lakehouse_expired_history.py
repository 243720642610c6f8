"""History that a collection with a shorter window took (issue 24, item 3): every way of naming a commit whose
metadata files `gc(keep_history=timedelta(0))` deleted raises `CommitExpired` (saying the window and how to lengthen
it) and changes nothing, on both backends; `gc` goes on working, and a ref pointing at a metadata file that is gone
(as an older version could make) is reported by name instead of stopping every collection."""

# ruff: noqa: F811  (the fixtures imported from test_lakehouse_bad_input are requested by their names as parameters)

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import polars as pl
import pytest
from sqlalchemy import update
from test_lakehouse_bad_input import unchanged  # noqa: F401  (fixture: hash of catalog rows and warehouse listing)

from dagster_lakehouse.cli import main
from dagster_lakehouse.lakehouse import CommitExpired, Lakehouse
from dagster_lakehouse.lakehouse.catalog import IcebergTables
from dagster_lakehouse.lakehouse.gc import list_warehouse
from dagster_lakehouse.lakehouse.refs import Commit

EXPIRED = r"has expired: gc collected the metadata file of table 'h\.\w+'.*window here is 7 days.*LAKEHOUSE_HISTORY_RETENTION_DAYS"
COLLECT_ALL = {"older_than": timedelta(0), "force": True, "keep_history": timedelta(0)}


@dataclass(frozen=True)
class Collected:
    """`dev`'s commits whose files are gone: `first` wrote h.t, `gone` wrote h.gone, `reset` took both away again."""

    first: Commit
    gone: Commit
    reset: Commit


@pytest.fixture
def lh(lakehouse: Lakehouse) -> Lakehouse:
    """`main` holds k.keep; `dev` wrote h.t and h.gone, was reset to main, and gc collected all history since."""
    lakehouse.write("k.keep", pl.DataFrame({"v": [1, 2]}), allow_main=True)
    lakehouse.create_branch("dev")
    lakehouse.write("h.t", pl.DataFrame({"v": [1]}), branch="dev")
    lakehouse.write("h.gone", pl.DataFrame({"v": [2]}), branch="dev")
    lakehouse.reset("dev", to="main")
    deleted = lakehouse.gc(**COLLECT_ALL)
    assert any("/h/gone/metadata/" in uri for uri in deleted) and deleted.problems == []
    return lakehouse


@pytest.fixture
def collected(lh: Lakehouse) -> Collected:
    reset, gone, first = lh.log("dev", limit=3)
    assert (reset.kind, gone.tables, first.tables) == ("reset", ["h.gone"], ["h.t"])
    return Collected(first, gone, reset)


REFUSED: dict[str, Callable[[Lakehouse, Collected], Any]] = {
    "read": lambda lh, c: lh.read("h.gone", ref=f"dev@{c.gone.id[:8]}"),
    "read_arrow": lambda lh, c: lh.read_arrow("h.t", ref=f"dev@{c.first.id[:8]}"),
    "scan": lambda lh, c: lh.scan("h.gone", ref=f"dev@{c.gone.id}"),
    "table": lambda lh, c: lh.table("h.gone", ref="dev~1"),
    "tables": lambda lh, c: lh.tables(f"dev@{c.gone.id[:8]}"),
    "catalog": lambda lh, c: lh.catalog("dev~2"),
    "reset": lambda lh, c: lh.reset("dev", to=f"dev@{c.gone.id[:8]}"),
    "revert": lambda lh, c: lh.revert(c.reset.id, on="dev"),  # would put h.t and h.gone back
    "create_branch": lambda lh, c: lh.create_branch("fix", from_ref=f"dev@{c.gone.id[:8]}"),
    "tag": lambda lh, c: lh.tag("before", ref="dev~1"),
    "diff": lambda lh, c: lh.diff(f"dev@{c.gone.id[:8]}", "dev"),
    "diff_other_way": lambda lh, c: lh.diff("main", "dev~1"),
    "log": lambda lh, c: lh.log(f"dev@{c.gone.id[:8]}"),
}


@pytest.mark.parametrize("run", REFUSED.values(), ids=REFUSED.keys())
def test_collected_history_is_refused_by_name_and_changes_nothing(
    lh: Lakehouse, collected: Collected, unchanged, run
) -> None:
    with unchanged(), pytest.raises(CommitExpired, match=EXPIRED) as caught:
        run(lh, collected)
    assert str(caught.value).startswith("ref 'dev") and "keep_history" in str(caught.value)


def test_after_refusals_gc_and_the_rest_of_the_lake_keep_working(lh: Lakehouse, collected: Collected) -> None:
    for run in REFUSED.values():
        with pytest.raises(CommitExpired):
            run(lh, collected)
    assert lh.branches() == ["dev", "main"] and lh.tags() == []
    result = lh.gc(**COLLECT_ALL)
    assert result == [] and result.problems == []
    assert lh.read("k.keep", ref="dev")["v"].to_list() == [1, 2]
    lh.write("h.t", pl.DataFrame({"v": [3]}), branch="dev")  # the table's name is free again
    assert lh.read("h.t", ref="dev")["v"].to_list() == [3]
    kept = lh.log("dev", limit=1)[0]
    lh.write("h.t", pl.DataFrame({"v": [4]}), branch="dev", mode="append")
    assert lh.read("h.t", ref=f"dev@{kept.id[:8]}")["v"].to_list() == [3]  # history gc kept still reads


def test_history_a_gc_did_not_take_stays_readable(lh: Lakehouse, collected: Collected) -> None:
    lh.write("k.keep", pl.DataFrame({"v": [3]}), allow_main=True, mode="append")
    lh.write("k.keep", pl.DataFrame({"v": [9]}), allow_main=True)
    assert lh.read("k.keep", ref="main~1")["v"].sort().to_list() == [1, 2, 3]
    assert lh.gc(older_than=timedelta(0), force=True) == []  # the default window keeps it
    assert lh.read("k.keep", ref="main~1")["v"].sort().to_list() == [1, 2, 3]
    lh.create_branch("back", from_ref="main~1")
    assert lh.read("k.keep", ref="back")["v"].sort().to_list() == [1, 2, 3]


def test_a_ref_pointing_at_collected_metadata_is_reported_and_gc_goes_on(lh: Lakehouse, collected: Collected) -> None:
    """As an older version could make: a branch created from a commit whose files were collected."""
    (location,) = collected.gone.changes["h.gone"][1:]
    lh.create_branch("old")
    lh.write("h.gone", pl.DataFrame({"v": [5]}), branch="old")
    with lh.engine.begin() as conn:
        conn.execute(
            update(IcebergTables)
            .where(IcebergTables.catalog_name == "old", IcebergTables.table_name == "gone")
            .values(metadata_location=location, previous_metadata_location=None)
        )
    lh.create_branch("junk")
    lh.write("j.junk", pl.DataFrame({"v": [6]}), branch="junk")
    lh.delete_branch("junk")
    before = {uri for uri, _ in list_warehouse(lh.config.properties, lh.config.warehouse)}
    result = lh.gc(older_than=timedelta(0), force=True)
    (problem,) = result.problems
    assert (problem.table, problem.refs, problem.path, problem.kind) == ("h.gone", ("old",), location, "metadata file")
    assert problem.problem == "is missing" and problem.kept_table
    assert "table 'h.gone' on 'old': metadata file" in str(problem)
    assert result and all("/j/junk/" in uri for uri in result)  # the rest was collected
    after = {uri for uri, _ in list_warehouse(lh.config.properties, lh.config.warehouse)}
    assert before - after == set(result)
    assert {uri for uri in before if "/h/gone/" in uri} <= after  # the table's files all kept
    lh.delete_branch("old")
    assert lh.gc(older_than=timedelta(0), force=True).problems == []


def test_a_shorter_window_elsewhere_is_found_out_even_inside_this_window(lh: Lakehouse, backend) -> None:
    """Another process with a shorter window collected what this one's (longer) window still counts as history."""
    lh.create_branch("w")
    lh.write("h.w", pl.DataFrame({"v": [1]}), branch="w")
    wrote = lh.log("w", limit=1)[0]
    lh.reset("w", to="main")
    longer = Lakehouse(backend.catalog_uri, backend.warehouse, backend.properties, history_retention=timedelta(days=30))
    shorter = Lakehouse(backend.catalog_uri, backend.warehouse, backend.properties, history_retention=timedelta(0))
    assert longer.read("h.w", ref=f"w@{wrote.id[:8]}")["v"].to_list() == [1]
    assert any("/h/w/" in uri for uri in shorter.gc(older_than=timedelta(0), force=True))
    with pytest.raises(CommitExpired, match=r"window here is 30 days"):
        longer.read("h.w", ref=f"w@{wrote.id[:8]}")
    longer.close()
    shorter.close()


# ----- the CLI -----------------------------------------------------------------------------------------


@pytest.fixture
def run_cli(
    backend, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., tuple[int, str, str]]:
    """`run_cli(*argv)` runs `lakehouse ARGV --catalog-uri ... --warehouse ...` on the (local) backend: (code, out, err)."""
    for var in ("LAKEHOUSE_CATALOG_URI", "LAKEHOUSE_WAREHOUSE", "LAKEHOUSE_PATH", "LAKEHOUSE_PROPERTIES"):
        monkeypatch.delenv(var, raising=False)

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main([*argv, "--catalog-uri", backend.catalog_uri, "--warehouse", backend.warehouse])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.mark.parametrize("backend", ["local"], indirect=True)
@pytest.mark.parametrize(
    "argv",
    [
        ("table", "head", "h.gone", "--ref", "dev@{gone}"),
        ("branch", "diff", "dev@{gone}", "dev"),
        ("log", "dev@{gone}"),
        ("branch", "create", "fix", "--from", "dev@{gone}"),
        ("branch", "reset", "dev", "--to", "dev@{gone}"),
        ("revert", "{reset}", "--on", "dev"),
    ],
    ids=lambda argv: " ".join(argv[:2]),
)
def test_the_cli_names_expired_history(
    lh: Lakehouse, collected: Collected, run_cli, unchanged, argv: tuple[str, ...]
) -> None:
    args = [a.format(gone=collected.gone.id[:8], reset=collected.reset.id[:8]) for a in argv]
    with unchanged():
        code, out, err = run_cli(*args)
    assert code == 1, (out, err)
    assert err.startswith("error: ref 'dev@"), err
    assert "has expired" in err and "LAKEHOUSE_HISTORY_RETENTION_DAYS" in err and "Traceback" not in err
