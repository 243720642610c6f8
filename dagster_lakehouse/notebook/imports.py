"""Load-time check that the modules a notebook's setup cell and models import can be found, without importing them."""

from __future__ import annotations

import ast
import importlib.util
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from dagster_lakehouse.notebook.errors import NotebookLoadError
from dagster_lakehouse.notebook.source import NotebookSource

_IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}


@dataclass(frozen=True)
class ImportedModule:
    """A top-level module a notebook imports, the line importing it, and which part of the notebook does."""

    name: str
    line: int
    by: str


def notebook_imports(source: NotebookSource) -> list[ImportedModule]:
    """The modules imported at the notebook's top level (its setup cell included) and in its `@model` functions.

    Imports that cannot break a run are left out: relative ones, those under `if TYPE_CHECKING:` or
    `if __name__ == "__main__":`, and those in a `try` whose `except` catches ImportError.
    """
    found: list[ImportedModule] = []
    for statement in source.tree.body:
        if not isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            by = "the setup cell" if _is_setup_cell(statement) else "the notebook's top level"
            found.extend(ImportedModule(n, line, by) for n, line in _imports(statement))
    for function in source.functions.values():
        if function.has_model_decorator and function.node is not None:
            by = f"model function {function.name}()"
            found.extend(ImportedModule(n, line, by) for n, line in _imports(function.node))
    return found


def check_imports(source: NotebookSource, *, fix: str | None = None) -> None:
    """Raise one error naming every module the notebook imports that this environment cannot find, and the fix
    (`fix`: how to declare it, when the default advice, install it into the code location, does not apply)."""
    folder = str(source.path.parent)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)  # modules beside the notebook are importable, as they are in marimo
    try:
        missing = [m for m in notebook_imports(source) if not _findable(m.name)]
    finally:
        if added and folder in sys.path:
            sys.path.remove(folder)
    if not missing:
        return
    first = missing[0]
    others = "".join(f"; also module {m.name!r} (line {m.line}, {m.by})" for m in missing[1:])
    names = list(dict.fromkeys(m.name for m in missing))
    advice = fix or (
        f"Declare the package that provides it in a PEP 723 header at the top of the notebook ('# /// script', "
        f"'# dependencies = [{', '.join(repr(n) for n in names)}]', '# ///'; the package name may differ from the "
        f"module's) and install it into the code location's environment, e.g. `pip install {' '.join(names)}`"
    )
    raise NotebookLoadError(
        f"module {first.name!r}, imported by {first.by}, is not installed in this environment: the run would fail "
        f"with ModuleNotFoundError{others}. {advice}",
        path=source.path,
        line=first.line,
    )


def _findable(name: str) -> bool:
    """Whether `import name` would find a module, asked of the import system without importing it."""
    if name in sys.modules:
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _imports(node: ast.AST) -> Iterator[tuple[str, int]]:
    """(top-level module, line) for each absolute import in `node`, skipping guarded ones."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name.split(".")[0], node.lineno
        return
    if isinstance(node, ast.ImportFrom):
        if not node.level and node.module:
            yield node.module.split(".")[0], node.lineno
        return
    if isinstance(node, ast.If) and _is_guard(node.test):
        yield from (found for child in node.orelse for found in _imports(child))
        return
    if isinstance(node, ast.Try) and any(_catches_import_error(h) for h in node.handlers):
        for child in [*node.handlers, *node.orelse, *node.finalbody]:
            yield from _imports(child)
        return
    for child in ast.iter_child_nodes(node):
        yield from _imports(child)


def _is_setup_cell(statement: ast.stmt) -> bool:
    """`with app.setup:` or `with app.setup(...):` (marimo's setup cell)."""
    if not isinstance(statement, ast.With):
        return False
    targets = [i.context_expr.func if isinstance(i.context_expr, ast.Call) else i.context_expr for i in statement.items]
    return any(isinstance(t, ast.Attribute) and t.attr == "setup" for t in targets)


def _is_guard(test: ast.expr) -> bool:
    """`TYPE_CHECKING`, `typing.TYPE_CHECKING` or `__name__ == "__main__"`: code that does not run at load or in a run."""
    if isinstance(test, ast.Name | ast.Attribute):
        return (test.id if isinstance(test, ast.Name) else test.attr) == "TYPE_CHECKING"
    return (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators)
    )


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    if handler.type is None:
        return True
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(
        (t.id if isinstance(t, ast.Name) else t.attr if isinstance(t, ast.Attribute) else None) in _IMPORT_ERRORS
        for t in types
    )
