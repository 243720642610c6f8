"""dagster-lakehouse: marimo notebooks to Dagster assets over branch-scoped Iceberg tables.

Every public name loads on first use (PEP 562): `import dagster_lakehouse` (and so the `lakehouse` CLI, which lives
inside it) costs next to nothing, the core and the notebook decorator import without Dagster, and the Dagster-facing
names import Dagster only when asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dagster_lakehouse._lazy import lazy_names

if TYPE_CHECKING:
    from dagster_lakehouse.dagster import LakehouseIOManager, LakehouseResource, branch_partitions, lakehouse_table_spec
    from dagster_lakehouse.lakehouse import (
        Commit,
        Lakehouse,
        LakehouseError,
        MergeConflict,
        MergeResult,
        RevertConflict,
        TableConflict,
        TableDiff,
        UndoResult,
        WriteConflict,
    )
    from dagster_lakehouse.notebook.component import NotebookComponent
    from dagster_lakehouse.notebook.errors import NotebookLoadError
    from dagster_lakehouse.notebook.explore import load_inputs
    from dagster_lakehouse.notebook.loader import load_notebook_assets
    from dagster_lakehouse.notebook.spec import Input, model

_LAZY = {
    "Commit": "dagster_lakehouse.lakehouse",
    "Lakehouse": "dagster_lakehouse.lakehouse",
    "LakehouseError": "dagster_lakehouse.lakehouse",
    "MergeConflict": "dagster_lakehouse.lakehouse",
    "MergeResult": "dagster_lakehouse.lakehouse",
    "RevertConflict": "dagster_lakehouse.lakehouse",
    "TableConflict": "dagster_lakehouse.lakehouse",
    "TableDiff": "dagster_lakehouse.lakehouse",
    "UndoResult": "dagster_lakehouse.lakehouse",
    "WriteConflict": "dagster_lakehouse.lakehouse",
    "Input": "dagster_lakehouse.notebook.spec",
    "model": "dagster_lakehouse.notebook.spec",
    "NotebookComponent": "dagster_lakehouse.notebook.component",
    "NotebookLoadError": "dagster_lakehouse.notebook.errors",
    "load_notebook_assets": "dagster_lakehouse.notebook.loader",
    "load_inputs": "dagster_lakehouse.notebook.explore",
    "LakehouseResource": "dagster_lakehouse.dagster",
    "LakehouseIOManager": "dagster_lakehouse.dagster",
    "branch_partitions": "dagster_lakehouse.dagster",
    "lakehouse_table_spec": "dagster_lakehouse.dagster",
}

__all__ = [
    "Commit",
    "Input",
    "Lakehouse",
    "LakehouseError",
    "MergeConflict",
    "TableConflict",
    "WriteConflict",
    "MergeResult",
    "RevertConflict",
    "TableDiff",
    "UndoResult",
    "model",
    "NotebookComponent",
    "NotebookLoadError",
    "load_notebook_assets",
    "load_inputs",
    "LakehouseResource",
    "LakehouseIOManager",
    "branch_partitions",
    "lakehouse_table_spec",
]


__getattr__, __dir__ = lazy_names(__name__, _LAZY)
