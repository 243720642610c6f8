"""`@model` and `Input`: mark notebook functions as assets without changing how marimo runs them."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from pyiceberg.expressions.parser import parse as parse_filter_expression

from dagster_lakehouse.lakehouse.errors import InvalidTableName
from dagster_lakehouse.lakehouse.names import split_table_name
from dagster_lakehouse.notebook.errors import NotebookLoadError

if TYPE_CHECKING:
    from dagster import AutomationCondition, PartitionsDefinition

MODEL_ATTRIBUTE = "__lakehouse_model__"
MATERIALIZATIONS = ("replace", "append")
RESERVED_PARAMETERS = frozenset({"context"})
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Materialization = Literal["replace", "append"]
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Input:
    """A lakehouse table a model parameter reads, with the columns and row filter pushed down.

    `partition_column`: for a partitioned model reading an unpartitioned raw table, the table's column that
    holds the partition (e.g. `pickup_datetime` for daily partitions): the run then reads only its partition's rows.
    """

    table: str
    columns: list[str] | None = None
    filter: str | None = None
    partition_column: str | None = None

    def __post_init__(self) -> None:
        try:
            split_table_name(self.table)
        except InvalidTableName as exc:
            raise NotebookLoadError(f"Input({self.table!r}): {exc}") from None
        if self.partition_column is not None and (not isinstance(self.partition_column, str) or not self.partition_column):
            raise NotebookLoadError(
                f"Input({self.table!r}): partition_column must be a column name, not {self.partition_column!r}"
            )
        if self.columns is not None:
            if isinstance(self.columns, str) or not isinstance(self.columns, Sequence):
                raise NotebookLoadError(
                    f"Input({self.table!r}): columns must be a list of column names, "
                    f"not {type(self.columns).__name__} {self.columns!r}"
                )
            bad = [c for c in self.columns if not isinstance(c, str) or not c]
            if bad:
                raise NotebookLoadError(f"Input({self.table!r}): column names must be non-empty strings, got {bad!r}")
            object.__setattr__(self, "columns", list(self.columns))
        if self.filter is not None:
            if not isinstance(self.filter, str):
                raise NotebookLoadError(
                    f"Input({self.table!r}): filter must be a string such as "
                    f"\"pickup_datetime >= '2024-01-01'\", not {type(self.filter).__name__}"
                )
            try:
                parse_filter_expression(self.filter)
            except Exception as exc:
                raise NotebookLoadError(
                    f"Input({self.table!r}): cannot parse filter {self.filter!r} ({_parse_problem(exc)}); "
                    "expected e.g. \"pickup_datetime >= '2024-01-01' and PULocationID in (1, 2)\""
                ) from None

    def __hash__(self) -> int:
        columns = tuple(self.columns) if self.columns is not None else None
        return hash((self.table, columns, self.filter, self.partition_column))

    @property
    def metadata(self) -> dict[str, Any]:
        """The `AssetIn` metadata the IO manager reads: only the keys that were set."""
        metadata: dict[str, Any] = {}
        if self.columns is not None:
            metadata["columns"] = list(self.columns)
        if self.filter is not None:
            metadata["filter"] = self.filter
        if self.partition_column is not None:
            metadata["lakehouse/partition_column"] = self.partition_column
        return metadata


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
) -> F | Callable[[F], F]:
    """Mark a notebook function as a Dagster asset; it returns the very same function, so marimo runs it unchanged.

    Place it below `@app.function`. Each parameter is either another model (by name) or a lakehouse
    table given in `inputs` as `Input("namespace.table", columns=[...], filter="...")`. A model with
    time `partitions` names the column holding the partition in `partition_column` (a dict of dimension ->
    column for multi-partitions), so a run overwrites only its partition's rows. `metadata` adds asset metadata.
    `automation_condition` (e.g. `dg.AutomationCondition.eager()`) lets Dagster's automation materialize the model.
    """
    if materialization not in MATERIALIZATIONS:
        raise NotebookLoadError(
            f"@model(materialization={materialization!r}): expected one of {', '.join(map(repr, MATERIALIZATIONS))}"
        )
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
        )
        setattr(function, MODEL_ATTRIBUTE, spec)
        return function

    return decorate(fn) if fn is not None else decorate


def model_spec(obj: object) -> ModelSpec | None:
    """The `ModelSpec` that `@model` attached to `obj`, or None for anything else."""
    spec = getattr(obj, MODEL_ATTRIBUTE, None) if inspect.isfunction(obj) else None
    return spec if isinstance(spec, ModelSpec) else None


def _parse_problem(exc: Exception) -> str:
    """A short description of a filter parse failure (pyparsing's own message lists its whole grammar)."""
    column = getattr(exc, "col", None)
    text = getattr(exc, "line", None)
    if isinstance(column, int) and isinstance(text, str):
        rest = text[column - 1 :]
        return f"unexpected text at column {column}: {rest!r}" if rest else "unexpected end of the filter"
    message = str(exc)
    return message if len(message) <= 200 else message[:200] + "..."


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
    """Check the function's parameters can be asset inputs and every `inputs` entry names one of them."""
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
    return checked
