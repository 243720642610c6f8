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
from dagster_lakehouse.notebook.pep723 import ScriptMetadata, check_environment, read_script_metadata
from dagster_lakehouse.notebook.source import FunctionSource, read_notebook_source
from dagster_lakehouse.notebook.spec import Input, ModelSpec, model_spec

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


@dataclass(frozen=True)
class Upstream:
    """Where one model parameter comes from: a parent model, or (when `parent` is None) a lakehouse table."""

    parameter: str
    key: tuple[str, str]
    input: Input | None
    parent: NotebookModel | None

    @property
    def table(self) -> str:
        return ".".join(self.key)


def load_notebook_assets(
    paths: str | Path | Sequence[str | Path],
    *,
    key_prefix: str | None = None,
    group_name: str | None = None,
    io_manager_key: str = "io_manager",
) -> list[AssetsDefinition | AssetSpec]:
    """Import marimo notebooks without running their cells and return their models as Dagster assets.

    Each model becomes an asset keyed `[key_prefix or notebook stem, model name]` (the lakehouse table it
    writes); each lakehouse table a model reads becomes an external `AssetSpec`, so lineage reaches the raw data.
    """
    for value, what in ((key_prefix, "key_prefix"), (group_name, "group_name")):
        if value is not None and (not isinstance(value, str) or not _NAME.match(value)):
            raise NotebookLoadError(
                f"{what}={value!r}: must start with a letter or '_' and hold only letters, digits and '_'"
            )
    models = [m for path in _notebook_paths(paths) for m in _notebook_models(path, key_prefix, group_name)]
    by_name = _index_by_name(models)
    by_table = {m.table: m for m in models}
    upstreams = {m.name: _upstreams(m, by_name, by_table) for m in models}
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


def _sanitized(stem: str) -> str:
    name = re.sub(r"\W", "_", stem)
    return name if _NAME.match(name) else f"_{name}"


def _notebook_models(path: Path, key_prefix: str | None, group_name: str | None) -> list[NotebookModel]:
    """Check the notebook's header and source, import it, and collect the functions `@model` marked."""
    source = read_notebook_source(path)
    script = read_script_metadata(source.text, path)
    check_environment(script, path)
    module = import_notebook(path, source.text)
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
        )
    return sorted(found.values(), key=lambda m: m.line)


def _index_by_name(models: list[NotebookModel]) -> dict[str, NotebookModel]:
    by_name: dict[str, NotebookModel] = {}
    for m in models:
        other = by_name.get(m.name)
        if other is not None:
            raise NotebookLoadError(
                f"two models are named {m.name!r}: this one and the one at {other.location}; "
                "rename one (or pass @model(name=...))",
                path=m.notebook,
                line=m.line,
            )
        by_name[m.name] = m
    return by_name


def _upstreams(
    m: NotebookModel, by_name: dict[str, NotebookModel], by_table: dict[str, NotebookModel]
) -> list[Upstream]:
    """Resolve each parameter: its `Input` table (a model's or an external one), else the model it names."""
    upstreams: list[Upstream] = []
    for parameter in inspect.signature(m.function).parameters:
        declared = m.spec.inputs.get(parameter)
        if declared is not None:
            parent = by_table.get(declared.table)
            key = parent.key if parent is not None else split_table_name(declared.table)
            upstreams.append(Upstream(parameter, key, declared, parent))
            continue
        parent = by_name.get(parameter)
        if parent is None:
            known = ", ".join(sorted(by_name)) or "none"
            raise NotebookLoadError(
                f"model {m.name!r}: parameter {parameter!r} is not a model in the loaded notebooks "
                f"(models: {known}); to read a lakehouse table declare it: "
                f"@model(inputs={{{parameter!r}: Input('namespace.table')}})",
                path=m.notebook,
                line=m.line,
            )
        upstreams.append(Upstream(parameter, parent.key, None, parent))
    return upstreams


def _check_acyclic(models: list[NotebookModel], upstreams: dict[str, list[Upstream]]) -> None:
    """Depth-first search over model parents; a back edge is a cycle, reported with every member's location."""
    state: dict[str, str] = {}
    for root in models:
        if root.name in state:
            continue
        state[root.name] = "active"
        path = [root]
        stack = [iter(upstreams[root.name])]
        while stack:
            for upstream in stack[-1]:
                parent = upstream.parent
                if parent is None or state.get(parent.name) == "done":
                    continue
                if state.get(parent.name) == "active":
                    cycle = path[path.index(parent) :]
                    chain = " -> ".join(c.name for c in [*cycle, parent])
                    places = ", ".join(f"{c.name} at {c.location}" for c in cycle)
                    raise NotebookLoadError(
                        f"models form a cycle through their parameters (each reads the next): {chain} ({places})",
                        path=parent.notebook,
                        line=parent.line,
                    )
                state[parent.name] = "active"
                path.append(parent)
                stack.append(iter(upstreams[parent.name]))
                break
            else:
                stack.pop()
                state[path.pop().name] = "done"
