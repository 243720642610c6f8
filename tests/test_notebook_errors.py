"""Broken notebooks fail at load time with a NotebookLoadError that names file:line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from dagster_lakehouse.notebook import NotebookLoadError, load_notebook_assets

IMPORT_LINE = "from dagster_lakehouse import Input, model"
CHAIN = '''
@app.function
@model(inputs={"events": Input("raw.events")})
def first(events):
    return events
'''


def write_notebook(folder: Path, name: str, cells: str, *, header: str | None = None, setup: str = "") -> Path:
    """Write a marimo notebook with a PEP 723 header, a setup cell importing our API, and `cells`."""
    if header is None:
        header = '# /// script\n# dependencies = ["polars>=1.0"]\n# ///\n'
    setup_lines = "".join(f"    {line}\n" for line in textwrap.dedent(setup).splitlines())
    text = (
        f"{header}\nimport marimo\n\napp = marimo.App()\n\nwith app.setup:\n    {IMPORT_LINE}\n{setup_lines}\n\n"
        f"{textwrap.dedent(cells).strip()}\n\n\nif __name__ == \"__main__\":\n    app.run()\n"
    )
    path = folder / f"{name}.py"
    path.write_text(text)
    return path


def line_of(path: Path, snippet: str, occurrence: int = 1) -> int:
    hits = [n for n, line in enumerate(path.read_text().splitlines(), start=1) if snippet in line]
    return hits[occurrence - 1]


def load_error(paths) -> NotebookLoadError:
    with pytest.raises(NotebookLoadError) as info:
        load_notebook_assets(paths)
    return info.value


def assert_located(error: NotebookLoadError, path: Path, line: int, *fragments: str) -> None:
    assert error.path == str(path.resolve()) and error.line == line, str(error)
    assert str(error).startswith(f"{path.resolve()}:{line}: "), str(error)
    for fragment in fragments:
        assert fragment in str(error), str(error)


def test_syntax_error(tmp_path):
    path = write_notebook(tmp_path, "broken", CHAIN + "\n\n@app.function\ndef oops(:\n    return 1\n")
    assert_located(load_error(path), path, line_of(path, "def oops(:"), "syntax error")


def test_input_with_a_table_that_is_not_namespace_dot_table(tmp_path):
    path = write_notebook(
        tmp_path,
        "bad_table",
        '''
        @app.function
        @model(
            inputs={
                "events": Input("events"),
            }
        )
        def first(events):
            return events
        ''',
    )
    assert_located(load_error(path), path, line_of(path, 'Input("events")'), "Input('events')", "namespace.table")


def test_input_with_a_filter_that_does_not_parse(tmp_path):
    path = write_notebook(
        tmp_path,
        "bad_filter",
        '''
        @app.function
        @model(inputs={"events": Input("raw.events", filter="x >")})
        def first(events):
            return events
        ''',
    )
    assert_located(load_error(path), path, line_of(path, 'filter="x >"'), "cannot parse filter 'x >'")


def test_input_of_unknown_form(tmp_path):
    path = write_notebook(
        tmp_path,
        "bad_form",
        '''
        @app.function
        @model(inputs={"events": "raw.events"})
        def first(events):
            return events
        ''',
    )
    assert_located(load_error(path), path, line_of(path, "@model("), "must be Input('namespace.table'")


def test_parameter_that_is_neither_a_model_nor_an_input(tmp_path):
    path = write_notebook(
        tmp_path,
        "orphan",
        CHAIN
        + '''

@app.function
@model
def second(first, zones):
    return first
''',
    )
    assert_located(
        load_error(path), path, line_of(path, "def second"), "parameter 'zones' is not a model", "Input('namespace.table')"
    )


def test_cycle_between_models(tmp_path):
    path = write_notebook(
        tmp_path,
        "cycle",
        '''
        @app.function
        @model(inputs={"events": Input("raw.events")})
        def a(events, c):
            return events


        @app.function
        @model
        def b(a):
            return a


        @app.function
        @model
        def c(b):
            return b
        ''',
    )
    error = load_error(path)
    assert_located(error, path, line_of(path, "def a("), "cycle", "a -> c -> b -> a")
    for name in ("a", "b", "c"):
        assert f"{name} at {path.resolve()}:{line_of(path, f'def {name}(')}" in str(error)


def test_model_reading_itself_is_a_cycle(tmp_path):
    path = write_notebook(tmp_path, "selfish", "@app.function\n@model\ndef loop(loop):\n    return loop\n")
    assert_located(load_error(path), path, line_of(path, "def loop"), "loop -> loop")


def test_cycle_across_notebooks(tmp_path):
    one = write_notebook(tmp_path, "one", "@app.function\n@model\ndef ping(pong):\n    return pong\n")
    two = write_notebook(tmp_path, "two", "@app.function\n@model\ndef pong(ping):\n    return ping\n")
    error = load_error([one, two])
    assert "ping -> pong -> ping" in str(error)
    assert f"pong at {two.resolve()}:{line_of(two, 'def pong')}" in str(error)


def test_two_models_with_one_name_in_a_notebook(tmp_path):
    path = write_notebook(
        tmp_path,
        "twins",
        CHAIN
        + '''

@app.function
@model(name="first", inputs={"events": Input("raw.events")})
def other(events):
    return events
''',
    )
    assert_located(
        load_error(path), path, line_of(path, "def other"), "two models are named 'first'", f":{line_of(path, 'def first')}"
    )


def test_two_models_writing_one_table_across_notebooks(tmp_path):
    """Two notebooks may each have a model `first` (tables one.first, two.first), but not in one namespace."""
    one = write_notebook(tmp_path, "one", CHAIN)
    two = write_notebook(tmp_path, "two", CHAIN)
    assert {tuple(a.key.path) for a in load_notebook_assets([one, two])} >= {("one", "first"), ("two", "first")}
    with pytest.raises(NotebookLoadError) as info:
        load_notebook_assets([one, two], key_prefix="shared")
    assert_located(
        info.value, two, line_of(two, "def first"), "two models are named 'first'", "table 'shared.first'", f"{one.resolve()}:"
    )


def test_a_model_function_defined_twice(tmp_path):
    path = write_notebook(tmp_path, "again", CHAIN + "\n\n" + CHAIN)
    assert_located(load_error(path), path, line_of(path, "def first", 2), "defined twice")


def test_model_decorator_above_app_function(tmp_path):
    path = write_notebook(
        tmp_path,
        "upside_down",
        '''
        @model(inputs={"events": Input("raw.events")})
        @app.function
        def first(events):
            return events
        ''',
    )
    assert_located(load_error(path), path, line_of(path, "@model("), "@model is above @app.function on first()")


def test_aliased_model_decorator_above_app_function(tmp_path):
    path = write_notebook(
        tmp_path,
        "aliased",
        '''
        @lakehouse_model
        @app.function
        def first(events):
            return events
        ''',
        setup="from dagster_lakehouse import model as lakehouse_model",
    )
    assert_located(load_error(path), path, line_of(path, "@lakehouse_model"), "above @app.function")


def test_model_that_is_not_a_marimo_function_cell(tmp_path):
    path = write_notebook(tmp_path, "no_cell", '@model(inputs={"events": Input("raw.events")})\ndef first(events):\n    return events\n')
    assert_located(load_error(path), path, line_of(path, "def first"), "not a marimo function cell")


def test_missing_declared_package(tmp_path):
    header = '# /// script\n# dependencies = [\n#   "polars>=1.0",\n#   "surely-not-installed-pkg>=1",\n# ]\n# ///\n'
    path = write_notebook(tmp_path, "needs_more", CHAIN, header=header)
    assert_located(load_error(path), path, 1, "surely-not-installed-pkg", "is not installed", "PEP 723")


def test_declared_version_that_is_not_installed(tmp_path):
    header = '# /// script\n# dependencies = ["polars>=999"]\n# ///\n'
    path = write_notebook(tmp_path, "too_new", CHAIN, header=header)
    assert_located(load_error(path), path, 1, "'polars'", "polars>=999")


def test_setup_cell_import_error(tmp_path):
    path = write_notebook(tmp_path, "bad_setup", CHAIN, setup="import surely_not_a_module_xyz")
    assert_located(
        load_error(path), path, line_of(path, "import surely_not_a_module_xyz"), "ModuleNotFoundError", "surely_not_a_module_xyz"
    )


def test_bad_decorator_option(tmp_path):
    path = write_notebook(
        tmp_path,
        "bad_mode",
        '''
        @app.function
        @model(inputs={"events": Input("raw.events")}, materialization="merge")
        def first(events):
            return events
        ''',
    )
    assert_located(load_error(path), path, line_of(path, "materialization="), "materialization='merge'")


def test_unresolvable_annotation(tmp_path):
    path = write_notebook(
        tmp_path,
        "bad_hint",
        '''
        @app.function
        @model(inputs={"events": Input("raw.events")})
        def first(events: "NoSuchType"):
            return events
        ''',
    )
    assert_located(load_error(path), path, line_of(path, "def first"), "type annotations", "NoSuchType")


def test_missing_file_and_bad_loader_options(tmp_path):
    assert "notebook file not found" in str(load_error(tmp_path / "nope.py"))
    with pytest.raises(NotebookLoadError, match="key_prefix='bad prefix'"):
        load_notebook_assets(tmp_path / "nope.py", key_prefix="bad prefix")
    with pytest.raises(NotebookLoadError, match="no notebook paths"):
        load_notebook_assets([])
