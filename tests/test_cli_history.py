"""Tests of the lake-history commands of the CLI (`log`, `revert`, `branch reset`, ref specs such as `main~1`),
in-process through `main()` against a real local lakehouse, like tests/test_cli.py."""

# ruff: noqa: F811  (the fixtures imported from test_cli are requested by their names as parameters)

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli import (  # noqa: F401  (_no_lakehouse_env is an autouse fixture; cli, seeded and files are fixtures)
    TRIPS,
    ZONES,
    Cli,
    _no_lakehouse_env,
    assert_clean_error,
    cli,
    files,
    seeded,
)


def trip_ids(cli: Cli, *argv: str) -> list[int]:
    """The trip ids `table head taxi.trips ARGV...` prints, sorted."""
    rows = cli.json("table", "head", "taxi.trips", "-n", "100", "--format", "json", *argv)
    return sorted(row["trip_id"] for row in rows)


def log_lines(cli: Cli, *argv: str) -> list[list[str]]:
    """The rows of `log ARGV...` below the header, split on whitespace (COMMIT TIME(2) REF KIND TABLES [RUN] ...)."""
    assert cli("log", *argv) == 0, cli.err
    return [line.split() for line in cli.out.splitlines()[1:]]


# ----- help ----------------------------------------------------------------------------------------------


def test_help_names_the_history_commands_and_ref_specs(cli: Cli) -> None:
    assert cli("--help") == 0
    commands = cli.out.split("examples:")[0]
    assert "log" in commands.split() and "revert" in commands.split()
    assert cli("branch", "--help") == 0
    assert "reset" in cli.out.split()
    for argv in (("table", "head"), ("query",), ("branch", "diff"), ("table", "list"), ("log",)):
        assert cli(*argv, "--help") == 0
        assert "main@<commit>" in cli.out and "dev~2" in cli.out, argv
    assert cli("branch", "reset", "dev") == 2  # --to is required
    assert "--to" in cli.err


# ----- log -----------------------------------------------------------------------------------------------


def test_log_is_branch_log_with_table_and_run_filters(seeded: Cli) -> None:
    with seeded.lakehouse() as lh:
        lh.write("taxi.trips", TRIPS.head(2), branch="dev", run_id="run-7", message="nightly trips")
        lh.write("taxi.zones", ZONES.head(1), branch="dev", run_id="run-7", message="nightly zones")
        lh.write("taxi.trips", TRIPS, branch="dev", run_id="run-8", message="reload trips")
        commits = lh.log("dev")
    assert seeded("log", "dev") == 0
    top_level = seeded.out
    assert seeded("branch", "log", "dev") == 0
    assert seeded.out == top_level  # one implementation
    lines = top_level.splitlines()
    assert lines[0].split() == ["COMMIT", "TIME", "REF", "KIND", "TABLES", "RUN", "MESSAGE"]
    assert [line.split()[0] for line in lines[1:]] == [c.short_id for c in commits]
    assert lines[1].split()[3:7] == ["dev", "write", "taxi.trips", "run-8"] and lines[1].endswith("reload trips")

    by_run = log_lines(seeded, "dev", "--run-id", "run-7")
    assert [row[0] for row in by_run] == [commits[1].short_id, commits[2].short_id]
    assert all(row[6] == "run-7" for row in by_run)
    by_table = log_lines(seeded, "dev", "--table", "taxi.zones")
    zones_writes = [c.short_id for c in commits if c.kind == "write" and c.tables == ["taxi.zones"]]
    assert len(zones_writes) == 2  # dev's, and main's from the seed
    assert [row[0] for row in by_table if row[4] == "write"] == zones_writes
    assert all("taxi.zones" in row[5].split(",") for row in by_table)  # (dev's creation lists the tables it forked)
    assert [row[0] for row in log_lines(seeded, "dev", "--table", "taxi.zones", "--run-id", "run-7")] == [
        commits[1].short_id
    ]
    assert [row[0] for row in log_lines(seeded, "dev", "--table", "taxi.trips", "--run-id", "run-7")] == [
        commits[2].short_id
    ]
    assert [row[0] for row in log_lines(seeded, "dev", "--table", "taxi.trips", "-n", "1")] == [commits[0].short_id]
    assert seeded("branch", "log", "dev", "--run-id", "run-8") == 0  # the same filters on `branch log`
    assert [line.split()[0] for line in seeded.out.splitlines()[1:]] == [commits[0].short_id]

    rows = seeded.json("log", "dev", "--run-id", "run-7", "--table", "taxi.trips", "--json")
    assert [(r["id"], r["short_id"], r["run_id"], r["tables"]) for r in rows] == [
        (commits[2].id, commits[2].short_id, "run-7", ["taxi.trips"])
    ]
    assert log_lines(seeded, "main")[0][0] == seeded.lakehouse().log("main")[0].short_id  # REF defaults to main
    assert seeded("log") == 0
    assert "run-7" not in seeded.out  # main's log holds none of dev's commits

    assert seeded("log", "dev", "--run-id", "nope") == 0
    assert seeded.out == ""
    assert "no commits on 'dev' were made by run 'nope'" in seeded.err
    assert seeded("log", "--table", "nonamespace") == 1
    assert_clean_error(seeded, "'nonamespace'")
    assert seeded("log", "-n", "0") == 2


def test_log_of_a_past_commit_starts_there(seeded: Cli) -> None:
    commits = seeded.lakehouse().log("main")
    rows = log_lines(seeded, "main~1")
    assert [row[0] for row in rows] == [c.short_id for c in commits[1:]]
    rows = log_lines(seeded, f"main@{commits[1].id[:6]}")
    assert [row[0] for row in rows] == [c.short_id for c in commits[1:]]


# ----- past commits where refs are read ------------------------------------------------------------------


def test_table_head_query_and_diff_read_past_commits(seeded: Cli) -> None:
    with seeded.lakehouse() as lh:
        seeded_commit = lh.log()[0]
        old_snapshot = lh.snapshot_id("taxi.trips")
        lh.write("taxi.trips", TRIPS.head(1), branch="main", allow_main=True, message="shrink trips")
        new_snapshot = lh.snapshot_id("taxi.trips")
    prefix = seeded_commit.id[:6]
    assert trip_ids(seeded) == [1]
    assert trip_ids(seeded, "--ref", f"main@{prefix}") == [1, 2, 3, 4]
    assert trip_ids(seeded, "--ref", "main~1") == [1, 2, 3, 4]
    assert trip_ids(seeded, "--ref", f"main@{prefix}~1") == [1, 2, 3, 4]  # before the zones write: same trips
    assert trip_ids(seeded, "--ref", "main~") == [1, 2, 3, 4]

    count = "SELECT count(*) AS n FROM trips"
    assert seeded.json("query", count, "--format", "json") == [{"n": 1}]
    assert seeded.json("query", count, "--ref", "main~1", "--format", "json") == [{"n": 4}]
    assert seeded.json("query", count, "--ref", f"main@{prefix}", "--format", "json") == [{"n": 4}]
    assert seeded("query", "SELECT * FROM zones", "--ref", "main~2") == 1  # before zones existed
    assert_clean_error(seeded, "query on 'main~2' refused", "taxi.trips")  # names the tables that ref has

    diffs = seeded.json("branch", "diff", f"main@{prefix}", "main", "--json")
    assert [(d["table"], d["change"], d["before_snapshot_id"], d["after_snapshot_id"]) for d in diffs] == [
        ("taxi.trips", "modified", old_snapshot, new_snapshot)
    ]
    assert seeded("branch", "diff", "main~1", "main") == 0
    lines = seeded.out.splitlines()
    assert "SNAPSHOT (main~1)" in lines[0]
    assert lines[1].split()[:2] == ["taxi.trips", "modified"] and lines[1].split()[-2:] == [
        str(old_snapshot),
        str(new_snapshot),
    ]
    assert seeded("branch", "diff", "main~1", f"main@{prefix}") == 0
    assert seeded.out == "" and "no differences between 'main~1'" in seeded.err

    assert seeded.json("table", "show", "taxi.trips", "--ref", "main~1", "--json")["rows"] == 4
    assert seeded.json("table", "list", "--ref", "main~2", "--json") == ["taxi.trips"]
    assert seeded("branch", "create", "before", "--from", "main~1") == 0
    assert trip_ids(seeded, "--ref", "before") == [1, 2, 3, 4]
    assert seeded("tag", "v0", "main~1") == 0
    assert trip_ids(seeded, "--ref", "v0") == [1, 2, 3, 4]


@pytest.mark.parametrize("spec", ["main@nope", "dev~999", "main@abcdef12", "main@ab", "ghost~1", "dev~x"])
def test_bad_ref_specs_name_the_ref(seeded: Cli, spec: str) -> None:
    for argv in (
        ("table", "head", "taxi.trips", "--ref", spec),
        ("table", "show", "taxi.trips", "--ref", spec),
        ("table", "list", "--ref", spec),
        ("query", "SELECT count(*) FROM trips", "--ref", spec),
        ("branch", "diff", "main", spec),
        ("branch", "diff", spec, "main"),
        ("log", spec),
        ("branch", "reset", "dev", "--to", spec),
    ):
        assert seeded(*argv) == 1, argv
        assert_clean_error(seeded, f"'{spec}'")
        assert seeded.out == ""
    assert seeded.lakehouse().log("dev")[0].kind == "create"  # the reset did nothing


def test_writes_to_a_past_commit_are_refused_naming_it(seeded: Cli, files: Path) -> None:
    lh = seeded.lakehouse()
    head = lh.log()[0]
    source = str(files / "trips.parquet")
    for argv in (
        ("import", source, "taxi.trips", "--branch", "main~1", "--allow-main"),
        ("import", source, "taxi.trips", "--branch", "dev~1"),
        ("branch", "merge", "dev", "--into", "main~1"),
        ("revert", head.id, "--on", "main~1"),
        ("branch", "reset", "dev~1", "--to", "main"),
    ):
        assert seeded(*argv) == 1, argv
        assert_clean_error(seeded, "~1' names a past commit")
        assert "--allow-main" not in seeded.err  # it would not help
    assert lh.log()[0] == head and lh.log("dev")[0].kind == "create"


# ----- revert --------------------------------------------------------------------------------------------


def test_revert_of_a_merge_restores_mains_previous_rows(seeded: Cli) -> None:
    with seeded.lakehouse() as lh:
        before = lh.snapshot_id("taxi.trips")
        lh.write("taxi.trips", TRIPS.head(2), branch="dev")
        lh.write("taxi.tips", TRIPS.select("trip_id"), branch="dev")
        merge = lh.merge("dev", "main")
        lh.write("taxi.zones", ZONES.head(1), branch="main", allow_main=True)  # a later commit, on another table
    assert trip_ids(seeded) == [1, 2]

    assert seeded("revert", merge.commit_id[:6]) == 0
    revert = seeded.lakehouse().log(limit=1)[0]
    lines = seeded.out.splitlines()
    assert lines[0] == (
        f"reverted commit {merge.commit_id[:10]} (merge 'dev' into 'main') on 'main': commit {revert.short_id}, 2 tables"
    )
    assert [line.split() for line in lines[1:]] == [
        ["TABLE", "HOW", "NOW"],
        ["taxi.tips", "restored", "dropped", "(the", "commit", "created", "it)"],
        ["taxi.trips", "restored", "snapshot", str(before)],
    ]
    assert trip_ids(seeded) == [1, 2, 3, 4]
    assert seeded.json("table", "list", "--json") == ["taxi.trips", "taxi.zones"]
    assert seeded.json("query", "SELECT count(*) AS n FROM zones", "--format", "json") == [{"n": 1}]  # kept
    assert revert.kind == "revert" and revert.message == f"revert {merge.commit_id[:10]}: merge 'dev' into 'main'"
    newest = log_lines(seeded, "-n", "1")[0]
    assert newest[0] == revert.short_id and newest[3:6] == ["main", "revert", "taxi.tips,taxi.trips"]

    result = seeded.json("revert", revert.id[:8], "-m", "redo the merge", "--json")  # revert the revert
    with seeded.lakehouse() as lh:
        assert result == {
            "branch": "main",
            "commit_id": lh.log(limit=1)[0].id,
            "tables": ["taxi.tips", "taxi.trips"],
            "restored": {"taxi.tips": lh.snapshot_id("taxi.tips"), "taxi.trips": lh.snapshot_id("taxi.trips")},
            "inverted": {},
            "reverted": True,
            "commit": revert.id,
        }
        assert lh.log(limit=1)[0].message == "redo the merge"
    assert trip_ids(seeded) == [1, 2]

    assert seeded("revert", merge.commit_id[:8]) == 0  # the merge's tables are as after it again: undo it again
    assert trip_ids(seeded) == [1, 2, 3, 4]
    assert seeded("revert", merge.commit_id[:8]) == 0
    assert seeded.out.startswith(f"nothing to revert: every table commit {merge.commit_id[:10]}")


def test_revert_undoes_a_commit_file_by_file_on_a_branch(seeded: Cli) -> None:
    with seeded.lakehouse() as lh:
        lh.write("taxi.trips", TRIPS.head(1), branch="dev", mode="append", message="one more trip")
        appended = lh.log("dev", limit=1)[0]
        lh.write("taxi.trips", TRIPS.tail(1), branch="dev", mode="append")
    assert trip_ids(seeded, "--ref", "dev") == [1, 1, 2, 3, 4, 4]
    assert seeded("revert", appended.id[:7], "--on", "dev") == 0
    assert f"reverted commit {appended.short_id} (one more trip) on 'dev'" in seeded.out
    assert seeded.out.splitlines()[2].split()[:4] == ["taxi.trips", "file-level", "inverse", "snapshot"]
    assert trip_ids(seeded, "--ref", "dev") == [1, 2, 3, 4, 4]
    assert trip_ids(seeded) == [1, 2, 3, 4]  # main untouched


def test_revert_conflict_exits_3_naming_the_table(seeded: Cli) -> None:
    with seeded.lakehouse() as lh:
        lh.write("taxi.trips", TRIPS.head(1), branch="dev", mode="append")
        lh.write("taxi.zones", ZONES.head(1), branch="dev", mode="append")
        merge = lh.merge("dev", "main")
        lh.write("taxi.trips", TRIPS, branch="main", allow_main=True)  # replaces every file, the merged one too
        head = lh.log()[0]
        snapshots = {t: lh.snapshot_id(t) for t in lh.tables()}
    assert seeded("revert", merge.commit_id[:6]) == 3
    assert_clean_error(seeded, f"cannot revert commit {merge.commit_id[:10]} on 'main'", "taxi.trips")
    conflicts = seeded.err.split("conflicting tables:\n")[1].split("hint:")[0].splitlines()
    assert [line.split(":")[0].strip() for line in conflicts] == ["taxi.trips"]  # zones could be undone, trips not
    assert "later commits rewrote or removed" in conflicts[0]
    assert "lakehouse branch reset main --to" in seeded.err
    assert seeded("revert", merge.commit_id[:6], "--json") == 3
    assert json.loads(seeded.out) == {
        "branch": "main",
        "reverted": False,
        "commit": merge.commit_id,
        "conflicts": ["taxi.trips"],
        "reasons": {"taxi.trips": conflicts[0].split(": ", 1)[1]},
    }
    with seeded.lakehouse() as lh:
        assert lh.log()[0] == head  # nothing was reverted
        assert {t: lh.snapshot_id(t) for t in lh.tables()} == snapshots


def test_revert_errors(seeded: Cli) -> None:
    with seeded.lakehouse() as lh:
        lh.write("taxi.trips", TRIPS.head(1), branch="dev")
        dev_write = lh.log("dev", limit=1)[0]
        created = lh.log()[-1]
    assert seeded("revert", "nope") == 1
    assert_clean_error(seeded, "'main@nope'", "not a commit id")
    assert seeded("revert", "abcdef12") == 1
    assert_clean_error(seeded, "'main@abcdef12'", "no commit 'abcdef12'")
    assert seeded("revert", dev_write.id[:8]) == 1  # a commit of another branch
    assert_clean_error(seeded, dev_write.id[:8], "'dev'")
    assert seeded("revert", "main") == 1
    assert_clean_error(seeded, "'main@main'")
    assert seeded("revert", "main~0") == 1
    assert_clean_error(seeded, "cannot revert 'main~0'", "as it is now")
    assert seeded("revert", created.id[:8]) == 1
    assert_clean_error(seeded, "created 'main'")
    assert seeded("revert", dev_write.id, "--on", "ghost") == 1
    assert_clean_error(seeded, "'ghost'")
    assert seeded("revert") == 2
    assert trip_ids(seeded, "--ref", "dev") == [1] and trip_ids(seeded) == [1, 2, 3, 4]


# ----- branch reset --------------------------------------------------------------------------------------


def test_branch_reset_moves_a_branch(seeded: Cli) -> None:
    with seeded.lakehouse() as lh:
        lh.write("taxi.trips", TRIPS.head(1), branch="dev", mode="append")
        lh.write("taxi.extra", ZONES, branch="dev")
        head = lh.log("dev", limit=1)[0]
        fork_snapshot = lh.snapshot_id("taxi.trips")
    assert seeded("branch", "reset", "dev", "--to", "dev~2") == 0
    reset = seeded.lakehouse().log("dev", limit=1)[0]
    lines = seeded.out.splitlines()
    assert lines[0] == f"reset 'dev' to 'dev~2': commit {reset.short_id}, 2 tables"
    assert [line.split() for line in lines[1:]] == [
        ["TABLE", "NOW"],
        ["taxi.extra", "dropped", "(not", "on", "'dev~2')"],
        ["taxi.trips", "snapshot", str(fork_snapshot)],
    ]
    assert reset.kind == "reset" and reset.message == "reset 'dev' to 'dev~2'"
    assert trip_ids(seeded, "--ref", "dev") == [1, 2, 3, 4]
    assert seeded.json("table", "list", "--ref", "dev", "--json") == ["taxi.trips", "taxi.zones"]

    assert seeded("branch", "reset", "dev", "--to", f"dev@{head.id[:6]}", "-m", "forward again") == 0
    assert trip_ids(seeded, "--ref", "dev") == [1, 1, 2, 3, 4]
    assert seeded.json("table", "list", "--ref", "dev", "--json") == ["taxi.extra", "taxi.trips", "taxi.zones"]
    assert seeded.lakehouse().log("dev", limit=1)[0].message == "forward again"

    with seeded.lakehouse() as lh:
        lh.write("taxi.zones", ZONES.head(2), branch="main", allow_main=True)
    result = seeded.json("branch", "reset", "dev", "--to", "main", "--json")
    with seeded.lakehouse() as lh:
        assert result == {
            "branch": "dev",
            "commit_id": lh.log("dev", limit=1)[0].id,
            "tables": ["taxi.extra", "taxi.trips", "taxi.zones"],
            "restored": {"taxi.extra": None, "taxi.trips": fork_snapshot, "taxi.zones": lh.snapshot_id("taxi.zones")},
            "inverted": {},
        }
        assert lh.read("taxi.zones", ref="dev").height == 2
    assert seeded("branch", "reset", "dev", "--to", "main") == 0
    assert seeded.out.startswith("nothing to reset: every table of 'dev' already points where 'main' does")


def test_branch_reset_of_main_needs_allow_main_and_tags_are_refused(seeded: Cli) -> None:
    head = seeded.lakehouse().log()[0]
    assert seeded("branch", "reset", "main", "--to", "main~1") == 1
    assert_clean_error(seeded, "'main' is protected")
    assert "--allow-main" in seeded.err and "lakehouse revert" in seeded.err
    assert seeded.lakehouse().log()[0] == head
    assert seeded("tag", "v1") == 0
    assert seeded("branch", "reset", "v1", "--to", "main~1") == 1
    assert_clean_error(seeded, "'v1' is a tag")
    assert seeded("branch", "reset", "ghost", "--to", "main") == 1
    assert_clean_error(seeded, "'ghost'")
    assert seeded.json("table", "list", "--json") == ["taxi.trips", "taxi.zones"]
    assert seeded("branch", "reset", "main", "--to", "main~1", "--allow-main") == 0
    assert seeded.json("table", "list", "--json") == ["taxi.trips"]
    assert seeded.json("table", "list", "--ref", "v1", "--json") == ["taxi.trips", "taxi.zones"]
