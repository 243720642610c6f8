"""Lakehouse benchmarks: pushdown reads, writes and branch operations, reported as same-run ratios.

Run: .venv/bin/python benchmarks/bench_lakehouse.py [--quick] [--sections read,write,branches]
                                                    [--backends local,pg-s3] [--no-dagster-iceberg] [--json out.json]

Not a test and never run in CI. Every measurement is repeated (round-robin between the things compared, so a
noisy neighbour hurts all of them alike) and the median is reported next to the ratio it feeds. Every row names
the backend it ran on:

  local    the embedded lakehouse: SQLite catalog + warehouse folder on local disk (Lakehouse.local)
  pg-s3    PostgreSQL catalog (tests/servers.py start_postgres) + S3 warehouse on moto's S3 server, which runs in a
           child process so its request handling does not share our GIL; started and stopped by
           bench_merge.Backends, the same code bench_merge.py and bench_commits.py use

Sections (read and write run once per backend of --backends, default both; branches on local only):

  read      table taxi.trips, read with a column list and a row filter by
            - our IO manager, LakehouseIOManager.load_input with columns + filter in the input's metadata, for each
              input type it supports: pl.DataFrame, pl.LazyFrame (timed with the .collect() the asset would do)
              and pa.Table; on dagster.build_input_context(...), else timed inside a dg.materialize run (the
              output says which);
            - Lakehouse.read and Lakehouse.scan().collect(), what the IO manager calls;
            - the baseline, raw pyarrow.dataset over the table's Parquet files, the file list handed to it for free:
              local paths on `local`; on `pg-s3` the same S3 objects through a pyarrow.fs.S3FileSystem pointed at
              the same moto endpoint (same data, same server, same credentials, no catalog). pyarrow's S3 client
              is the AWS C++ SDK while our reads go through Polars' object_store, so a pl.scan_parquet row over the
              same files is printed too: it separates the reader's share from the catalog's. The baseline opens
              every file (footers, row-group statistics) while our reads skip the files Iceberg's manifests rule
              out, so a second pyarrow.dataset row reads only the files that can match: the Parquet floor;
            - dagster-iceberg in its own venv: PolarsIcebergIOManager (pl.DataFrame, pl.LazyFrame inputs) and
              PyArrowIcebergIOManager (pa.Table input) reading the same table through the same catalog (the same
              SQLite file, or the same PostgreSQL database with the s3.* properties of the moto endpoint in its
              IcebergCatalogConfig properties) and warehouse. Its IO managers push down columns but no row filter,
              so the filter is applied the way its user would: after the load (DataFrame, Arrow), or in the lazy
              plan before .collect() (LazyFrame, where Polars pushes it into scan_iceberg). Its own
              pyarrow.dataset baseline is timed in that process, for the normalised ratios.
  write     Lakehouse.write(mode="replace") of a Polars DataFrame vs pyarrow.parquet.write_table of the same data
            (zstd and the row-group size our writes use, dagster_lakehouse.lakehouse.writes.ROW_GROUP_ROWS): to
            local disk on `local`, into the same moto bucket through pyarrow.fs.S3FileSystem on `pg-s3`
  branches  create_branch / merge for tables of ~1 MB vs ~1 GB (100 MB with --quick), and 1 vs 100 tables (local)

Goals of issue 13, printed next to their ratios as met / NOT met: reads <= 1.1x pyarrow.dataset for the
pl.DataFrame, pl.LazyFrame and pa.Table inputs; faster than dagster-iceberg (ratio < 1) for every input type.

dagster-iceberg needs pyiceberg<0.12 and we use 0.12, so its side runs in `benchmarks/.venv-dagster-iceberg`
(built on first use with `python -m venv` + pip, then reused; psycopg is installed there for the PostgreSQL
catalog) as a subprocess of this same file (`--worker`); if that venv cannot be built the comparison is skipped
and the reason printed. See docs/benchmarks.md.
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
DI_REQUIREMENTS = ["dagster-iceberg[polars]", "dagster>=1.13,<1.14", "psycopg[binary]"]
DI_MARKER = ".bench-ready"

BACKENDS = ("local", "pg-s3")
START = datetime(2024, 1, 1)
MONTH_DAYS = 31  # each replicated "month" of trips covers 31 days after the one before
READ_TABLE = ("taxi", "trips")
READ_COLUMNS = ["pickup_datetime", "PULocationID", "trip_miles", "base_passenger_fare"]
MIN_MILES = 2.0
READ_GOAL = 1.1  # issue 13: reads <= 1.1x raw pyarrow.dataset
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
    backend: str
    label: str
    times: list[float]
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.times)


@dataclass
class Ratio:
    section: str
    backend: str
    label: str
    numerator: str
    denominator: str
    expectation: str
    value: float | None = None
    goal: tuple[str, float] | None = None  # ("<=", 1.1): met when value <= 1.1; ("<", 1.0): when value < 1.0

    @property
    def status(self) -> str:
        if self.goal is None:
            return ""
        if self.value is None:
            return "skipped"
        op, bound = self.goal
        return "met" if (self.value <= bound if op == "<=" else self.value < bound) else "NOT met"


@dataclass
class Report:
    timings: dict[str, Timing] = field(default_factory=dict)  # key: "<backend>|<label>"
    ratios: list[Ratio] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def add(
        self, section: str, times: dict[str, list[float]], notes: dict[str, str] | None = None, backend: str = "local"
    ) -> None:
        for label, values in times.items():
            self.timings[f"{backend}|{label}"] = Timing(section, backend, label, values, (notes or {}).get(label, ""))

    def ratio(
        self,
        section: str,
        label: str,
        numerator: str,
        denominator: str,
        expectation: str = "",
        normalise: tuple[str, str] | None = None,
        backend: str = "local",
        goal: tuple[str, float] | None = None,
    ) -> None:
        """Median ratio numerator/denominator on `backend`; with `normalise=(a, b)`, (numerator/a) / (denominator/b)."""
        value = None
        needed = [f"{backend}|{name}" for name in (numerator, denominator, *(normalise or ()))]
        if all(key in self.timings for key in needed):
            medians = [self.timings[key].median for key in needed]
            value = medians[0] / medians[1]
            if normalise:
                value /= medians[2] / medians[3]
        self.ratios.append(Ratio(section, backend, label, numerator, denominator, expectation, value, goal))


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
    print("=" * 110)
    print(header)
    print("=" * 110)
    print("\nAbsolute times (median of the runs; min..max in brackets)\n")
    width = max((len(t.label) for t in report.timings.values()), default=20) + 2
    print(f"  {'section':<9} {'backend':<7} {'measurement':<{width}} {'median':>10}   {'min .. max':<22} runs")
    group = None
    for timing in report.timings.values():
        if group is not None and (timing.section, timing.backend) != group:
            print()
        group = (timing.section, timing.backend)
        spread = f"[{fmt_seconds(min(timing.times))} .. {fmt_seconds(max(timing.times))}]"
        print(
            f"  {timing.section:<9} {timing.backend:<7} {timing.label:<{width}} {fmt_seconds(timing.median):>10}   "
            f"{spread:<22} {len(timing.times)}"
        )
        if timing.note:
            print(f"  {'':<9} {'':<7}   ({timing.note})")
    print("\nRatios (medians from this run; goal: the target of issue 13, met or not)\n")
    width = max((len(r.label) for r in report.ratios), default=20) + 2
    print(f"  {'section':<9} {'backend':<7} {'ratio':<{width}} {'value':>9}   {'goal':<8} expectation")
    group = None
    for ratio in report.ratios:
        if group is not None and (ratio.section, ratio.backend) != group:
            print()
        group = (ratio.section, ratio.backend)
        value = "skipped" if ratio.value is None else f"{ratio.value:.2f}x"
        print(
            f"  {ratio.section:<9} {ratio.backend:<7} {ratio.label:<{width}} {value:>9}   {ratio.status:<8} "
            f"{ratio.expectation}"
        )
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



def data_file_uris(lakehouse, table: str) -> list[tuple[str, int]]:
    """(URI, size in bytes) of the Parquet data files of `table`'s current snapshot on main, on any backend."""
    tasks = lakehouse.table(table, "main").scan().plan_files()
    return [(task.file.file_path, task.file.file_size_in_bytes) for task in tasks]


def matching_file_uris(lakehouse, table: str, cutoff: datetime) -> list[str]:
    """URIs of the data files PyIceberg's planning keeps for the read filter (manifest and column statistics)."""
    from pyiceberg.expressions import And, GreaterThan, GreaterThanOrEqual

    row_filter = And(GreaterThanOrEqual("pickup_datetime", cutoff.isoformat()), GreaterThan("trip_miles", MIN_MILES))
    return [task.file.file_path for task in lakehouse.table(table, "main").scan(row_filter=row_filter).plan_files()]


def s3_settings(properties: dict[str, str]) -> dict[str, str] | None:
    """The S3 endpoint and credentials of a lakehouse's FileIO properties; None for a local warehouse."""
    if not properties.get("s3.endpoint"):
        return None
    return {
        "endpoint": properties["s3.endpoint"],
        "access_key": properties.get("s3.access-key-id", ""),
        "secret_key": properties.get("s3.secret-access-key", ""),
        "region": properties.get("s3.region", "us-east-1"),
    }


def arrow_files(uris: list[str], s3: dict[str, str] | None) -> tuple[list[str], Any]:
    """pyarrow's view of data files: (local paths, None), or (bucket/key paths, an S3FileSystem at the endpoint).

    Shared by this process and the dagster-iceberg worker, so both baselines read the files the same way.
    """
    if s3 is None:
        return [unquote(urlparse(uri).path) for uri in uris], None
    from pyarrow import fs

    endpoint = urlparse(s3["endpoint"])
    filesystem = fs.S3FileSystem(
        access_key=s3["access_key"],
        secret_key=s3["secret_key"],
        region=s3["region"],
        endpoint_override=endpoint.netloc,
        scheme=endpoint.scheme or "http",
    )
    return [uri.split("://", 1)[1] for uri in uris], filesystem


def polars_files(uris: list[str], s3: dict[str, str] | None) -> tuple[list[str], dict[str, str] | None]:
    """Polars' view of data files: local paths, or the s3:// URIs with object_store options for the endpoint."""
    if s3 is None:
        return [unquote(urlparse(uri).path) for uri in uris], None
    options = {
        "aws_endpoint_url": s3["endpoint"],
        "aws_region": s3["region"],
        "aws_access_key_id": s3["access_key"],
        "aws_secret_access_key": s3["secret_key"],
    }
    if s3["endpoint"].startswith("http://"):
        options["aws_allow_http"] = "true"
    return uris, options


def pyarrow_filter(cutoff: datetime, min_miles: float):
    """The read filter as a pyarrow compute expression."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return (pc.field("pickup_datetime") >= pa.scalar(cutoff, type=pa.timestamp("us"))) & (
        pc.field("trip_miles") > min_miles
    )


def polars_filter(cutoff: datetime, min_miles: float):
    """The read filter as a Polars expression."""
    import polars as pl

    return (pl.col("pickup_datetime") >= cutoff) & (pl.col("trip_miles") > min_miles)


def row_count(result: Any) -> int:
    import pyarrow as pa

    result = result.value if isinstance(result, Measured) else result
    return result.num_rows if isinstance(result, pa.Table) else result.height


# ----- read -------------------------------------------------------------------------------------------

KINDS = ("pl.DataFrame", "pl.LazyFrame", "pa.Table")
"""The input types LakehouseIOManager loads; each gets its own row and ratios."""
BASE = "pyarrow.dataset (baseline)"
PRUNED = "pyarrow.dataset (matching files only)"
POLARS_BASE = "pl.scan_parquet (same files)"
OURS = {kind: f"LakehouseIOManager {kind} input" for kind in KINDS}
DI = {kind: f"dagster-iceberg {kind} input" for kind in KINDS}
DI_BASELINE = "pyarrow.dataset (in dagster-iceberg venv)"


def bench_read(report: Report, servers: Any, profile: dict[str, Any], use_dagster_iceberg: bool) -> None:
    import polars as pl
    import pyarrow.dataset as ds

    from dagster_lakehouse.dagster import clear_lakehouse_cache

    backend = servers.name
    months, per_month, repeat = profile["months"], profile["rows_per_month"], profile["repeat_read"]
    table = ".".join(READ_TABLE)
    cutoff = START + timedelta(days=MONTH_DAYS * (months - 1))  # only the last month matches
    row_filter = f"pickup_datetime >= '{cutoff:%Y-%m-%d}' and trip_miles > {MIN_MILES}"
    cleanups: list[Callable[[], Any]] = []
    log(f"{backend} read: writing {table} as {months} appends of {per_month:,} NYC-taxi-shaped trips")
    lakehouse = servers.make("read")
    try:
        for k, month in enumerate(taxi_months(months, per_month)):
            lakehouse.write(
                table, month, branch="main", mode="replace" if k == 0 else "append", allow_main=True, message="bench"
            )
        files_and_sizes = data_file_uris(lakehouse, table)
        uris, size = [uri for uri, _ in files_and_sizes], sum(s for _, s in files_and_sizes)
        s3 = s3_settings(lakehouse.config.properties)
        log(f"{backend} read: {len(uris)} data files, {fmt_bytes(size)}, {months * per_month:,} rows")
        files, filesystem = arrow_files(uris, s3)
        pl_files, pl_options = polars_files(uris, s3)
        matching = matching_file_uris(lakehouse, table, cutoff)
        matching_files, _ = arrow_files(matching, s3)
        pa_filter, pl_filter = pyarrow_filter(cutoff, MIN_MILES), polars_filter(cutoff, MIN_MILES)

        def pyarrow_read():
            return ds.dataset(files, format="parquet", filesystem=filesystem).to_table(
                columns=READ_COLUMNS, filter=pa_filter
            )

        def pyarrow_matching_read():
            return ds.dataset(matching_files, format="parquet", filesystem=filesystem).to_table(
                columns=READ_COLUMNS, filter=pa_filter
            )

        def polars_read():
            return pl.scan_parquet(pl_files, storage_options=pl_options).select(READ_COLUMNS).filter(pl_filter).collect()

        def lakehouse_read():
            return lakehouse.read(table, columns=READ_COLUMNS, filter=row_filter)

        def lakehouse_scan():
            return lakehouse.scan(table, columns=READ_COLUMNS, filter=row_filter).collect()

        cases: dict[str, Callable[[], Any]] = {
            BASE: pyarrow_read,
            PRUNED: pyarrow_matching_read,
            POLARS_BASE: polars_read,
            "Lakehouse.read": lakehouse_read,
            "Lakehouse.scan().collect()": lakehouse_scan,
        }
        readers, how = io_manager_readers(report, backend, lakehouse.config, row_filter, cleanups)
        notes = {
            BASE: "the table's current files, list given for free" + (", via pyarrow.fs.S3FileSystem" if s3 else ""),
            PRUNED: f"{len(matching)} of {len(uris)} files: those Iceberg's manifest statistics keep for the filter",
            POLARS_BASE: "all files, Polars' native Parquet reader (object_store on S3): the reader ours uses",
        }
        for kind, fn in readers.items():
            cases[OURS[kind]] = fn
            notes[OURS[kind]] = how + (", then .collect()" if kind == "pl.LazyFrame" else "")

        expected = row_count(pyarrow_read())
        for label, fn in cases.items():
            rows = row_count(fn())
            if rows != expected:
                raise AssertionError(f"{backend}: {label} returned {rows} rows, pyarrow.dataset {expected}")
        log(f"{backend} read: {len(cases)} readers agree on {expected:,} rows; timing {repeat} rounds")
        report.add("read", round_robin(cases, repeat), notes, backend=backend)
        report.notes.append(
            f"{backend} read: {months * per_month:,} rows in {len(uris)} files ({fmt_bytes(size)}) under "
            f"{lakehouse.config.warehouse}; columns {READ_COLUMNS}; filter \"{row_filter}\" -> {expected:,} rows "
            f"(last of {months} months)"
        )

        di_kinds: list[str] = []
        if use_dagster_iceberg:
            di_kinds = run_dagster_iceberg(report, backend, lakehouse, uris, s3, cutoff, repeat, expected)
        else:
            report.skipped.append(f"{backend} read: dagster-iceberg comparison disabled by --no-dagster-iceberg")

        def ratio(label: str, numerator: str, denominator: str, expectation: str = "", **kwargs: Any) -> None:
            report.ratio("read", label, numerator, denominator, expectation, backend=backend, **kwargs)

        for kind in KINDS:
            ratio(
                f"ours {kind} input / pyarrow.dataset",
                OURS[kind],
                BASE,
                f"issue 13: <= {READ_GOAL:.1f}x",
                goal=("<=", READ_GOAL),
            )
        for kind in KINDS:
            ratio(f"ours {kind} input / pyarrow.dataset on matching files", OURS[kind], PRUNED, "the Parquet floor")
        ratio("Lakehouse.read / pyarrow.dataset", "Lakehouse.read", BASE)
        ratio("Lakehouse.scan().collect() / pyarrow.dataset", "Lakehouse.scan().collect()", BASE)
        ratio("pl.scan_parquet / pyarrow.dataset", POLARS_BASE, BASE, "the readers alone, no catalog")
        ratio("ours pl.DataFrame input / pl.scan_parquet", OURS["pl.DataFrame"], POLARS_BASE, "catalog + planning")
        ratio("ours pl.DataFrame input / Lakehouse.read", OURS["pl.DataFrame"], "Lakehouse.read", "~1 (IO manager)")
        for kind in di_kinds:
            ratio(f"dagster-iceberg {kind} input / its pyarrow.dataset", DI[kind], DI_BASELINE)
        for kind in di_kinds:
            ratio(
                f"ours / dagster-iceberg, {kind} input",
                OURS[kind],
                DI[kind],
                "issue 13: < 1 (ours faster)",
                goal=("<", 1.0),
            )
            # The two sides run in different processes: also compare them each relative to its own pyarrow baseline.
            ratio(
                "  same, each normalised by its own pyarrow.dataset",
                OURS[kind],
                DI[kind],
                "cancels process-to-process noise",
                normalise=(BASE, DI_BASELINE),
            )
    finally:
        for cleanup in cleanups:
            cleanup()
        clear_lakehouse_cache()
        lakehouse.close()
        if backend == "local":  # the lakehouse's folder (its catalog file and warehouse)
            shutil.rmtree(Path(unquote(urlparse(lakehouse.config.warehouse).path)).parent, ignore_errors=True)


def io_manager_readers(
    report: Report, backend: str, config: Any, row_filter: str, cleanups: list[Callable[[], Any]]
) -> tuple[dict[str, Callable[[], Any]], str]:
    """How to time `LakehouseIOManager.load_input` with columns + filter metadata for each input type, best way
    that works first: ({kind: reader}, what is timed).

    1. `load_input(dagster.build_input_context(...))`, no run at all;
    2. a `dg.materialize` run of an asset with that input, timing only `load_input` (a subclass records it);
    3. neither: ({}, ...) and the reason in the report (the ratios print as skipped).
    A `pl.LazyFrame` input is timed with the `.collect()` an asset would do, so it reads the data like the others.
    """
    import dagster as dg
    import polars as pl
    import pyarrow as pa

    from dagster_lakehouse.dagster import LakehouseIOManager, LakehouseResource

    types: dict[str, type] = {"pl.DataFrame": pl.DataFrame, "pl.LazyFrame": pl.LazyFrame, "pa.Table": pa.Table}
    metadata = {"columns": READ_COLUMNS, "filter": row_filter}

    def resource() -> LakehouseResource:
        return LakehouseResource(
            catalog_uri=config.catalog_uri, warehouse=config.warehouse, properties=dict(config.properties)
        )

    io_manager = LakehouseIOManager(lakehouse=resource())

    def direct(kind: type) -> Callable[[], Any]:
        @dg.op(ins={"trips": dg.In(kind)})
        def consumer(trips):  # unannotated: the In() carries the type
            """The op whose input the IO manager loads."""

        context = dg.build_input_context(
            name="trips",
            op_def=consumer,
            dagster_type=consumer.ins["trips"].dagster_type,
            asset_key=list(READ_TABLE),
            definition_metadata=metadata,
        )
        if kind is pl.LazyFrame:
            return lambda: io_manager.load_input(context).collect()
        return lambda: io_manager.load_input(context)

    readers: dict[str, Callable[[], Any]] = {}
    try:
        for name, kind in types.items():
            fn = direct(kind)
            fn()
            readers[name] = fn
    except Exception as exc:  # noqa: BLE001 - say why, then try inside a real run
        first = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    else:
        return readers, "load_input on dagster.build_input_context(...), no Dagster run"

    last: dict[str, tuple[float, Any]] = {}

    class TimedLakehouseIOManager(LakehouseIOManager):
        """Records how long each load_input (+ .collect() of a LazyFrame) takes, and what it read."""

        def load_input(self, context):
            start = time.perf_counter()
            value = super().load_input(context)
            read = value.collect() if isinstance(value, pl.LazyFrame) else value
            last["load"] = (time.perf_counter() - start, read)
            return value

    instance = dg.DagsterInstance.ephemeral()
    cleanups.append(instance.dispose)
    timed_io = TimedLakehouseIOManager(lakehouse=resource())
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}

    def in_run(name: str, kind: type) -> Callable[[], Any]:
        @dg.asset(
            name=f"bench_consumer_{name.replace('.', '_').lower()}",
            ins={"trips": dg.AssetIn(key=list(READ_TABLE), metadata=metadata, dagster_type=kind)},
        )
        def consumer(trips):  # unannotated: the AssetIn carries the type
            """Downstream asset whose input is loaded with columns + filter."""

        def run():
            last.pop("load", None)
            dg.materialize(
                [dg.AssetSpec(key=list(READ_TABLE)), consumer],
                resources={"io_manager": timed_io},
                selection=[consumer],
                instance=instance,
                run_config=quiet,
                raise_on_error=True,
            )
            return Measured(*last["load"])

        return run

    readers = {}
    try:
        for name, kind in types.items():
            fn = in_run(name, kind)
            fn()
            readers[name] = fn
    except Exception as exc:  # noqa: BLE001 - report why; the IO manager rows are then missing
        second = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
        report.skipped.append(
            f"{backend} read: LakehouseIOManager.load_input could not be timed: build_input_context(...) -> {first}; "
            f"inside dg.materialize -> {second}"
        )
        return {}, ""
    report.notes.append(
        f"{backend} read: LakehouseIOManager.load_input is timed inside dg.materialize runs, because "
        f"load_input(dagster.build_input_context(...)) fails outside a run: {first}"
    )
    return readers, "only load_input timed, inside a dg.materialize run"


# ----- dagster-iceberg, in its own venv ----------------------------------------------------------------

DI_CHECK = (
    "import dagster_iceberg.io_manager.polars, dagster_iceberg.io_manager.arrow, polars, pyarrow.dataset, psycopg"
)


def ensure_dagster_iceberg_venv() -> tuple[Path | None, str]:
    """The venv's python, built once and reused (missing requirements installed into it); (None, reason) on failure."""
    python = DI_VENV / "bin" / "python"
    check = [str(python), "-c", DI_CHECK]
    marker = DI_VENV / DI_MARKER
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", *DI_REQUIREMENTS]
    if marker.exists() and python.exists():
        if subprocess.run(check, capture_output=True, timeout=300).returncode == 0:
            return python, f"reusing {DI_VENV.relative_to(HERE.parent)}"
        log(f"updating {DI_VENV.relative_to(HERE.parent)}: pip install {' '.join(DI_REQUIREMENTS)}")
        if subprocess.run(pip, capture_output=True, timeout=900).returncode == 0:
            if subprocess.run(check, capture_output=True, timeout=300).returncode == 0:
                marker.write_text("\n".join(DI_REQUIREMENTS) + "\n")
                return python, f"updated {DI_VENV.relative_to(HERE.parent)}"
    log(f"building {DI_VENV.relative_to(HERE.parent)}: pip install {' '.join(DI_REQUIREMENTS)} (once)")
    shutil.rmtree(DI_VENV, ignore_errors=True)
    for step in ([sys.executable, "-m", "venv", str(DI_VENV)], pip, check):
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
    report: Report,
    backend: str,
    lakehouse: Any,
    uris: list[str],
    s3: dict[str, str] | None,
    cutoff: datetime,
    repeat: int,
    expected: int,
) -> list[str]:
    """Time dagster-iceberg's IO managers on our table in its venv; the input kinds it could load correctly."""
    python, status = ensure_dagster_iceberg_venv()
    if python is None:
        report.skipped.append(f"{backend} read: dagster-iceberg comparison skipped: could not build its venv: {status}")
        return []
    log(f"{backend} read: dagster-iceberg worker ({status})")
    spec = {
        "catalog_uri": lakehouse.config.catalog_uri,
        "warehouse": lakehouse.config.warehouse,
        # the s3.* FileIO properties of our lakehouse (endpoint, credentials, region, path-style), none on local
        "properties": {k: v for k, v in lakehouse.config.properties.items() if k.startswith("s3.")},
        "catalog_name": "main",  # our branch `main` is the SQL catalog named "main"
        "table": list(READ_TABLE),
        "columns": READ_COLUMNS,
        "cutoff": cutoff.isoformat(),
        "min_miles": MIN_MILES,
        "files": uris,
        "s3": s3,
        "repeat": repeat,
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(spec, handle)
    try:
        done = subprocess.run(
            [str(python), "-W", "ignore", str(Path(__file__).resolve()), "--worker", handle.name],
            capture_output=True,
            text=True,
            timeout=1800,
            cwd=str(HERE),
            env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
        )
    except subprocess.TimeoutExpired:
        report.skipped.append(f"{backend} read: dagster-iceberg worker timed out after 1800 s")
        return []
    finally:
        os.unlink(handle.name)
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-4:])
        report.skipped.append(f"{backend} read: dagster-iceberg worker exited {done.returncode}: {tail}")
        return []
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for label, error in result["errors"].items():
        report.skipped.append(f"{backend} read: {label} failed in the dagster-iceberg venv: {error}")
    for label, rows in result["rows"].items():
        if rows != expected:
            report.skipped.append(
                f"{backend} read: {label} returned {rows} rows, expected {expected} (dagster-iceberg not compared)"
            )
            return []
    notes = {
        DI_BASELINE: "same files and filter, timed inside the dagster-iceberg process",
        DI["pl.DataFrame"]: "PolarsIcebergIOManager pushes the columns down; the filter runs after the load",
        DI["pl.LazyFrame"]: "PolarsIcebergIOManager returns a lazy scan_iceberg; .filter().collect() pushes it down",
        DI["pa.Table"]: "PyArrowIcebergIOManager (table.scan(selected_fields).to_arrow()); the filter runs after",
    }
    report.add("read", result["times"], notes, backend=backend)
    versions = ", ".join(f"{k} {v}" for k, v in result["versions"].items())
    report.notes.append(f"{backend} read: dagster-iceberg venv: {versions}")
    return [kind for kind in KINDS if DI[kind] in result["times"]]


def worker(spec_path: str) -> int:
    """Runs inside the dagster-iceberg venv: times its IO managers on our table, prints JSON on the last line."""
    import warnings
    from importlib.metadata import version

    warnings.simplefilter("ignore")
    import dagster as dg
    import polars as pl
    import pyarrow as pa
    import pyarrow.dataset as ds
    from dagster_iceberg.config import IcebergCatalogConfig
    from dagster_iceberg.io_manager.arrow import PyArrowIcebergIOManager
    from dagster_iceberg.io_manager.polars import PolarsIcebergIOManager

    spec = json.loads(Path(spec_path).read_text())
    properties = {"type": "sql", "uri": spec["catalog_uri"], "warehouse": spec["warehouse"], **spec["properties"]}
    config = IcebergCatalogConfig(properties=properties)
    polars_io = PolarsIcebergIOManager(name=spec["catalog_name"], config=config).create_io_manager(None)
    arrow_io = PyArrowIcebergIOManager(name=spec["catalog_name"], config=config).create_io_manager(None)
    # What Dagster hands the IO manager as context.resource_config for this resource.
    resource_config = {"name": spec["catalog_name"], "config": {"properties": properties}, "reader_override": None}
    upstream = dg.build_output_context(asset_key=spec["table"], definition_metadata={})
    cutoff = datetime.fromisoformat(spec["cutoff"])
    pl_filter, pa_filter = polars_filter(cutoff, spec["min_miles"]), pyarrow_filter(cutoff, spec["min_miles"])
    files, filesystem = arrow_files(spec["files"], spec["s3"])

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

    eager, lazy, arrow = context_for(pl.DataFrame), context_for(pl.LazyFrame), context_for(pa.Table)
    candidates = {
        DI_BASELINE: lambda: ds.dataset(files, format="parquet", filesystem=filesystem).to_table(
            columns=spec["columns"], filter=pa_filter
        ),
        DI["pl.DataFrame"]: lambda: polars_io.load_input(eager).filter(pl_filter),
        DI["pl.LazyFrame"]: lambda: polars_io.load_input(lazy).filter(pl_filter).collect(),
        DI["pa.Table"]: lambda: arrow_io.load_input(arrow).filter(pa_filter),
    }
    cases, rows, errors = {}, {}, {}
    for label, fn in candidates.items():
        try:
            rows[label] = row_count(fn())
        except Exception as exc:  # noqa: BLE001 - one input type failing must not hide the others
            errors[label] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            continue
        cases[label] = fn
    times = round_robin(cases, spec["repeat"])
    versions = {name: version(name) for name in ("dagster-iceberg", "pyiceberg", "polars", "pyarrow", "dagster")}
    print(json.dumps({"times": times, "rows": rows, "errors": errors, "versions": versions}))
    return 0


# ----- write ------------------------------------------------------------------------------------------


def bench_write(report: Report, servers: Any, profile: dict[str, Any]) -> None:
    import polars as pl
    import pyarrow.parquet as pq

    backend = servers.name
    rows, repeat = profile["write_rows"], profile["repeat_write"]
    per_month = min(rows, profile["rows_per_month"])
    months = -(-rows // per_month)
    frame = pl.concat(list(taxi_months(months, per_month))).head(rows)
    try:  # the row-group size our writes use, so that both sides write the same layout
        from dagster_lakehouse.lakehouse.writes import ROW_GROUP_ROWS as row_group
    except ImportError:
        row_group = 1_048_576  # PyIceberg's default
    lakehouse = servers.make("write")
    s3 = s3_settings(lakehouse.config.properties)
    if s3 is None:
        folder = Path(unquote(urlparse(lakehouse.config.warehouse).path)).parent
        target, filesystem, where = str(folder / "baseline.parquet"), None, "local disk"
    else:
        bucket = urlparse(lakehouse.config.warehouse).netloc
        _, filesystem = arrow_files([], s3)
        target, where = f"{bucket}/baseline/baseline.parquet", f"s3://{bucket} via pyarrow.fs.S3FileSystem"
    try:
        log(
            f"{backend} write: {rows:,} trips ({fmt_bytes(frame.estimated_size())} in memory), timing {repeat} rounds"
        )

        def lakehouse_write():
            lakehouse.write("bench.trips", frame, branch="main", mode="replace", allow_main=True, message="bench")

        def parquet_write():
            pq.write_table(frame.to_arrow(), target, filesystem=filesystem, compression="zstd", row_group_size=row_group)

        base = "pq.write_table (zstd, baseline)"
        times = round_robin({base: parquet_write, 'Lakehouse.write(mode="replace")': lakehouse_write}, repeat)
        report.add("write", times, {base: f"to {where}"}, backend=backend)
        written = data_file_uris(lakehouse, "bench.trips")
        baseline_size = os.path.getsize(target) if filesystem is None else filesystem.get_file_info(target).size
        report.notes.append(
            f"{backend} write: {rows:,} rows; Lakehouse wrote {len(written)} file(s) of "
            f"{fmt_bytes(sum(s for _, s in written))}, pq.write_table {fmt_bytes(baseline_size)} "
            f"(both zstd, {row_group:,}-row row groups)"
        )
        report.ratio(
            "write",
            "Lakehouse.write replace / pq.write_table",
            'Lakehouse.write(mode="replace")',
            base,
            "~1 + commit overhead",
            backend=backend,
        )
    finally:
        lakehouse.close()
        if backend == "local":  # the lakehouse's folder and the baseline file next to its warehouse
            shutil.rmtree(Path(unquote(urlparse(lakehouse.config.warehouse).path)).parent, ignore_errors=True)


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
    parser.add_argument(
        "--backends", default="local,pg-s3", help="comma-separated: local, pg-s3 (read and write; default both)"
    )
    parser.add_argument("--no-dagster-iceberg", action="store_true", help="skip the dagster-iceberg comparison")
    parser.add_argument("--json", metavar="PATH", help="also write every timing and ratio to this JSON file")
    parser.add_argument("--worker", metavar="SPEC", help=argparse.SUPPRESS)  # runs inside the dagster-iceberg venv
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker)

    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(sections) - {"read", "write", "branches"}
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    if set(backends) - set(BACKENDS) or not backends:
        parser.error(f"unknown backend in {args.backends!r}: choose from {', '.join(BACKENDS)}")
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
    load_start = os.getloadavg()[0]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-lakehouse-") as folder:
        root = Path(folder)
        per_backend = [s for s in sections if s in ("read", "write")]
        if per_backend:
            sys.path.insert(0, str(HERE))
            from bench_merge import Backends  # here, not at the top: bench_merge imports this module

            for backend in backends:
                backend_root = root / backend
                backend_root.mkdir()
                try:
                    servers = Backends(backend, backend_root)
                except Exception as exc:  # noqa: BLE001 - a backend that cannot start must not hide the others
                    traceback.print_exc()
                    report.skipped.append(f"backend {backend} FAILED to start: {type(exc).__name__}: {exc}")
                    continue
                try:
                    for section in per_backend:
                        section_start = time.perf_counter()
                        try:
                            if section == "read":
                                bench_read(report, servers, profile, not args.no_dagster_iceberg)
                            else:
                                bench_write(report, servers, profile)
                        except Exception as exc:  # noqa: BLE001 - one failed section must not hide the others
                            traceback.print_exc()
                            report.skipped.append(f"{backend} {section} FAILED: {type(exc).__name__}: {exc}")
                        log(f"{backend} {section}: {time.perf_counter() - section_start:.0f} s")
                finally:
                    servers.close()
                    shutil.rmtree(backend_root, ignore_errors=True)
        if "branches" in sections:
            section_start = time.perf_counter()
            try:
                bench_branches(report, root, profile)
            except Exception as exc:  # noqa: BLE001 - one failed section must not hide the others' results
                traceback.print_exc()
                report.skipped.append(f"local branches FAILED: {type(exc).__name__}: {exc}")
            log(f"local branches: {time.perf_counter() - section_start:.0f} s")
    header += f"; total {time.perf_counter() - started:.0f} s"
    report.notes.append(
        f"load average (1 min) at start {load_start:.1f}, at end {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)"
    )
    print_report(report, header)
    if args.json:
        payload = {
            "header": header,
            "timings": [
                {"section": t.section, "backend": t.backend, "label": t.label, "times": t.times, "median": t.median}
                for t in report.timings.values()
            ],
            "ratios": [{**r.__dict__, "status": r.status} for r in report.ratios],
            "notes": report.notes,
            "skipped": report.skipped,
        }
        Path(args.json).write_text(json.dumps(payload, indent=2))
    return 1 if any("FAILED" in s for s in report.skipped) else 0


if __name__ == "__main__":
    raise SystemExit(main())
