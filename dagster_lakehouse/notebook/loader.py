"""`load_notebook_assets`: find the `@model` functions of marimo notebooks and wire them into a lineage graph."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dagster_lakehouse.lakehouse.names import split_table_name
from dagster_lakehouse.notebook.errors import NotebookLoadError
from dagster_lakehouse.notebook.importer import import_notebook
from dagster_lakehouse.notebook.imports import check_imports
from dagster_lakehouse.notebook.pep723 import ScriptMetadata, check_environment, read_script_metadata
from dagster_lakehouse.notebook.source import FunctionSource, read_notebook_source
from dagster_lakehouse.notebook.inputs import LOAD_AS_KEY, Input
from dagster_lakehouse.notebook.spec import ModelSpec, model_spec

if TYPE_CHECKING:
    from dagster import AssetsDefinition, AssetSpec

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class NotebookModel:
    """A `@model` function found in a notebook, with where it lives and the table it writes."""

    function: Callable[..., Any]
    spec: ModelSpec
    notebook: Path
    source: FunctionSource
    namespace: str
    group_name: str
    script: ScriptMetadata
    isolated: bool = False
    """Runs in the environment its notebook declares (`isolation`), not in the code location's."""

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.spec.name)

    @property
    def table(self) -> str:
        return f"{self.namespace}.{self.spec.name}"

    @property
    def line(self) -> int:
        return self.source.def_line

    @property
    def location(self) -> str:
        return f"{self.notebook}:{self.line}"

    def parameter_line(self, parameter: str) -> int:
        """The line declaring `parameter`: its `Input`, else the parameter itself."""
        return self.source.parameter_lines.get(parameter, self.line)


@dataclass(frozen=True)
class Upstream:
    """Where one model parameter comes from: a parent model, or (when `parent` is None) a lakehouse table."""

    parameter: str
    key: tuple[str, str]
    input: Input | None
    parent: NotebookModel | None
    load_as: str | None = None

    @property
    def table(self) -> str:
        return ".".join(self.key)

    @property
    def metadata(self) -> dict[str, Any]:
        """The `AssetIn` metadata: the `Input`'s columns, filter and partition column, and the type it loads as."""
        metadata = self.input.metadata if self.input is not None else {}
        if self.load_as is not None:
            metadata[LOAD_AS_KEY] = self.load_as
        return metadata


def load_notebook_assets(
    paths: str | Path | Sequence[str | Path],
    *,
    key_prefix: str | None = None,
    group_name: str | None = None,
    io_manager_key: str = "io_manager",
    isolated: bool | Sequence[str | Path] = False,
) -> list[AssetsDefinition | AssetSpec]:
    """Import marimo notebooks without running their cells and return their models as Dagster assets.

    Each model becomes an asset keyed `[key_prefix or notebook stem, model name]` (the lakehouse table it
    writes); each lakehouse table a model reads becomes an external `AssetSpec`, so lineage reaches the raw data.

    `isolated`: True, or the notebooks (paths) whose models run in the environment their PEP 723 header (or their
    folder's `pyproject.toml`) declares, built with uv and reached through Dagster Pipes; a header's
    `[tool.dagster-lakehouse] isolated = true` isolates its notebook too. Their packages need not be installed here.
    """
    for value, what in ((key_prefix, "key_prefix"), (group_name, "group_name")):
        if value is not None and (not isinstance(value, str) or not _NAME.match(value)):
            raise NotebookLoadError(
                f"{what}={value!r}: must start with a letter or '_' and hold only letters, digits and '_'"
            )
    chosen = _isolated_paths(isolated)
    loaded = _notebook_paths(paths)
    unknown = sorted(str(p) for p in chosen - set(loaded))
    if unknown:
        raise NotebookLoadError(
            f"isolated names {', '.join(unknown)}, which is not among the notebooks loaded "
            f"({', '.join(str(p) for p in loaded)}): add it to the paths, or fix the name"
        )
    models = [
        m for path in loaded for m in _notebook_models(path, key_prefix, group_name, isolated is True or path in chosen)
    ]
    by_table = _index_by_table(models)
    by_name: dict[str, list[NotebookModel]] = {}
    for m in models:
        by_name.setdefault(m.name, []).append(m)
    upstreams = {m.table: _upstreams(m, by_name, by_table) for m in models}
    _check_acyclic(models, upstreams)

    from dagster_lakehouse.notebook.assets import build_assets

    return build_assets(models, upstreams, io_manager_key=io_manager_key)


def _notebook_paths(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    items = [paths] if isinstance(paths, str | Path) else list(paths)
    if not items:
        raise NotebookLoadError("no notebook paths given")
    resolved: list[Path] = []
    for item in items:
        path = Path(item).expanduser().resolve()
        if not path.is_file():
            raise NotebookLoadError("notebook file not found", path=path)
        if path not in resolved:
            resolved.append(path)
    return resolved


def _isolated_paths(isolated: bool | Sequence[str | Path]) -> set[Path]:
    if isinstance(isolated, bool):
        return set()
    if isinstance(isolated, str | Path):
        isolated = [isolated]
    return {Path(item).expanduser().resolve() for item in isolated}


def _sanitized(stem: str) -> str:
    name = re.sub(r"\W", "_", stem)
    return name if _NAME.match(name) else f"_{name}"


def _notebook_models(
    path: Path, key_prefix: str | None, group_name: str | None, isolated: bool = False
) -> list[NotebookModel]:
    """Check the notebook's header and source, import it, and collect the functions `@model` marked.

    An isolated notebook's packages are those of its own environment: they are neither checked against nor needed
    in this one (missing modules become placeholders while it loads)."""
    source = read_notebook_source(path)
    script = read_script_metadata(source.text, path)
    isolated = isolated or script.isolated
    if not isolated:
        check_environment(script, path)
        check_imports(source)
    module = import_notebook(path, source.text, placeholders=isolated)
    is_marimo = any(
        type(value).__name__ == "App" and type(value).__module__.startswith("marimo")
        for value in vars(module).values()
    )
    stem = _sanitized(path.stem)
    found: dict[int, NotebookModel] = {}
    for value in vars(module).values():
        spec = model_spec(value)
        if spec is None or value.__code__.co_filename != str(path) or id(value) in found:
            continue
        function_source = source.functions.get(value.__code__.co_firstlineno)
        if function_source is None:
            raise NotebookLoadError(
                f"model {spec.name!r} must be a top-level function of the notebook",
                path=path,
                line=value.__code__.co_firstlineno,
            )
        if is_marimo and not function_source.is_app_function:
            raise NotebookLoadError(
                f"model {spec.name!r} is not a marimo function cell: put @app.function above @model",
                path=path,
                line=function_source.def_line,
            )
        found[id(value)] = NotebookModel(
            function=value,
            spec=spec,
            notebook=path,
            source=function_source,
            namespace=spec.key_prefix or key_prefix or stem,
            group_name=group_name or stem,
            script=script,
            isolated=isolated,
        )
    return sorted(found.values(), key=lambda m: m.line)


def _index_by_table(models: list[NotebookModel]) -> dict[str, NotebookModel]:
    """Models by the table they write; two models may share a name only in different namespaces."""
    by_table: dict[str, NotebookModel] = {}
    for m in models:
        other = by_table.get(m.table)
        if other is not None:
            raise NotebookLoadError(
                f"two models are named {m.name!r} and would both write table {m.table!r}: this one and the one at "
                f"{other.location}; rename one (or pass @model(name=...) or @model(key_prefix=...))",
                path=m.notebook,
                line=m.line,
            )
        by_table[m.table] = m
    return by_table


def _upstreams(
    m: NotebookModel, by_name: dict[str, list[NotebookModel]], by_table: dict[str, NotebookModel]
) -> list[Upstream]:
    """Resolve each parameter: what its `Input` names (a model's table, a bare model name, or an external table),
    else the model named like the parameter."""
    upstreams: list[Upstream] = []
    for parameter in inspect.signature(m.function).parameters.values():
        declared = m.spec.inputs.get(parameter.name)
        load_as = declared.load_as if declared is not None and declared.load_as else m.spec.load_as
        if declared is not None and not declared.is_model_name:
            parent = by_table.get(declared.table)
            key = parent.key if parent is not None else split_table_name(declared.table)
            upstreams.append(Upstream(parameter.name, key, declared, parent, load_as))
            continue
        name = declared.table if declared is not None else parameter.name
        parent = _model_named(m, parameter, name, declared, by_name)
        upstreams.append(Upstream(parameter.name, parent.key, declared, parent, load_as))
    _check_one_read_per_table(m, upstreams)
    return upstreams


def _check_one_read_per_table(m: NotebookModel, upstreams: list[Upstream]) -> None:
    """Dagster keeps one `AssetIn` metadata per asset a step reads: two parameters reading one table differently
    would silently get the same columns, filter and type, so that is refused."""
    seen: dict[tuple[str, str], Upstream] = {}
    for upstream in upstreams:
        other = seen.setdefault(upstream.key, upstream)
        if other is not upstream and other.metadata != upstream.metadata:
            raise NotebookLoadError(
                f"model {m.name!r}: parameters {other.parameter!r} and {upstream.parameter!r} read table "
                f"{upstream.table!r} with different columns, filter or load_as, and a Dagster asset reads each "
                "upstream asset once; read it in one parameter and select or filter in the function body",
                path=m.notebook,
                line=m.parameter_line(upstream.parameter),
            )


def _model_named(
    m: NotebookModel,
    parameter: inspect.Parameter,
    name: str,
    declared: Input | None,
    by_name: dict[str, list[NotebookModel]],
) -> NotebookModel:
    """The one loaded model called `name` that `parameter` of `m` reads; none or several is an error."""
    candidates = by_name.get(name, [])
    line = m.parameter_line(parameter.name)
    what = f"Input({name!r})" if declared is not None else f"parameter {parameter.name!r}"
    if len(candidates) > 1:
        listed = ", ".join(f"table {c.table!r} at {c.location}" for c in candidates)
        raise NotebookLoadError(
            f"model {m.name!r}: {what} names model {name!r}, which several loaded notebooks define ({listed}); "
            f"say which by its table: Input({candidates[0].table!r})",
            path=m.notebook,
            line=line,
        )
    if candidates:
        return candidates[0]
    known = ", ".join(sorted(by_name)) or "none"
    if declared is not None:
        raise NotebookLoadError(
            f"{what} (parameter {parameter.name!r} of model {m.name!r}) names no model of the loaded notebooks "
            f"(models: {known}); a lakehouse table is named 'namespace.table', e.g. Input('namespace.{name}')",
            path=m.notebook,
            line=line,
        )
    ignored = (
        f"; its default value {parameter.default!r} is not an Input(...), so it was ignored"
        if parameter.default is not inspect.Parameter.empty
        else ""
    )
    raise NotebookLoadError(
        f"model {m.name!r}: parameter {parameter.name!r} is not a model in the loaded notebooks (models: {known})"
        f"{ignored}; to read a lakehouse table declare it: {parameter.name}=Input('namespace.table') as its default "
        f"value, or @model(inputs={{{parameter.name!r}: Input('namespace.table')}})",
        path=m.notebook,
        line=line,
    )


def _check_acyclic(models: list[NotebookModel], upstreams: dict[str, list[Upstream]]) -> None:
    """Depth-first search over model parents; a back edge is a cycle, reported with every member's location."""
    state: dict[str, str] = {}
    for root in models:
        if root.table in state:
            continue
        state[root.table] = "active"
        path = [root]
        stack = [iter(upstreams[root.table])]
        while stack:
            for upstream in stack[-1]:
                parent = upstream.parent
                if parent is None or state.get(parent.table) == "done":
                    continue
                if state.get(parent.table) == "active":
                    cycle = path[path.index(parent) :]
                    chain = " -> ".join(c.name for c in [*cycle, parent])
                    places = ", ".join(f"{c.name} at {c.location}" for c in cycle)
                    raise NotebookLoadError(
                        f"models form a cycle through their parameters (each reads the next): {chain} ({places})",
                        path=parent.notebook,
                        line=parent.line,
                    )
                state[parent.table] = "active"
                path.append(parent)
                stack.append(iter(upstreams[parent.table]))
                break
            else:
                stack.pop()
                state[path.pop().table] = "done"
