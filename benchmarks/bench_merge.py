"""Merge benchmarks: replaying merges (both branches changed a table) against the pointer switch, as same-run ratios.

Run: .venv/bin/python benchmarks/bench_merge.py [--quick] [--backends local,pg-s3] [--sections replay,where,long]
                                                [--profile] [--json out.json]

Not a test and never run in CI. Every measurement forks fresh branches from `main` in each round, and the rounds
go round-robin between the things compared (so a noisy neighbour, and `main`'s growing history, hurt them alike);
the median is reported next to the ratio it feeds:

  replay   per round, branches `a` and `b` are forked from main and each appends 10 rows to the table(s); then
           `merge(a)` (only `a` changed the table since the fork: a pointer switch) and `merge(b)` (both changed
           it: `b`'s append is replayed on main, adding its Parquet file by reference) are timed. Lakehouses:
           1 table of ~1 MB, 1 table of ~1 GB (100 MB with --quick), 100 tables of ~1 MB.
  where    the same with `b` replacing one day (`write(..., where="day = '...'")`) and `a` appending a new
           day, on a 30-day table bulk-loaded as ONE Parquet file (the replay must rewrite that shared file
           minus the day) and on the same rows written one file per day (the replay drops the day's file).

Goals: replay ~1 GB / ~1 MB <= 1.2x (a replay reads no data files); 100 tables / 1 <= 100x (linear in tables).
A goal that fails gets its replay profiled (cProfile, top functions printed); --profile profiles every case.

Backends: `local` (Lakehouse.local: SQLite + local disk; the default, ~2 min) and, with `--backends local,pg-s3`,
`pg-s3` (PostgreSQL + moto's S3 server, started on 127.0.0.1 with tests/servers.py: PostgreSQL by
`start_postgres`, moto in a child process of this script so its request handling does not share our GIL; both
stopped at the end; ~4-5 min more, fewer rounds). See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from bench_lakehouse import (  # noqa: E402  - same synthetic data and sizing as the branches section there
    BRANCH_APPENDS,
    SMALL_TABLE_BYTES,
    fmt_bytes,
    fmt_seconds,
    rows_for,
    synthetic_trips,
)

DAYS = 30  # the `where` tables hold 30 days
DAY0 = date(2024, 1, 1)
TINY_ROWS = 10  # rows each branch appends to a table in the replay section
NEW_DAY_ROWS = 1_000  # rows branch `a` appends (one new day) in the where section

PROFILES: dict[str, dict[str, Any]] = {
    "full": {
        "big_table_bytes": {"local": 1_000_000_000, "pg-s3": 1_000_000_000},
        "many_tables": 100,
        "repeat": {"local": 11, "pg-s3": 5},
        "repeat_many": {"local": 5, "pg-s3": 2},
        "repeat_where": {"local": 7, "pg-s3": 3},
        "repeat_long": {"local": 2, "pg-s3": 1},
        "rows_per_day": 100_000,
    },
    "quick": {
        "big_table_bytes": {"local": 100_000_000, "pg-s3": 100_000_000},
        "many_tables": 100,
        "repeat": {"local": 5, "pg-s3": 3},
        "repeat_many": {"local": 3, "pg-s3": 2},
        "repeat_where": {"local": 3, "pg-s3": 3},
        "repeat_long": {"local": 1, "pg-s3": 1},
        "rows_per_day": 20_000,
    },
}


# ----- reporting --------------------------------------------------------------------------------------


@dataclass
class Timing:
    backend: str
    label: str
    times: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.times)


@dataclass
class Ratio:
    backend: str
    label: str
    numerator: str
    denominator: str
    expectation: str
    goal: float | None = None  # PASS when value <= goal
    value: float | None = None

    @property
    def status(self) -> str:
        if self.goal is None:
            return ""
        if self.value is None:
            return "skipped"
        return "PASS" if self.value <= self.goal else "FAIL"


@dataclass
class Report:
    timings: dict[tuple[str, str], Timing] = field(default_factory=dict)
    ratios: list[Ratio] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    profiles: list[str] = field(default_factory=list)

    def timing(self, backend: str, label: str, note: str = "") -> Timing:
        key = (backend, label)
        if key not in self.timings:
            self.timings[key] = Timing(backend, label, note=note)
        return self.timings[key]

    def ratio(
        self, backend: str, label: str, numerator: str, denominator: str, expectation: str, goal: float | None = None
    ) -> Ratio:
        num, den = self.timings.get((backend, numerator)), self.timings.get((backend, denominator))
        value = num.median / den.median if num and den and num.times and den.times else None
        ratio = Ratio(backend, label, numerator, denominator, expectation, goal, value)
        self.ratios.append(ratio)
        return ratio


def log(message: str) -> None:
    print(f"  .. {message}", flush=True)


def print_report(report: Report, header: str) -> None:
    print()
    print("=" * 110)
    print(header)
    print("=" * 110)
    print("\nAbsolute times (median of the rounds; min..max in brackets)\n")
    width = max((len(t.label) for t in report.timings.values()), default=20) + 2
    print(f"  {'backend':<7} {'measurement':<{width}} {'median':>9}   {'min .. max':<22} runs")
    previous = None
    for timing in report.timings.values():
        group = (timing.backend, timing.label.split(": ", 1)[-1])  # one block per case
        if previous is not None and group != previous:
            print()
        previous = group
        spread = f"[{fmt_seconds(min(timing.times))} .. {fmt_seconds(max(timing.times))}]" if timing.times else ""
        median = fmt_seconds(timing.median) if timing.times else "-"
        print(f"  {timing.backend:<7} {timing.label:<{width}} {median:>9}   {spread:<22} {len(timing.times)}")
        if timing.note:
            print(f"  {'':<7}   ({timing.note})")
    print("\nRatios (medians from this run)\n")
    width = max((len(r.label) for r in report.ratios), default=20) + 2
    print(f"  {'backend':<7} {'ratio':<{width}} {'value':>9}   {'goal':<6} expectation")
    for ratio in report.ratios:
        value = "skipped" if ratio.value is None else f"{ratio.value:.2f}x"
        goal = f"{ratio.status}" if ratio.goal is not None else ""
        print(f"  {ratio.backend:<7} {ratio.label:<{width}} {value:>9}   {goal:<6} {ratio.expectation}")
    if report.notes:
        print("\nNotes")
        for note in report.notes:
            print(f"  - {note}")
    if report.skipped:
        print("\nSkipped / failed")
        for item in report.skipped:
            print(f"  - {item}")
    for text in report.profiles:
        print()
        print(text)
    print()


# ----- profiling --------------------------------------------------------------------------------------


def short_path(path: str) -> str:
    for marker in ("site-packages/", str(ROOT) + "/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path.rsplit("/lib/python3", 1)[-1] if "/lib/python3" in path else path


def profile_text(profile: cProfile.Profile, title: str, top: int = 18) -> str:
    """The `top` functions by cumulative time, then by own time, as compact lines."""
    stats = pstats.Stats(profile)
    rows = []
    for (path, line, name), (_cc, calls, own, cumulative, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = name if path == "~" else f"{short_path(path)}:{line}({name})"
        rows.append((cumulative, own, calls, where))
    total = max((r[0] for r in rows), default=0.0)
    lines = [f"Profile: {title} (cProfile; total {total * 1000:.0f} ms under the profiler)"]
    lines.append(f"  {'cumulative':>10} {'own':>9} {'calls':>8}  function   [by cumulative time]")
    for cumulative, own, calls, where in sorted(rows, reverse=True)[:top]:
        lines.append(f"  {cumulative * 1000:>8.1f}ms {own * 1000:>7.1f}ms {calls:>8}  {where}")
    lines.append(f"  {'cumulative':>10} {'own':>9} {'calls':>8}  function   [by own time]")
    for cumulative, own, calls, where in sorted(rows, key=lambda r: r[1], reverse=True)[:10]:
        lines.append(f"  {cumulative * 1000:>8.1f}ms {own * 1000:>7.1f}ms {calls:>8}  {where}")
    return "\n".join(lines)


# ----- backends ---------------------------------------------------------------------------------------


class Backends:
    """Makes lakehouses on one backend; `pg-s3` starts PostgreSQL and moto (stopped by `close`)."""

    def __init__(self, name: str, root: Path):
        self.name = name
        self.root = root
        self.lakehouses: list[Any] = []
        self.postgres = None
        self.moto: subprocess.Popen | None = None
        self.endpoint = ""
        self.databases: list[str] = []
        if name == "pg-s3":
            self._start_servers()

    def _start_servers(self) -> None:
        sys.path.insert(0, str(ROOT / "tests"))
        from servers import start_postgres  # tests/servers.py

        for var, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }.items():
            os.environ[var] = value
        for var in ("NO_PROXY", "no_proxy"):  # local servers must never be reached through a proxy
            current = [p for p in os.environ.get(var, "").split(",") if p]
            os.environ[var] = ",".join(dict.fromkeys([*current, "127.0.0.1", "localhost"]))
        log("pg-s3: starting PostgreSQL (tests/servers.py start_postgres) and moto S3 (child process)")
        self.moto = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--moto-worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.moto.stdout is not None
        line = self.moto.stdout.readline().strip()
        if not line.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"moto worker did not start (said {line!r})")
        self.endpoint = line
        self.postgres = start_postgres()
        log(f"pg-s3: PostgreSQL on port {self.postgres.port}, moto at {self.endpoint}")

    def s3_properties(self) -> dict[str, str]:
        return {
            "s3.endpoint": self.endpoint,
            "s3.access-key-id": "testing",
            "s3.secret-access-key": "testing",
            "s3.region": "us-east-1",
            "s3.path-style-access": "true",
        }

    def make(self, key: str):
        from dagster_lakehouse.lakehouse import Lakehouse

        if self.name == "local":
            lakehouse = Lakehouse.local(self.root / f"local-{key}")
        else:
            import boto3

            assert self.postgres is not None
            name = f"bench_{key}_{uuid.uuid4().hex[:6]}"
            url = self.postgres.create_database(name)
            self.databases.append(name)
            bucket = name.replace("_", "-")
            boto3.client(
                "s3",
                endpoint_url=self.endpoint,
                region_name="us-east-1",
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            ).create_bucket(Bucket=bucket)
            lakehouse = Lakehouse(
                catalog_uri=url, warehouse=f"s3://{bucket}/warehouse", properties=self.s3_properties()
            )
        self.lakehouses.append(lakehouse)
        return lakehouse

    def close(self) -> None:
        for lakehouse in self.lakehouses:
            try:
                lakehouse.close()
            except Exception:  # noqa: BLE001 - cleanup only
                pass
        self.lakehouses.clear()
        if self.postgres is not None:
            self.postgres.stop()  # also removes its data directory
            self.postgres = None
            log("pg-s3: PostgreSQL stopped")
        if self.moto is not None:
            assert self.moto.stdin is not None
            self.moto.stdin.close()  # the worker stops moto when its stdin closes
            try:
                self.moto.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.moto.terminate()
                self.moto.wait(timeout=30)
            self.moto = None
            log("pg-s3: moto stopped")


def moto_worker() -> int:
    """Child process: run moto's S3 server on 127.0.0.1 until stdin closes."""
    import logging

    sys.path.insert(0, str(ROOT / "tests"))
    from servers import start_moto

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    server = start_moto()
    try:
        print(server.endpoint, flush=True)
        sys.stdin.read()
    finally:
        server.stop()
    return 0


# ----- helpers ----------------------------------------------------------------------------------------


def live_files(lakehouse, table: str, ref: str = "main") -> dict[str, int]:
    """Data files (path -> bytes) of `table`'s current snapshot on `ref`."""
    return {
        task.file.file_path: task.file.file_size_in_bytes for task in lakehouse.table(table, ref).scan().plan_files()
    }


def table_bytes(lakehouse, tables: list[str]) -> tuple[int, int]:
    """(Parquet bytes, data files) of `tables` on main."""
    sizes = [size for t in tables for size in live_files(lakehouse, t).values()]
    return sum(sizes), len(sizes)


def timed(fn: Callable[[], Any], profile: cProfile.Profile | None = None) -> tuple[float, Any]:
    """(seconds, result) of `fn()`, after a `gc.collect()`; `profile` (if given) records just the call."""
    gc.collect()
    if profile is not None:
        profile.enable()
    start = time.perf_counter()
    try:
        result = fn()
    finally:
        elapsed = time.perf_counter() - start
        if profile is not None:
            profile.disable()
    return elapsed, result


def rotated(keys: list[str], r: int) -> list[str]:
    """`keys` starting at a different one each round, so no case always runs right after the same other one."""
    return keys[r % len(keys) :] + keys[: r % len(keys)]


def check_merge(result, tables: list[str], replayed: bool, what: str) -> None:
    expected_replayed = sorted(tables) if replayed else []
    if sorted(result.tables) != sorted(tables) or sorted(result.replayed) != expected_replayed:
        raise AssertionError(
            f"{what}: merge changed {result.tables} and replayed {result.replayed}; "
            f"expected {sorted(tables)} and {expected_replayed}"
        )


# ----- replay: one append on each side ----------------------------------------------------------------


@dataclass
class Case:
    key: str
    lakehouse: Any
    tables: list[str]
    label: str
    repeat: int
    checked: list[str]  # tables whose files are checked after the replay (all of a 1-table case, one of many)
    offset: int = 10**12
    files_written: list[int] = field(default_factory=list)

    def tiny(self):
        self.offset += TINY_ROWS
        return synthetic_trips(self.offset, TINY_ROWS)


def replay_round(case: Case, tag: str, profile: cProfile.Profile | None = None) -> tuple[float, float]:
    """Fork a and b, append to every table on both, time merge(a) (pointer switch) then merge(b) (replay)."""
    lh = case.lakehouse
    a, b = f"bench/a-{tag}", f"bench/b-{tag}"
    lh.create_branch(a)
    lh.create_branch(b)
    for table in case.tables:
        lh.write(table, case.tiny(), branch=a, mode="append", message="bench a")
    for table in case.tables:
        lh.write(table, case.tiny(), branch=b, mode="append", message="bench b")
    pointer, result = timed(lambda: lh.merge(a))
    check_merge(result, case.tables, False, f"{case.label}: merge of a")
    before = {t: live_files(lh, t) for t in case.checked}
    replay, result = timed(lambda: lh.merge(b), profile)
    check_merge(result, case.tables, True, f"{case.label}: merge of b")
    written = 0
    for table in case.checked:  # the replay adds b's files by reference: no data file may be new on main
        new = set(live_files(lh, table)) - set(before[table]) - set(live_files(lh, table, b))
        written += len(new)
    case.files_written.append(written)
    lh.delete_branch(a)
    lh.delete_branch(b)
    return pointer, replay


def bench_replay(report: Report, backends: Backends, profile: dict[str, Any], force_profile: bool) -> None:
    backend = backends.name
    big_bytes, many = profile["big_table_bytes"][backend], profile["many_tables"]
    repeat, repeat_many = profile["repeat"][backend], profile["repeat_many"][backend]
    small_rows, big_rows = rows_for(SMALL_TABLE_BYTES), rows_for(big_bytes)
    log(f"{backend} replay: building 1 table of ~{fmt_bytes(SMALL_TABLE_BYTES)} ({small_rows:,} rows)")
    lakehouses = {"small": backends.make("small")}
    build_into(lakehouses["small"], 1, small_rows)
    started = time.perf_counter()
    log(
        f"{backend} replay: building 1 table of ~{fmt_bytes(big_bytes)} ({big_rows:,} rows in {BRANCH_APPENDS} appends)"
    )
    lakehouses["big"] = backends.make("big")
    build_into(lakehouses["big"], 1, big_rows)
    log(f"{backend} replay: built in {time.perf_counter() - started:.0f} s; building {many} tables of ~1 MB")
    lakehouses["many"] = backends.make("many")
    build_into(lakehouses["many"], many, small_rows)

    cases: dict[str, Case] = {}
    for key, lh in lakehouses.items():
        tables = sorted(lh.tables())
        size, files = table_bytes(lh, tables)
        label = f"{len(tables)} table{'s' if len(tables) > 1 else ''}, {fmt_bytes(size)}"
        cases[key] = Case(
            key, lh, tables, label, repeat_many if key == "many" else repeat, tables[:1] if key == "many" else tables
        )
        report.notes.append(
            f"replay ({backend}): {key} = {len(tables)} table(s), {fmt_bytes(size)} of Parquet in {files} data files"
            f"{' in all' if len(tables) > 1 else ''}, each table written in {BRANCH_APPENDS} appends"
        )
    timings = {
        (key, kind): report.timing(backend, f"{kind}: {case.label}")
        for key, case in cases.items()
        for kind in ("pointer merge", "replay merge")
    }
    rounds = max(c.repeat for c in cases.values())
    log(f"{backend} replay: 1 warm-up + {rounds} rounds (x{repeat_many} for {many} tables), round-robin")
    for r in range(rounds + 1):
        for key in rotated(list(cases), r):
            case = cases[key]
            if r > case.repeat:
                continue
            pointer, replay = replay_round(case, f"{r}")
            if r:  # round 0 is the warm-up
                timings[key, "pointer merge"].times.append(pointer)
                timings[key, "replay merge"].times.append(replay)
        if r and r % 4 == 0:
            log(f"{backend} replay: round {r}/{rounds} done")

    for key, case in cases.items():
        rows = case.lakehouse.read(case.tables[0], columns=["trip_miles"]).height
        expected = (small_rows if key != "big" else big_rows) + 2 * TINY_ROWS * (case.repeat + 1)
        if rows != expected:
            raise AssertionError(f"{case.label}: main holds {rows} rows of {case.tables[0]}, expected {expected}")
    written = {key: sum(c.files_written) for key, c in cases.items()}
    report.notes.append(
        f"replay ({backend}): data files written by the replays (checked: every table of the 1-table cases, the first "
        f"of {many}): {written}; row counts on main checked after all rounds"
    )
    small = timings["small", "replay merge"].times
    report.notes.append(
        f"replay ({backend}): main gains 2 snapshots per table per round; the 1 MB replay took {fmt_seconds(small[0])} "
        f"in the first timed round and {fmt_seconds(small[-1])} in the last ({len(small)})"
    )

    s, b, m = cases["small"].label, cases["big"].label, cases["many"].label
    goals = [
        report.ratio(
            backend,
            f"replay ~{fmt_bytes(big_bytes)} / ~1 MB",
            f"replay merge: {b}",
            f"replay merge: {s}",
            "reads no data files",
            1.2,
        ),
        report.ratio(
            backend,
            f"replay {many} tables / 1",
            f"replay merge: {m}",
            f"replay merge: {s}",
            "linear in changed tables",
            float(many),
        ),
    ]
    report.ratio(
        backend,
        "replay / pointer, 1 table ~1 MB",
        f"replay merge: {s}",
        f"pointer merge: {s}",
        "what a replay costs over a pointer switch",
    )
    report.ratio(
        backend, f"replay / pointer, 1 table ~{fmt_bytes(big_bytes)}", f"replay merge: {b}", f"pointer merge: {b}", ""
    )
    report.ratio(backend, f"replay / pointer, {many} tables", f"replay merge: {m}", f"pointer merge: {m}", "")
    report.ratio(
        backend, f"pointer ~{fmt_bytes(big_bytes)} / ~1 MB", f"pointer merge: {b}", f"pointer merge: {s}", "~1"
    )
    report.ratio(backend, f"pointer {many} tables / 1", f"pointer merge: {m}", f"pointer merge: {s}", f"<= {many}")

    to_profile: dict[str, None] = {}  # ordered set
    if force_profile or goals[0].status == "FAIL":
        to_profile.update(dict.fromkeys(["small", "big"]))
    if force_profile or goals[1].status == "FAIL":
        to_profile.update(dict.fromkeys(["small", "many"]))
    for key in to_profile:
        case = cases[key]
        prof = cProfile.Profile()
        _, replay = replay_round(case, f"profile-{key}", prof)
        report.profiles.append(
            profile_text(prof, f"{backend}, replay merge: {case.label} (took {fmt_seconds(replay)})")
        )


def build_into(lakehouse, tables: int, rows_per_table: int) -> None:
    """As `bench_lakehouse.build_branch_lakehouse` (tables t.t000..., BRANCH_APPENDS appends each), on any backend."""
    chunk = -(-rows_per_table // BRANCH_APPENDS)
    for n in range(tables):
        offset = n * rows_per_table
        for k in range(BRANCH_APPENDS):
            rows = min(chunk, rows_per_table - k * chunk)
            lakehouse.write(
                f"t.t{n:03d}",
                synthetic_trips(offset + k * chunk, rows),
                branch="main",
                mode="replace" if k == 0 else "append",
                allow_main=True,
                message="bench",
            )


# ----- where: replacing one day ------------------------------------------------------------------------

TABLE = "t.days"


def day_name(n: int) -> str:
    return (DAY0 + timedelta(days=n)).isoformat()


def day_frame(n: int, rows: int, offset: int):
    import polars as pl

    return synthetic_trips(offset, rows).select(pl.lit(day_name(n)).alias("day"), pl.all())


def bench_where(report: Report, backends: Backends, profile: dict[str, Any], force_profile: bool) -> None:
    import polars as pl

    backend = backends.name
    per_day, repeat = profile["rows_per_day"], profile["repeat_where"][backend]
    if repeat + 1 >= DAYS:
        raise ValueError(f"at most {DAYS - 2} rounds: each replaces another day")
    log(f"{backend} where: {DAYS} days x {per_day:,} rows, as 1 bulk file and as {DAYS} daily files")
    layouts = {"bulk": backends.make("bulk"), "daily": backends.make("daily")}
    frames = [day_frame(d, per_day, d * per_day) for d in range(DAYS)]
    layouts["bulk"].write(TABLE, pl.concat(frames), branch="main", allow_main=True, message="bulk load")
    for d, frame in enumerate(frames):
        layouts["daily"].write(
            TABLE, frame, branch="main", mode="replace" if d == 0 else "append", allow_main=True, message=f"day {d}"
        )
    del frames
    labels = {}
    for key, lh in layouts.items():
        size, files = table_bytes(lh, [TABLE])
        what = "1 shared file" if key == "bulk" else f"{files} files, one per day"
        if key == "bulk" and files != 1:
            what = f"{files} files (bulk load split by write.target-file-size-bytes)"
        labels[key] = f"{what}, {fmt_bytes(size)}"
        report.notes.append(
            f"where ({backend}): {key} = {DAYS} days x {per_day:,} rows, {fmt_bytes(size)} in {files} data file(s)"
        )

    timings = {
        (key, kind): report.timing(backend, f"{kind}: {labels[key]}")
        for key in layouts
        for kind in ("where= write on branch b", "pointer merge (a's new day)", "replay merge (b's where=)")
    }
    rewritten: dict[str, list[int]] = {key: [] for key in layouts}
    profiles = {key: cProfile.Profile() if force_profile else None for key in layouts}

    def one_round(key: str, r: int, prof: cProfile.Profile | None = None) -> tuple[float, float, float]:
        lh = layouts[key]
        a, b = f"bench/where-a-{r}", f"bench/where-b-{r}"
        lh.create_branch(a)
        lh.create_branch(b)
        lh.write(TABLE, day_frame(DAYS + r, NEW_DAY_ROWS, 10**11 + r * NEW_DAY_ROWS), branch=a, mode="append")
        replaced = day_frame(r, per_day, 10**10 + r * per_day)
        gc.collect()
        write, _ = timed(lambda: lh.write(TABLE, replaced, branch=b, where=f"day = '{day_name(r)}'"))
        pointer, result = timed(lambda: lh.merge(a))
        check_merge(result, [TABLE], False, f"where {key}: merge of a")
        before = live_files(lh, TABLE)
        replay, result = timed(lambda: lh.merge(b), prof)
        check_merge(result, [TABLE], True, f"where {key}: merge of b")
        after, source = live_files(lh, TABLE), live_files(lh, TABLE, b)
        new = set(after) - set(before) - set(source)
        rewritten[key].append(sum(after[p] for p in new))
        lh.delete_branch(a)
        lh.delete_branch(b)
        return write, pointer, replay

    log(f"{backend} where: 1 warm-up + {repeat} rounds, round-robin (each round replaces another day)")
    for r in range(repeat + 1):
        for key in rotated(list(layouts), r):
            write, pointer, replay = one_round(key, r)
            if r:
                timings[key, "where= write on branch b"].times.append(write)
                timings[key, "pointer merge (a's new day)"].times.append(pointer)
                timings[key, "replay merge (b's where=)"].times.append(replay)
    rounds = repeat + 1
    if force_profile:
        for key in layouts:
            _, _, replay = one_round(key, rounds, profiles[key])
            report.profiles.append(
                profile_text(
                    profiles[key], f"{backend}, replay merge (b's where=): {labels[key]} (took {fmt_seconds(replay)})"
                )
            )
        rounds += 1

    counts = {}
    for key, lh in layouts.items():
        frame = lh.read(TABLE, columns=["day"]).group_by("day").len().sort("day")
        counts[key] = frame
        expected_rows = DAYS * per_day + rounds * NEW_DAY_ROWS
        if frame["len"].sum() != expected_rows:
            raise AssertionError(f"where {key}: main holds {frame['len'].sum()} rows, expected {expected_rows}")
    if not counts["bulk"].equals(counts["daily"]):
        raise AssertionError("where: the bulk and the daily table hold different rows per day after the merges")
    for key in layouts:
        sizes = rewritten[key][1:]  # timed rounds
        report.notes.append(
            f"where ({backend}): {key}: each replay wrote {len([s for s in sizes if s])} of {len(sizes)} times new data "
            f"({fmt_bytes(statistics.median(sizes)) if sizes else '-'} median): "
            + (
                "the shared file minus the replaced day, rewritten"
                if key == "bulk"
                else "nothing (the day's file is dropped)"
            )
        )
    bulk_write = timings["bulk", "replay merge (b's where=)"]
    daily_write = timings["daily", "replay merge (b's where=)"]
    extra = bulk_write.median - daily_write.median
    rewritten_median = statistics.median(rewritten["bulk"][1:])
    if extra > 0 and rewritten_median:
        report.notes.append(
            f"where ({backend}): rewrite cost ~{fmt_seconds(extra)} for {fmt_bytes(rewritten_median)} rewritten "
            f"(~{rewritten_median / extra / 1e6:.0f} MB/s of Parquet read, filtered and written again)"
        )
    b_label, d_label = labels["bulk"], labels["daily"]
    report.ratio(
        backend,
        "where replay: 1 shared file / daily files",
        f"replay merge (b's where=): {b_label}",
        f"replay merge (b's where=): {d_label}",
        "the shared-file rewrite",
    )
    report.ratio(
        backend,
        "where replay / where= write on b, shared file",
        f"replay merge (b's where=): {b_label}",
        f"where= write on branch b: {b_label}",
        "~1: the replay redoes the rewrite, not the new day's file",
    )
    report.ratio(
        backend,
        "where replay / where= write on b, daily files",
        f"replay merge (b's where=): {d_label}",
        f"where= write on branch b: {d_label}",
        "< 1: only metadata",
    )
    report.ratio(
        backend,
        "where replay / pointer, daily files",
        f"replay merge (b's where=): {d_label}",
        f"pointer merge (a's new day): {d_label}",
        "",
    )


# ----- main -------------------------------------------------------------------------------------------


# ----- long: a long-lived branch with many pending operations ------------------------------------------------

LONG_TABLE = "t.long"
LONG_COUNTS = (25, 150)


def bench_long(report: Report, backends: Backends, profile: dict[str, Any], force_profile: bool) -> None:
    """A branch that made N operations (alternately an append and a `where=` replace of a new day) merged into a
    main that appended once meanwhile: the replay groups them, so its cost should grow with N, not N squared."""
    backend = backends.name
    repeat = profile["repeat_long"][backend]
    lh = backends.make("long")
    lh.write(LONG_TABLE, day_frame(0, 1000, 0), branch="main", allow_main=True, message="seed")
    log(f"{backend} long: merges of branches with {' and '.join(map(str, LONG_COUNTS))} pending operations, x{repeat}")
    timings = {n: report.timing(backend, f"replay merge: {n} pending operations") for n in LONG_COUNTS}
    day = 1
    for r in range(repeat + 1):
        for n in rotated(list(LONG_COUNTS), r):
            a, b = f"bench/long-a-{r}-{n}", f"bench/long-b-{r}-{n}"
            lh.create_branch(a)
            lh.create_branch(b)
            for i in range(n):
                frame, name = day_frame(day, 10, day * 10), day_name(day)
                if i % 2:
                    lh.write(LONG_TABLE, frame, branch=b, where=f"day = '{name}'", message="bench long")
                else:
                    lh.write(LONG_TABLE, frame, branch=b, mode="append", message="bench long")
                day += 1
            lh.write(LONG_TABLE, day_frame(day, 10, day * 10), branch=a, mode="append", message="bench long a")
            day += 1
            lh.merge(a)
            before = len(lh.table(LONG_TABLE).snapshots())
            seconds, result = timed(lambda b=b: lh.merge(b))
            check_merge(result, [LONG_TABLE], True, f"long: merge of {n} operations")
            if r:
                timings[n].times.append(seconds)
            added = len(lh.table(LONG_TABLE).snapshots()) - before
            if r == repeat:
                report.notes.append(f"long ({backend}): the merge of {n} pending operations added {added} snapshots")
            lh.delete_branch(a)
            lh.delete_branch(b)
    rows = lh.read(LONG_TABLE, columns=["day"]).height
    if rows != 1000 + 10 * (day - 1):
        raise AssertionError(f"long: main holds {rows} rows, expected {1000 + 10 * (day - 1)}")
    few, many = LONG_COUNTS
    report.ratio(
        backend,
        f"replay {many} / {few} pending operations",
        f"replay merge: {many} pending operations",
        f"replay merge: {few} pending operations",
        f"~{many // few} (linear); main's history also grows each round",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100 MB big table, smaller days table, fewer rounds")
    parser.add_argument("--backends", default="local", help="comma-separated: local, pg-s3 (default: local)")
    parser.add_argument("--sections", default="replay,where,long", help="comma-separated subset of replay, where, long")
    parser.add_argument("--profile", action="store_true", help="cProfile one replay of every case (else only failures)")
    parser.add_argument("--json", metavar="PATH", help="also write every timing and ratio to this JSON file")
    parser.add_argument("--moto-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.moto_worker:
        return moto_worker()
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    backends = [s.strip() for s in args.backends.split(",") if s.strip()]
    if set(sections) - {"replay", "where", "long"} or set(backends) - {"local", "pg-s3"}:
        parser.error(f"unknown section or backend in {args.sections!r} / {args.backends!r}")
    profile = PROFILES["quick" if args.quick else "full"]

    import platform
    from importlib.metadata import version

    versions = ", ".join(f"{n} {version(n)}" for n in ("pyiceberg", "polars", "pyarrow", "sqlalchemy"))
    header = (
        f"bench_merge ({'quick' if args.quick else 'full'}) on {platform.node()}: {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {versions}, {datetime.now():%Y-%m-%d %H:%M}"
    )
    print(header, flush=True)
    report = Report()
    load_start = os.getloadavg()[0]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-merge-") as folder:
        for backend in backends:
            root = Path(folder) / backend
            root.mkdir()
            try:
                servers = Backends(backend, root)
            except Exception as exc:  # noqa: BLE001 - a backend that cannot start must not hide the others
                traceback.print_exc()
                report.skipped.append(f"backend {backend}: could not start: {type(exc).__name__}: {exc}")
                continue
            try:
                for section in sections:
                    section_start = time.perf_counter()
                    try:
                        bench = {"replay": bench_replay, "where": bench_where, "long": bench_long}[section]
                        bench(report, servers, profile, args.profile)
                    except Exception as exc:  # noqa: BLE001 - one failed section must not hide the others' results
                        traceback.print_exc()
                        report.skipped.append(f"{backend} {section} FAILED: {type(exc).__name__}: {exc}")
                    log(f"{backend} {section}: {time.perf_counter() - section_start:.0f} s")
            finally:
                servers.close()
                shutil.rmtree(root, ignore_errors=True)
    self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    header += f"; total {time.perf_counter() - started:.0f} s"
    report.notes.append(
        f"load average (1 min) at start {load_start:.1f}, at end {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)"
    )
    report.notes.append(
        f"peak RSS (getrusage): this process {fmt_bytes(self_rss)}"
        + (f", largest child (moto, PostgreSQL tools) {fmt_bytes(child_rss)}" if child_rss else "")
    )
    print_report(report, header)
    if args.json:
        payload = {
            "header": header,
            "timings": [
                {"backend": t.backend, "label": t.label, "times": t.times, "median": t.median if t.times else None}
                for t in report.timings.values()
            ],
            "ratios": [{**r.__dict__, "status": r.status} for r in report.ratios],
            "notes": report.notes,
            "skipped": report.skipped,
            "profiles": report.profiles,
        }
        Path(args.json).write_text(json.dumps(payload, indent=2))
    failed = any("FAILED" in s for s in report.skipped) or any(r.status == "FAIL" for r in report.ratios)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
