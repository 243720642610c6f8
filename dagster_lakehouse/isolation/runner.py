"""The process an isolated model runs in: `python -m dagster_lakehouse.isolation.runner`, in its notebook's
environment, started by the Dagster step through Pipes.

It reads the model's inputs from the step's branch, calls the model, and writes its output in one commit, with the
same frame handlers and `Lakehouse.write` as the IO manager in-process; then it sends the write's result back for
the step to report (metadata, data version). A failure is sent back too, with the traceback's notebook:line.
"""

from __future__ import annotations

import traceback
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

from dagster_pipes import PipesContext, open_dagster_pipes

from dagster_lakehouse.frames import input_handler, output_handler
from dagster_lakehouse.isolation.plan import ERROR_MESSAGE, INPUTS_MESSAGE, WRITE_MESSAGE, ModelRun
from dagster_lakehouse.lakehouse import Lakehouse
from dagster_lakehouse.lakehouse.error_copies import error_record, named
from dagster_lakehouse.lakehouse.errors import LakehouseError
from dagster_lakehouse.lakehouse.write_data import write_data
from dagster_lakehouse.notebook.errors import NotebookLoadError
from dagster_lakehouse.notebook.importer import import_notebook
from dagster_lakehouse.notebook.imports import check_imports
from dagster_lakehouse.notebook.source import read_notebook_source
from dagster_lakehouse.notebook.spec import model_spec

ISOLATED_FIX = (
    "Declare the package that provides it in the notebook's PEP 723 header (or its folder's pyproject.toml): the "
    "model runs in the environment declared there, not in the code location's"
)


def main() -> None:
    with open_dagster_pipes() as pipes:
        plan = ModelRun.from_extras(pipes.extras)
        try:
            run_model(plan, pipes)
        except BaseException as exc:
            pipes.report_custom_message({ERROR_MESSAGE: _describe(exc, Path(plan.notebook))})
            raise


def run_model(plan: ModelRun, pipes: PipesContext) -> None:
    """Import the notebook, read the inputs, call the model, write its output, report the write."""
    path = Path(plan.notebook)
    source = read_notebook_source(path)
    check_imports(source, fix=ISOLATED_FIX)
    module = import_notebook(path, source.text)
    function = _model_function(module, plan.model, path)
    hints = typing.get_type_hints(function, include_extras=True)
    lakehouse = Lakehouse(
        plan.lakehouse.get("catalog_uri"),
        plan.lakehouse.get("warehouse"),
        dict(plan.lakehouse.get("properties") or {}),
        path=plan.lakehouse.get("path"),
    )
    try:
        values: dict[str, Any] = {}
        snapshots: dict[str, int | None] = {}
        for read in plan.inputs:
            handler = input_handler(read.load_as, hints.get(read.parameter), read.where)
            ref = read.ref or plan.branch
            loaded = lakehouse.table(read.table, ref)
            values[read.parameter] = handler.read(
                lakehouse, read.table, ref, loaded=loaded, columns=read.columns, filter=read.filter, where=read.where,
            )  # fmt: skip
            snapshot = loaded.current_snapshot()
            snapshots[read.table] = snapshot.snapshot_id if snapshot is not None else None
            pipes.log.info(f"{read.where}: read as {handler.label}" + (f" at {ref}" if read.ref else ""))
        pipes.report_custom_message({INPUTS_MESSAGE: snapshots})
        output = function(**values)
        if output is None:
            pipes.log.info(f"{plan.where} returned None: nothing written to the lakehouse")
            pipes.report_custom_message({WRITE_MESSAGE: None})
            return
        where = f"{plan.where} (table {plan.table!r} on branch {plan.branch!r})"
        data = write_data(output_handler(output, where).to_write(output, where))
        try:
            result = lakehouse.write(
                plan.table, data, branch=plan.branch, mode=plan.mode, where=plan.overwrite_filter,
                message=plan.message, run_id=plan.run_id, snapshot_properties=plan.snapshot_properties,
                allow_main=plan.allow_main, **({"key": list(plan.key)} if plan.key else {}),
            )  # fmt: skip
        except LakehouseError as exc:
            renamed = named(exc, where)  # as the IO manager names it, keeping the class and its fields
            if renamed is exc:
                raise
            raise renamed from exc
        written = {f.name: getattr(result, f.name) for f in fields(result) if f.name != "iceberg_table"}
        pipes.log.info(f"{where}: wrote {result.rows} rows, snapshot {result.snapshot_id}")
        pipes.report_custom_message({WRITE_MESSAGE: written})
    finally:
        lakehouse.close()


def _model_function(module: Any, name: str, path: Path) -> Any:
    for value in vars(module).values():
        spec = model_spec(value)
        if spec is not None and spec.name == name and value.__code__.co_filename == str(path):
            return value
    raise NotebookLoadError(f"no @model named {name!r} in the notebook any more (was it renamed?)", path=path)


def _describe(exc: BaseException, notebook: Path) -> dict[str, Any]:
    """The error as the step re-raises it: class, message and fields, the innermost notebook line, the traceback."""
    line = None
    frame = exc.__traceback__
    while frame is not None:
        if frame.tb_frame.f_code.co_filename == str(notebook):
            line = frame.tb_lineno
        frame = frame.tb_next
    if line is None and isinstance(exc, NotebookLoadError) and exc.path == str(notebook):
        line = exc.line
    return {
        **error_record(exc),  # type, module, message and fields: the step rebuilds a lakehouse error from them
        "line": line,
        "traceback": "".join(traceback.format_exception(exc)),
    }


if __name__ == "__main__":
    main()
