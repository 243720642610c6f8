"""`load_inputs`: read a model's declared inputs in a notebook, so exploratory cells do not repeat columns and filters."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dagster_lakehouse.notebook.errors import NotebookLoadError
from dagster_lakehouse.notebook.inputs import Input
from dagster_lakehouse.notebook.loader import _sanitized
from dagster_lakehouse.notebook.spec import ModelSpec, model_spec

if TYPE_CHECKING:
    from dagster_lakehouse.lakehouse import Lakehouse


def load_inputs(
    model_fn: Callable[..., Any],
    ref: str = "main",
    *,
    lakehouse: Lakehouse | None = None,
    key_prefix: str | None = None,
) -> dict[str, Any]:
    """Read each parameter of a `@model` function from `ref`, as the model would get it: `{parameter: frame}`.

    An `Input` is read with its columns, filter and `load_as` (else the model's); an `Input` or parameter naming a
    model of this notebook reads that model's table. `lakehouse` defaults to `Lakehouse()` (`.lakehouse/` here, or
    the `LAKEHOUSE_*` variables); `key_prefix` is the namespace the models were loaded under, if one was given.
    """
    spec = model_spec(model_fn)
    if spec is None:
        raise NotebookLoadError(f"load_inputs({model_fn!r}): not a function marked with @model")
    reads = {
        parameter: _read_of(model_fn, spec, parameter, key_prefix) for parameter in inspect.signature(model_fn).parameters
    }
    owned = lakehouse is None
    if lakehouse is None:
        from dagster_lakehouse.lakehouse import Lakehouse

        lakehouse = Lakehouse()
    try:
        return {parameter: _read(lakehouse, ref, *read) for parameter, read in reads.items()}
    finally:
        if owned:
            lakehouse.close()


def _read_of(
    model_fn: Callable[..., Any], spec: ModelSpec, parameter: str, key_prefix: str | None
) -> tuple[str, Input | None, str]:
    """(table, the parameter's Input or None, load_as) for one parameter of the model."""
    declared = spec.inputs.get(parameter)
    load_as = (declared.load_as if declared is not None else None) or spec.load_as or "polars"
    if declared is not None and not declared.is_model_name:
        return declared.table, declared, load_as
    name = declared.table if declared is not None else parameter
    for value in list(model_fn.__globals__.values()):
        other = model_spec(value)
        if other is not None and other.name == name:
            return f"{other.key_prefix or key_prefix or _namespace_of(value)}.{name}", declared, load_as
    what = f"Input({name!r})" if declared is not None else "it"
    raise NotebookLoadError(
        f"load_inputs({spec.name}): parameter {parameter!r}: {what} names no @model function of this notebook; "
        f"declare the table it reads: {parameter}=Input('namespace.table')"
    )


def _namespace_of(function: Callable[..., Any]) -> str:
    """The notebook's file name, as the loader names a model's namespace (marimo sets `__file__` to the notebook)."""
    path = function.__globals__.get("__file__") or function.__code__.co_filename
    return _sanitized(Path(path).stem)


def _read(lakehouse: Lakehouse, ref: str, table: str, declared: Input | None, load_as: str) -> Any:
    columns = declared.columns if declared is not None else None
    filter = declared.filter if declared is not None else None
    if load_as == "lazy":
        return lakehouse.scan(table, ref=ref, columns=columns, filter=filter)
    if load_as == "polars":
        return lakehouse.read(table, ref=ref, columns=columns, filter=filter)
    arrow = lakehouse.read_arrow(table, ref=ref, columns=columns, filter=filter)
    return arrow.to_pandas() if load_as == "pandas" else arrow
