"""Tests of the `lakehouse` command line, in-process through `main()` and via the installed console script."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from dagster_lakehouse.cli import main
from dagster_lakehouse.cli.data import sql_aliases
from dagster_lakehouse.lakehouse import Lakehouse

TRIPS = pl.DataFrame(
    {
        "trip_id": [1, 2, 3, 4],
        "PULocationID": [1, 2, 1, 3],
        "trip_miles": [1.5, 2.0, 3.2, 0.4],
        "pickup_datetime": [datetime(2024, 1, day) for day in (1, 2, 3, 4)],
    }
)
ZONES = pl.DataFrame({"LocationID": [1, 2, 3], "Borough": ["Manhattan", "Queens", "Bronx"]})


class Cli:
    """Runs `main()` against one local lakehouse and captures what it printed."""

    def __init__(self, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.root = root
        self.capsys = capsys
        self.out = ""
        self.err = ""

    def __call__(self, *argv: str) -> int:
        """Run `lakehouse --path ROOT ARGV...`; keep stdout/stderr in `.out` / `.err`."""
        self.capsys.readouterr()
        code = main(["--path", str(self.root), *argv])
        self.out, self.err = self.capsys.readouterr()
        return code

    def json(self, *argv: str) -> object:
        """Run a command that must succeed and parse its stdout as JSON."""
        assert self(*argv) == 0, self.err
        return json.loads(self.out)

    def lakehouse(self) -> Lakehouse:
        """The same lakehouse through the Python API."""
        return Lakehouse(path=self.root)


@pytest.fixture(autouse=True)
def _no_lakehouse_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("LAKEHOUSE_CATALOG_URI", "LAKEHOUSE_WAREHOUSE", "LAKEHOUSE_PATH", "LAKEHOUSE_PROPERTIES"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    """A CLI runner over a fresh (not yet created) local lakehouse in tmp_path."""
    return Cli(tmp_path / "lh", capsys)


@pytest.fixture
def seeded(cli: Cli) -> Iterator[Cli]:
    """A lakehouse whose `main` holds taxi.trips and taxi.zones, plus a branch `dev` forked after them."""
    with cli.lakehouse() as lh:
        lh.write("taxi.trips", TRIPS, branch="main", allow_main=True)
        lh.write("taxi.zones", ZONES, branch="main", allow_main=True)
        lh.create_branch("dev")
    yield cli


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A data folder: trips.parquet, and csvs/ holding two CSV files with different columns."""
    folder = tmp_path / "data"
    (folder / "csvs").mkdir(parents=True)
    TRIPS.write_parquet(folder / "trips.parquet")
    ZONES.head(2).write_csv(folder / "csvs" / "a.csv")
    ZONES.tail(1).with_columns(service_zone=pl.lit("Boro")).write_csv(folder / "csvs" / "b.csv")
    return folder


def assert_clean_error(cli: Cli, *names: str) -> None:
    """stderr is one `error: ` message naming each of `names`, and no traceback."""
    assert cli.err.startswith("error: "), cli.err
    assert "Traceback" not in cli.err
    for name in names:
        assert name in cli.err, (name, cli.err)


# ----- general -----------------------------------------------------------------------------------------


def test_help_and_usage_errors(cli: Cli) -> None:
    assert cli("--help") == 0
    assert "branch" in cli.out and "query" in cli.out and "exit codes" in cli.out
    assert cli() == 2
    assert cli("bogus") == 2
    assert cli("branch") == 2
    assert "required" in cli.err


def test_version(cli: Cli) -> None:
    assert cli("--version") == 0
    assert cli.out.startswith("lakehouse ")


def test_read_command_does_not_create_a_lakehouse(cli: Cli) -> None:
    assert cli("branch", "list") == 1
    assert_clean_error(cli, "no lakehouse at", str(cli.root.name))
    assert not cli.root.exists()


def test_global_options_after_the_command(seeded: Cli, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["table", "list", "--path", str(seeded.root)]) == 0
    assert capsys.readouterr().out.split() == ["taxi.trips", "taxi.zones"]


def test_environment_variable_names_the_lakehouse(
    seeded: Cli, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LAKEHOUSE_PATH", str(seeded.root))
    assert main(["table", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == ["taxi.trips", "taxi.zones"]


def test_catalog_uri_and_warehouse_options(seeded: Cli, capsys: pytest.CaptureFixture[str]) -> None:
    root = seeded.root.resolve()
    uri, warehouse = f"sqlite:///{root / 'catalog.db'}", (root / "warehouse").as_uri()
    assert main(["--catalog-uri", uri, "--warehouse", warehouse, "table", "list", "--ref", "dev"]) == 0
    assert capsys.readouterr().out.split() == ["taxi.trips", "taxi.zones"]


def test_keyboard_interrupt(seeded: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(self: Lakehouse) -> list[str]:
        """Stand-in for a user pressing Ctrl-C mid-command."""
        raise KeyboardInterrupt

    monkeypatch.setattr(Lakehouse, "tags", interrupted)
    assert seeded("tag", "list") == 130
    assert seeded.err.strip() == "error: interrupted"


# ----- branch --------------------------------------------------------------------------------------------


def test_branch_create_list_delete(cli: Cli) -> None:
    assert cli("branch", "create", "dev") == 0
    assert "created branch 'dev' from 'main'" in cli.out
    assert cli("branch", "create", "feature/x", "--from", "dev") == 0
    assert cli("branch", "list") == 0
    lines = cli.out.splitlines()
    assert lines[0].split() == ["BRANCH", "PARENT", "CREATED", "TABLES"]
    assert [line.split()[0] for line in lines[1:]] == ["main", "dev", "feature/x"]
    assert lines[1].index("-") == lines[0].index("PARENT")  # aligned columns
    rows = cli.json("branch", "list", "--json")
    assert {r["name"]: r["parent"] for r in rows} == {"main": None, "dev": "main", "feature/x": "dev"}
    assert cli("branch", "delete", "feature/x") == 0
    assert cli.out.strip() == "deleted branch 'feature/x'"
    assert [r["name"] for r in cli.json("branch", "list", "--json")] == ["main", "dev"]


def test_bad_branch_name(cli: Cli) -> None:
    assert cli("branch", "create", "bad..name") == 1
    assert_clean_error(cli, "'bad..name'", "invalid branch")
    assert cli("branch", "create", "dev") == 0
    assert cli("branch", "create", "dev") == 1
    assert_clean_error(cli, "'dev'", "exists")
    assert cli("branch", "create", "x", "--from", "nope") == 1
    assert_clean_error(cli, "'nope'")


def test_branch_delete_errors(cli: Cli) -> None:
    assert cli("branch", "create", "dev") == 0
    assert cli("branch", "delete", "main") == 1
    assert_clean_error(cli, "'main'")
    assert cli("branch", "delete", "ghost") == 1
    assert_clean_error(cli, "'ghost'")


def test_branch_diff(seeded: Cli) -> None:
    assert seeded("branch", "diff", "main", "dev") == 0
    assert seeded.out == ""
    assert "no differences" in seeded.err
    with seeded.lakehouse() as lh:
        lh.write("taxi.trips", TRIPS.head(1), branch="dev", mode="append")
        lh.write("taxi.tips", TRIPS.select("trip_id"), branch="dev")
        after = lh.snapshot_id("taxi.trips", "dev")
    assert seeded("branch", "diff", "main", "dev") == 0
    lines = seeded.out.splitlines()
    assert lines[0].split()[:2] == ["TABLE", "CHANGE"]
    assert [line.split()[:2] for line in lines[1:]] == [["taxi.tips", "added"], ["taxi.trips", "modified"]]
    diffs = seeded.json("branch", "diff", "main", "dev", "--json")
    assert diffs[1] == {
        "table": "taxi.trips",
        "change": "modified",
        "before_snapshot_id": seeded.lakehouse().snapshot_id("taxi.trips", "main"),
        "after_snapshot_id": after,
        "rows_added": 1,
        "rows_removed": 0,
        "files_added": 1,
        "files_removed": 0,
    }
    assert [line.split()[2:4] for line in lines[1:]] == [[f"+{TRIPS.height}", "-0"], ["+1", "-0"]]
    assert seeded("branch", "diff", "main", "nope") == 1
    assert_clean_error(seeded, "'nope'")


def test_branch_log(seeded: Cli) -> None:
    with seeded.lakehouse() as lh:
        lh.write("taxi.trips", TRIPS, branch="dev", message="reload trips", run_id="run-42")
    assert seeded("branch", "log", "dev") == 0
    lines = seeded.out.splitlines()
    assert lines[0].split() == ["COMMIT", "TIME", "REF", "KIND", "TABLES", "RUN", "MESSAGE"]
    assert "reload trips" in lines[1] and "run-42" in lines[1] and "taxi.trips" in lines[1]
    assert seeded("branch", "log", "dev", "-n", "2") == 0
    assert len(seeded.out.splitlines()) == 3
    commits = seeded.json("branch", "log", "dev", "--json")
    assert commits[0]["message"] == "reload trips"
    assert commits[0]["run_id"] == "run-42"
    assert commits[0]["tables"] == ["taxi.trips"]
    datetime.fromisoformat(commits[0]["time"])
    assert [c["ref"] for c in commits][-1] == "main"
    assert seeded("branch", "log") == 0
    assert "RUN" not in seeded.out.splitlines()[0]
    assert seeded("branch", "log", "-n", "0") == 2


def test_branch_merge(seeded: Cli) -> None:
    with seeded.lakehouse() as lh:
        lh.write("taxi.trips", TRIPS.head(2), branch="dev")
    assert seeded("branch", "merge", "dev") == 0
    assert "merged 'dev' into 'main': 1 table" in seeded.out
    assert "taxi.trips" in seeded.out
    assert seeded.lakehouse().read("taxi.trips").height == 2
    assert seeded("branch", "merge", "dev") == 0
    assert "nothing to merge" in seeded.out
    result = seeded.json("branch", "merge", "dev", "--into", "main", "--json")
    assert result["merged"] is True and result["tables"] == []


def test_merge_conflict_exit_code_3(seeded: Cli) -> None:
    with seeded.lakehouse() as lh:
        lh.create_branch("other")
        for branch in ("dev", "other"):
            lh.write("taxi.trips", TRIPS.head(1), branch=branch, mode="append")
            lh.write("taxi.zones", ZONES.head(1), branch=branch)
        lh.write("taxi.only_dev", ZONES, branch="dev")
    assert seeded("branch", "merge", "other") == 0
    before = seeded.lakehouse().snapshot_id("taxi.trips")
    assert seeded("branch", "merge", "dev") == 3
    assert_clean_error(seeded, "taxi.zones", "'dev'")
    assert "conflicting tables:\n  taxi.zones: 'dev' replaced all rows while 'main' also changed the table\n" in seeded.err
    assert "taxi.only_dev" not in seeded.lakehouse().tables()
    assert seeded.lakehouse().snapshot_id("taxi.trips") == before
    assert seeded("branch", "merge", "dev", "--json") == 3
    assert json.loads(seeded.out) == {
        "source": "dev",
        "target": "main",
        "merged": False,
        "conflicts": ["taxi.zones"],
        "reasons": {"taxi.zones": "'dev' replaced all rows while 'main' also changed the table"},
    }
    assert seeded("branch", "merge", "dev", "--on-conflict", "source") == 0
    assert "taxi.zones (conflict settled: source's version)" in seeded.out
    assert "taxi.trips (file-level merge)" in seeded.out
    with seeded.lakehouse() as lh:
        assert lh.read("taxi.zones").equals(lh.read("taxi.zones", ref="dev"))
        assert lh.read("taxi.trips").height == TRIPS.height + 2  # both branches' appended row


# ----- tag -----------------------------------------------------------------------------------------------


def test_tag_create_list_delete(seeded: Cli) -> None:
    assert seeded("tag", "v1") == 0
    assert seeded.out.strip() == "tagged 'main' as 'v1' (2 tables)"
    assert seeded("tag", "dev-snap", "dev") == 0
    assert seeded("tag", "list") == 0
    assert [line.split()[:2] for line in seeded.out.splitlines()] == [["TAG", "FROM"], ["dev-snap", "dev"], ["v1", "main"]]
    assert seeded("tag") == 0
    assert "v1" in seeded.out
    tags = seeded.json("tag", "list", "--json")
    assert [t["name"] for t in tags] == ["dev-snap", "v1"] and tags[1]["tables"] == 2
    assert seeded("tag", "v1") == 1
    assert_clean_error(seeded, "'v1'")
    assert seeded("tag", "v2", "ghost") == 1
    assert_clean_error(seeded, "'ghost'")
    assert seeded("tag", "--delete", "dev-snap") == 0
    assert [t["name"] for t in seeded.json("tag", "list", "--json")] == ["v1"]
    assert seeded("tag", "--delete") == 2
    assert seeded("table", "list", "--ref", "v1") == 0
    assert seeded.out.split() == ["taxi.trips", "taxi.zones"]


# ----- table ---------------------------------------------------------------------------------------------


def test_table_list(seeded: Cli) -> None:
    with seeded.lakehouse() as lh:
        lh.write("raw.events", ZONES, branch="dev")
    assert seeded("table", "list") == 0
    assert seeded.out.split() == ["taxi.trips", "taxi.zones"]
    assert seeded.json("table", "list", "--ref", "dev", "--json") == ["raw.events", "taxi.trips", "taxi.zones"]
    assert seeded("table", "list", "--ref", "nope") == 1
    assert_clean_error(seeded, "'nope'")


def test_table_list_empty_ref(cli: Cli) -> None:
    assert cli("branch", "create", "dev") == 0
    assert cli("table", "list", "--ref", "dev") == 0
    assert cli.out == ""
    assert "no tables on 'dev'" in cli.err


def test_table_show(seeded: Cli) -> None:
    lh = seeded.lakehouse()
    assert seeded("table", "show", "taxi.trips") == 0
    fields = dict(line.split(":", 1) for line in seeded.out.split("schema:")[0].splitlines())
    assert fields["rows"].strip() == "4"
    assert fields["snapshot"].split()[0] == str(lh.snapshot_id("taxi.trips"))
    assert fields["location"].strip() == lh.table("taxi.trips").location()
    schema = seeded.out.split("schema:")[1].splitlines()
    assert schema[1].split()[:3] == ["ID", "COLUMN", "TYPE"]
    assert schema[2].split()[:3] == ["1", "trip_id", "long"]
    assert schema[5].split()[:3] == ["4", "pickup_datetime", "timestamp"]
    info = seeded.json("table", "show", "taxi.zones", "--ref", "dev", "--json")
    assert info["rows"] == 3
    assert info["ref"] == "dev"
    assert info["snapshot_id"] == lh.snapshot_id("taxi.zones", "dev")
    assert [c["name"] for c in info["schema"]] == ["LocationID", "Borough"]


def test_unknown_table(seeded: Cli) -> None:
    assert seeded("table", "show", "taxi.nope") == 1
    assert_clean_error(seeded, "'taxi.nope'")
    assert seeded("table", "head", "taxi.nope", "--ref", "dev") == 1
    assert_clean_error(seeded, "'taxi.nope'", "'dev'")
    assert seeded("table", "show", "nonamespace") == 1
    assert_clean_error(seeded, "'nonamespace'")
    assert seeded("table", "show", "taxi.trips", "--ref", "ghost") == 1
    assert_clean_error(seeded, "'ghost'")


def test_table_head(seeded: Cli) -> None:
    assert seeded("table", "head", "taxi.trips", "-n", "2") == 0
    assert "shape: (2, 4)" in seeded.out and "trip_miles" in seeded.out
    assert seeded("table", "head", "taxi.trips", "--columns", "trip_id,trip_miles", "--format", "csv") == 0
    assert seeded.out.splitlines() == ["trip_id,trip_miles", "1,1.5", "2,2.0", "3,3.2", "4,0.4"]
    assert seeded(
        "table", "head", "taxi.trips", "--filter", "PULocationID in (1, 3) and trip_miles > 1", "--format", "json"
    ) == 0
    assert [row["trip_id"] for row in json.loads(seeded.out)] == [1, 3]


def test_table_head_errors(seeded: Cli) -> None:
    assert seeded("table", "head", "taxi.trips", "--columns", "trip_id,nope") == 1
    assert_clean_error(seeded, "'nope'", "taxi.trips")
    assert seeded("table", "head", "taxi.trips", "--filter", "__import__('os').system('true')") == 1
    assert_clean_error(seeded, "filter")
    assert seeded("table", "head", "taxi.trips", "-n", "0") == 2
    assert seeded("table", "head", "taxi.trips", "--format", "xml") == 2


# ----- import --------------------------------------------------------------------------------------------


def test_import_parquet_file(cli: Cli, files: Path) -> None:
    assert cli("branch", "create", "dev") == 0
    assert cli("import", str(files / "trips.parquet"), "taxi.trips", "--branch", "dev") == 0
    assert cli.out.startswith("imported 4 rows from ")
    assert "into taxi.trips on 'dev'" in cli.out
    lh = cli.lakehouse()
    assert lh.read("taxi.trips", ref="dev").equals(TRIPS)
    assert lh.tables("main") == []
    assert lh.log("dev")[0].message == f"import {files / 'trips.parquet'}"
    assert cli("import", str(files / "trips.parquet"), "taxi.trips", "--branch", "dev", "--mode", "append") == 0
    assert cli.out.startswith("appended 4 rows")
    assert lh.read("taxi.trips", ref="dev").height == 8
    assert cli("import", str(files / "trips.parquet"), "taxi.trips", "--branch", "dev", "-m", "reload") == 0
    assert lh.read("taxi.trips", ref="dev").height == 4
    assert lh.log("dev")[0].message == "reload"


def test_import_csv_folder(cli: Cli, files: Path) -> None:
    assert cli("branch", "create", "dev") == 0
    assert cli("import", str(files / "csvs"), "taxi.zones", "--branch", "dev") == 0
    assert "3 rows from 2 files" in cli.out
    zones = cli.lakehouse().read("taxi.zones", ref="dev").sort("LocationID")
    assert zones.columns == ["LocationID", "Borough", "service_zone"]
    assert zones["Borough"].to_list() == ["Manhattan", "Queens", "Bronx"]
    assert zones["service_zone"].to_list() == [None, None, "Boro"]


def test_import_mixed_folder_and_glob(cli: Cli, files: Path) -> None:
    assert cli("branch", "create", "dev") == 0
    TRIPS.write_csv(files / "more_trips.csv")
    assert cli("import", str(files), "taxi.trips", "--branch", "dev") == 0
    trips = cli.lakehouse().read("taxi.trips", ref="dev")
    assert trips.height == 8
    assert trips.schema["pickup_datetime"] == pl.Datetime("us")
    assert cli("import", str(files / "csvs" / "*.csv"), "taxi.zones", "--branch", "dev") == 0
    assert cli.lakehouse().read("taxi.zones", ref="dev").height == 3


def test_import_into_main_needs_allow_main(cli: Cli, files: Path) -> None:
    source = str(files / "trips.parquet")
    assert cli("import", source, "taxi.trips", "--branch", "main") == 1
    assert_clean_error(cli, "'main'", "protected")
    assert "--allow-main" in cli.err
    assert cli("import", source, "taxi.trips", "--branch", "main", "--allow-main") == 0
    assert cli.lakehouse().tables("main") == ["taxi.trips"]


def test_import_errors(cli: Cli, files: Path, tmp_path: Path) -> None:
    assert cli("branch", "create", "dev") == 0
    assert cli("import", str(files / "missing.parquet"), "taxi.x", "--branch", "dev") == 1
    assert_clean_error(cli, "missing.parquet", "no such file")
    (tmp_path / "empty").mkdir()
    assert cli("import", str(tmp_path / "empty"), "taxi.x", "--branch", "dev") == 1
    assert_clean_error(cli, "empty", "no .parquet or .csv files")
    (tmp_path / "notes.txt").write_text("hello")
    assert cli("import", str(tmp_path / "notes.txt"), "taxi.x", "--branch", "dev") == 1
    assert_clean_error(cli, "notes.txt")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet at all")
    assert cli("import", str(tmp_path / "broken.parquet"), "taxi.x", "--branch", "dev") == 1
    assert_clean_error(cli, "broken.parquet")
    pl.DataFrame({"a": [1], "b": [None]}).write_parquet(tmp_path / "untyped.parquet")
    assert cli("import", str(tmp_path / "untyped.parquet"), "taxi.x", "--branch", "dev") == 1
    assert_clean_error(cli, "untyped.parquet", "'b'")
    assert cli("import", str(files / "trips.parquet"), "taxi.x", "--branch", "ghost") == 1
    assert_clean_error(cli, "'ghost'")
    assert cli("import", str(files / "trips.parquet"), "no_namespace", "--branch", "dev") == 1
    assert_clean_error(cli, "'no_namespace'")
    assert cli("import", str(files / "trips.parquet"), "taxi.x") == 2
    assert cli("import", str(files / "trips.parquet"), "taxi.x", "--branch", "dev", "--mode", "merge") == 2
    assert cli.lakehouse().tables("dev") == []


# ----- query ---------------------------------------------------------------------------------------------


JOIN = (
    "SELECT z.Borough, count(*) AS trips, sum(t.trip_miles) AS miles "
    "FROM {trips} t JOIN {zones} z ON t.PULocationID = z.LocationID GROUP BY z.Borough ORDER BY z.Borough"
)


@pytest.mark.parametrize(
    ("trips", "zones"),
    [("taxi.trips", "taxi.zones"), ("taxi_trips", "taxi_zones"), ("trips", "zones"), ('"taxi.trips"', "zones")],
)
def test_query_joins_two_tables(seeded: Cli, trips: str, zones: str) -> None:
    rows = seeded.json("query", JOIN.format(trips=trips, zones=zones), "--format", "json")
    assert rows == [
        {"Borough": "Bronx", "trips": 1, "miles": 0.4},
        {"Borough": "Manhattan", "trips": 2, "miles": pytest.approx(4.7)},
        {"Borough": "Queens", "trips": 1, "miles": 2.0},
    ]


def test_query_formats(seeded: Cli) -> None:
    sql = "SELECT LocationID, Borough FROM taxi.zones ORDER BY LocationID"
    assert seeded("query", sql) == 0
    assert "shape: (3, 2)" in seeded.out and "Manhattan" in seeded.out
    assert seeded("query", sql, "--format", "csv") == 0
    assert seeded.out.splitlines() == ["LocationID,Borough", "1,Manhattan", "2,Queens", "3,Bronx"]
    assert seeded("query", "SELECT * FROM taxi.trips", "--max-rows", "2") == 0
    assert "…" in seeded.out or "..." in seeded.out


def test_query_reads_the_ref(seeded: Cli) -> None:
    with seeded.lakehouse() as lh:
        lh.write("taxi.trips", TRIPS.head(1), branch="dev")
    assert seeded.json("query", "SELECT count(*) AS n FROM trips", "--ref", "dev", "--format", "json") == [{"n": 1}]
    assert seeded.json("query", "SELECT count(*) AS n FROM trips", "--format", "json") == [{"n": 4}]


def test_query_errors(seeded: Cli) -> None:
    assert seeded("query", "SELECT * FROM taxi.nope") == 1
    assert_clean_error(seeded, "nope", "taxi.trips, taxi.zones")
    assert seeded("query", "SELEC 1") == 1
    assert_clean_error(seeded, "query on 'main' failed")
    assert seeded("query", "SELECT 1", "--ref", "ghost") == 1
    assert_clean_error(seeded, "'ghost'")


def test_sql_aliases_skip_ambiguous_names() -> None:
    aliases = sql_aliases(["taxi.trips", "raw.trips", "a.b_c", "a_b.c", "x.zones"])
    assert aliases["taxi.trips"] == "taxi.trips"
    assert aliases["taxi_trips"] == "taxi.trips"
    assert "trips" not in aliases
    assert "a_b_c" not in aliases
    assert aliases["b_c"] == "a.b_c"
    assert aliases["zones"] == "x.zones"


# ----- the installed console script ----------------------------------------------------------------------


def test_console_script(tmp_path: Path, files: Path) -> None:
    script = Path(sys.executable).parent / "lakehouse"
    assert script.exists(), script
    base = [str(script), "--path", str(tmp_path / "lh")]

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        """Run the console script on the test lakehouse."""
        return subprocess.run([*base, *argv], capture_output=True, text=True, timeout=120)

    assert run("branch", "create", "dev").returncode == 0
    assert run("import", str(files / "trips.parquet"), "taxi.trips", "--branch", "dev").returncode == 0
    assert run("import", str(files / "csvs"), "taxi.zones", "--branch", "dev").returncode == 0
    done = run("query", JOIN.format(trips="trips", zones="zones"), "--ref", "dev", "--format", "csv")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "Borough,trips,miles"
    assert done.stdout.splitlines()[1] == "Bronx,1,0.4"
    missing = run("table", "show", "taxi.nope", "--ref", "dev")
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: ") and "'taxi.nope'" in missing.stderr
    assert "Traceback" not in missing.stderr
    assert run("branch", "create", "other").returncode == 0
    assert run("import", str(files / "trips.parquet"), "taxi.trips", "--branch", "other").returncode == 0
    assert run("branch", "merge", "other").returncode == 0
    conflict = run("branch", "merge", "dev")
    assert conflict.returncode == 3
    assert "taxi.trips" in conflict.stderr and "Traceback" not in conflict.stderr
    assert run("branch", "list", "--bogus").returncode == 2


def test_gc_dry_run_then_delete_files_of_a_deleted_branch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = str(tmp_path / "gc")
    with Lakehouse.local(root) as lh:
        lh.create_branch("tmp")
        lh.write("g.gone", pl.DataFrame({"x": [1]}), branch="tmp")
        lh.delete_branch("tmp")
    assert main(["--path", root, "gc", "--older-than-hours", "0", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would delete" in out and "/g/gone/" in out
    assert main(["--path", root, "gc", "--older-than-hours", "0"]) == 2  # a grace below 10 minutes needs --force
    assert "--force" in capsys.readouterr().err
    assert main(["--path", root, "gc", "--older-than-hours", "0", "--force", "--json"]) == 0
    deleted = json.loads(capsys.readouterr().out)["files"]
    assert deleted and all(not Path(uri.removeprefix("file://")).exists() for uri in deleted)
    assert main(["--path", root, "gc", "--older-than-hours", "-1"]) == 2
