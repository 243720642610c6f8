"""Streamed writes: a `pl.LazyFrame` (Polars' streaming engine) or a `pa.RecordBatchReader` is written a chunk at a
time (`write_data`), in one commit, and equals the same data written as one DataFrame: rows, schema, column
statistics, file pruning. A LazyFrame too large to collect under a process memory limit still writes and reads back.
"""

from __future__ import annotations

import datetime as dt
import decimal
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import urlparse

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.table import TableProperties

from dagster_lakehouse.lakehouse import InvalidData, Lakehouse, RowsOutsideFilter, write_data

DAYS = [f"2024-01-{d:02d}" for d in range(1, 9)]


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of about 20 kB from batches of 500 rows, files of about 1 MB, so the test data spans many of each."""
    monkeypatch.setenv(write_data.CHUNK_ENV, "0.02")
    monkeypatch.setattr(write_data, "BATCH_ROWS", 500)
    monkeypatch.setattr(TableProperties, "WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT", 1_000_000)  # files roll at ~1 MB


def trips(n: int = 8000) -> pl.DataFrame:
    """Trips spread over `DAYS`, each day a contiguous run of rows (so each chunk holds one or two days)."""
    return pl.DataFrame(
        {
            "day": [DAYS[i * len(DAYS) // n] for i in range(n)],
            "trip_id": list(range(n)),
            "miles": [float(i % 37) / 3 for i in range(n)],
            "zone": [f"zone-{i % 11}" for i in range(n)],
        }
    )


def reader(frame: pl.DataFrame, rows: int = 700) -> pa.RecordBatchReader:
    arrow = frame.to_arrow()
    return pa.RecordBatchReader.from_batches(arrow.schema, arrow.to_batches(max_chunksize=rows))


def streams(frame: pl.DataFrame) -> dict[str, object]:
    return {"lazy": frame.lazy(), "reader": reader(frame)}


def data_files(lh: Lakehouse, table: str, ref: str, row_filter: str | None = None) -> list:
    scan = lh.table(table, ref).scan(row_filter=row_filter) if row_filter else lh.table(table, ref).scan()
    return [task.file for task in scan.plan_files()]


@pytest.mark.parametrize("kind", ["lazy", "reader"])
def test_a_streamed_write_equals_its_collected_form(lakehouse: Lakehouse, kind: str) -> None:
    lh = lakehouse
    lh.create_branch("dev")
    frame = trips(400_000)  # ~13 MB: several files, whether Polars' sink (lazy) or ParquetStream (reader) writes them
    collected = lh.write("s.collected", frame, branch="dev")
    streamed = lh.write("s.streamed", streams(frame)[kind], branch="dev")

    assert streamed.rows == collected.rows == frame.height
    assert lh.table("s.streamed", "dev").schema().as_struct() == lh.table("s.collected", "dev").schema().as_struct()
    back = lh.read("s.streamed", ref="dev")
    assert back.sort("trip_id").equals(lh.read("s.collected", ref="dev").sort("trip_id"))
    assert back.sort("trip_id").equals(frame)
    assert len(lh.table("s.streamed", "dev").snapshots()) == 1  # one commit, however many chunks

    files = data_files(lh, "s.streamed", "dev")
    assert len(files) > 3  # rolled at the target size while the rows streamed in
    assert sum(f.record_count for f in files) == frame.height
    trip_id = lh.table("s.streamed", "dev").schema().find_field("trip_id").field_id
    assert all(trip_id in f.lower_bounds and trip_id in f.upper_bounds and f.null_value_counts for f in files)
    pruned = data_files(lh, "s.streamed", "dev", "trip_id < 600")  # statistics prune the files a filter skips
    assert 0 < len(pruned) < len(files) / 3
    assert lh.read("s.streamed", ref="dev", filter="trip_id < 600").height == 600
    for data_file in files:  # Iceberg field ids in every file, the sizes the manifests say
        local = urlparse(data_file.file_path)
        if local.scheme == "file":
            assert Path(local.path).stat().st_size == data_file.file_size_in_bytes
            fields = pq.read_schema(local.path)
            assert all(f.metadata and b"PARQUET:field_id" in f.metadata for f in fields)


@pytest.mark.parametrize("kind", ["lazy", "reader"])
def test_every_write_mode_streams(lakehouse: Lakehouse, kind: str) -> None:
    lh = lakehouse
    lh.create_branch("dev")
    frame = trips()
    lh.write("s.t", streams(frame)[kind], branch="dev")
    more = frame.with_columns(trip_id=pl.col("trip_id") + 100_000)
    appended = lh.write("s.t", streams(more)[kind], branch="dev", mode="append")
    assert appended.rows == frame.height and lh.read("s.t", ref="dev").height == 2 * frame.height

    day = frame.filter(pl.col("day") == DAYS[2]).with_columns(miles=pl.lit(-1.0), extra=pl.lit("x"))
    overwritten = lh.write("s.t", streams(day)[kind], branch="dev", where=f"day = '{DAYS[2]}'")
    assert overwritten.rows == day.height
    after = lh.read("s.t", ref="dev")
    assert after.filter(pl.col("day") == DAYS[2]).sort("trip_id")["miles"].to_list() == [-1.0] * day.height
    assert after.filter(pl.col("day") != DAYS[2]).height == 2 * (frame.height - day.height)
    assert after["extra"].null_count() == after.height - day.height  # the new column evolved the schema

    replaced = lh.write("s.t", streams(frame.head(1000))[kind], branch="dev")
    assert replaced.rows == 1000 and lh.read("s.t", ref="dev").sort("trip_id").equals(frame.head(1000))


@pytest.mark.parametrize("kind", ["lazy", "reader"])
def test_a_streamed_write_to_a_partitioned_table(lakehouse: Lakehouse, kind: str) -> None:
    lh = lakehouse
    lh.create_branch("dev")
    frame = trips()
    lh.write("s.p", streams(frame)[kind], branch="dev", partition_by=["day"])
    files = data_files(lh, "s.p", "dev")
    assert {f.partition[0] for f in files} == set(DAYS)
    assert len(data_files(lh, "s.p", "dev", f"day = '{DAYS[3]}'")) < len(files) / 4
    assert lh.read("s.p", ref="dev").sort("trip_id").equals(frame)


def test_a_lazy_model_streams_from_a_scan_into_a_write(lakehouse: Lakehouse) -> None:
    """The road of a LazyFrame model: scan (pushdown) -> filter / with_columns -> streamed write."""
    lh = lakehouse
    lh.create_branch("dev")
    lh.write("s.trips", trips(), branch="dev")
    model = (
        lh.scan("s.trips", ref="dev", columns=["day", "trip_id", "miles"], filter=f"day >= '{DAYS[4]}'")
        .filter(pl.col("miles") > 1)
        .with_columns(km=pl.col("miles") * 1.609)
    )
    result = lh.write("s.long_trips", model, branch="dev")
    expected = trips().filter((pl.col("day") >= DAYS[4]) & (pl.col("miles") > 1)).select("day", "trip_id", "miles")
    expected = expected.with_columns(km=pl.col("miles") * 1.609)
    assert result.rows == expected.height
    assert lh.read("s.long_trips", ref="dev").sort("trip_id").equals(expected)


@pytest.mark.parametrize("kind", ["lazy", "reader"])
def test_streamed_rows_outside_where_are_refused_and_nothing_changes(lakehouse: Lakehouse, kind: str) -> None:
    lh = lakehouse
    lh.create_branch("dev")
    frame = trips()
    lh.write("s.t", frame, branch="dev")
    before = lh.table("s.t", "dev").metadata_location
    # the first chunks hold only DAYS[0]; a later one has rows of DAYS[1], outside the filter
    with pytest.raises(RowsOutsideFilter, match=r"outside where \"day = '2024-01-01'\"") as caught:
        lh.write("s.t", streams(frame.head(2500))[kind], branch="dev", where=f"day = '{DAYS[0]}'")
    assert "'s.t'" in str(caught.value) and "'dev'" in str(caught.value)
    assert lh.table("s.t", "dev").metadata_location == before
    assert lh.read("s.t", ref="dev").sort("trip_id").equals(frame)


def test_a_failing_lazy_query_is_invalid_data_and_changes_nothing(lakehouse: Lakehouse) -> None:
    lh = lakehouse
    lh.create_branch("dev")
    lh.write("s.t", trips(), branch="dev")
    before = lh.table("s.t", "dev").metadata_location
    broken = trips().lazy().with_columns(bad=pl.col("zone").str.to_integer())  # "zone-0" is no integer
    with pytest.raises(InvalidData, match="table 's.t' on branch 'dev': cannot read the data to write"):
        lh.write("s.t", broken, branch="dev")
    assert lh.table("s.t", "dev").metadata_location == before


def test_a_reader_is_read_once_and_its_schema_checked_before_reading(lakehouse: Lakehouse) -> None:
    lh = lakehouse
    lh.create_branch("dev")
    empty = pa.RecordBatchReader.from_batches(pa.schema([pa.field("", pa.int64())]), [])
    with pytest.raises(InvalidData, match="empty name"):
        lh.write("s.bad", empty, branch="dev")
    assert "s.bad" not in lh.tables("dev")
    data = write_data.write_data(reader(trips()))
    list(data.chunks())
    with pytest.raises(InvalidData, match="read once"):
        list(data.chunks())


def test_an_empty_stream_writes_an_empty_table(lakehouse: Lakehouse) -> None:
    lh = lakehouse
    lh.create_branch("dev")
    result = lh.write("s.empty", trips().lazy().filter(pl.col("trip_id") < 0), branch="dev")
    assert result.rows == 0
    back = lh.read("s.empty", ref="dev")
    assert back.height == 0 and back.columns == ["day", "trip_id", "miles", "zone"]


LIMITED = textwrap.dedent(
    """
    import resource, sys
    import polars as pl
    from dagster_lakehouse.lakehouse import Lakehouse

    root, action, extra_mb, copies = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    lh = Lakehouse.local(root)
    lh.read("t.base", ref="dev", columns=["x"]).head(1)  # every library loaded, thread pools started
    size = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) * 1024
    limit = size + extra_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    big = pl.concat([lh.scan("t.base", ref="dev").with_columns(copy=pl.lit(i)) for i in range(copies)])
    if action == "collect":
        print("COLLECTED", big.collect().height)
    else:
        written = lh.write("t.big", big, branch="dev")
        files = [task.file for task in lh.table("t.big", "dev").scan().plan_files()]
        last = lh.read("t.big", ref="dev", columns=["x", "copy"], filter=f"copy = {copies - 1}")  # pruned to its files
        print("WROTE", written.rows, sum(f.record_count for f in files), last.height, last["x"].sum(), *last["copy"].unique())
    """
)


@pytest.mark.slow
def test_a_lazyframe_too_large_to_collect_under_a_memory_limit_still_writes_and_reads_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.undo()  # the table's default file size and chunks, not the small ones of the other tests
    rows, copies, extra_mb = 2_000_000, 70, 1500  # ~38 MB a copy: ~2.7 GB in memory, under a limit of +1500 MiB
    with Lakehouse.local(tmp_path / "lh") as lh:
        lh.create_branch("dev")
        base = pl.select(
            x=pl.int_range(0, rows), y=pl.int_range(0, rows).hash(1).cast(pl.Float64), s=(pl.int_range(0, rows) % 1000).cast(pl.String)
        )
        lh.write("t.base", base, branch="dev")
        expected_sum = base["x"].sum()

    def run(action: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-c", LIMITED, str(tmp_path / "lh"), action, str(extra_mb), str(copies)]
        env = {**os.environ, "MALLOC_ARENA_MAX": "2"}  # glibc reserves 64 MiB of address space per thread arena
        return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)

    collected = run("collect")
    assert collected.returncode != 0 and "COLLECTED" not in collected.stdout, collected.stdout  # too large to collect
    streamed = run("stream")
    assert streamed.returncode == 0, streamed.stderr[-3000:]
    line = next(line for line in streamed.stdout.splitlines() if line.startswith("WROTE"))
    assert line.split()[1:] == [str(rows * copies), str(rows * copies), str(rows), str(expected_sum), str(copies - 1)]


def test_every_column_type_streams_as_it_writes_from_memory(lakehouse: Lakehouse) -> None:
    """Polars' sink writes each column as the table stores it (int8 as int32, ns as us, ...): the streamed table reads
    back as the one written from memory; a type Polars cannot write that way (time) goes through ParquetStream."""
    lh = lakehouse
    lh.create_branch("dev")
    frame = pl.DataFrame(
        {
            "i8": pl.Series([1, -2, None], dtype=pl.Int8),
            "u32": pl.Series([1, 2**32 - 1, None], dtype=pl.UInt32),
            "f32": pl.Series([1.5, None, -0.25], dtype=pl.Float32),
            "flag": [True, None, False],
            "text": ["a", None, "ü"],
            "category": pl.Series(["x", "y", None], dtype=pl.Categorical),
            "raw": [b"a", None, b"\x00"],
            "day": [dt.date(2024, 1, 1), None, dt.date(1970, 1, 1)],
            "at_ns": pl.Series([dt.datetime(2024, 1, 1, 1, 2, 3, 4), None, dt.datetime(1999, 12, 31)]).cast(pl.Datetime("ns")),
            "at_utc": pl.Series([dt.datetime(2024, 1, 1), None, dt.datetime(2000, 1, 1)]).cast(pl.Datetime("us", "UTC")),
            "clock": [dt.time(1, 2, 3), None, dt.time(23, 59, 59)],
            "money": pl.Series([decimal.Decimal("1.23"), None, decimal.Decimal("-4.00")], dtype=pl.Decimal(10, 2)),
        }
    )
    lh.write("s.memory", frame, branch="dev")
    lh.write("s.streamed", frame.lazy().drop("clock"), branch="dev")
    lh.write("s.clock", frame.lazy().select("clock"), branch="dev")
    memory = lh.read("s.memory", ref="dev")
    assert lh.read("s.streamed", ref="dev").equals(memory.drop("clock"))
    assert lh.read("s.clock", ref="dev").equals(memory.select("clock"))
    types = {f.name: f.field_type for f in lh.table("s.memory", "dev").schema().fields if f.name != "clock"}
    assert {f.name: f.field_type for f in lh.table("s.streamed", "dev").schema().fields} == types
