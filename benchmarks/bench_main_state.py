"""main_state_sensor benchmark: what restating `main`'s version after a run on another branch costs, against the run.

Run: .venv/bin/python benchmarks/bench_main_state.py [--quick] [--rounds 5] [--json out.json]

Not a test and never run in CI. An asset's state in Dagster is its latest materialization; a run on `dev` records
one too, so `main_state_sensor` records, per asset (partition) the run materialized on a branch other than `main`,
a runless materialization describing the asset's version on `main` (a copy of the materialization that produced
it, plus its check results). That design was chosen over making every asset partitioned by branch; this measures
what it costs. For N in (1, 10, 50) independent assets (each returns a 10,000-row Polars frame; keys
["bench", "a<i>"], tables bench.a<i>, embedded lakehouse `LakehouseResource(path=<tmpdir>)`):

  setup       one run with LakehouseResource(allow_main=True) and no branch: every asset's version on `main`
              exists and is recorded (branch main) in the instance (a fresh `dg.instance_for_test()`); then one
              untimed warm-up round (it also creates branch `dev`).
  run         per round, dg.materialize of the N assets with run tag lakehouse/branch=dev: the baseline, the run
              itself (N replace writes on `dev`, Dagster's step and event overhead included).
  restate     then, for that run, what one sensor evaluation does for it: written_elsewhere(instance, run) +
              main_state_events(instance, lakehouse, items, graph=<the repository's asset graph>) + recording
              the returned events with instance.report_runless_asset_event (the daemon records a tick's events).
              Checked: N events, and every asset's latest materialization is `main`'s afterwards.
  idempotent  right after, the same evaluation again (written_elsewhere + main_state_events): nothing to
              restate, so 0 events; this is the cost of a tick that looks at an already-restated run.

Not timed: the sensor's one run-records query per tick (`_finished_runs`), which does not depend on N.
Run and restate alternate within every round, so a noisy neighbour hurts both; medians over `--rounds` rounds
(default 5; --quick: N in (1, 10), 3 rounds). Each N runs in its own child process of this file (`--worker`), so
the peak RSS reported (getrusage of that process) is that N's alone. ~1 min on 2 cores. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from dagster_lakehouse.dagster import LakehouseIOManager, LakehouseResource
from dagster_lakehouse.dagster.sensors.main_state import main_state_events, written_elsewhere

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_lakehouse import fmt_bytes, fmt_seconds  # noqa: E402  - one formatting for every benchmark

ROWS = 10_000
SIZES = (1, 10, 50)
QUICK_SIZES = (1, 10)
QUICK_ROUNDS = 3
BRANCH_TAG = "lakehouse/branch"


# ----- one N, in a child process -------------------------------------------------------------------------


def _assets(n: int) -> list[Any]:
    def build(i: int) -> Any:
        @dg.asset(key=["bench", f"a{i}"], code_version="1")
        def _asset() -> pl.DataFrame:
            ids = pl.int_range(0, ROWS, eager=True)
            return pl.DataFrame({"id": ids, "value": ids * 0.5 + i, "label": (ids % 97).cast(pl.String)})

        return _asset

    return [build(i) for i in range(n)]


def _timed(fn: Any) -> tuple[float, Any]:
    gc.collect()
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def worker(n: int, rounds: int) -> dict[str, Any]:
    """Set up N assets on `main`, then `rounds` timed rounds of (dev run, restate, idempotent evaluation)."""
    assets = _assets(n)
    keys = [a.key for a in assets]
    times: dict[str, list[float]] = {k: [] for k in ("run", "restate", "written_elsewhere", "events", "report")}
    times["idempotent"] = []
    with tempfile.TemporaryDirectory(prefix="bench-main-state-") as folder, dg.instance_for_test() as instance:
        path = str(Path(folder) / "lakehouse")

        def resources(**overrides: Any) -> dict[str, Any]:
            lakehouse = LakehouseResource(path=path, **overrides)
            return {"lakehouse": lakehouse, "io_manager": LakehouseIOManager(lakehouse=lakehouse)}

        lakehouse = LakehouseResource(path=path).get_lakehouse()
        graph = dg.Definitions(assets=assets, resources=resources()).get_repository_def().asset_graph

        def latest_branches() -> set[str]:
            found = set()
            for key in keys:
                (record,) = instance.fetch_materializations(key, limit=1).records
                found.add(record.asset_materialization.metadata[BRANCH_TAG].value)
            return found

        setup_seconds, published = _timed(
            lambda: dg.materialize(assets, instance=instance, resources=resources(allow_main=True))
        )
        assert published.success and latest_branches() == {"main"}, "setup: the versions on main were not recorded"

        def dev_run() -> Any:
            result = dg.materialize(assets, instance=instance, resources=resources(), tags={BRANCH_TAG: "dev"})
            assert result.success and latest_branches() == {"dev"}, "the dev run did not record dev's versions"
            return result.dagster_run

        def restate(run: Any) -> dict[str, float]:
            gc.collect()
            start = time.perf_counter()
            items = written_elsewhere(instance, run)
            found = time.perf_counter()
            events, _notes = main_state_events(instance, lakehouse, items, graph=graph)
            built = time.perf_counter()
            for event in events:
                instance.report_runless_asset_event(event)
            done = time.perf_counter()
            assert len(items) == n and len(events) == n, f"expected {n} restatements, got {len(items)}/{len(events)}"
            return {
                "restate": done - start,
                "written_elsewhere": found - start,
                "events": built - found,
                "report": done - built,
            }

        def idempotent(run: Any) -> float:
            seconds, (events, _notes) = _timed(
                lambda: main_state_events(instance, lakehouse, written_elsewhere(instance, run), graph=graph)
            )
            assert not events, f"an already restated run produced {len(events)} events"
            return seconds

        # warm-up round (untimed): creates branch `dev`, warms Dagster's and PyIceberg's caches
        warm = dev_run()
        restate(warm)
        idempotent(warm)
        for _ in range(rounds):
            run_seconds, run = _timed(dev_run)
            times["run"].append(run_seconds)
            for label, seconds in restate(run).items():
                times[label].append(seconds)
            assert latest_branches() == {"main"}, "after the restatement an asset does not show main's version"
            times["idempotent"].append(idempotent(run))
    return {
        "n": n,
        "rounds": rounds,
        "setup_seconds": setup_seconds,
        "times": times,
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # KiB on Linux
    }


# ----- driver ----------------------------------------------------------------------------------------------


def run_worker(n: int, rounds: int) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [sys.executable, __file__, "--worker", str(n), "--rounds", str(rounds), "--json", out.name]
        # Dagster logs every run's events to stderr: kept out of the report, shown if the worker fails
        done = subprocess.run(command, stderr=subprocess.PIPE, text=True, check=False)
        if done.returncode != 0:
            sys.stderr.write(done.stderr[-20_000:])
            raise SystemExit(f"worker for N={n} failed (exit {done.returncode})")
        return json.loads(Path(out.name).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per N (default 5; --quick: 3)")
    parser.add_argument("--quick", action="store_true", help="N in (1, 10), 3 rounds")
    parser.add_argument("--json", help="write the raw timings to this file")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # one N, in a child process
    args = parser.parse_args()
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else 5)
    if args.worker is not None:
        Path(args.json).write_text(json.dumps(worker(args.worker, rounds)))
        return

    sizes = QUICK_SIZES if args.quick else SIZES
    started = time.perf_counter()
    load_start = os.getloadavg()[0]
    results = []
    for n in sizes:
        print(f"  .. N={n}: setup, warm-up and {rounds} rounds", flush=True)
        results.append(run_worker(n, rounds))
    total = time.perf_counter() - started

    header = (
        f"main_state_sensor benchmark ({'quick' if args.quick else 'full'}, {rounds} rounds, {ROWS:,} rows per "
        f"asset); Python {platform.python_version()}, {os.cpu_count()} cores; total {total:.0f} s"
    )
    print()
    print("=" * 112)
    print(header)
    print("=" * 112)
    print(
        f"\n  {'N':>3}  {'run (median)':>13}  {'restate (median)':>17}  {'per asset':>10}  {'restate/run':>11}  "
        f"{'idempotent':>10}  {'peak RSS':>9}"
    )
    for result in results:
        times, n = result["times"], result["n"]
        run, restate = statistics.median(times["run"]), statistics.median(times["restate"])
        print(
            f"  {n:>3}  {fmt_seconds(run):>13}  {fmt_seconds(restate):>17}  {restate / n * 1000:>7.1f} ms  "
            f"{restate / run:>10.3f}x  {statistics.median(times['idempotent']) * 1000:>7.1f} ms  "
            f"{fmt_bytes(result['peak_rss']):>9}"
        )
    print("\n  restate, by part (medians): written_elsewhere / main_state_events / report_runless_asset_event")
    for result in results:
        times, n = result["times"], result["n"]
        parts = " / ".join(fmt_seconds(statistics.median(times[p])) for p in ("written_elsewhere", "events", "report"))
        spread = f"run [{fmt_seconds(min(times['run']))} .. {fmt_seconds(max(times['run']))}], restate "
        spread += f"[{fmt_seconds(min(times['restate']))} .. {fmt_seconds(max(times['restate']))}]"
        print(f"  {n:>3}  {parts};  {spread};  setup run on main {fmt_seconds(result['setup_seconds'])}")
    if len(results) > 1:
        first, last = results[0], results[-1]
        scale = last["n"] / first["n"]
        grow = statistics.median(last["times"]["restate"]) / statistics.median(first["times"]["restate"])
        print(f"\n  restate N={last['n']} / N={first['n']}: {grow:.1f}x for {scale:.0f}x the assets")
    print(f"\n  load average (1 min) at start {load_start:.1f}, at end {os.getloadavg()[0]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"header": header, "results": results}, indent=2))


if __name__ == "__main__":
    main()
