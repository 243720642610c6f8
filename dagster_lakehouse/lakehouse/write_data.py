"""What a write writes: an Arrow schema known before any row is read, and rows that arrive in chunks.

A Polars DataFrame or a PyArrow table is one chunk, already in memory. A `pl.LazyFrame` runs on Polars' streaming
engine and a `pa.RecordBatchReader` is read batch by batch: their rows are gathered into chunks of about
`chunk_bytes` (`LAKEHOUSE_WRITE_CHUNK_MB`, default 128) and each chunk is written as Parquet before the next is read,
so a write holds a chunk or two in memory whatever the size of its data. Every chunk is normalised and checked as
`data.to_arrow` does for a whole table, and must keep the write's `RowRule`s; a chunk that breaks one raises before
its rows are written, and files of earlier chunks are left to `gc` (nothing was committed). A LazyFrame bound for a
table Polars' own sink can write (`polars_sink`) is not read here at all: Polars writes it, and the rules are
checked on the files it wrote, before the commit.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import polars as pl
import pyarrow as pa

from dagster_lakehouse.lakehouse.data import normalise, to_arrow
from dagster_lakehouse.lakehouse.errors import InvalidData, SchemaMismatch
from dagster_lakehouse.lakehouse.row_checks import RowRule

__all__ = ["CHUNK_ENV", "InMemoryData", "StreamedData", "WriteData", "chunk_bytes", "write_data"]

CHUNK_ENV = "LAKEHOUSE_WRITE_CHUNK_MB"
DEFAULT_CHUNK_MB = 128
BATCH_ROWS = 65_536
"""Rows Polars hands over at a time while streaming a LazyFrame (gathered into chunks of `chunk_bytes`)."""

def chunk_bytes() -> int:
    """How many bytes of Arrow data a streamed write gathers before writing them (`LAKEHOUSE_WRITE_CHUNK_MB`)."""
    raw = os.environ.get(CHUNK_ENV, "").strip()
    try:
        megabytes = float(raw) if raw else DEFAULT_CHUNK_MB
    except ValueError:
        raise InvalidData(f"{CHUNK_ENV} must be a number of megabytes, not {raw!r}") from None
    if megabytes <= 0:
        raise InvalidData(f"{CHUNK_ENV} must be above 0, not {raw!r}")
    return int(megabytes * 1_000_000)


class WriteData:
    """The data of one write: `schema` (Iceberg-friendly Arrow types) up front, rows from `chunks()`.

    `rows` counts the rows read so far (all of them once a write has committed). Every row must keep the `rules`
    (`add_rule`).
    """

    schema: pa.Schema
    streamed: bool = False
    replayable: bool = True
    """Whether `chunks()` may run again (a write retried on a table whose schema changed writes its files again)."""

    def __init__(self, context: str):
        self.context = context
        self.rows = 0
        self.rules: list[RowRule] = []

    def add_rule(self, rule: RowRule) -> None:
        """Refuse the write if a row breaks `rule` (checked at once on data already in memory)."""
        self.rules.append(rule)

    def chunks(self) -> Iterator[pa.Table]:
        raise NotImplementedError


class InMemoryData(WriteData):
    """A DataFrame, a PyArrow table or a pandas frame: one chunk, normalised and checked when it is made."""

    def __init__(self, data: Any, context: str):
        super().__init__(context)
        self.table = to_arrow(data, context=context)
        self.schema = self.table.schema
        self.rows = self.table.num_rows

    def add_rule(self, rule: RowRule) -> None:
        rule.check(self.table)

    def chunks(self) -> Iterator[pa.Table]:
        yield self.table


class StreamedData(WriteData):
    """A LazyFrame or a RecordBatchReader, read in chunks of about `chunk_bytes()` while the write goes on."""

    streamed = True

    def __init__(self, data: pl.LazyFrame | pa.RecordBatchReader, context: str):
        super().__init__(context)
        self.source = data
        self.replayable = isinstance(data, pl.LazyFrame)
        self.limit = chunk_bytes()
        self._read = False
        try:
            arrow_schema = data.schema if isinstance(data, pa.RecordBatchReader) else _arrow_schema(data)
        except (pl.exceptions.PolarsError, pa.ArrowException) as exc:
            raise InvalidData(f"{context}cannot read the data to write: {type(exc).__name__}: {exc}") from exc
        self.schema = to_arrow(arrow_schema.empty_table(), context=context).schema  # the checks of a whole table

    def chunks(self) -> Iterator[pa.Table]:
        """The rows in chunks of about `limit` bytes, normalised and checked against the rules."""
        if self._read and not self.replayable:
            raise InvalidData(f"{self.context}a RecordBatchReader can be read once only; write it again")
        self._read, self.rows = True, 0
        batches = _lazy_batches(self.source) if isinstance(self.source, pl.LazyFrame) else self.source
        try:
            for chunk in _gather(batches, self.limit):
                table = normalise(chunk, self.context)
                if table.schema != self.schema:
                    table = table.cast(self.schema)
                self.rows += table.num_rows
                for rule in self.rules:
                    rule.check(table, self.rows)
                yield table
        except (pl.exceptions.PolarsError, pa.ArrowException) as exc:
            raise InvalidData(f"{self.context}cannot read the data to write: {type(exc).__name__}: {exc}") from exc


    def wrap(self, run: Any) -> Any:
        """`run()`, with Polars' and Arrow's errors about the data as `InvalidData` naming the write, and a value
        that the table's type cannot hold (`conversion from u64 to i64 failed in column 'u'`) as `SchemaMismatch`."""
        try:
            return run()
        except pl.exceptions.InvalidOperationError as exc:
            first = str(exc).split("\n", 1)[0]
            if "conversion from" not in first:
                raise InvalidData(f"{self.context}cannot read the data to write: {type(exc).__name__}: {exc}") from exc
            raise SchemaMismatch(
                f"{self.context}{first}: Iceberg cannot store those values in the column's type; cast, round or "
                "filter the column first"
            ) from exc
        except (pl.exceptions.PolarsError, pa.ArrowException) as exc:
            raise InvalidData(f"{self.context}cannot read the data to write: {type(exc).__name__}: {exc}") from exc


def write_data(data: Any, *, context: str = "") -> WriteData:
    """`data` as a `WriteData`: streamed for a LazyFrame or a RecordBatchReader, in memory otherwise."""
    if isinstance(data, WriteData):
        return data
    if isinstance(data, pl.LazyFrame | pa.RecordBatchReader):
        return StreamedData(data, context)
    return InMemoryData(data, context)


def _arrow_schema(lazy: pl.LazyFrame) -> pa.Schema:
    """The Arrow schema Polars gives the frame's rows (as `to_arrow` types them), without running the query."""
    return pl.DataFrame(schema=lazy.collect_schema()).to_arrow().schema


def _lazy_batches(lazy: pl.LazyFrame) -> Iterator[pa.RecordBatch | pa.Table]:
    """The frame's rows from Polars' streaming engine, a few tens of thousands at a time."""
    for frame in lazy.collect_batches(chunk_size=BATCH_ROWS, engine="streaming", lazy=True):
        yield frame.to_arrow()


def _gather(batches: Any, limit: int) -> Iterator[pa.Table]:
    """Tables of consecutive non-empty batches, each about `limit` bytes (the last one smaller); none for no rows."""
    pending: list[pa.Table] = []
    size = 0
    for batch in batches:
        table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
        if not table.num_rows:
            continue
        pending.append(table)
        size += table.nbytes
        if size >= limit:
            yield pa.concat_tables(pending)
            pending, size = [], 0
    if pending:
        yield pa.concat_tables(pending)
