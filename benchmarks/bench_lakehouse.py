"""Lakehouse benchmarks: pushdown reads, writes and branch operations, reported as same-run ratios.

Run: .venv/bin/python benchmarks/bench_lakehouse.py [--quick] [--sections read,write,branches] [--json out.json]

Not a test and never run in CI. Every measurement is repeated (round-robin between the things compared, so a
noisy neighbour hurts all of them alike) and the median is reported next to the ratio it feeds:

  read      our IO manager's read (LakehouseIOManager.load_input with columns + filter metadata: on a
            dagster.build_input_context, else timed inside a dg.materialize run, else Lakehouse.read, which it
            calls; the output says which) vs raw pyarrow.dataset over the same Parquet files, vs
            dagster-iceberg's PolarsIcebergIOManager reading the same table in its own venv
  write     Lakehouse.write(mode="replace") of a Polars DataFrame vs pyarrow.parquet.write_table of the same data
  branches  create_branch / merge for tables of ~1 MB vs ~1 GB (100 MB with --quick), and 1 vs 100 tables

dagster-iceberg needs pyiceberg<0.12 and we use 0.12, so its side runs in `benchmarks/.venv-dagster-iceberg`
(built on first use with `python -m venv` + pip, then reused) as a subprocess of this same file (`--worker`)
against the same SQLite catalog and warehouse; if that venv cannot be built the comparison is skipped and the
reason printed. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

HERE = Path(__file__).resolve().parent
DI_VENV = HERE / ".venv-dagster-iceberg"
DI_REQUIREMENTS = ["dagster-iceberg[polars]", "dagster>=1.13,<1.14"]
DI_MARKER = ".bench-ready"

START = datetime(2024, 1, 1)
MONTH_DAYS = 31  # each replicated "month" of trips covers 31 days after the one before
READ_TABLE = ("taxi", "trips")
READ_COLUMNS = ["pickup_datetime", "PULocationID", "trip_miles", "base_passenger_fare"]
MIN_MILES = 2.0
BRANCH_APPENDS = 4  # every branch-benchmark table is written in this many appends (same file/snapshot count)
SMALL_TABLE_BYTES = 1_000_000

PROFILES: dict[str, dict[str, Any]] = {
    "full": {
        "months": 12,
        "rows_per_month": 400_000,
        "write_rows": 2_000_000,
        "big_table_bytes": 1_000_000_000,
        "many_tables": 100,
        "repeat_read": 25,
        "repeat_write": 7,
        "repeat_create": 21,
        "repeat_merge": 11,
        "repeat_merge_many": 5,
    },
    "quick": {
        "months": 6,
        "rows_per_month": 200_000,
        "write_rows": 500_000,
        "big_table_bytes": 100_000_000,
        "many_tables": 100,
        "repeat_read": 11,
        "repeat_write": 3,
        "repeat_create": 9,
        "repeat_merge": 5,
        "repeat_merge_many": 3,
    },
}


# ----- timing and reporting ---------------------------------------------------------------------------


@dataclass
class Timing:
    section: str
    label: str
    times: list[float]
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.times)


@dataclass
class Ratio:
    section: str
    label: str
    numerator: str
    denominator: str
    expectation: str
    value: float | None = None


@dataclass
class Report:
    timings: dict[str, Timing] = field(default_factory=dict)
    ratios: list[Ratio] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def add(self, section: str, times: dict[str, list[float]], notes: dict[str, str] | None = None) -> None:
        for label, values in times.items():
            self.timings[label] = Timing(section, label, values, (notes or {}).get(label, ""))

    def ratio(
        self,
        section: str,
        label: str,
        numerator: str,
        denominator: str,
        expectation: str = "",
        normalise: tuple[str, str] | None = None,
    ) -> None:
        """Median ratio numerator/denominator; with `normalise=(a, b)`, (numerator/a) / (denominator/b)."""
        value = None
        needed = [numerator, denominator, *(normalise or ())]
        if all(name in self.timings for name in needed):
            value = self.timings[numerator].median / self.timings[denominator].median
            if normalise:
                value /= self.timings[normalise[0]].median / self.timings[normalise[1]].median
        self.ratios.append(Ratio(section, label, numerator, denominator, expectation, value))


def log(message: str) -> None:
    print(f"  .. {message}", flush=True)


@dataclass
class Measured:
    """What a case returns when it times the part that matters itself (load_input inside a whole Dagster run)."""

    seconds: float
    value: Any


def timed(fn: Callable[[], Any]) -> float:
    gc.collect()
    start = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - start
    return result.seconds if isinstance(result, Measured) else elapsed


def round_robin(cases: dict[str, Callable[[], Any]], repeat: int, warmup: int = 1) -> dict[str, list[float]]:
    """Time each case `repeat` times, alternating between cases; `warmup` untimed calls of each first."""
    for _ in range(warmup):
        for fn in cases.values():
            fn()
    times: dict[str, list[float]] = {label: [] for label in cases}
    for _ in range(repeat):
        for label, fn in cases.items():
            times[label].append(timed(fn))
    return times


def fmt_seconds(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 0.01:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds * 1000:.2f} ms"


def fmt_bytes(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def print_report(report: Report, header: str) -> None:
    print()
    print("=" * 100)
    print(header)
    print("=" * 100)
    print("\nAbsolute times (median of the runs; min..max in brackets)\n")
    width = max((len(t.label) for t in report.timings.values()), default=20) + 2
    print(f"  {'section':<9} {'measurement':<{width}} {'median':>10}   {'min .. max':<22} runs")
    section = None
    for timing in report.timings.values():
        if section is not None and timing.section != section:
            print()
        section = timing.section
        spread = f"[{fmt_seconds(min(timing.times))} .. {fmt_seconds(max(timing.times))}]"
        print(
            f"  {timing.section:<9} {timing.label:<{width}} {fmt_seconds(timing.median):>10}   {spread:<22} "
            f"{len(timing.times)}"
        )
        if timing.note:
            print(f"  {'':<9}   ({timing.note})")
    print("\nRatios (medians from this run)\n")
    width = max((len(r.label) for r in report.ratios), default=20) + 2
    print(f"  {'section':<9} {'ratio':<{width}} {'value':>9}   expectation")
    for ratio in report.ratios:
        value = "skipped" if ratio.value is None else f"{ratio.value:.2f}x"
        print(f"  {ratio.section:<9} {ratio.label:<{width}} {value:>9}   {ratio.expectation}")
    if report.notes:
        print("\nNotes")
        for note in report.notes:
            print(f"  - {note}")
    if report.skipped:
        print("\nSkipped / failed")
        for item in report.skipped:
            print(f"  - {item}")
    print()


# ----- data -------------------------------------------------------------------------------------------


def taxi_months(months: int, rows_per_month: int):
    """`months` consecutive 31-day blocks of NYC-taxi-shaped trips, sorted by pickup time.

    Month 0 is `example_project.seed.make_trips` (deterministic); month k is the same trips shifted by k*31 days
    with zones rotated and distances/fares perturbed, so the months differ but stay realistic.
    """
    import polars as pl

    from example_project.seed import make_trips

    base = make_trips(rows_per_month, days=MONTH_DAYS, seed=42, start=START)
    for k in range(months):
        shift = timedelta(days=MONTH_DAYS * k)
        scale = 1 + 0.03 * ((k % 5) - 2)
        yield base.with_columns(
            pl.col("pickup_datetime") + shift,
            pl.col("dropoff_datetime") + shift,
            ((pl.col("PULocationID") - 1 + 7 * k) % 265 + 1).alias("PULocationID"),
            ((pl.col("DOLocationID") - 1 + 11 * k) % 265 + 1).alias("DOLocationID"),
            (pl.col("trip_miles") * scale).round(2).alias("trip_miles"),
            (pl.col("base_passenger_fare") * scale).round(2).alias("base_passenger_fare"),
            (pl.col("tips") * scale).round(2).alias("tips"),
        )


def synthetic_trips(offset: int, rows: int):
    """Taxi-shaped trips computed from `pl.int_range` arithmetic: fast enough for gigabytes."""
    import polars as pl

    i = pl.int_range(offset, offset + rows, dtype=pl.Int64)
    h = (i * 2654435761) % 4294967296  # Knuth's multiplicative hash: spread-out but deterministic values
    pickup = (pl.lit(int(START.timestamp() * 1_000_000)) + i * 50_000).cast(pl.Datetime("us"))
    trip_time = 120 + (h // 16) % 3000
    miles = ((h // 256) % 2000) / 100.0
    fare = (3.0 + miles * 2.5 + trip_time / 120.0).round(2)
    return pl.select(
        pickup_datetime=pickup,
        dropoff_datetime=pickup + pl.duration(seconds=trip_time),
        PULocationID=h % 265 + 1,
        DOLocationID=(h // 265) % 265 + 1,
        trip_miles=miles,
        trip_time=trip_time,
        base_passenger_fare=fare,
        tips=(fare * ((h // 4096) % 5) * 0.05).round(2),
    )


def data_files(lakehouse, table: str) -> list[str]:
    """Local paths of the Parquet data files of `table`'s current snapshot on main."""
    tasks = lakehouse.table(table, "main").scan().plan_files()
    return [unquote(urlparse(task.file.file_path).path) for task in tasks]


def disk_bytes(paths: list[str]) -> int:
    return sum(os.path.getsize(p) for p in paths)


# ----- read -------------------------------------------------------------------------------------------


def bench_read(report: Report, root: Path, profile: dict[str, Any], use_dagster_iceberg: bool) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    from dagster_lakehouse.dagster import clear_lakehouse_cache
    from dagster_lakehouse.lakehouse import Lakehouse

    months, per_month, repeat = profile["months"], profile["rows_per_month"], profile["repeat_read"]
    table = ".".join(READ_TABLE)
    cutoff = START + timedelta(days=MONTH_DAYS * (months - 1))  # only the last month matches
    row_filter = f"pickup_datetime >= '{cutoff:%Y-%m-%d}' and trip_miles > {MIN_MILES}"
    path = root / "read"
    cleanups: list[Callable[[], Any]] = []
    log(f"read: writing {table} as {months} appends of {per_month:,} NYC-taxi-shaped trips")
    lakehouse = Lakehouse.local(path)
    try:
        for k, month in enumerate(taxi_months(months, per_month)):
            lakehouse.write(
                table, month, branch="main", mode="replace" if k == 0 else "append", allow_main=True, message="bench"
            )
        files = data_files(lakehouse, table)
        log(f"read: {len(files)} data files, {fmt_bytes(disk_bytes(files))}, {months * per_month:,} rows")
        pa_filter = (pc.field("pickup_datetime") >= pa.scalar(cutoff, type=pa.timestamp("us"))) & (
            pc.field("trip_miles") > MIN_MILES
        )

        def pyarrow_read():
            return ds.dataset(files, format="parquet").to_table(columns=READ_COLUMNS, filter=pa_filter)

        def lakehouse_read():
            return lakehouse.read(table, columns=READ_COLUMNS, filter=row_filter)

        def lakehouse_scan():
            return lakehouse.scan(table, columns=READ_COLUMNS, filter=row_filter).collect()

        cases: dict[str, Callable[[], Any]] = {
            "pyarrow.dataset (baseline)": pyarrow_read,
            "Lakehouse.read": lakehouse_read,
            "Lakehouse.scan().collect()": lakehouse_scan,
        }
        io_label, io_read = io_manager_reader(report, path, row_filter, cleanups)
        if io_read is not None:
            cases[io_label] = io_read

        expected = pyarrow_read().num_rows
        for label, fn in cases.items():
            result = fn()
            result = result.value if isinstance(result, Measured) else result
            rows = result.num_rows if isinstance(result, pa.Table) else result.height
            if rows != expected:
                raise AssertionError(f"{label} returned {rows} rows, pyarrow.dataset {expected}")
        log(f"read: {len(cases)} readers agree on {expected:,} rows; timing {repeat} rounds")
        report.add("read", round_robin(cases, repeat))
        report.notes.append(
            f"read: {months * per_month:,} rows in {len(files)} files ({fmt_bytes(disk_bytes(files))}); "
            f'columns {READ_COLUMNS}; filter "{row_filter}" -> {expected:,} rows (last of {months} months)'
        )

        di_labels: list[str] = []
        if use_dagster_iceberg:
            di_labels = run_dagster_iceberg(report, lakehouse, files, cutoff, repeat, expected)
        else:
            report.skipped.append("dagster-iceberg comparison: disabled by --no-dagster-iceberg")

        base = "pyarrow.dataset (baseline)"
        which = "IO manager" if io_label.startswith("LakehouseIOManager") else "Lakehouse.read"
        report.ratio("read", f"ours ({which}) / pyarrow.dataset", io_label, base, "overhead of catalog + scan planning")
        if io_label != "Lakehouse.read":
            report.ratio("read", "Lakehouse.read / pyarrow.dataset", "Lakehouse.read", base)
            report.ratio("read", "IO manager / Lakehouse.read", io_label, "Lakehouse.read", "~1 (+ what Dagster adds)")
        report.ratio("read", "Lakehouse.scan().collect() / pyarrow.dataset", "Lakehouse.scan().collect()", base)
        for label in di_labels:
            short = label.removeprefix("dagster-iceberg ")
            report.ratio("read", f"dagster-iceberg {short} / its pyarrow.dataset", label, DI_BASELINE)
        for label in di_labels:
            short = label.removeprefix("dagster-iceberg ")
            report.ratio(
                "read", f"ours ({which}) / dagster-iceberg {short}", io_label, label, "< 1 means ours is faster"
            )
            # The two sides run in different processes: also compare them each relative to its own pyarrow baseline.
            report.ratio(
                "read",
                "  same, each normalised by its own pyarrow.dataset",
                io_label,
                label,
                "cancels process-to-process noise",
                normalise=(base, DI_BASELINE),
            )
    finally:
        for cleanup in cleanups:
            cleanup()
        clear_lakehouse_cache()
        lakehouse.close()
        shutil.rmtree(path, ignore_errors=True)


def io_manager_reader(
    report: Report, path: Path, row_filter: str, cleanups: list[Callable[[], Any]]
) -> tuple[str, Callable[[], Any] | None]:
    """How to time `LakehouseIOManager.load_input` with columns + filter metadata, best way that works first.

    1. `load_input(dagster.build_input_context(...))`, no run at all;
    2. a `dg.materialize` run of an asset with that input, timing only `load_input` (a subclass records it);
    3. neither: (label "Lakehouse.read", None), i.e. the ratios use Lakehouse.read, which load_input calls.
    """
    import dagster as dg
    import polars as pl

    from dagster_lakehouse.dagster import LakehouseIOManager, LakehouseResource

    metadata = {"columns": READ_COLUMNS, "filter": row_filter}
    io_manager = LakehouseIOManager(lakehouse=LakehouseResource(path=str(path)))

    @dg.op(ins={"trips": dg.In(pl.DataFrame)})
    def consumer(trips):  # unannotated: the In() carries the type
        """The op whose input the IO manager loads."""

    context = dg.build_input_context(
        name="trips",
        op_def=consumer,
        dagster_type=consumer.ins["trips"].dagster_type,
        asset_key=list(READ_TABLE),
        definition_metadata=metadata,
    )
    try:
        io_manager.load_input(context)
    except Exception as exc:  # noqa: BLE001 - say why, then try inside a real run
        first = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    else:
        report.notes.append(
            "read: LakehouseIOManager.load_input is timed directly on dagster.build_input_context(...) "
            "(no Dagster run; only the load_input call)"
        )
        return "LakehouseIOManager.load_input (build_input_context)", lambda: io_manager.load_input(context)

    last: dict[str, tuple[float, Any]] = {}

    class TimedLakehouseIOManager(LakehouseIOManager):
        """Records how long each load_input takes, and what it returned."""

        def load_input(self, context):
            start = time.perf_counter()
            value = super().load_input(context)
            last["load"] = (time.perf_counter() - start, value)
            return value

    @dg.asset(ins={"trips": dg.AssetIn(key=list(READ_TABLE), metadata=metadata, dagster_type=pl.DataFrame)})
    def bench_consumer(trips):  # unannotated: the AssetIn carries the type
        """Downstream asset whose input is loaded with columns + filter."""

    instance = dg.DagsterInstance.ephemeral()
    cleanups.append(instance.dispose)
    timed_io = TimedLakehouseIOManager(lakehouse=LakehouseResource(path=str(path)))
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}

    def in_run():
        last.pop("load", None)
        dg.materialize(
            [dg.AssetSpec(key=list(READ_TABLE)), bench_consumer],
            resources={"io_manager": timed_io},
            selection=[bench_consumer],
            instance=instance,
            run_config=quiet,
            raise_on_error=True,
        )
        return Measured(*last["load"])

    label = "LakehouseIOManager.load_input (in a run)"
    try:
        in_run()
    except Exception as exc:  # noqa: BLE001 - report why, measure Lakehouse.read in its place
        second = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
        report.skipped.append(
            f"LakehouseIOManager.load_input could not be timed: build_input_context(...) -> {first}; "
            f"inside dg.materialize -> {second}. The read ratios use Lakehouse.read, which load_input calls"
        )
        return "Lakehouse.read", None
    report.notes.append(
        "read: LakehouseIOManager.load_input is timed inside dg.materialize runs (only the load_input call, via a "
        f"subclass), because load_input(dagster.build_input_context(...)) fails outside a run: {first}"
    )
    return label, in_run


# ----- dagster-iceberg, in its own venv ----------------------------------------------------------------

DI_BASELINE = "pyarrow.dataset (in dagster-iceberg venv)"
DI_DATAFRAME = "dagster-iceberg pl.DataFrame input"
DI_LAZY = "dagster-iceberg pl.LazyFrame input"


def ensure_dagster_iceberg_venv() -> tuple[Path | None, str]:
    """The venv's python, built once and reused; (None, reason) when it cannot be built."""
    python = DI_VENV / "bin" / "python"
    check = [str(python), "-c", "import dagster_iceberg.io_manager.polars, polars, pyarrow.dataset"]
    marker = DI_VENV / DI_MARKER
    if marker.exists() and python.exists():
        if subprocess.run(check, capture_output=True, timeout=300).returncode == 0:
            return python, f"reusing {DI_VENV.relative_to(HERE.parent)}"
    log(f"building {DI_VENV.relative_to(HERE.parent)}: pip install {' '.join(DI_REQUIREMENTS)} (once)")
    shutil.rmtree(DI_VENV, ignore_errors=True)
    steps = [
        [sys.executable, "-m", "venv", str(DI_VENV)],
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", *DI_REQUIREMENTS],
        check,
    ]
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"`{' '.join(step[:4])} ...` failed: {exc}"
        if done.returncode != 0:
            tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
            return None, f"`{' '.join(step[:4])} ...` exited {done.returncode}: {tail}"
    marker.write_text("\n".join(DI_REQUIREMENTS) + "\n")
    return python, f"built {DI_VENV.relative_to(HERE.parent)}"


def run_dagster_iceberg(
    report: Report, lakehouse, files: list[str], cutoff: datetime, repeat: int, expected: int
) -> list[str]:
    python, status = ensure_dagster_iceberg_venv()
    if python is None:
        report.skipped.append(f"dagster-iceberg comparison skipped: could not build its venv: {status}")
        return []
    log(f"read: dagster-iceberg worker ({status})")
    spec = {
        "catalog_uri": lakehouse.config.catalog_uri,
        "warehouse": lakehouse.config.warehouse,
        "catalog_name": "main",  # our branch `main` is the SQL catalog named "main"
        "table": list(READ_TABLE),
        "columns": READ_COLUMNS,
        "cutoff": cutoff.isoformat(),
        "min_miles": MIN_MILES,
        "files": files,
        "repeat": repeat,
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(spec, handle)
    try:
        done = subprocess.run(
            [str(python), "-W", "ignore", str(Path(__file__).resolve()), "--worker", handle.name],
            capture_output=True,
            text=True,
            timeout=900,
            cwd=str(HERE),
            env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
        )
    except subprocess.TimeoutExpired:
        report.skipped.append("dagster-iceberg comparison: worker timed out after 900 s")
        return []
    finally:
        os.unlink(handle.name)
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-4:])
        report.skipped.append(f"dagster-iceberg comparison failed: worker exited {done.returncode}: {tail}")
        return []
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for label, rows in result["rows"].items():
        if rows != expected:
            report.skipped.append(f"dagster-iceberg: {label} returned {rows} rows, expected {expected} (not compared)")
            return []
    notes = {
        DI_BASELINE: "same files and filter, timed inside the dagster-iceberg process",
        DI_DATAFRAME: "IO manager pushes the columns down; the filter runs in the asset body after the load",
        DI_LAZY: "IO manager returns a lazy scan_iceberg; the asset's .filter().collect() pushes the filter down",
    }
    report.add("read", result["times"], notes)
    versions = ", ".join(f"{k} {v}" for k, v in result["versions"].items())
    report.notes.append(f"dagster-iceberg venv: {versions}")
    return [DI_DATAFRAME, DI_LAZY]


def worker(spec_path: str) -> int:
    """Runs inside the dagster-iceberg venv: times its IO manager on our table, prints JSON on the last line."""
    import warnings
    from importlib.metadata import version

    warnings.simplefilter("ignore")
    import dagster as dg
    import polars as pl
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds
    from dagster_iceberg.config import IcebergCatalogConfig
    from dagster_iceberg.io_manager.polars import PolarsIcebergIOManager

    spec = json.loads(Path(spec_path).read_text())
    properties = {"type": "sql", "uri": spec["catalog_uri"], "warehouse": spec["warehouse"]}
    resource = PolarsIcebergIOManager(name=spec["catalog_name"], config=IcebergCatalogConfig(properties=properties))
    io_manager = resource.create_io_manager(None)
    # What Dagster hands the IO manager as context.resource_config for this resource.
    resource_config = {"name": spec["catalog_name"], "config": {"properties": properties}, "reader_override": None}
    upstream = dg.build_output_context(asset_key=spec["table"], definition_metadata={})
    cutoff = datetime.fromisoformat(spec["cutoff"])
    polars_filter = (pl.col("pickup_datetime") >= cutoff) & (pl.col("trip_miles") > spec["min_miles"])
    pa_filter = (pc.field("pickup_datetime") >= pa.scalar(cutoff, type=pa.timestamp("us"))) & (
        pc.field("trip_miles") > spec["min_miles"]
    )

    def context_for(kind: type):
        @dg.op(ins={"trips": dg.In(kind)})
        def consumer(trips):  # unannotated: the In() above carries the type
            """The op whose input the IO manager loads."""

        return dg.build_input_context(
            name="trips",
            op_def=consumer,
            dagster_type=consumer.ins["trips"].dagster_type,
            asset_key=spec["table"],
            upstream_output=upstream,
            resource_config=resource_config,
            definition_metadata={"columns": spec["columns"]},
        )

    eager, lazy = context_for(pl.DataFrame), context_for(pl.LazyFrame)
    cases = {
        DI_BASELINE: lambda: ds.dataset(spec["files"], format="parquet").to_table(
            columns=spec["columns"], filter=pa_filter
        ),
        DI_DATAFRAME: lambda: io_manager.load_input(eager).filter(polars_filter),
        DI_LAZY: lambda: io_manager.load_input(lazy).filter(polars_filter).collect(),
    }
    rows = {}
    for label, fn in cases.items():
        result = fn()
        rows[label] = result.num_rows if isinstance(result, pa.Table) else result.height
    times = round_robin(cases, spec["repeat"])
    versions = {name: version(name) for name in ("dagster-iceberg", "pyiceberg", "polars", "pyarrow", "dagster")}
    print(json.dumps({"times": times, "rows": rows, "versions": versions}))
    return 0


# ----- write ------------------------------------------------------------------------------------------


def bench_write(report: Report, root: Path, profile: dict[str, Any]) -> None:
    import polars as pl
    import pyarrow.parquet as pq

    from dagster_lakehouse.lakehouse import Lakehouse

    rows, repeat = profile["write_rows"], profile["repeat_write"]
    per_month = min(rows, profile["rows_per_month"])
    months = -(-rows // per_month)
    frame = pl.concat(list(taxi_months(months, per_month))).head(rows)
    path = root / "write"
    lakehouse = Lakehouse.local(path)
    target = path / "baseline.parquet"
    try:
        log(f"write: {rows:,} trips ({fmt_bytes(frame.estimated_size())} in memory), timing {repeat} rounds")

        def lakehouse_write():
            lakehouse.write("bench.trips", frame, branch="main", mode="replace", allow_main=True, message="bench")

        def parquet_write():
            pq.write_table(frame.to_arrow(), target, compression="zstd", row_group_size=1_048_576)

        times = round_robin(
            {"pq.write_table (zstd, baseline)": parquet_write, 'Lakehouse.write(mode="replace")': lakehouse_write},
            repeat,
        )
        report.add("write", times)
        files = data_files(lakehouse, "bench.trips")
        report.notes.append(
            f"write: {rows:,} rows; Lakehouse wrote {len(files)} file(s) of {fmt_bytes(disk_bytes(files))}, "
            f"pq.write_table {fmt_bytes(target.stat().st_size)} (both zstd, 1Mi-row row groups)"
        )
        report.ratio(
            "write",
            "Lakehouse.write replace / pq.write_table",
            'Lakehouse.write(mode="replace")',
            "pq.write_table (zstd, baseline)",
            "~1 + commit overhead",
        )
    finally:
        lakehouse.close()
        shutil.rmtree(path, ignore_errors=True)


# ----- branches ---------------------------------------------------------------------------------------


def rows_for(target_bytes: int) -> int:
    """Rows of synthetic trips that take about `target_bytes` on disk as BRANCH_APPENDS zstd Parquet files."""
    import pyarrow.parquet as pq

    def bytes_per_row(rows: int) -> float:
        with tempfile.TemporaryDirectory(prefix="bench-lakehouse-calibrate-") as folder:
            sample = Path(folder) / "sample.parquet"
            pq.write_table(synthetic_trips(0, rows).to_arrow(), sample, compression="zstd")
            return sample.stat().st_size / rows

    rows = target_bytes / bytes_per_row(1_000_000)
    chunk = max(1000, min(1_000_000, round(rows / BRANCH_APPENDS)))  # small files compress a little worse
    return max(1, round(target_bytes / bytes_per_row(chunk)))


def build_branch_lakehouse(path: Path, tables: int, rows_per_table: int):
    """A lakehouse on `path` with `tables` tables `t.t000`... of `rows_per_table` rows, each in BRANCH_APPENDS appends."""
    from dagster_lakehouse.lakehouse import Lakehouse

    lakehouse = Lakehouse.local(path)
    chunk = -(-rows_per_table // BRANCH_APPENDS)
    for n in range(tables):
        name = f"t.t{n:03d}"
        offset = n * rows_per_table
        for k in range(BRANCH_APPENDS):
            rows = min(chunk, rows_per_table - k * chunk)
            lakehouse.write(
                name,
                synthetic_trips(offset + k * chunk, rows),
                branch="main",
                mode="replace" if k == 0 else "append",
                allow_main=True,
                message="bench",
            )
    return lakehouse


def bench_branches(report: Report, root: Path, profile: dict[str, Any]) -> None:
    big_bytes, many = profile["big_table_bytes"], profile["many_tables"]
    small_rows, big_rows = rows_for(SMALL_TABLE_BYTES), rows_for(big_bytes)
    small_label, big_label = fmt_bytes(SMALL_TABLE_BYTES), fmt_bytes(big_bytes)
    lakehouses = {}
    try:
        log(f"branches: building 1 table of ~{small_label} ({small_rows:,} rows)")
        lakehouses["small"] = build_branch_lakehouse(root / "small", 1, small_rows)
        started = time.perf_counter()
        log(f"branches: building 1 table of ~{big_label} ({big_rows:,} rows in {BRANCH_APPENDS} appends)")
        lakehouses["big"] = build_branch_lakehouse(root / "big", 1, big_rows)
        log(f"branches: built in {time.perf_counter() - started:.0f} s; building {many} tables of ~{small_label}")
        lakehouses["many"] = build_branch_lakehouse(root / "many", many, small_rows)
        sizes = {key: disk_bytes([f for t in lh.tables() for f in data_files(lh, t)]) for key, lh in lakehouses.items()}
        report.notes.append(
            "branches: data on main: "
            + ", ".join(
                f"{key} = {len(lh.tables())} table(s), {fmt_bytes(sizes[key])}" for key, lh in lakehouses.items()
            )
            + f"; every table written in {BRANCH_APPENDS} appends (same number of files and snapshots)"
        )
        labels = {
            "small": f"1 table, {fmt_bytes(sizes['small'])}",
            "big": f"1 table, {fmt_bytes(sizes['big'])}",
            "many": f"{many} tables, {fmt_bytes(sizes['many'])}",
        }
        tiny = synthetic_trips(10**12, 10)

        # create_branch: round-robin over the lakehouses, branch deleted (untimed) after each timing.
        repeat = profile["repeat_create"]
        log(f"branches: create_branch x{repeat} on each lakehouse")
        create: dict[str, list[float]] = {f"create_branch, {labels[k]}": [] for k in lakehouses}
        for r in range(repeat + 1):
            for key, lh in lakehouses.items():
                name = f"bench_create_{r}"
                elapsed = timed(lambda lh=lh, name=name: lh.create_branch(name))
                lh.delete_branch(name)
                if r:  # round 0 is the warm-up
                    create[f"create_branch, {labels[key]}"].append(elapsed)
        report.add("branches", create)

        # merge: branch from main, append 10 rows to the changed tables on it (untimed), time the merge into main.
        def merge_once(key: str, changed: list[str]) -> float:
            lh = lakehouses[key]
            name = "bench_merge"
            lh.create_branch(name)
            for table in changed:
                lh.write(table, tiny, branch=name, mode="append", message="bench")
            start = time.perf_counter()
            result = lh.merge(name, "main")
            elapsed = time.perf_counter() - start
            lh.delete_branch(name)
            if sorted(result.tables) != sorted(changed):
                raise AssertionError(f"merge changed {result.tables}, expected {changed}")
            return elapsed

        all_tables = lakehouses["many"].tables()
        merges = {  # label -> (lakehouse, tables changed on the branch before the timed merge)
            f"merge, {labels['small']}": ("small", ["t.t000"]),
            f"merge, {labels['big']}": ("big", ["t.t000"]),
            f"merge, {labels['many']}, 1 changed": ("many", ["t.t000"]),
            f"merge, {labels['many']}, all changed": ("many", all_tables),
        }
        repeat, repeat_many = profile["repeat_merge"], profile["repeat_merge_many"]
        log(f"branches: merge x{repeat} (x{repeat_many} with all {many} tables changed), round-robin")
        merge: dict[str, list[float]] = {label: [] for label in merges}
        for key, changed in merges.values():  # warm-up
            merge_once(key, changed)
        for r in range(repeat):
            for label, (key, changed) in merges.items():
                if len(changed) > 1 and r >= repeat_many:
                    continue
                merge[label].append(merge_once(key, changed))
        report.add("branches", merge)

        c_small, c_big, c_many = (f"create_branch, {labels[k]}" for k in ("small", "big", "many"))
        m_small, m_big = f"merge, {labels['small']}", f"merge, {labels['big']}"
        report.ratio("branches", f"create_branch ~{big_label} / ~{small_label}", c_big, c_small, "~1 (metadata only)")
        report.ratio("branches", f"merge ~{big_label} / ~{small_label}", m_big, m_small, "~1 (metadata only)")
        report.ratio("branches", f"create_branch {many} tables / 1", c_many, c_small, f"<= {many} (O(tables))")
        report.ratio(
            "branches",
            f"merge {many} tables all changed / 1",
            f"merge, {labels['many']}, all changed",
            m_small,
            f"<= {many} (O(changed tables))",
        )
        report.ratio(
            "branches", f"merge {many} tables 1 changed / 1", f"merge, {labels['many']}, 1 changed", m_small, "~1"
        )
    finally:
        for lh in lakehouses.values():
            lh.close()
        for key in ("small", "big", "many"):
            shutil.rmtree(root / key, ignore_errors=True)


# ----- main -------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller data (100 MB big table) and fewer repeats")
    parser.add_argument("--sections", default="read,write,branches", help="comma-separated subset to run")
    parser.add_argument("--no-dagster-iceberg", action="store_true", help="skip the dagster-iceberg comparison")
    parser.add_argument("--json", metavar="PATH", help="also write every timing and ratio to this JSON file")
    parser.add_argument("--worker", metavar="SPEC", help=argparse.SUPPRESS)  # runs inside the dagster-iceberg venv
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker)

    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - {"read", "write", "branches"}
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    sys.path.insert(0, str(HERE.parent))  # example_project (seed data) lives next to the package
    profile = PROFILES["quick" if args.quick else "full"]
    mode = "quick" if args.quick else "full"

    import platform
    from importlib.metadata import version

    versions = ", ".join(f"{n} {version(n)}" for n in ("pyiceberg", "polars", "pyarrow", "dagster"))
    header = (
        f"bench_lakehouse ({mode}) on {platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{versions}, {datetime.now():%Y-%m-%d %H:%M}"
    )
    print(header, flush=True)
    report = Report()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-lakehouse-") as folder:
        root = Path(folder)
        for section in sections:
            section_start = time.perf_counter()
            try:
                if section == "read":
                    bench_read(report, root, profile, not args.no_dagster_iceberg)
                elif section == "write":
                    bench_write(report, root, profile)
                else:
                    bench_branches(report, root, profile)
            except Exception as exc:  # noqa: BLE001 - one failed section must not hide the others' results
                traceback.print_exc()
                report.skipped.append(f"section {section} FAILED: {type(exc).__name__}: {exc}")
            log(f"{section}: {time.perf_counter() - section_start:.0f} s")
    header += f"; total {time.perf_counter() - started:.0f} s"
    print_report(report, header)
    if args.json:
        payload = {
            "header": header,
            "timings": {
                k: {"section": t.section, "times": t.times, "median": t.median} for k, t in report.timings.items()
            },
            "ratios": [r.__dict__ for r in report.ratios],
            "notes": report.notes,
            "skipped": report.skipped,
        }
        Path(args.json).write_text(json.dumps(payload, indent=2))
    return 1 if any("FAILED" in s for s in report.skipped) else 0


if __name__ == "__main__":
    raise SystemExit(main())
