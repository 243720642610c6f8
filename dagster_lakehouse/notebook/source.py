"""Reads a notebook's source without running it: syntax, where each function is, and its decorator order."""

from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from dagster_lakehouse.notebook.errors import NotebookLoadError

_PACKAGE = "dagster_lakehouse"


@dataclass(frozen=True)
class FunctionSource:
    """One top-level function of the notebook: its lines, its exact source text and its decorators."""

    name: str
    first_line: int
    def_line: int
    text: str
    is_app_function: bool
    has_model_decorator: bool
    parameter_lines: dict[str, int] = field(default_factory=dict, compare=False, hash=False)
    """Per parameter, the line of its `Input` (default value or `inputs=` entry), else of the parameter itself."""
    node: ast.FunctionDef | ast.AsyncFunctionDef | None = field(default=None, compare=False, hash=False, repr=False)

    @property
    def code_version(self) -> str:
        """sha256 of the function's own source, decorators included: it changes only when this function changes."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class NotebookSource:
    """The parsed notebook: its text and its top-level functions by the line their definition starts on."""

    path: Path
    text: str
    functions: dict[int, FunctionSource]
    tree: ast.Module = field(compare=False, repr=False)


def read_notebook_source(path: Path) -> NotebookSource:
    """Parse the notebook; a syntax error, or `@model` above `@app.function`, is a NotebookLoadError with file:line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise NotebookLoadError(f"cannot read notebook: {exc}", path=path) from None
    try:
        tree = ast.parse(text, filename=str(path))
    except SyntaxError as exc:
        shown = f": {exc.text.strip()!r}" if exc.text and exc.text.strip() else ""
        raise NotebookLoadError(f"syntax error: {exc.msg}{shown}", path=path, line=exc.lineno) from None

    lines = text.splitlines(keepends=True)
    app_names = _app_names(tree)
    model_names = _model_names(tree)
    functions: dict[int, FunctionSource] = {}
    seen_models: dict[str, int] = {}
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        kinds = [_decorator_kind(d, app_names, model_names) for d in node.decorator_list]
        has_model = "model" in kinds
        is_app_function = "app.function" in kinds
        if has_model and is_app_function and kinds.index("model") < kinds.index("app.function"):
            model_line = node.decorator_list[kinds.index("model")].lineno
            raise NotebookLoadError(
                f"@model is above @app.function on {node.name}(); put it below @app.function "
                "(marimo keeps only the decorators below @app.function)",
                path=path,
                line=model_line,
            )
        if has_model:
            if node.name in seen_models:
                raise NotebookLoadError(
                    f"model function {node.name}() is defined twice (also at line {seen_models[node.name]})",
                    path=path,
                    line=node.lineno,
                )
            seen_models[node.name] = node.lineno
        first_line = node.decorator_list[0].lineno if node.decorator_list else node.lineno
        functions[first_line] = FunctionSource(
            name=node.name,
            first_line=first_line,
            def_line=node.lineno,
            text="".join(lines[first_line - 1 : node.end_lineno]),
            is_app_function=is_app_function,
            has_model_decorator=has_model,
            parameter_lines=_parameter_lines(node, [d for d, k in zip(node.decorator_list, kinds) if k == "model"]),
            node=node,
        )
    return NotebookSource(path=path, text=text, functions=functions, tree=tree)


def _parameter_lines(node: ast.FunctionDef | ast.AsyncFunctionDef, model_decorators: list[ast.expr]) -> dict[str, int]:
    """Where each parameter is declared: its `inputs={...}` entry, else its default value, else the parameter."""
    arguments = node.args
    positional = [*arguments.posonlyargs, *arguments.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(arguments.defaults)) + list(arguments.defaults)
    lines = {
        arg.arg: (default.lineno if default is not None else arg.lineno)
        for arg, default in [*zip(positional, defaults), *zip(arguments.kwonlyargs, arguments.kw_defaults)]
    }
    for decorator in model_decorators:
        for keyword in decorator.keywords if isinstance(decorator, ast.Call) else []:
            if keyword.arg != "inputs":
                continue
            value = keyword.value
            if isinstance(value, ast.Dict):
                for key, entry in zip(value.keys, value.values):
                    if isinstance(key, ast.Constant) and isinstance(key.value, str):
                        lines[key.value] = entry.lineno
            elif isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "dict":
                lines.update({k.arg: k.value.lineno for k in value.keywords if k.arg})
    return lines


def _app_names(tree: ast.Module) -> set[str]:
    """Names bound to `marimo.App(...)` at the top level (normally just `app`)."""
    names = {"app"}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            func = node.value.func
            if (isinstance(func, ast.Attribute) and func.attr == "App") or (
                isinstance(func, ast.Name) and func.id == "App"
            ):
                names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def _model_names(tree: ast.Module) -> set[str]:
    """Names under which the file imports our `model` decorator (`model`, or an `as` alias)."""
    names = {"model"}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == _PACKAGE:
            names.update(alias.asname for alias in node.names if alias.name == "model" and alias.asname)
    return names


def _decorator_kind(decorator: ast.expr, app_names: set[str], model_names: set[str]) -> str | None:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    if isinstance(target, ast.Attribute):
        if target.attr == "function" and isinstance(target.value, ast.Name) and target.value.id in app_names:
            return "app.function"
        if target.attr == "model":
            return "model"
    if isinstance(target, ast.Name) and target.id in model_names:
        return "model"
    return None
