"""`@model`: mark notebook functions as assets without changing how marimo runs them (`Input` is in `inputs.py`)."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from dagster_lakehouse.notebook.errors import NotebookLoadError
from dagster_lakehouse.notebook.inputs import Input, LoadAs, check_filter, check_load_as

if TYPE_CHECKING:
    from dagster import AutomationCondition, PartitionsDefinition

MODEL_ATTRIBUTE = "__lakehouse_model__"
MATERIALIZATIONS = ("replace", "append", "upsert")
RESERVED_PARAMETERS = frozenset({"context"})
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Materialization = Literal["replace", "append", "upsert"]
F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["Input", "ModelSpec", "model", "model_spec"]


@dataclass(frozen=True)
class ModelSpec:
    """What `@model` recorded about a function; the loader turns it into a Dagster asset."""

    name: str
    inputs: Mapping[str, Input] = field(default_factory=dict)
    materialization: Materialization = "replace"
    partitions: PartitionsDefinition | None = None
    owners: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    key_prefix: str | None = None
    description: str | None = None
    partition_column: str | Mapping[str, str] | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    automation_condition: AutomationCondition | None = None
    key: tuple[str, ...] | None = None
    overwrite_filter: str | None = None
    load_as: LoadAs | None = None


@overload
def model(fn: F, /) -> F: ...


@overload
def model(
    *,
    inputs: Mapping[str, Input] | None = None,
    materialization: Materialization = "replace",
    partitions: PartitionsDefinition | None = None,
    name: str | None = None,
    owners: Sequence[str] | None = None,
    tags: Mapping[str, str] | None = None,
    key_prefix: str | None = None,
    description: str | None = None,
    partition_column: str | Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    automation_condition: AutomationCondition | None = None,
    key: Sequence[str] | None = None,
    overwrite_filter: str | None = None,
    load_as: LoadAs | None = None,
) -> Callable[[F], F]: ...


def model(
    fn: F | None = None,
    /,
    *,
    inputs: Mapping[str, Input] | None = None,
    materialization: Materialization = "replace",
    partitions: PartitionsDefinition | None = None,
    name: str | None = None,
    owners: Sequence[str] | None = None,
    tags: Mapping[str, str] | None = None,
    key_prefix: str | None = None,
    description: str | None = None,
    partition_column: str | Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    automation_condition: AutomationCondition | None = None,
    key: Sequence[str] | None = None,
    overwrite_filter: str | None = None,
    load_as: LoadAs | None = None,
) -> F | Callable[[F], F]:
    """Mark a notebook function as a Dagster asset; it returns the very same function, so marimo runs it unchanged.

    Place it below `@app.function`. Each parameter is another model (by name), or what an
    `Input("namespace.table" or "model_name", columns=[...], filter="...")` names, given as the parameter's default
    value or in `inputs`. `load_as` ("polars", "lazy", "arrow", "pandas") picks the type of every input (an
    `Input(load_as=...)` wins). `materialization` is "replace", "append" or "upsert" (on the `key` columns);
    `overwrite_filter` makes a replace overwrite only the rows it matches. A model with time `partitions` names the
    column holding the partition in `partition_column` (a dict of dimension -> column for multi-partitions), so a run
    overwrites only its partition's rows. `metadata` adds asset metadata. `automation_condition` (e.g.
    `dg.AutomationCondition.eager()`) lets Dagster's automation materialize the model.
    """
    if materialization not in MATERIALIZATIONS:
        raise NotebookLoadError(
            f"@model(materialization={materialization!r}): expected one of {', '.join(map(repr, MATERIALIZATIONS))}"
        )
    key_columns = _checked_key(key, materialization)
    if overwrite_filter is not None:
        if materialization != "replace":
            raise NotebookLoadError(
                f"@model(overwrite_filter=..., materialization={materialization!r}): overwrite_filter replaces the rows "
                "it matches, so it goes only with materialization='replace'; drop one of them"
            )
        if partitions is not None:
            raise NotebookLoadError(
                "@model(overwrite_filter=..., partitions=...): a partitioned model already overwrites only its "
                "partition's rows (partition_column=...); drop overwrite_filter"
            )
        check_filter(overwrite_filter, "@model(overwrite_filter=...)", "overwrite_filter")
    if load_as is not None:
        check_load_as(load_as, "@model(load_as=...)")
    if name is not None:
        _check_name(name, "name")
    if key_prefix is not None:
        _check_name(key_prefix, "key_prefix")
    if inputs is not None and not isinstance(inputs, Mapping):
        raise NotebookLoadError(
            f"@model(inputs=...): expected a dict of parameter name -> Input(...), not {type(inputs).__name__}"
        )
    if owners is not None and (isinstance(owners, str) or not all(isinstance(o, str) for o in owners)):
        raise NotebookLoadError(f"@model(owners=...): expected a list of strings, got {owners!r}")
    if tags is not None and not (
        isinstance(tags, Mapping) and all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items())
    ):
        raise NotebookLoadError(f"@model(tags=...): expected a dict of strings to strings, got {tags!r}")
    if partition_column is not None and partitions is None:
        raise NotebookLoadError("@model(partition_column=...) needs partitions=...")
    if partition_column is not None and not (
        (isinstance(partition_column, str) and partition_column)
        or (
            isinstance(partition_column, Mapping)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in partition_column.items())
        )
    ):
        raise NotebookLoadError(
            f"@model(partition_column=...): expected a column name or a dict of dimension -> column, "
            f"got {partition_column!r}"
        )
    if metadata is not None and not (isinstance(metadata, Mapping) and all(isinstance(k, str) for k in metadata)):
        raise NotebookLoadError(f"@model(metadata=...): expected a dict with string keys, got {metadata!r}")
    if partitions is not None and not hasattr(partitions, "get_partition_keys"):
        raise NotebookLoadError(
            f"@model(partitions=...): expected a Dagster PartitionsDefinition, not {type(partitions).__name__}"
        )

    def decorate(function: F) -> F:
        if not inspect.isfunction(function):
            raise NotebookLoadError(
                f"@model decorates a plain function, not {type(function).__name__}; "
                "put it directly above `def` and below `@app.function`"
            )
        _check_automation_condition(automation_condition, name or function.__name__)
        spec = ModelSpec(
            name=name or function.__name__,
            inputs=MappingProxyType(_checked_inputs(function, inputs or {})),
            materialization=materialization,
            partitions=partitions,
            owners=tuple(owners or ()),
            tags=MappingProxyType(dict(tags or {})),
            key_prefix=key_prefix,
            description=description,
            partition_column=(
                MappingProxyType(dict(partition_column)) if isinstance(partition_column, Mapping) else partition_column
            ),
            metadata=MappingProxyType(dict(metadata or {})),
            automation_condition=automation_condition,
            key=key_columns,
            overwrite_filter=overwrite_filter,
            load_as=load_as,
        )
        setattr(function, MODEL_ATTRIBUTE, spec)
        return function

    return decorate(fn) if fn is not None else decorate


def model_spec(obj: object) -> ModelSpec | None:
    """The `ModelSpec` that `@model` attached to `obj`, or None for anything else."""
    spec = getattr(obj, MODEL_ATTRIBUTE, None) if inspect.isfunction(obj) else None
    return spec if isinstance(spec, ModelSpec) else None


def _checked_key(key: object, materialization: str) -> tuple[str, ...] | None:
    """The upsert key columns: required for, and only for, materialization='upsert'."""
    if key is None:
        if materialization == "upsert":
            raise NotebookLoadError(
                "@model(materialization='upsert') needs key=[...]: the columns that identify a row "
                "(rows whose key exists are updated, the others inserted), e.g. key=['trip_id']"
            )
        return None
    if materialization != "upsert":
        raise NotebookLoadError(
            f"@model(key=..., materialization={materialization!r}): key names the columns an upsert matches rows on; "
            "use materialization='upsert' or drop key"
        )
    if isinstance(key, str) or not isinstance(key, Sequence) or not key:
        raise NotebookLoadError(f"@model(key=...): expected a non-empty list of column names, got {key!r}")
    bad = [c for c in key if not isinstance(c, str) or not c]
    if bad:
        raise NotebookLoadError(f"@model(key=...): column names must be non-empty strings, got {bad!r}")
    twice = sorted({c for c in key if list(key).count(c) > 1})
    if twice:
        raise NotebookLoadError(f"@model(key=...): column {', '.join(map(repr, twice))} is listed twice")
    return tuple(key)


def _check_name(value: object, what: str) -> None:
    if not isinstance(value, str) or not _NAME.match(value):
        raise NotebookLoadError(
            f"@model({what}={value!r}): must start with a letter or '_' and hold only letters, digits and '_'"
        )


def _check_automation_condition(condition: object, model_name: str) -> None:
    """Refuse anything but a Dagster `AutomationCondition`; dagster is imported only when one is given."""
    if condition is None:
        return
    from dagster import AutomationCondition

    if not isinstance(condition, AutomationCondition):
        raise NotebookLoadError(
            f"model {model_name!r}: @model(automation_condition=...) expects a Dagster AutomationCondition such as "
            f"dg.AutomationCondition.eager(), not {type(condition).__name__} {condition!r}"
        )


def _checked_inputs(function: Callable[..., Any], inputs: Mapping[str, Any]) -> dict[str, Input]:
    """Check the function's parameters can be asset inputs and every `inputs` entry names one of them; a parameter
    whose default value is an `Input` (bauplan style) is declared by it, exactly as through `inputs`."""
    where = f"@model on {function.__name__}()"
    if inspect.iscoroutinefunction(function) or inspect.isgeneratorfunction(function):
        raise NotebookLoadError(f"{where}: a model must be a plain function that returns its data")
    parameters = inspect.signature(function).parameters
    for parameter in parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD, parameter.POSITIONAL_ONLY):
            raise NotebookLoadError(
                f"{where}: parameter {parameter}: each parameter must be a named input (no *args, **kwargs or '/')"
            )
        if parameter.name in RESERVED_PARAMETERS:
            raise NotebookLoadError(f"{where}: parameter name {parameter.name!r} is reserved by Dagster; rename it")
    checked: dict[str, Input] = {}
    for parameter_name, spec in inputs.items():
        if parameter_name not in parameters:
            raise NotebookLoadError(
                f"{where}: inputs names {parameter_name!r}, which is not a parameter "
                f"(parameters: {', '.join(parameters) or 'none'})"
            )
        if not isinstance(spec, Input):
            raise NotebookLoadError(
                f"{where}: inputs[{parameter_name!r}] must be Input('namespace.table', columns=..., filter=...), "
                f"not {type(spec).__name__} {spec!r}"
            )
        checked[parameter_name] = spec
    for parameter in parameters.values():
        if not isinstance(parameter.default, Input):
            continue
        if parameter.name in checked:
            raise NotebookLoadError(
                f"{where}: parameter {parameter.name!r} is declared twice, by its default value "
                f"{parameter.default!r} and by @model(inputs={{{parameter.name!r}: ...}}); keep one of them"
            )
        checked[parameter.name] = parameter.default
    return {name: checked[name] for name in parameters if name in checked}
