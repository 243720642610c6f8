"""Turns resolved notebook models into Dagster assets, and the tables they read into external asset specs."""

from __future__ import annotations

import hashlib
import inspect
import typing
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import dagster as dg

from dagster_lakehouse.notebook.errors import NotebookLoadError
from dagster_lakehouse.notebook.load_types import check_annotation

if TYPE_CHECKING:
    from dagster_lakehouse.notebook.loader import NotebookModel, Upstream

MODEL_KINDS = {"iceberg", "polars", "marimo"}
TABLES_GROUP = "lakehouse_tables"


def build_assets(
    models: list[NotebookModel], upstreams: dict[str, list[Upstream]], *, io_manager_key: str
) -> list[dg.AssetsDefinition | dg.AssetSpec]:
    """One asset per model plus one external spec per lakehouse table they read (each table once)."""
    tables: dict[tuple[str, str], dg.AssetSpec] = {}
    assets: list[dg.AssetsDefinition | dg.AssetSpec] = []
    for m in models:
        for upstream in upstreams[m.table]:
            if upstream.parent is None and upstream.key not in tables:
                tables[upstream.key] = _table_spec(upstream.table, io_manager_key)
        assets.append(_model_asset(m, upstreams[m.table], io_manager_key))
    return [*tables.values(), *assets]


def _table_spec(table: str, io_manager_key: str) -> dg.AssetSpec:
    spec = dg.AssetSpec(
        key=table.split("."),
        description=f"Lakehouse table `{table}`, written outside the notebooks and read by their models.",
        metadata={"lakehouse/table": table},
        kinds={"iceberg"},
        group_name=TABLES_GROUP,
    )
    return spec if io_manager_key == "io_manager" else spec.with_io_manager_key(io_manager_key)


def _model_asset(m: NotebookModel, upstreams: list[Upstream], io_manager_key: str) -> dg.AssetsDefinition:
    """Wrap the model function in a compute function with its signature, so Dagster sees its types; an isolated
    model's compute function instead runs it in its notebook's environment (`isolation.step`), its parents as deps."""
    ins = {u.parameter: dg.AssetIn(key=list(u.key), metadata=u.metadata or None) for u in upstreams}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)  # code references are beta, and exactly what the UI links
        code_references = dg.CodeReferencesMetadataValue(
            code_references=[dg.LocalFileCodeReference(file_path=str(m.notebook), line_number=m.line, label=m.name)]
        )
    metadata = {
        **m.spec.metadata,
        "lakehouse/table": m.table,
        "lakehouse/mode": m.spec.materialization,
        "lakehouse/notebook": str(m.notebook),
        "lakehouse/source": m.location,
        "lakehouse/dependencies": list(m.script.dependencies),
        "dagster/code_references": code_references,
    }
    if m.spec.key is not None:
        metadata["lakehouse/key"] = list(m.spec.key)
    if m.spec.overwrite_filter is not None:
        metadata["lakehouse/overwrite_filter"] = m.spec.overwrite_filter
    if m.spec.partition_column is not None:
        column = m.spec.partition_column
        metadata["lakehouse/partition_column"] = column if isinstance(column, str) else dict(column)
    if m.isolated:
        metadata["lakehouse/isolated"] = True
        if m.spec.partitions is not None:
            raise NotebookLoadError(
                f"model {m.name!r}: an isolated notebook's models cannot be partitioned yet; run this notebook "
                "in-process (drop `isolated`), or drop `partitions` and filter by a run's config",
                path=m.notebook,
                line=m.line,
            )
    code_version = m.source.code_version
    try:
        if m.isolated:
            from dagster_lakehouse.isolation.requirements import environment_fingerprint
            from dagster_lakehouse.isolation.step import isolated_compute

            declared = environment_fingerprint(m.notebook, m.script)
            code_version = hashlib.sha256(f"{code_version}\n{declared}".encode()).hexdigest()

            reads = {"deps": [dg.AssetDep(list(key)) for key in dict.fromkeys(u.key for u in upstreams)]}
            compute = isolated_compute(m, upstreams, io_manager_key)
        else:
            reads = {"ins": ins}
            compute = _compute_function(m, upstreams, io_manager_key)
        return dg.asset(
            key=list(m.key),
            **reads,
            description=m.spec.description or inspect.getdoc(m.function),
            code_version=code_version,
            kinds=MODEL_KINDS,
            owners=list(m.spec.owners) or None,
            tags=dict(m.spec.tags) or None,
            metadata=metadata,
            group_name=m.group_name,
            io_manager_key=io_manager_key,
            partitions_def=m.spec.partitions,
            automation_condition=m.spec.automation_condition,
        )(compute)
    except NotebookLoadError:
        raise
    except Exception as exc:
        raise NotebookLoadError(
            f"model {m.name!r} cannot become a Dagster asset: {exc}", path=m.notebook, line=m.line
        ) from exc


def _compute_function(m: NotebookModel, upstreams: list[Upstream], io_manager_key: str) -> Callable[..., Any]:
    """A function that calls the model with its inputs and returns its result, with the model's annotations.

    Before the model's body runs, a lakehouse IO manager resolves the step's branch and refuses a write that could
    not happen (protected `main`, a tag), so nothing expensive is computed for it."""
    function = m.function
    try:
        hints = typing.get_type_hints(function, include_extras=True)
    except Exception as exc:
        raise NotebookLoadError(
            f"model {m.name!r}: cannot resolve its type annotations: {type(exc).__name__}: {exc}",
            path=m.notebook,
            line=m.line,
        ) from exc
    for upstream in upstreams:
        if upstream.load_as is not None:
            check_annotation(m, upstream.parameter, upstream.load_as, hints.get(upstream.parameter))
    signature = inspect.signature(function)
    parameters = [
        inspect.Parameter("context", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        *(
            inspect.Parameter(
                name,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                annotation=hints.get(name, inspect.Parameter.empty),
            )
            for name in signature.parameters
        ),
    ]
    returns = hints.get("return", inspect.Signature.empty)

    def compute(context, **inputs: Any) -> Any:  # noqa: ANN001 (Dagster refuses a string annotation here)
        from dagster_lakehouse.dagster.io_manager import LakehouseIOManager

        io_manager = getattr(context.resources, io_manager_key, None)
        if isinstance(io_manager, LakehouseIOManager):
            io_manager.prepare_step(context)
        return function(**inputs)

    compute.__name__ = m.name
    compute.__qualname__ = m.name
    compute.__module__ = function.__module__
    compute.__doc__ = function.__doc__
    compute.__signature__ = inspect.Signature(parameters, return_annotation=returns)  # type: ignore[attr-defined]
    compute.__annotations__ = {
        **{p.name: p.annotation for p in parameters if p.annotation is not inspect.Parameter.empty},
        **({"return": returns} if returns is not inspect.Signature.empty else {}),
    }
    return compute
