"""What the `lakehouse` CLI imports at start-up, seen from `sys.modules` of a fresh process.

`--help` and `--version` load none of the heavy libraries; commands that open the lakehouse load the core (PyIceberg,
SQLAlchemy, ...) but never Dagster or marimo. Times are measured in benchmarks/bench_cli.py, not here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from dagster_lakehouse.lakehouse import Lakehouse

HEAVY = ("dagster", "marimo", "polars", "pyarrow", "pyiceberg", "sqlalchemy", "pandas")
"""Top-level packages that each take a noticeable share of a second to import."""

RUN_CLI = f"""
import json, sys
from dagster_lakehouse.cli import main
code = main(sys.argv[1:])
print("MODULES " + json.dumps({{"code": code, "loaded": [m for m in {HEAVY!r} if m in sys.modules]}}), file=sys.stderr)
"""
"""Run `main()` on the arguments, then report on stderr which of `HEAVY` the process imported."""


def clean_env() -> dict[str, str]:
    """The environment without any LAKEHOUSE_* setting, so only --path names a lakehouse."""
    return {k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_")}


def run_cli(*argv: str) -> tuple[int, list[str], str]:
    """(exit code, heavy packages imported, stdout) of `lakehouse ARGV` in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", RUN_CLI, *argv], capture_output=True, text=True, timeout=300, env=clean_env()
    )
    report = [line for line in done.stderr.splitlines() if line.startswith("MODULES ")]
    assert report, done.stderr
    result = json.loads(report[-1].removeprefix("MODULES "))
    return result["code"], result["loaded"], done.stdout


def imported_by(statement: str) -> list[str]:
    """The heavy packages a fresh interpreter holds after `statement`."""
    code = f"import json, sys\n{statement}\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=clean_env())
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def root(tmp_path: Path) -> str:
    """An embedded lakehouse with a table on main and a branch `dev`."""
    path = tmp_path / "lh"
    with Lakehouse.local(path) as lh:
        lh.write("taxi.trips", pl.DataFrame({"trip_id": [1, 2, 3]}), branch="main", allow_main=True)
        lh.create_branch("dev")
    return str(path)


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_help_and_version_import_no_heavy_library(flag: str) -> None:
    code, loaded, out = run_cli(flag)
    assert code == 0
    assert out.startswith("usage: lakehouse" if flag == "--help" else "lakehouse ")
    assert loaded == []


def test_usage_errors_import_no_heavy_library() -> None:
    code, loaded, _ = run_cli("branch", "list", "--bogus")
    assert code == 2
    assert loaded == []


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["branch", "list"], "dev"),
        (["table", "list", "--ref", "dev"], "taxi.trips"),
        (["log", "-n", "1"], "write"),
        (["query", "SELECT count(*) AS n FROM taxi.trips", "--format", "csv"], "n\n3"),
    ],
)
def test_commands_never_import_dagster(root: str, argv: list[str], expected: str) -> None:
    code, loaded, out = run_cli("--path", root, *argv)
    assert code == 0
    assert expected in out
    assert "dagster" not in loaded and "marimo" not in loaded


def test_cli_modules_import_nothing_heavy() -> None:
    """Every command module (parsers and handlers) imports its libraries inside the handlers that need them."""
    statement = "\n".join(
        f"import dagster_lakehouse.cli.{name}"
        for name in ("branch", "data", "history", "maintenance", "progress", "table", "tag", "_common")
    )
    assert imported_by(statement) == []


def test_packages_import_nothing_heavy_until_a_name_is_used() -> None:
    assert imported_by("import dagster_lakehouse, dagster_lakehouse.lakehouse") == []
    assert imported_by("from dagster_lakehouse.lakehouse import LakehouseError, MergeConflict, LakehouseConfig") == []
    assert "dagster" not in imported_by("from dagster_lakehouse import Lakehouse, model, Input")


def test_lazy_names_resolve_and_are_listed() -> None:
    import dagster_lakehouse
    import dagster_lakehouse.lakehouse as core

    for package in (dagster_lakehouse, core):
        assert set(package.__all__) <= set(dir(package))
        for name in package.__all__:
            value = getattr(package, name)
            assert getattr(value, "__name__", name) == name, name
        with pytest.raises(AttributeError, match="no attribute 'nope'"):
            package.nope  # noqa: B018
    assert dagster_lakehouse.Lakehouse is core.Lakehouse
    assert dagster_lakehouse.Commit is core.Commit
    from dagster_lakehouse import Input, LakehouseIOManager, model
    from dagster_lakehouse.notebook.spec import Input as SpecInput
    from dagster_lakehouse.notebook.spec import model as spec_model

    assert (Input, model) == (SpecInput, spec_model)
    assert LakehouseIOManager.__module__.startswith("dagster_lakehouse.dagster")


def test_branch_list_reads_the_catalog_database_alone(root: str) -> None:
    """`branch list` needs only SQLAlchemy: no PyIceberg, Polars or PyArrow, so it answers in a fraction of a second."""
    code, loaded, out = run_cli("--path", root, "branch", "list", "--json")
    assert code == 0
    rows = json.loads(out)
    assert [(r["name"], r["parent"], r["tables"]) for r in rows] == [("main", None, 1), ("dev", "main", 1)]
    assert loaded == ["sqlalchemy"]


def test_branch_list_of_a_catalog_without_refs_goes_through_the_lakehouse(root: str) -> None:
    """A SQL catalog that no lakehouse opened yet (made by PyIceberg or another engine) has no refs table: the full
    lakehouse sets it up (branch `main`), then lists."""
    import sqlite3

    with sqlite3.connect(Path(root) / "catalog.db") as db:
        db.execute("DROP TABLE lakehouse_refs")
    code, loaded, out = run_cli("--path", root, "branch", "list", "--json")
    assert code == 0 and [r["name"] for r in json.loads(out)] == ["main"]
    assert "pyiceberg" in loaded  # it took the full path
    code, loaded, out = run_cli("--path", root, "branch", "list")
    assert code == 0 and loaded == ["sqlalchemy"]  # set up: the fast path again
