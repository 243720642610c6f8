"""Commit throughput under contention: 1, 4 and 8 writer processes appending small frames to one table.

Run: .venv/bin/python benchmarks/bench_commits.py [--backends local,pg-s3] [--writers 1,4,8] [--commits 96]
                                                  [--rounds 3] [--json out.json]

Not a test and never run in CI. Each run opens a fresh lakehouse (its own PostgreSQL database and S3 bucket on
`pg-s3`, its own folder on `local`), seeds table `bench.events` on branch `dev` with one row, then `W` writer
processes (spawned once per backend and reused, so start-up is never timed) wait at a barrier and together make
`--commits` appends of 10 rows each (`Lakehouse.write(..., mode="append")`, split evenly between them), so every
writer count commits the same number of snapshots onto the same history. Timed: from the barrier to the last
commit. Printed per writer count: commits per second (median of the rounds, round-robin between the counts),
attempts per commit (`WriteResult.attempts`, lost races included) and the ratio of W writers to 1 writer.
After each run the script checks that every row is there once, and that the table has one snapshot and the
branch one commit-log entry per append.

Backends: `local` (SQLite catalog + local disk) and `pg-s3` (PostgreSQL started with tests/servers.py, moto's
S3 server in a child process; see bench_merge.Backends). Goal on pg-s3: 8 writers / 1 writer >= 1.0x.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_merge import Backends, log, moto_worker  # noqa: E402  - server start-up shared with the merge benchmark

TABLE = "bench.events"
BRANCH = "dev"
ROWS_PER_COMMIT = 10


@dataclass
class Run:
    """One timed run: `writers` processes making `commits` appends together."""

    backend: str
    writers: int
    commits: int
    seconds: float
    attempts: int
    latencies: list[float] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.commits / self.seconds


def append_worker(uri: str, warehouse: str, properties: dict[str, str], writer: int, commits: int, barrier: Any) -> dict:
    """One writer process: open the lakehouse, wait for the others, then append `commits` frames."""
    import polars as pl

    from dagster_lakehouse.lakehouse import Lakehouse

    with Lakehouse(uri, warehouse, properties) as lh:
        lh.tables(BRANCH)  # connect before the clock starts
        barrier.wait()
        started = time.time()
        attempts, latencies = 0, []
        for i in range(commits):
            frame = pl.DataFrame({"writer": [writer] * ROWS_PER_COMMIT, "i": [i] * ROWS_PER_COMMIT, "k": list(range(ROWS_PER_COMMIT))})
            begin = time.perf_counter()
            attempts += lh.write(TABLE, frame, branch=BRANCH, mode="append").attempts
            latencies.append(time.perf_counter() - begin)
        return {"started": started, "ended": time.time(), "attempts": attempts, "latencies": latencies}


def verify(lakehouse: Any, commits: int) -> None:
    """Every appended row is there exactly once; one snapshot and one logged write per append (plus the seed)."""
    rows = lakehouse.read(TABLE, ref=BRANCH)
    expected = commits * ROWS_PER_COMMIT + 1
    if rows.height != expected or rows.unique().height != expected:
        raise AssertionError(f"{TABLE}: {rows.height} rows ({rows.unique().height} distinct), expected {expected}")
    snapshots = len(lakehouse.table(TABLE, BRANCH).snapshots())
    writes = len([c for c in lakehouse.log(BRANCH) if c.kind == "write"])
    if snapshots != commits + 1 or writes != commits + 1:
        raise AssertionError(f"{TABLE}: {snapshots} snapshots and {writes} logged writes, expected {commits + 1} each")


def timed_run(servers: Backends, pool: Any, manager: Any, writers: int, commits: int, key: str) -> Run:
    import polars as pl

    lakehouse = servers.make(key)
    lakehouse.create_branch(BRANCH)
    lakehouse.write(TABLE, pl.DataFrame({"writer": [-1], "i": [-1], "k": [-1]}), branch=BRANCH, mode="append")
    config = lakehouse.config
    barrier = manager.Barrier(writers)
    shares = [commits // writers + (1 if w < commits % writers else 0) for w in range(writers)]
    args = [(config.catalog_uri, config.warehouse, config.properties, w, shares[w], barrier) for w in range(writers)]
    results = pool.starmap(append_worker, args, chunksize=1)
    verify(lakehouse, commits)
    seconds = max(r["ended"] for r in results) - min(r["started"] for r in results)
    latencies = [x for r in results for x in r["latencies"]]
    return Run(servers.name, writers, commits, seconds, sum(r["attempts"] for r in results), latencies)


def bench_backend(name: str, root: Path, writer_counts: list[int], commits: int, rounds: int) -> list[Run]:
    servers = Backends(name, root)
    runs: list[Run] = []
    ctx = mp.get_context("spawn")
    try:
        with ctx.Manager() as manager, ctx.Pool(max(writer_counts)) as pool:
            pool.starmap(time.sleep, [(0,)] * max(writer_counts))  # start the processes before timing
            for round_ in range(rounds):
                for writers in writer_counts:
                    run = timed_run(servers, pool, manager, writers, commits, f"w{writers}r{round_}")
                    runs.append(run)
                    log(
                        f"{name} round {round_ + 1}/{rounds}: {writers} writer(s): {run.per_second:.1f} commits/s, "
                        f"{run.attempts / run.commits:.2f} attempts/commit, {run.seconds:.1f} s"
                    )
    finally:
        servers.close()
    return runs


def summarise(runs: list[Run], writer_counts: list[int]) -> list[dict[str, Any]]:
    """Per backend and writer count: medians of the rounds, and the ratio to 1 writer round by round."""
    rows = []
    for backend in dict.fromkeys(r.backend for r in runs):
        by_count = {w: [r for r in runs if r.backend == backend and r.writers == w] for w in writer_counts}
        base = by_count.get(1, [])
        for writers, group in by_count.items():
            if not group:
                continue
            ratios = [r.per_second / b.per_second for r, b in zip(group, base, strict=False)] if base else []
            latencies = sorted(x for r in group for x in r.latencies)
            rows.append(
                {
                    "backend": backend,
                    "writers": writers,
                    "commits_per_second": statistics.median(r.per_second for r in group),
                    "min": min(r.per_second for r in group),
                    "max": max(r.per_second for r in group),
                    "attempts_per_commit": sum(r.attempts for r in group) / sum(r.commits for r in group),
                    "latency_p50": latencies[len(latencies) // 2],
                    "latency_max": latencies[-1],
                    "ratio_to_1": statistics.median(ratios) if ratios else None,
                    "rounds": len(group),
                }
            )
    return rows


def print_report(header: str, rows: list[dict[str, Any]], notes: list[str]) -> None:
    print()
    print("=" * 110)
    print(header)
    print("=" * 110)
    print(
        f"\n  {'backend':<7} {'writers':>7} {'commits/s':>10} {'min .. max':>15} {'attempts/commit':>16} "
        f"{'p50 commit':>11} {'max commit':>11} {'vs 1 writer':>12}"
    )
    for row in rows:
        ratio = "" if row["ratio_to_1"] is None else f"{row['ratio_to_1']:.2f}x"
        spread = f"{row['min']:.1f} .. {row['max']:.1f}"
        print(
            f"  {row['backend']:<7} {row['writers']:>7} {row['commits_per_second']:>10.1f} {spread:>15} "
            f"{row['attempts_per_commit']:>16.2f} {row['latency_p50'] * 1000:>9.0f}ms {row['latency_max'] * 1000:>9.0f}ms "
            f"{ratio:>12}"
        )
    print("\n  vs 1 writer: median over rounds of (commits/s with W writers) / (commits/s with 1 writer) of the same round")
    print("  goal (pg-s3): 8 writers / 1 writer >= 1.00x (no collapse under contention)")
    for note in notes:
        print(f"  - {note}")
    print()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="local,pg-s3", help="comma-separated: local, pg-s3 (default: both)")
    parser.add_argument("--writers", default="1,4,8", help="comma-separated writer process counts (default 1,4,8)")
    parser.add_argument("--commits", type=int, default=96, help="appends per run, split between the writers")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, round-robin between the writer counts")
    parser.add_argument("--json", metavar="PATH", help="also write every run and the summary to this JSON file")
    parser.add_argument("--moto-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.moto_worker:
        return moto_worker()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    writer_counts = sorted({int(w) for w in args.writers.split(",") if w.strip()})
    if set(backends) - {"local", "pg-s3"} or not writer_counts or min(writer_counts) < 1:
        parser.error(f"unknown backend in {args.backends!r} or bad writer counts {args.writers!r}")
    from importlib.metadata import version

    versions = ", ".join(f"{n} {version(n)}" for n in ("pyiceberg", "sqlalchemy", "psycopg"))
    header = (
        f"bench_commits on {platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}, {versions}, "
        f"{args.commits} appends of {ROWS_PER_COMMIT} rows per run, {args.rounds} rounds, {datetime.now():%Y-%m-%d %H:%M}"
    )
    print(header, flush=True)
    notes = [f"load average (1 min) at start {os.getloadavg()[0]:.1f}"]
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-commits-") as folder:
        for backend in backends:
            root = Path(folder) / backend
            root.mkdir()
            try:
                runs += bench_backend(backend, root, writer_counts, args.commits, args.rounds)
            except Exception as exc:  # noqa: BLE001 - a failed backend must not hide the other's results
                traceback.print_exc()
                notes.append(f"{backend} FAILED: {type(exc).__name__}: {exc}")
            shutil.rmtree(root, ignore_errors=True)
    notes.append(f"load average (1 min) at end {os.getloadavg()[0]:.1f}; every run verified: all rows, snapshots and log entries")
    rows = summarise(runs, writer_counts)
    print_report(header, rows, notes)
    if args.json:
        payload = {"header": header, "runs": [{**r.__dict__, "per_second": r.per_second} for r in runs], "summary": rows}
        Path(args.json).write_text(json.dumps(payload, indent=2))
    return 0 if not any("FAILED" in n for n in notes) else 1


if __name__ == "__main__":
    sys.exit(main())
