"""The types an input can arrive as (`load_as`), and the check that a parameter's annotation agrees with it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dagster_lakehouse.notebook.errors import NotebookLoadError

if TYPE_CHECKING:
    from dagster_lakehouse.notebook.loader import NotebookModel

TYPE_NAMES = {
    "polars": "pl.DataFrame",
    "lazy": "pl.LazyFrame",
    "arrow": "pa.Table",
    "pandas": "pd.DataFrame",
}
"""The annotation each `load_as` value stands for."""

_KINDS = {
    ("polars", "DataFrame"): "polars",
    ("polars", "LazyFrame"): "lazy",
    ("pyarrow", "Table"): "arrow",
    ("pandas", "DataFrame"): "pandas",
}


def annotation_kind(annotation: Any) -> str | None:
    """The `load_as` value an annotation names (`pl.LazyFrame` -> "lazy"), by module and name: pandas is not imported."""
    root = (getattr(annotation, "__module__", None) or "").split(".")[0]
    return _KINDS.get((root, getattr(annotation, "__name__", None)))


def check_annotation(m: NotebookModel, parameter: str, load_as: str, annotation: Any) -> None:
    """Refuse a parameter annotated with another type than its `load_as` gives; unannotated or `Any` is fine."""
    if annotation is None or annotation is Any or annotation is object:
        return
    if annotation_kind(annotation) == load_as:
        return
    shown = getattr(annotation, "__qualname__", None) or repr(annotation)
    raise NotebookLoadError(
        f"model {m.name!r}: parameter {parameter!r} is annotated {shown} but loads as load_as={load_as!r} "
        f"({TYPE_NAMES[load_as]}); make them agree: annotate it {TYPE_NAMES[load_as]}, drop the annotation, "
        "or change load_as",
        path=m.notebook,
        line=m.parameter_line(parameter),
    )
