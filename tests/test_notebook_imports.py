"""Load-time import check: every module the setup cell and the models import must be findable, header or not."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from dagster_lakehouse.notebook import NotebookLoadError, load_notebook_assets

NOTEBOOK = '''import marimo

app = marimo.App()

with app.setup:
    import polars as pl

    from dagster_lakehouse import Input, model
{setup}

@app.function
@model
def first(trips=Input("raw.trips")):
{body}
    return trips


@app.cell
def _():
    import not_checked_in_a_plain_cell_xyz
    return


if __name__ == "__main__":
    import not_checked_under_main_xyz
    app.run()
'''


def write_notebook(folder: Path, name: str, *, setup: str = "", body: str = "") -> Path:
    indent = lambda text: "".join(f"    {line}\n" for line in text.splitlines())  # noqa: E731
    path = folder / f"{name}.py"
    path.write_text(NOTEBOOK.format(setup=indent(setup), body=indent(body)))
    return path


def line_of(path: Path, snippet: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), start=1) if snippet in line)


def load_error(path: Path) -> NotebookLoadError:
    with pytest.raises(NotebookLoadError) as info:
        load_notebook_assets(path)
    return info.value


def test_a_module_a_model_body_imports_is_checked_at_load(tmp_path):
    path = write_notebook(tmp_path, "needs_pkg", body="import missing_pkg_xyz.sub as sub")
    message = str(load_error(path))
    assert message.startswith(f"{path.resolve()}:{line_of(path, 'import missing_pkg_xyz')}: "), message
    for fragment in (
        "module 'missing_pkg_xyz', imported by model function first()",
        "ModuleNotFoundError",
        "# /// script",
        "# dependencies = ['missing_pkg_xyz']",
        "code location's environment",
    ):
        assert fragment in message, message
    assert "missing_pkg_xyz" not in sys.modules


def test_a_module_the_setup_cell_imports_is_checked_before_the_import(tmp_path):
    path = write_notebook(tmp_path, "bad_setup", setup="from other_missing_xyz import thing", body="import missing_pkg_xyz")
    message = str(load_error(path))
    assert message.startswith(f"{path.resolve()}:{line_of(path, 'from other_missing_xyz')}: "), message
    assert "module 'other_missing_xyz', imported by the setup cell" in message
    assert f"also module 'missing_pkg_xyz' (line {line_of(path, 'import missing_pkg_xyz')}" in message


def test_installed_local_relative_and_guarded_imports_pass(tmp_path):
    (tmp_path / "helpers_beside_xyz.py").write_text("VALUE = 1\n")
    body = (
        "import json, os.path\n"
        "from pyarrow import compute\n"
        "import helpers_beside_xyz\n"
        "try:\n    import optional_missing_xyz\nexcept ImportError:\n    optional_missing_xyz = None\n"
        "if TYPE_CHECKING:\n    import typing_only_missing_xyz\n"
    )
    path = write_notebook(tmp_path, "fine", setup="from typing import TYPE_CHECKING", body=body)
    assets = load_notebook_assets(path)
    assert any(a.key.path == ["fine", "first"] for a in assets)


def test_the_header_check_still_comes_first(tmp_path):
    path = write_notebook(tmp_path, "both", body="import missing_pkg_xyz")
    path.write_text('# /// script\n# dependencies = ["surely-not-installed-pkg"]\n# ///\n' + path.read_text())
    message = str(load_error(path))
    assert message.startswith(f"{path.resolve()}:1: ") and "surely-not-installed-pkg" in message, message
