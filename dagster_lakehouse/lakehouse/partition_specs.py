"""The partition spec a write leaves an existing table with, applied with PyIceberg's `update_spec` in the write's own
transaction: a full replace swaps the spec with the schema, and `partition_by` evolves it for any write.

A full replace (no `where=`) keeps each partition field whose column the data still has (re-pointed at the column when
the replace retyped it, if its transform still applies) and drops the others, so data lacking or renaming a partition
column leaves the table partitioned by what remains (unpartitioned when nothing does); `partition_by` given to any
write makes the spec exactly identity on those columns, in that order. Files already written keep the spec they were
written with (Iceberg reads each file with its own spec); the new spec is in the table's metadata, so merges compare it
(`merge_rules`: one side partitioning the table differently while the other has pending work is a conflict).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import pyarrow as pa
from pyiceberg.exceptions import ValidationError
from pyiceberg.io.pyarrow import _pyarrow_to_schema_without_ids
from pyiceberg.partitioning import PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Transaction
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.update.schema import UpdateSchema
from pyiceberg.transforms import IdentityTransform, Transform

from dagster_lakehouse.lakehouse.errors import InvalidWrite

__all__ = ["SpecChange", "describe_spec", "spec_change", "update_schema"]


@dataclass(frozen=True)
class SpecChange:
    """The spec a write gives the table: `fields` as (source column, transform), in order."""

    fields: tuple[tuple[str, Transform], ...]
    context: str
    current: str

    def clear(self, tx: Transaction) -> None:
        """Remove every partition field, before the schema changes (a field may name a column the write drops)."""
        with self._refused(), tx.update_spec() as update:
            for field in tx.table_metadata.spec().fields:
                update.remove_field(field.name)

    def apply(self, tx: Transaction) -> None:
        """Add the wanted fields, after the schema changes (they bind to the new schema's columns)."""
        if self.fields:
            with self._refused(), tx.update_spec() as update:
                for column, transform in self.fields:
                    update.add_field(column, transform)

    @contextmanager
    def _refused(self) -> Iterator[None]:
        """PyIceberg's refusal of the change as `InvalidWrite` naming the table, both specs and the fix."""
        try:
            yield
        except (ValueError, ValidationError) as exc:
            asked = ", ".join(f"{transform}({column})" for column, transform in self.fields) or "unpartitioned"
            raise InvalidWrite(
                f"{self.context}cannot partition the table by {asked} (it is partitioned by {self.current}): {exc}; "
                "give partition_by top-level columns of primitive type, or replace the table with partition_by=...; "
                "nothing was written"
            ) from exc


def update_schema(tx: Transaction) -> UpdateSchema:
    """PyIceberg's schema update of `tx`, checking partition field names against the current spec only.

    PyIceberg refuses a column named like a field of any past spec sourced from another column, so a table once
    partitioned by `day` could never again have a `day` column after a replace dropped or retyped it. Past specs only
    describe files such a replace removed (a column is dropped only by a full replace, which deletes every file
    first), and Iceberg readers bind each file to its own spec by field id, so only the current spec is checked.
    """
    return _CurrentSpecSchema(tx)


class _CurrentSpecSchema(UpdateSchema):
    def _apply(self):  # noqa: ANN202
        real = self._transaction
        metadata = real.table_metadata
        self._transaction = _Shown(metadata.model_copy(update={"partition_specs": [metadata.spec()]}))
        try:
            return super()._apply()
        finally:
            self._transaction = real


@dataclass(frozen=True)
class _Shown:
    """What `UpdateSchema._apply` reads of its transaction: the table metadata."""

    table_metadata: TableMetadata


def describe_spec(spec: PartitionSpec, schema: Schema) -> str:
    """A spec in words: `identity(day), bucket[4](id)`, or `unpartitioned`."""
    parts = []
    for field in spec.fields:
        try:
            column = schema.find_column_name(field.source_id) or f"field {field.source_id}"
        except ValueError:
            column = f"field {field.source_id}"
        parts.append(f"{field.transform}({column})")
    return ", ".join(parts) or "unpartitioned"


def spec_change(
    schema: Schema,
    spec: PartitionSpec,
    data: pa.Schema,
    *,
    partition_by: Sequence[str] | None,
    replace_all: bool,
    retyped: Sequence[str],
    context: str,
) -> SpecChange | None:
    """The spec change a write of `data` makes to a table of `schema` and `spec`, or None when it keeps the spec.

    `retyped` are the columns the write drops and adds again (a replace changing their type): a field on one of
    them must be re-pointed at the new column even when the spec stays the same in words.
    """
    current = tuple((schema.find_column_name(f.source_id), f.transform) for f in spec.fields)
    if partition_by is not None:
        wanted = tuple((column, IdentityTransform()) for column in partition_by)
    elif replace_all:
        incoming = _pyarrow_to_schema_without_ids(data)
        names = set(data.names)
        wanted = tuple(
            (column, transform)
            for column, transform in current
            if column in names and transform.can_transform(incoming.find_field(column).field_type)
        )
    else:
        return None
    if _same(wanted, current) and not any(column in retyped for column, _ in current):
        return None
    return SpecChange(fields=wanted, context=context, current=describe_spec(spec, schema))


def _same(a: tuple[tuple[str, Transform], ...], b: tuple[tuple[str | None, Transform], ...]) -> bool:
    return [(c, repr(t)) for c, t in a] == [(c, repr(t)) for c, t in b]
