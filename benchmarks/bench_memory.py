"""Peak memory of a LazyFrame model run through Dagster, over taxi tables of N and 4N rows.

Run: .venv/bin/python benchmarks/bench_memory.py [--rows N] [--keep DIR]

Not a test and never run in CI. The model is the road our users take from a notebook sample to a year of data:

    @dg.asset
    def long_trips(trips: pl.LazyFrame) -> pl.LazyFrame:
        return trips.filter(pl.col("trip_miles") > 2).with_columns(fare_per_mile=...)

materialized with `dg.materialize` and the `LakehouseIOManager` in a fresh process per table size, so the process's
peak resident set (`VmHWM`) is the model's: the input is a scan of the table's Parquet files, the output is
written by Polars' streaming engine a chunk at a time (`write_data`). The tables (N rows and 4N rows of
`bench_lakehouse.synthetic_trips`, 64 bytes a row in memory: N = 16M rows is ~1 GB, 4N ~4.1 GB) are written in
slices, so setting them up needs little memory either.

Prints, for N and 4N: the table's size in memory, the model process's peak RSS and its RSS before the run (imports,
Dagster), then the ratios the claim is about: peak(4N) / peak(N) (goal <= 1.3 while the data grows 4x) and
peak(4N) / size(4N) (goal < 0.25).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

DEFAULT_ROWS = 16_000_000
SLICE_ROWS = 4_000_000
"""Rows written per append while setting a table up (~256 MB in memory)."""

MODEL = """
import json, sys, time
import dagster as dg
import polars as pl
from dagster_lakehouse.dagster import LakehouseIOManager, LakehouseResource
from dagster_lakehouse.lakehouse import Lakehouse

root, table = sys.argv[1], sys.argv[2]
trips = dg.AssetSpec(key=["taxi", "trips"], metadata={"lakehouse/table": table})

@dg.asset(key_prefix="taxi")
def long_trips(trips: pl.LazyFrame) -> pl.LazyFrame:
    return trips.filter(pl.col("trip_miles") > 2).with_columns(
        fare_per_mile=(pl.col("base_passenger_fare") / pl.col("trip_miles")).round(2),
        minutes=pl.col("trip_time") / 60,
    )

lakehouse = Lakehouse.local(root)
lakehouse.read(table, ref="main", columns=["trip_miles"], filter="trip_miles > 1000")  # every library loaded
def high_water():  # VmHWM: this process's peak RSS (ru_maxrss would include the parent's, from before exec)
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) * 1024

before = high_water()
resource_ = LakehouseResource(path=root, branch="bench")
started = time.perf_counter()
result = dg.materialize(
    [trips, long_trips],
    resources={"io_manager": LakehouseIOManager(lakehouse=resource_)},
)
seconds = time.perf_counter() - started
assert result.success
rows = lakehouse.scan("taxi.long_trips", ref="bench").select(pl.len()).collect().item()
print("RESULT " + json.dumps({
    "peak": high_water(), "before": before, "written": rows,
    "seconds": seconds,
}))
"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def gib(size: float) -> str:
    return f"{size / 2**30:.2f} GiB" if size >= 2**30 else f"{size / 2**20:.0f} MiB"


def build_table(root: Path, table: str, rows: int) -> float:
    """Write `rows` synthetic trips to `table` on main in slices; returns the table's size in memory (bytes)."""
    import polars as pl
    from bench_lakehouse import synthetic_trips

    from dagster_lakehouse.lakehouse import Lakehouse

    with Lakehouse.local(root) as lakehouse:
        per_row = synthetic_trips(0, 100_000).estimated_size() / 100_000
        for offset in range(0, rows, SLICE_ROWS):
            frame = synthetic_trips(offset, min(SLICE_ROWS, rows - offset))
            lakehouse.write(table, frame, branch="main", mode="append" if offset else "replace", allow_main=True)
            del frame
        assert lakehouse.scan(table).select(pl.len()).collect().item() == rows
    return per_row * rows


def run_model(root: Path, table: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", MODEL, str(root), table], capture_output=True, text=True, timeout=3600,
        env={**os.environ, "PYTHONPATH": str(HERE.parent)},
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"model run on {table} failed:\n{done.stderr[-4000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="N: rows of the smaller table")
    parser.add_argument("--keep", type=Path, help="build the lakehouse here and keep it")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-memory-"))
    try:
        results = {}
        for label, rows in (("N", args.rows), ("4N", 4 * args.rows)):
            table = f"taxi.trips_{label.lower()}"
            log(f"writing {table}: {rows:,} rows")
            size = build_table(root, table, rows)
            log(f"running the model over {table}")
            measured = run_model(root, table)
            results[label] = {"rows": rows, "size": size, **measured}
            log(f"{label}: peak {gib(measured['peak'])} in {measured['seconds']:.0f} s")
            with __import__("dagster_lakehouse.lakehouse", fromlist=["Lakehouse"]).Lakehouse.local(root) as lakehouse:
                lakehouse.delete_branch("bench")
        small, large = results["N"], results["4N"]
        print("\nLazyFrame model (scan -> filter/with_columns -> streamed write) through dg.materialize")
        print(f"{'table':<6} {'rows':>12} {'in memory':>10} {'RSS before':>11} {'peak RSS':>10} {'run':>7}")
        for label, r in results.items():
            print(
                f"{label:<6} {r['rows']:>12,} {gib(r['size']):>10} {gib(r['before']):>11} {gib(r['peak']):>10} "
                f"{r['seconds']:>6.0f}s"
            )
        growth = large["peak"] / small["peak"]
        share = large["peak"] / large["size"]
        print(f"\npeak(4N) / peak(N)   = {growth:.2f}  (data grew 4.00x; goal <= 1.30)")
        print(f"peak(4N) / size(4N)  = {share:.2f}  (goal < 0.25)")
        print(f"this process's own peak (setting tables up): {gib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)}")
        return 0 if growth <= 1.3 and share < 0.25 else 1
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
