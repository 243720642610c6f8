"""LazyFrame and RecordBatchReader outputs go through the IO manager streamed, chunk by chunk, as `Lakehouse.write`
streams them: a LazyFrame model reads its input as a scan and writes its output without collecting either."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlparse

import dagster as dg
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_dagster_support import failure_text, fresh_lakehouse_cache, materialization, materialize  # noqa: F401

from dagster_lakehouse.lakehouse import Lakehouse, write_data

DEV = {"lakehouse/branch": "dev"}
DAILY = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-10")
ROWS = 6000


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(write_data.CHUNK_ENV, "0.02")
    monkeypatch.setattr(write_data, "BATCH_ROWS", 500)


def readings() -> pl.DataFrame:
    return pl.DataFrame(
        {"id": list(range(ROWS)), "value": [float(i % 97) for i in range(ROWS)], "sensor": [f"s{i % 7}" for i in range(ROWS)]}
    )


@dg.asset(key_prefix="iot")
def raw() -> pa.RecordBatchReader:
    arrow = readings().to_arrow()
    return pa.RecordBatchReader.from_batches(arrow.schema, arrow.to_batches(max_chunksize=400))


@dg.asset(key_prefix="iot")
def scaled(raw: pl.LazyFrame) -> pl.LazyFrame:
    return raw.filter(pl.col("value") > 10).with_columns(scaled=pl.col("value") * 2)


def test_a_lazy_model_reads_a_scan_and_writes_its_output_streamed(local_backend: Any) -> None:
    backend, lakehouse = local_backend, Lakehouse(local_backend.catalog_uri, local_backend.warehouse)
    result = materialize([raw, scaled], backend, tags=DEV)
    assert result.success
    expected = readings().filter(pl.col("value") > 10).with_columns(scaled=pl.col("value") * 2)
    assert lakehouse.read("iot.raw", ref="dev").sort("id").equals(readings())
    assert lakehouse.read("iot.scaled", ref="dev").sort("id").equals(expected)
    table = lakehouse.table("iot.scaled", "dev")
    assert len(table.snapshots()) == 1
    for task in table.scan().plan_files():  # written by Polars' sink: Iceberg field ids in the files
        fields = pq.read_schema(urlparse(task.file.file_path).path)
        assert [f.metadata[b"PARQUET:field_id"] for f in fields] == [b"1", b"2", b"3", b"4"]
    metadata = materialization(result, "iot__scaled").metadata
    assert metadata["dagster/row_count"].value == expected.height
    assert metadata["lakehouse/snapshot_id"].value == table.current_snapshot().snapshot_id


def test_streamed_rows_outside_the_partition_are_refused(local_backend: Any) -> None:
    @dg.asset(partitions_def=DAILY, metadata={"lakehouse/partition_column": "ts"})
    def sloppy() -> pl.LazyFrame:
        start = datetime(2024, 1, 1)  # every 20 s for 33 h 20 min: the last 1680 rows are of the next day
        return pl.LazyFrame({"ts": [start + timedelta(seconds=20 * i) for i in range(ROWS)]})

    text = failure_text(materialize([sloppy], local_backend, tags=DEV, partition_key="2024-01-01"))
    assert "LakehouseIOError" in text and "asset 'sloppy'" in text and "branch 'dev'" in text
    assert "1680 of 6000 rows lie outside partition 2024-01-01" in text  # Polars wrote them all; checked before commit
    assert not Lakehouse(local_backend.catalog_uri, local_backend.warehouse).exists("public.sloppy", "dev")
