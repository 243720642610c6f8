"""Progress of long commands: the core's `progress` callbacks of `gc` and `merge`, and the CLI's status line, which
shows on a terminal (a pseudo-terminal here) and never with `--quiet` or when stderr is a pipe."""

from __future__ import annotations

import io
import os
import select
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from dagster_lakehouse.cli.progress import Progress
from dagster_lakehouse.lakehouse import Lakehouse

ERASE = "\r\x1b[K"
"""What the status line writes before each redraw and when it is taken away."""


class Calls(list):
    """A progress callback that records its calls."""

    def __call__(self, what: str, done: int, total: int | None) -> None:
        self.append((what, done, total))

    def of(self, what: str) -> list[tuple[int, int | None]]:
        return [(done, total) for step, done, total in self if step == what]


def counts_up(calls: list[tuple[int, int | None]], total: int) -> bool:
    """Whether a step was reported from 0 to `total` of `total`, never going back."""
    dones = [done for done, _ in calls]
    return dones[0] == 0 and dones[-1] == total and dones == sorted(dones) and {t for _, t in calls} == {total}


# ----- the core's callbacks ------------------------------------------------------------------------------


def test_gc_reports_metadata_read_and_files_deleted(lakehouse: Lakehouse) -> None:
    lakehouse.create_branch("tmp")
    for part in range(3):
        lakehouse.write("g.gone", pl.DataFrame({"x": [part]}), branch="tmp", mode="append")
    lakehouse.write("g.kept", pl.DataFrame({"x": [1]}), branch="main", allow_main=True)
    lakehouse.delete_branch("tmp")

    dry = Calls()
    would = lakehouse.gc(older_than=timedelta(0), dry_run=True, progress=dry)
    assert would and all("/g/gone/" in uri for uri in would)
    metadata_files = dry.of("reading metadata files")[0][1]
    assert metadata_files is not None and metadata_files >= 1  # at least g.kept's on main; tmp's are unreached
    assert counts_up(dry.of("reading metadata files"), metadata_files)
    assert dry.of("listing the warehouse") == [(0, None)]
    assert dry.of("deleting files") == []  # a dry run deletes nothing

    calls = Calls()
    deleted = lakehouse.gc(older_than=timedelta(0), force=True, progress=calls)
    assert sorted(deleted) == sorted(would)
    assert counts_up(calls.of("deleting files"), len(would))
    assert [step for step, _, _ in calls][-1] == "deleting files"


def test_merge_reports_each_table(lakehouse: Lakehouse) -> None:
    lakehouse.write("m.both", pl.DataFrame({"x": [0]}), branch="main", allow_main=True)
    lakehouse.create_branch("dev")
    for name in ("m.a", "m.b", "m.c"):
        lakehouse.write(name, pl.DataFrame({"x": [1]}), branch="dev")
    lakehouse.write("m.both", pl.DataFrame({"x": [1]}), branch="dev", mode="append")
    lakehouse.write("m.both", pl.DataFrame({"x": [2]}), branch="main", mode="append", allow_main=True)

    calls = Calls()
    result = lakehouse.merge("dev", "main", progress=calls)
    assert result.tables == ["m.a", "m.b", "m.both", "m.c"]
    assert result.replayed == ["m.both"]  # one table merged file by file, three switched
    assert calls == [("merging tables", done, 4) for done in range(5)]


def test_merge_of_nothing_reports_zero_of_zero(lakehouse: Lakehouse) -> None:
    lakehouse.create_branch("dev")
    calls = Calls()
    assert lakehouse.merge("dev", "main", progress=calls).tables == []
    assert calls == [("merging tables", 0, 0)]


# ----- the status line -----------------------------------------------------------------------------------


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_status_line_draws_first_and_last_and_erases_itself() -> None:
    stream = Terminal()
    with Progress("gc", enabled=True, stream=stream) as shown:
        shown("deleting files", 0, 2000)
        shown("deleting files", 2000, 2000)
    text = stream.getvalue()
    assert text.startswith(ERASE + "gc: deleting files 0/2,000 (0%), ")
    assert ERASE + "gc: deleting files 2,000/2,000 (100%), " in text
    assert text.endswith(" s" + ERASE)
    assert "\n" not in text


def test_disabled_status_line_writes_nothing() -> None:
    stream = Terminal()
    with Progress("gc", enabled=False, stream=stream) as shown:
        shown("deleting files", 1, 2)
        shown.status("done")
    assert stream.getvalue() == ""


# ----- the CLI on a terminal, with --quiet, and on pipes ---------------------------------------------------


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_")}
    env["COLUMNS"] = "200"
    return env


def lakehouse_cmd(*argv: str) -> list[str]:
    return [str(Path(sys.executable).parent / "lakehouse"), *argv]


def on_terminal(argv: list[str], timeout: float = 300) -> tuple[int, str]:
    """(exit code, everything written) of `argv` run with stdin, stdout and stderr on a new pseudo-terminal."""
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=cli_env(), close_fds=True)
    finally:
        os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end of the terminal
                break
            if not data:
                break
            chunks.append(data)
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return code, b"".join(chunks).decode()


@pytest.fixture
def root(tmp_path: Path) -> str:
    """An embedded lakehouse with a branch `dev`."""
    path = tmp_path / "lh"
    with Lakehouse.local(path) as lh:
        lh.create_branch("dev")
    return str(path)


@pytest.fixture
def csv_file(tmp_path: Path) -> Path:
    path = tmp_path / "trips.csv"
    pl.DataFrame({"trip_id": range(5000), "miles": [i / 10 for i in range(5000)]}).write_csv(path)
    return path


def test_import_shows_rows_read_on_a_terminal(root: str, csv_file: Path) -> None:
    code, out = on_terminal(lakehouse_cmd("--path", root, "import", str(csv_file), "taxi.trips", "--branch", "dev"))
    assert code == 0, out
    assert f"import {csv_file}: reading rows 5,000/5,000 (100%)" in out
    assert "5,000 rows read; writing data files and committing" in out
    assert ERASE + "imported 5000 rows" in out  # the status line is gone before the result is printed
    with Lakehouse.local(root) as lh:
        assert lh.read("taxi.trips", ref="dev").equals(pl.read_csv(csv_file))


def test_import_is_quiet_with_quiet_and_on_pipes(root: str, csv_file: Path) -> None:
    code, out = on_terminal(lakehouse_cmd("--path", root, "import", str(csv_file), "taxi.a", "--branch", "dev", "-q"))
    assert code == 0, out
    assert "reading rows" not in out and ERASE not in out
    assert out.startswith("imported 5000 rows")

    piped = subprocess.run(
        lakehouse_cmd("--path", root, "import", str(csv_file), "taxi.b", "--branch", "dev"),
        capture_output=True,
        text=True,
        timeout=300,
        env=cli_env(),
    )
    assert piped.returncode == 0, piped.stderr
    assert piped.stderr == ""
    assert piped.stdout.startswith("imported 5000 rows")


def test_import_error_on_a_terminal_erases_the_line_first(root: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n" + "1,2\n" * 500 + "x,3\n")  # past the rows Polars infers the types from: an error mid-read
    code, out = on_terminal(
        lakehouse_cmd("--path", root, "import", str(bad), "t.bad", "--branch", "dev", "--mode", "append")
    )
    assert code == 1
    assert ERASE + "error: cannot read" in out
    assert "Traceback" not in out


def test_gc_and_merge_show_progress_on_a_terminal_only(tmp_path: Path) -> None:
    root = str(tmp_path / "lh")
    with Lakehouse.local(root) as lh:
        lh.create_branch("dev")
        lh.write("m.t", pl.DataFrame({"x": [1]}), branch="dev")
        lh.create_branch("tmp")
        lh.write("g.gone", pl.DataFrame({"x": [1]}), branch="tmp")
        lh.delete_branch("tmp")

    code, out = on_terminal(lakehouse_cmd("--path", root, "branch", "merge", "dev"))
    assert code == 0, out
    assert "merge 'dev' into 'main': merging tables 1/1 (100%)" in out
    assert ERASE + "merged 'dev' into 'main'" in out

    code, out = on_terminal(lakehouse_cmd("--path", root, "gc", "--older-than-hours", "0", "--force"))
    assert code == 0, out
    assert "gc: reading metadata files" in out and "gc: deleting files" in out
    assert "deleted " in out.split(ERASE)[-1]

    code, out = on_terminal(lakehouse_cmd("--path", root, "--quiet", "gc", "--older-than-hours", "0", "--force"))
    assert code == 0, out
    assert "gc:" not in out and ERASE not in out

    piped = subprocess.run(
        lakehouse_cmd("--path", root, "gc", "--older-than-hours", "0", "--dry-run"),
        capture_output=True,
        text=True,
        timeout=300,
        env=cli_env(),
    )
    assert piped.returncode == 0 and piped.stderr == ""
