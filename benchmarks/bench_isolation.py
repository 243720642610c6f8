"""Isolated notebook benchmark: what running a model in its notebook's own environment (uv + Dagster Pipes) costs
per step, with the environment cached, against the same model in-process.

Run: .venv/bin/python benchmarks/bench_isolation.py [--rounds 5] [--rows 100000] [--json out.json]

Not a test and never run in CI. One notebook with one model (`polars` declared in its PEP 723 header; the model
reads a raw table of `--rows` rows (3 columns) on branch `bench`, adds a column and returns it: a replace write),
loaded twice: `load_notebook_assets(path)` (in-process) and `load_notebook_assets(path, isolated=True)`.
Embedded lakehouse in a temporary folder, environments cached in a temporary folder (uv's download cache is the
user's own).

  build      once, untimed as a step: the first isolated run resolves and builds the environment (printed: the
             seconds it took, the packages it holds).
  in-process per round, `dg.materialize` of the in-process asset: Dagster's step, the IO manager's read and write.
  isolated   per round, `dg.materialize` of the isolated asset with the environment cached: the same, plus finding
             the environment, starting its Python, the Pipes session, importing polars/pyiceberg and the notebook
             there, and reporting back.

The two alternate within every round, so a noisy neighbour hurts both; medians over `--rounds` (default 5) after
one untimed warm-up of each. Printed: both medians, their ratio and difference (the start-up an isolated step adds),
and the peak RSS of this process (the isolated model's memory is its own process's). See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import dagster as dg
import polars as pl

from dagster_lakehouse import Lakehouse
from dagster_lakehouse.dagster import LakehouseIOManager, LakehouseResource
from dagster_lakehouse.isolation.environments import HOME_VARIABLE
from dagster_lakehouse.notebook import load_notebook_assets

NOTEBOOK = '''\
# /// script
# dependencies = ["polars"]
# ///
import marimo

app = marimo.App()

with app.setup:
    import polars as pl

    from dagster_lakehouse import Input, model


@app.function
@model
def enriched(trips=Input("raw.trips")) -> pl.DataFrame:
    return trips.with_columns(per_mile=pl.col("fare") / pl.col("miles"))
'''


def _materialize(assets: list, io_manager: LakehouseIOManager) -> tuple[float, dict]:
    started = time.perf_counter()
    result = dg.materialize(assets, resources={"io_manager": io_manager})
    seconds = time.perf_counter() - started
    (event,) = [e.event_specific_data.materialization for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"]
    return seconds, event.metadata


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ[HOME_VARIABLE] = str(root / "environments")
        lakehouse = Lakehouse.local(root / "lakehouse")
        rows = args.rows
        trips = pl.DataFrame({"miles": [1.0 + i % 7 for i in range(rows)], "fare": [5.0 + i % 13 for i in range(rows)], "id": range(rows)})
        lakehouse.write("raw.trips", trips, branch="main", allow_main=True)
        path = root / "bench_notebook.py"
        path.write_text(textwrap.dedent(NOTEBOOK))
        io_manager = LakehouseIOManager(lakehouse=LakehouseResource(path=str(root / "lakehouse"), branch="bench"))
        in_process = load_notebook_assets(path)
        isolated = load_notebook_assets(path, isolated=True)

        build_seconds, built = _materialize(isolated, io_manager)
        print(
            f"build: first isolated run {build_seconds:.1f}s, environment {built['lakehouse/environment'].value} "
            f"({len(built['lakehouse/environment_packages'].value['packages'])} packages) built in "
            f"{built['lakehouse/environment_seconds'].value:.1f}s"
        )
        _materialize(in_process, io_manager)
        _materialize(isolated, io_manager)
        timings: dict[str, list[float]] = {"in-process": [], "isolated": []}
        for _ in range(args.rounds):
            timings["in-process"].append(_materialize(in_process, io_manager)[0])
            seconds, metadata = _materialize(isolated, io_manager)
            assert metadata["lakehouse/environment_cache_hit"].value is True
            timings["isolated"].append(seconds)
        medians = {name: statistics.median(values) for name, values in timings.items()}
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"rows={rows} rounds={args.rounds} python={platform.python_version()} cpus={os.cpu_count()}")
        for name, value in medians.items():
            print(f"{name:>11}: median {value:.3f}s per run (min {min(timings[name]):.3f}s)")
        ratio = medians["isolated"] / medians["in-process"]
        added = medians["isolated"] - medians["in-process"]
        print(f"isolated / in-process: {ratio:.2f}x, +{added:.2f}s per step with a warm environment cache")
        print(f"peak RSS of this process: {peak_mb:.0f} MB")
        if args.json:
            args.json.write_text(
                json.dumps({"rows": rows, "build_seconds": build_seconds, "medians": medians, "ratio": ratio, "added": added})
            )
    sys.exit(0)


if __name__ == "__main__":
    main()
