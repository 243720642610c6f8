"""Which rows of its parent's table an input reads in a partitioned run: the run's partitions, for an asset check of
a partitioned asset too (an unpartitioned check audits the run's partition), unless the input asks for the table.

Input metadata `lakehouse/scope` (`AssetIn`/`dg.In` metadata, or for an asset check its own `metadata=`) is
`partition` (the default) or `table` (the whole table on the run's branch, e.g. a check of uniqueness across
partitions).
"""

from __future__ import annotations

import typing
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
from dagster._core.execution.context.system import StepExecutionContext
from pyiceberg.table import Table

from dagster_lakehouse.dagster.branch import step_context_of
from dagster_lakehouse.dagster.errors import LakehouseIOError
from dagster_lakehouse.dagster.scope import Scope, build_scope, data_dimensions, iceberg_kind, partition_columns
from dagster_lakehouse.dagster.tables import PARTITION_COLUMN_KEY, PARTITION_EXPR_KEY, metadata_value
from dagster_lakehouse.lakehouse.errors import ColumnNotFound

__all__ = ["SCOPE_KEY", "SCOPES", "input_scope"]

SCOPE_KEY = "lakehouse/scope"
SCOPES = ("partition", "table")


def input_scope(
    context: dg.InputContext, loaded: Table, upstream_metadata: Mapping[str, Any], where: str
) -> Scope | None:
    """Rows this input reads: in a partitioned run, the parent's partitions the run reads (for an unpartitioned
    asset check of a partitioned asset: the run's partitions), or, for an unpartitioned raw table whose input
    metadata names a `lakehouse/partition_column`, the rows of the run's own partitions. None (the whole table)
    otherwise, or when the input's `lakehouse/scope` is `table`. `loaded` is the parent's table, for column types."""
    step = step_context_of(context)
    if step is None or not step.has_partitions:  # outside a run, or an unpartitioned run
        return None
    if _asked_scope(context, step, where) == "table":
        return None
    found = _partitions_read(context, step, upstream_metadata, where)
    if found is None:
        return None
    partitions_def, keys, columns_metadata = found
    if not data_dimensions(partitions_def):
        return None
    columns = partition_columns(columns_metadata, partitions_def, where)
    known = {field.name: field.field_type for field in loaded.schema().fields}
    return build_scope(
        partitions_def,
        keys,
        columns,
        lambda c: iceberg_kind(known[c]) if c in known else _missing_column(c, known, where),
        where,
    )


def _partitions_read(
    context: dg.InputContext, step: StepExecutionContext, upstream_metadata: Mapping[str, Any], where: str
) -> tuple[dg.PartitionsDefinition, Sequence[str], Mapping[str, Any] | None] | None:
    """The partitions definition, keys and partition-column metadata of what the input reads; None: everything."""
    if context.has_asset_partitions and _is_check_step(step) and not data_dimensions(step.entity_partitions_def):
        partitions_def = context.asset_partitions_def
        if not data_dimensions(partitions_def):
            return None
        try:  # an unpartitioned check in a partitioned run: Dagster gives it all the asset's partitions
            with dg.partition_loading_context(dynamic_partitions_store=step.instance):
                keys = partitions_def.get_partition_keys_in_range(step.partition_key_range)
        except Exception as exc:  # noqa: BLE001 (Dagster raises several kinds for keys of another definition)
            raise LakehouseIOError(
                f"{where}: the run's partitions {step.partition_key_range.start}...{step.partition_key_range.end} "
                f"are not partitions of the asset ({exc}); give the check the asset's partitions_def, or input "
                f"metadata {SCOPE_KEY!r}: 'table' to audit the whole table"
            ) from None
        return partitions_def, keys, upstream_metadata
    if not data_dimensions(step.entity_partitions_def):
        return None
    if context.has_asset_partitions:
        return context.asset_partitions_def, context.asset_partition_keys, upstream_metadata
    if metadata_value(context.definition_metadata, PARTITION_COLUMN_KEY, PARTITION_EXPR_KEY) is not None:
        partitions_def = step.entity_partitions_def
        keys = partitions_def.get_partition_keys_in_range(step.partition_key_range)
        return partitions_def, keys, context.definition_metadata
    return None


def _asked_scope(context: dg.InputContext, step: StepExecutionContext, where: str) -> str:
    """The input's `lakehouse/scope`: its own metadata, else (an asset check's input) the check's metadata."""
    value = metadata_value(context.definition_metadata, SCOPE_KEY)
    if value is None and _is_check_step(step):
        for spec in _check_specs(step):
            value = metadata_value(spec.metadata, SCOPE_KEY)
            if value is not None:
                break
    if value is None:
        return "partition"
    if value not in SCOPES:
        raise LakehouseIOError(
            f"{where}: metadata {SCOPE_KEY!r} is {value!r}; use 'partition' (the run's partitions, the default) or "
            "'table' (the whole table on the run's branch)"
        )
    return str(value)


def _is_check_step(step: StepExecutionContext) -> bool:
    """Whether the step evaluates asset checks and materializes no asset."""
    outputs = step.step.step_outputs
    return bool(outputs) and all(output.properties.asset_check_key is not None for output in outputs)


def _check_specs(step: StepExecutionContext) -> list[dg.AssetCheckSpec]:
    assets_def = step.assets_def
    if assets_def is None:
        return []
    outputs = {output.name for output in step.step.step_outputs}
    return [spec for name, spec in assets_def.check_specs_by_output_name.items() if name in outputs]


def _missing_column(column: str, known: Mapping[str, Any], where: str) -> typing.NoReturn:
    raise ColumnNotFound(f"{where}: no partition column {column!r}; columns are: {', '.join(known)}")
