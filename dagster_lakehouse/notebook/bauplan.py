"""bauplan's model decorators with bauplan's meaning, so a bauplan marimo notebook ports by changing its import line.

Write `from dagster_lakehouse.notebook import bauplan` where the notebook had `import bauplan`; its
`@bauplan.model(...)`, `bauplan.Model(...)` and `@bauplan.python(...)` then mean here what they mean in bauplan:

| bauplan | here |
|---|---|
| `bauplan.Model("taxi_fhvhv", columns=[...], filter="...")` | `Input("bauplan.taxi_fhvhv", ..., load_as="arrow")`: a bare name is a table of namespace `bauplan`, bauplan's default, or the model of that name; inputs are `pa.Table`s |
| `@bauplan.model()` | `@model(key_prefix="bauplan", load_as="arrow")`: the model's table is `bauplan.<function name>` |
| `materialization_strategy=None / "NONE" / "REPLACE"` | `materialization="replace"` (bauplan keeps a `NONE` model in memory; here every model is a table) |
| `materialization_strategy="APPEND"` | `materialization="append"` |
| `materialization_strategy="OVERWRITE_PARTITIONS", overwrite_filter="..."` | `overwrite_filter="..."` |
| `name="..."` | `name="..."` |
| `columns=[...]`, `internet_access`, `cache_strategy` | accepted for compatibility, not acted on |
| `partitioned_by=...` | refused: use `@model(partitions=..., partition_column=...)` |
| `@bauplan.python("3.11", pip={"pandas": "2.2.0"})` | checked at load time: each package must be installed (else `NotebookLoadError`); another installed version, or another Python, is a warning |
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from typing import Any, TypeVar

from dagster_lakehouse.notebook.errors import NotebookLoadError
from dagster_lakehouse.notebook.inputs import Input
from dagster_lakehouse.notebook.spec import model as _model

__all__ = ["Model", "model", "python"]

NAMESPACE = "bauplan"
"""The namespace of bare table names, and of the models' tables: bauplan's default namespace."""

_STRATEGIES = {None: "replace", "NONE": "replace", "REPLACE": "replace", "APPEND": "append", "OVERWRITE_PARTITIONS": "replace"}

F = TypeVar("F", bound=Callable[..., Any])


def Model(  # noqa: N802 - bauplan's name
    name: str, columns: Sequence[str] | None = None, filter: str | None = None, ref: str | None = None, **_: Any
) -> Input:
    """bauplan's input declaration: table (or model) `name` as a `pa.Table`, with `columns` and `filter` pushed down."""
    if ref is not None:
        raise NotebookLoadError(
            f"bauplan.Model({name!r}, ref={ref!r}): an input is read from the run's branch here; drop ref= and choose "
            "the branch of the run (run tag or config lakehouse/branch, e.g. main@<commit> to read a past commit)"
        )
    table = name if "." in name else f"{NAMESPACE}.{name}"
    return Input(table, columns=list(columns) if columns is not None else None, filter=filter, load_as="arrow")


def model(
    name: str | None = None,
    columns: Sequence[str] | None = None,
    partitioned_by: Any = None,
    materialization_strategy: str | None = None,
    cache_strategy: Any = None,
    internet_access: bool = False,
    overwrite_filter: str | None = None,
    **kwargs: Any,
) -> Callable[[F], F]:
    """bauplan's model decorator: `@model(key_prefix="bauplan", load_as="arrow")` with bauplan's strategy names;
    other keyword arguments go to our `@model` (e.g. `partitions`, `owners`)."""
    strategy = materialization_strategy.upper() if isinstance(materialization_strategy, str) else materialization_strategy
    if strategy not in _STRATEGIES:
        raise NotebookLoadError(
            f"@bauplan.model(materialization_strategy={materialization_strategy!r}): expected one of "
            "'REPLACE', 'APPEND', 'OVERWRITE_PARTITIONS' or 'NONE'"
        )
    if (strategy == "OVERWRITE_PARTITIONS") != (overwrite_filter is not None):
        raise NotebookLoadError(
            "@bauplan.model(...): materialization_strategy='OVERWRITE_PARTITIONS' and overwrite_filter='...' go "
            "together (the filter names the rows the model's output replaces)"
        )
    if partitioned_by is not None:
        raise NotebookLoadError(
            f"@bauplan.model(partitioned_by={partitioned_by!r}): Iceberg partitioning of a model's table is not "
            "supported here; use @model(partitions=dg.DailyPartitionsDefinition(...), partition_column='...') to "
            "write a partition per run"
        )
    return _model(
        name=name,
        key_prefix=kwargs.pop("key_prefix", NAMESPACE),
        load_as=kwargs.pop("load_as", "arrow"),
        materialization=_STRATEGIES[strategy],
        overwrite_filter=overwrite_filter,
        **kwargs,
    )


def python(version: str | None = None, pip: Mapping[str, str] | None = None, **_: Any) -> Callable[[F], F]:
    """bauplan's environment declaration, checked against this environment when the notebook loads: a package that
    is not installed is an error; another version of it, or of Python, a warning."""
    problems: list[str] = []
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    if version is not None and str(version) != running:
        problems.append(f"Python {version} (this is {running})")
    missing = []
    for package, pinned in (pip or {}).items():
        try:
            installed = metadata.version(package)
        except metadata.PackageNotFoundError:
            missing.append(f"{package}=={pinned}" if pinned else package)
            continue
        if pinned and installed != pinned:
            problems.append(f"{package}=={pinned} (installed: {installed})")
    if missing:
        raise NotebookLoadError(
            f"@bauplan.python(pip=...): {', '.join(missing)} not installed; install it into the code location's "
            "environment, or declare it in the notebook's PEP 723 header (# /// script, dependencies = [...])"
        )
    if problems:
        warnings.warn(
            f"@bauplan.python(...) asks for {', '.join(problems)}; the model runs in this environment",
            stacklevel=2,
        )

    def keep(fn: F) -> F:
        return fn

    return keep
