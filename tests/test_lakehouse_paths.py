"""The embedded lakehouse in a folder whose path holds a space, `#`, `%`, `?` and non-ASCII letters.

Everything (the API, gc, the CLI, a Dagster run) must use exactly that folder: writes land in it, reads find them,
and nothing is created beside it (`locations`: one encoding rule for every location, decoded once by every reader).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from sqlalchemy import make_url
from test_dagster_support import fresh_lakehouse_cache  # noqa: F401  (autouse: forget cached connections)

from dagster_lakehouse.cli import main
from dagster_lakehouse.dagster import LakehouseIOManager, LakehouseResource
from dagster_lakehouse.lakehouse import Lakehouse
from dagster_lakehouse.lakehouse.gc import list_warehouse
from dagster_lakehouse.lakehouse.locations import canonical, file_uri, native_path, sqlite_url

FOLDER = Path("My Projects #1") / "%ü?"
TRIPS = pl.DataFrame({"trip_id": [1, 2, 3], "city": ["Zürich", "São Paulo", "a/b"], "miles": [1.5, 2.0, 3.2]})


@pytest.fixture(autouse=True)
def _no_lakehouse_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("LAKEHOUSE_CATALOG_URI", "LAKEHOUSE_WAREHOUSE", "LAKEHOUSE_PATH", "LAKEHOUSE_PROPERTIES"):
        monkeypatch.delenv(var, raising=False)


def _outside(tmp_path: Path, root: Path) -> list[str]:
    """Every path under `tmp_path` that is not `root`, inside it, or one of its parent folders."""
    parents = {str(p) for p in root.parents}
    return sorted(str(p) for p in tmp_path.rglob("*") if str(p) not in parents and p != root and root not in p.parents)


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    """The (not yet created) lakehouse folder; the test fails if anything appears beside it."""
    before = _outside(tmp_path, tmp_path / FOLDER)
    yield tmp_path / FOLDER
    assert _outside(tmp_path, tmp_path / FOLDER) == before, "files were created outside the lakehouse folder"


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_the_rule_round_trips() -> None:
    path = "/x/My Projects #1/%ü?/a=b+c/v=a%2Fb"
    assert native_path(file_uri(path)) == path
    assert canonical(file_uri(path)) == canonical(path) == "file://" + path
    written = "file:///w/city=Z%C3%BCrich/c=a%2Fb/n=S%C3%A3o+Paulo/p=50%25"  # as PyIceberg names partition folders
    assert native_path(written) == "/w/city=Zürich/c=a%2Fb/n=São+Paulo/p=50%"
    assert native_path("s3://bucket/k/city=Z%C3%BCrich") == "s3://bucket/k/city=Z%C3%BCrich"
    assert make_url(sqlite_url("/x/My Projects #1/%ü?/catalog.db")).database == "/x/My Projects #1/%ü?/catalog.db"


def test_write_read_branch_merge_gc_in_the_folder(root: Path) -> None:
    with Lakehouse.local(root) as lh:
        assert (root / "catalog.db").is_file() and (root / "warehouse").is_dir()
        lh.write("taxi.trips", TRIPS, branch="main", allow_main=True)
        lh.write("taxi.by_city", TRIPS, branch="main", allow_main=True, partition_by=["city"])
        lh.write("taxi.lazy", TRIPS.lazy(), branch="main", allow_main=True)  # Polars' own sink
        assert lh.read("taxi.trips").sort("trip_id").equals(TRIPS)
        assert lh.read("taxi.by_city").sort("trip_id").equals(TRIPS)
        assert lh.read("taxi.lazy").sort("trip_id").equals(TRIPS)
        assert lh.read("taxi.by_city", filter="city = 'São Paulo'")["trip_id"].to_list() == [2]
        assert lh.table("taxi.by_city").scan().to_arrow().num_rows == 3  # PyIceberg's own reader

        lh.create_branch("dev")
        lh.write("taxi.trips", TRIPS.head(2), branch="dev", mode="append")
        lh.write("taxi.by_city", TRIPS.head(1), branch="dev", where="city = 'Zürich'")
        lh.drop_table("taxi.lazy", branch="dev")
        lh.merge("dev", into="main")
        assert lh.read("taxi.trips").height == 5
        assert not lh.exists("taxi.lazy", "main")

        reachable = {
            canonical(t.file.file_path)
            for name in ("taxi.trips", "taxi.by_city")
            for t in lh.table(name).scan().plan_files()
        }
        listed = list_warehouse(lh.config.properties, lh.config.warehouse)
        assert listed and all(native_path(uri).startswith(str(root / "warehouse") + "/") for uri, _ in listed)
        deleted = lh.gc(older_than=timedelta(0), force=True, keep_history=timedelta(0))
        assert deleted, "the dropped table's and replaced partition's files are garbage"
        assert all(native_path(uri).startswith(str(root / "warehouse") + "/") for uri in deleted)
        assert not {canonical(uri) for uri in deleted} & reachable
        assert all(not Path(native_path(uri)).exists() for uri in deleted)
        assert lh.read("taxi.by_city").sort("trip_id")["trip_id"].to_list() == [1, 2, 3]
        assert lh.read("taxi.trips").height == 5
        assert lh.gc(older_than=timedelta(0), force=True, keep_history=timedelta(0)) == []


def test_every_way_of_naming_the_folder_is_the_same_lakehouse(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Lakehouse.local(root) as lh:
        lh.write("t.a", TRIPS, branch="main", allow_main=True)
    with Lakehouse(path=root) as lh:
        assert lh.tables() == ["t.a"]
    monkeypatch.setenv("LAKEHOUSE_PATH", str(root))
    with Lakehouse() as lh:
        assert lh.read("t.a").height == 3
    monkeypatch.chdir(root.parent)
    with Lakehouse.local(root.name) as lh:  # relative
        assert lh.read("t.a").height == 3


def test_the_cli_in_the_folder(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in put #2%.parquet"
    TRIPS.write_parquet(source)
    monkeypatch.setenv("LAKEHOUSE_PATH", str(root))

    def cli(*argv: str) -> str:
        capsys.readouterr()
        code = main(list(argv))
        out, err = capsys.readouterr()
        assert code == 0, err
        return out

    cli("branch", "create", "dev")
    cli("import", str(source), "taxi.trips", "--branch", "dev")
    assert "taxi.trips" in cli("table", "list", "--ref", "dev")
    assert "São Paulo" in cli("table", "head", "taxi.trips", "--ref", "dev", "--format", "csv")
    assert cli("query", "SELECT sum(miles) AS m FROM taxi.trips", "--ref", "dev", "--format", "csv").split() == [
        "m",
        "6.7",
    ]
    cli("branch", "merge", "dev")
    assert "Zürich" in cli("table", "head", "taxi.trips", "--format", "csv")
    cli("gc", "--older-than-hours", "0", "--force")
    with Lakehouse(path=root) as lh:
        assert lh.read("taxi.trips").height == 3
    source.unlink()


def test_a_dagster_run_in_the_folder(root: Path) -> None:
    @dg.asset(key_prefix="taxi")
    def trips() -> pl.DataFrame:
        return TRIPS

    @dg.asset(key_prefix="taxi")
    def long_trips(trips: pl.DataFrame) -> pl.DataFrame:
        return trips.filter(pl.col("miles") > 1.8)

    resource = LakehouseResource(path=str(root))
    result = dg.materialize(
        [trips, long_trips],
        resources={"io_manager": LakehouseIOManager(lakehouse=resource)},
        tags={"lakehouse/branch": "dev"},
    )
    assert result.success
    with Lakehouse(path=root) as lh:
        assert sorted(lh.read("taxi.long_trips", ref="dev")["city"].to_list()) == ["São Paulo", "a/b"]
    assert any(p.suffix == ".parquet" for p in (root / "warehouse").rglob("*"))


def test_gc_keeps_files_older_versions_named_with_the_escapes_of_their_location(tmp_path: Path) -> None:
    """Before the rule, a partition folder kept its location's escapes (`city=Z%C3%BCrich`): gc must not take it."""
    with Lakehouse.local(tmp_path / "lh") as lh:
        lh.write("t.c", TRIPS, branch="main", allow_main=True, partition_by=["city"])
        data = tmp_path / "lh" / "warehouse" / "t" / "c" / "data"
        shutil.move(data / "city=Zürich", data / "city=Z%C3%BCrich")
        before = _files(tmp_path / "lh")
        lh.gc(older_than=timedelta(0), force=True, keep_history=timedelta(0))
        assert _files(tmp_path / "lh") == before
        assert os.listdir(data / "city=Z%C3%BCrich")
