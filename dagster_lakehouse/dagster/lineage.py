"""Column lineage of a lakehouse write: output columns passed through by name from the columns its inputs read."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import dagster as dg

from dagster_lakehouse.dagster.tables import COLUMNS_KEY, metadata_value

__all__ = ["column_lineage", "declared_input_columns"]


def declared_input_columns(context: dg.OutputContext) -> dict[dg.AssetKey, list[str]]:
    """The columns the output's asset declares reading from each parent (input metadata `columns`), by parent key."""
    try:
        assets_def = context.step_context.assets_def
    except dg.DagsterInvariantViolationError:  # an output context built outside a run
        return {}
    if assets_def is None:
        return {}
    inputs = assets_def.node_def.input_dict
    declared: dict[dg.AssetKey, list[str]] = {}
    for name, key in assets_def.keys_by_input_name.items():
        columns = metadata_value(inputs[name].metadata if name in inputs else None, COLUMNS_KEY)
        if isinstance(columns, Sequence) and not isinstance(columns, str):
            declared.setdefault(key, []).extend(c for c in columns if isinstance(c, str))
    return declared


def column_lineage(columns: Iterable[str], inputs: Mapping[dg.AssetKey, Sequence[str]]) -> dg.TableColumnLineage | None:
    """Each output column named like a declared input column depends on that column; None when no column is.

    Columns with no such name (computed ones) get no entry: their sources are unknown, so none is invented.
    """
    deps_by_column = {
        column: [dg.TableColumnDep(asset_key=key, column_name=column) for key, read in inputs.items() if column in read]
        for column in columns
    }
    passed_through = {column: deps for column, deps in deps_by_column.items() if deps}
    return dg.TableColumnLineage(deps_by_column=passed_through) if passed_through else None
