"""Notebook layer: `@model` marks marimo functions as assets; `load_notebook_assets` turns them into Dagster assets.

Importing `model` and `Input` does not import Dagster, so a notebook's setup cell stays light in marimo;
`NotebookComponent` (which subclasses Dagster's Component) loads on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dagster_lakehouse.notebook.errors import NotebookLoadError
from dagster_lakehouse.notebook.explore import load_inputs
from dagster_lakehouse.notebook.loader import load_notebook_assets
from dagster_lakehouse.notebook.inputs import Input
from dagster_lakehouse.notebook.spec import ModelSpec, model

if TYPE_CHECKING:
    from dagster_lakehouse.notebook.component import NotebookComponent

__all__ = [
    "Input",
    "ModelSpec",
    "NotebookComponent",
    "NotebookLoadError",
    "load_inputs",
    "load_notebook_assets",
    "model",
]


def __getattr__(name: str) -> Any:
    if name == "NotebookComponent":
        from dagster_lakehouse.notebook.component import NotebookComponent

        globals()[name] = NotebookComponent
        return NotebookComponent
    raise AttributeError(f"module 'dagster_lakehouse.notebook' has no attribute {name!r}")
