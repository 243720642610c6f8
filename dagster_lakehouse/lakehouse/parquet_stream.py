"""Streamed Parquet writing: chunks of a table's rows go into data files that stay open while rows keep coming.

PyIceberg writes a whole Arrow table at once (`_dataframe_to_data_files`); for data that arrives in chunks that
would make a set of small files per chunk, or hold the data of a whole file in memory. `ParquetStream` keeps one open
Parquet file per partition, appends each chunk's rows to it as row groups, and closes it as a data file (with
PyIceberg's column statistics, so pruning works as for any file it writes) once it holds `write.target-file-size-bytes`
of Arrow data (512 MB by default, measured as PyIceberg measures it). Memory is a chunk and the open files' buffers.
File names, locations, field ids and statistics are PyIceberg's own (`write_file`).
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from pyiceberg.io import FileIO, OutputFile
from pyiceberg.io.fileformat import FileFormatFactory, FileFormatWriter
from pyiceberg.io.pyarrow import _determine_partitions, _to_requested_schema, pyarrow_to_schema
from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
from pyiceberg.partitioning import PartitionKey
from pyiceberg.schema import Schema, sanitize_column_names
from pyiceberg.table import DOWNCAST_NS_TIMESTAMP_TO_US_ON_WRITE, TableProperties
from pyiceberg.table.locations import load_location_provider
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.typedef import Record
from pyiceberg.utils.config import Config
from pyiceberg.utils.properties import property_as_int

from dagster_lakehouse.lakehouse.polars_sink import delete_files

__all__ = ["ParquetStream"]


@dataclass
class _OpenFile:
    path: str
    output: OutputFile
    writer: FileFormatWriter
    partition: PartitionKey | None
    size: int = 0
    """Arrow bytes written so far (the measure `write.target-file-size-bytes` is compared with)."""


class ParquetStream:
    """Write chunks of rows (Arrow tables of one schema) as data files of the table `metadata` describes."""

    def __init__(self, io: FileIO, metadata: TableMetadata, write_uuid: uuid.UUID, counter: itertools.count[int]):
        self.io = io
        self.metadata = metadata
        self.write_uuid = write_uuid
        self.counter = counter
        self.format = FileFormat(metadata.properties.get(TableProperties.WRITE_FILE_FORMAT, TableProperties.WRITE_FILE_FORMAT_DEFAULT))
        self.model = FileFormatFactory.get(self.format)
        self.locations = load_location_provider(table_location=metadata.location, table_properties=metadata.properties)
        self.target = property_as_int(
            metadata.properties,
            TableProperties.WRITE_TARGET_FILE_SIZE_BYTES,
            TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT,
        )
        table_schema = metadata.schema()
        sanitized = sanitize_column_names(table_schema)
        self.file_schema = sanitized if sanitized != table_schema else table_schema
        self.downcast = Config().get_bool(DOWNCAST_NS_TIMESTAMP_TO_US_ON_WRITE) or False
        self._task_schema: Schema | None = None
        self._open: dict[Any, _OpenFile] = {}
        self.files: list[DataFile] = []

    def write(self, chunk: pa.Table) -> None:
        """Append `chunk`'s rows to the open file of each partition they belong to."""
        if not chunk.num_rows:
            return
        if self._task_schema is None:
            self._task_schema = pyarrow_to_schema(
                chunk.schema,
                name_mapping=self.metadata.schema().name_mapping,
                downcast_ns_timestamp_to_us=self.downcast,
                format_version=self.metadata.format_version,
            )
        if self.metadata.spec().is_unpartitioned():
            self._append(None, None, chunk)
            return
        for part in _determine_partitions(spec=self.metadata.spec(), schema=self.metadata.schema(), arrow_table=chunk):
            self._append(part.partition_key.partition, part.partition_key, part.arrow_table_partition)

    def close(self) -> list[DataFile]:
        """Close every open file; the data files written, in order."""
        for key in list(self._open):
            self._finish(key)
        return self.files

    def abort(self) -> None:
        """Close the open files and delete every file this stream wrote: the write will not commit them."""
        for handle in self._open.values():
            try:
                handle.writer.close()
            except Exception:  # noqa: BLE001 - the write failed already; this is only tidying up
                pass
        delete_files(self.io, [h.path for h in self._open.values()] + [f.file_path for f in self.files])
        self._open.clear()
        self.files.clear()

    def _append(self, key: Any, partition: PartitionKey | None, rows: pa.Table) -> None:
        handle = self._open.get(key)
        if handle is None:
            name = f"00000-{next(self.counter)}-{self.write_uuid}.{self.model.file_extension()}"
            path = self.locations.new_data_location(data_file_name=name, partition_key=partition)
            output = self.io.new_output(path)
            writer = self.model.create_writer(output, self.file_schema, self.metadata.properties)
            handle = self._open[key] = _OpenFile(path, output, writer, partition)
        assert self._task_schema is not None
        batches = [
            _to_requested_schema(
                requested_schema=self.file_schema,
                file_schema=self._task_schema,
                batch=batch,
                downcast_ns_timestamp_to_us=self.downcast,
                include_field_ids=True,
                format_model=self.model,
            )
            for batch in rows.to_batches()
        ]
        handle.writer.write(pa.Table.from_batches(batches))
        handle.size += rows.nbytes
        if handle.size >= self.target:
            self._finish(key)

    def _finish(self, key: Any) -> None:
        handle = self._open.pop(key)
        with handle.writer:
            pass
        statistics = handle.writer.result()
        self.files.append(
            DataFile.from_args(
                content=DataFileContent.DATA,
                file_path=handle.path,
                file_format=self.format,
                partition=handle.partition.partition if handle.partition else Record(),
                file_size_in_bytes=len(handle.output),
                sort_order_id=None,
                spec_id=self.metadata.default_spec_id,
                equality_ids=None,
                key_metadata=None,
                **statistics.to_serialized_dict(),
            )
        )
