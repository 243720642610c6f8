"""dagster-lakehouse: marimo notebooks to Dagster assets over branch-scoped Iceberg tables.

The core and the notebook decorator import without Dagster, so a notebook stays light in marimo;
the Dagster-facing names load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

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
from dagster_lakehouse.notebook.spec import Input, model

_LAZY = {
    "NotebookComponent": "dagster_lakehouse.notebook.component",
    "NotebookLoadError": "dagster_lakehouse.notebook.errors",
    "load_notebook_assets": "dagster_lakehouse.notebook.loader",
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
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dagster_lakehouse' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
