"""Imports a marimo notebook as a module: only its setup cell runs, `@app.function`s become plain functions."""

from __future__ import annotations

import hashlib
import importlib.util
import linecache
import re
import sys
from pathlib import Path
from contextlib import nullcontext
from types import ModuleType, TracebackType

from dagster_lakehouse.notebook.errors import NotebookLoadError
from dagster_lakehouse.notebook.placeholders import placeholders_for_missing


def module_name_for(path: Path) -> str:
    """A module name unique to the notebook's path, so two notebooks with one stem never collide."""
    stem = re.sub(r"\W", "_", path.stem)
    digest = hashlib.sha1(str(path).encode("utf-8")).hexdigest()[:12]
    return f"_lakehouse_notebook_{stem}_{digest}"


def import_notebook(path: Path, text: str, *, placeholders: bool = False) -> ModuleType:
    """Import the notebook (whose source is `text`) without running its cells; errors name file:line.

    `placeholders`: modules the notebook imports that are not installed here become placeholders (an isolated
    notebook's packages are in its own environment, not the code location's).

    The module runs from `text` itself rather than through a cached .pyc, so the functions Dagster gets are
    exactly the source that was parsed and hashed, and no __pycache__ lands beside the notebook.
    """
    name = module_name_for(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None:
        raise NotebookLoadError("not an importable Python file", path=path)
    module = importlib.util.module_from_spec(spec)
    _cache_lines(path, text)
    folder = str(path.parent)
    added_to_path = folder not in sys.path
    if added_to_path:
        sys.path.insert(0, folder)  # as marimo does, so the notebook can import modules beside it
    sys.modules[name] = module
    try:
        with placeholders_for_missing(str(path)) if placeholders else nullcontext():
            exec(compile(text, str(path), "exec", dont_inherit=True), module.__dict__)
    except NotebookLoadError as exc:
        sys.modules.pop(name, None)
        located = exc.located(path, _line_in(path, exc.__traceback__))
        if located is exc:
            raise
        raise located from exc
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        raise NotebookLoadError(f"syntax error: {exc.msg}", path=path, line=exc.lineno) from exc
    except Exception as exc:
        sys.modules.pop(name, None)
        raise NotebookLoadError(
            f"importing the notebook failed: {type(exc).__name__}: {exc}",
            path=path,
            line=_line_in(path, exc.__traceback__),
        ) from exc
    finally:
        if added_to_path and folder in sys.path:
            sys.path.remove(folder)
    return module


def _cache_lines(path: Path, text: str) -> None:
    """Give linecache (used by marimo's and inspect's getsource) the text being run, not an older read."""
    stat = path.stat()
    linecache.cache[str(path)] = (stat.st_size, stat.st_mtime, text.splitlines(keepends=True), str(path))


def _line_in(path: Path, traceback: TracebackType | None) -> int | None:
    """The line of the innermost traceback frame that runs in the notebook file."""
    line = None
    filename = str(path)
    while traceback is not None:
        if traceback.tb_frame.f_code.co_filename == filename:
            line = traceback.tb_lineno
        traceback = traceback.tb_next
    return line
