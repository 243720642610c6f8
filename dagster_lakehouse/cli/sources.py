"""What `lakehouse import` reads: Parquet and CSV files, folders and globs of them as one Polars LazyFrame, and
that frame as Arrow batches counted onto a progress line."""

from __future__ import annotations

import glob
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pyarrow as pa

from dagster_lakehouse.cli._common import CliError
from dagster_lakehouse.cli.progress import Progress

PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv",)


def _is_glob(source: str) -> bool:
    return any(c in source for c in "*?[")


def _kind(path: str) -> str | None:
    lower = path.lower()
    if lower.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if lower.endswith(CSV_SUFFIXES):
        return "csv"
    return None


def _scan_one(source: str, kind: str) -> pl.LazyFrame:
    if kind == "parquet":
        return pl.scan_parquet(source)
    return pl.scan_csv(source, try_parse_dates=True)


def _scan_files(files: list[Path]) -> pl.LazyFrame:
    frames = [_scan_one(str(p), _kind(p.name) or "") for p in files]
    return frames[0] if len(frames) == 1 else pl.concat(frames, how="diagonal_relaxed")


def scan_source(source: str) -> tuple[pl.LazyFrame, int]:
    """A LazyFrame over a Parquet/CSV file, a folder or a glob of them, and how many files it reads.

    Several files are unioned by column name (a column missing from a file is null there). A remote URL
    (`s3://...`) is handed to Polars as it is and counts as one file.
    """
    if "://" in source:
        kind = _kind(source)
        if kind is None:
            raise CliError(f"cannot import '{source}': expected a .parquet or .csv file")
        return _scan_one(source, kind), 1
    path = Path(source).expanduser()
    if _is_glob(source):
        files = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_file() and _kind(p))
        if not files:
            raise CliError(f"cannot import '{source}': no .parquet or .csv files match")
        return _scan_files(files), len(files)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and _kind(p.name))
        if not files:
            raise CliError(f"no .parquet or .csv files in folder '{source}'")
        return _scan_files(files), len(files)
    if not path.exists():
        raise CliError(f"cannot import '{source}': no such file or folder")
    if _kind(path.name) is None:
        raise CliError(f"cannot import '{source}': expected a .parquet or .csv file, or a folder of them")
    return _scan_files([path]), 1


def counted(frame: pl.LazyFrame, progress: Progress, *, count_first: bool) -> pa.RecordBatchReader:
    """`frame` as Arrow batches from Polars' streaming engine, telling `progress` how many rows were read so far.

    Nothing is read before the reader's first batch is asked for. With `count_first` the rows are counted then, for a
    percentage: Polars counts CSV lines and reads Parquet footers, a small part of an import's time (not for remote
    sources, whose bytes it would fetch twice).
    """
    schema = frame.clear().collect().to_arrow().schema

    def batches() -> Iterator[pa.RecordBatch]:
        total = frame.select(pl.len()).collect().item() if count_first else None
        rows = 0
        progress("reading rows", rows, total)
        for chunk in frame.collect_batches(lazy=True):
            rows += chunk.height
            progress("reading rows", rows, total)
            table = chunk.to_arrow()
            yield from (table if table.schema == schema else table.cast(schema)).to_batches()
        progress.status(f"{rows:,} rows read; writing data files and committing")

    return pa.RecordBatchReader.from_batches(schema, batches())
