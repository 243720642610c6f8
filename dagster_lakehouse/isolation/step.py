"""The Dagster side of an isolated model: resolve the step's branch, get the notebook's environment, run the model
there through Dagster Pipes, and report its write exactly as the IO manager reports an in-process one."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import dagster as dg

from dagster_lakehouse.dagster.branch import step_context_of
from dagster_lakehouse.dagster.errors import LakehouseIOError
from dagster_lakehouse.dagster.io_manager import LakehouseIOManager
from dagster_lakehouse.dagster.metadata import write_metadata
from dagster_lakehouse.dagster.own_writes import OwnWrite, own_write_in_lineage, record_provenance
from dagster_lakehouse.dagster.strategies import write_strategy
from dagster_lakehouse.dagster.tables import table_name_for
from dagster_lakehouse.isolation.environments import Environment, ensure_environment
from dagster_lakehouse.isolation.errors import IsolatedModelError
from dagster_lakehouse.isolation.plan import ERROR_MESSAGE, INPUTS_MESSAGE, WRITE_MESSAGE, InputRead, ModelRun
from dagster_lakehouse.lakehouse.commits import load_at
from dagster_lakehouse.lakehouse.config import DEFAULT_PATH
from dagster_lakehouse.lakehouse.error_copies import rebuilt
from dagster_lakehouse.lakehouse.write_result import WriteResult

if TYPE_CHECKING:
    from dagster_lakehouse.notebook.loader import NotebookModel, Upstream

RUNNER = "dagster_lakehouse.isolation.runner"
_NOT_PASSED = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "__PYVENV_LAUNCHER__")


def isolated_compute(m: NotebookModel, upstreams: list[Upstream], io_manager_key: str) -> Callable[..., Any]:
    """The compute function of an isolated model's asset: it runs the model in its notebook's environment."""

    def compute(context):  # noqa: ANN001, ANN202 (Dagster refuses a string annotation here)
        io_manager = getattr(context.resources, io_manager_key, None)
        if not isinstance(io_manager, LakehouseIOManager):
            raise LakehouseIOError(
                f"isolated model {m.name!r} ({m.location}) writes through the lakehouse IO manager, and resource "
                f"{io_manager_key!r} is a {type(io_manager).__name__}: bind a LakehouseIOManager to it"
            )
        io_manager.prepare_step(context)  # refuses a write to protected main or a tag before anything is built
        return run_isolated(context, io_manager, m, upstreams)

    compute.__name__ = m.name
    compute.__doc__ = m.function.__doc__
    return compute


def run_isolated(
    context: dg.AssetExecutionContext, io_manager: LakehouseIOManager, m: NotebookModel, upstreams: list[Upstream]
) -> dg.MaterializeResult:
    """Build (or reuse) the environment, run the model's process, and turn its write into the step's result."""
    store = io_manager.store
    asset_key = context.asset_key
    label = f"asset {asset_key.to_user_string()!r}"
    definition = context.assets_def.metadata_by_key[asset_key]
    table = table_name_for(asset_key, definition, io_manager.default_namespace)
    strategy = write_strategy(definition, label, partitioned=False)
    branch = store.write_branch_for(context, what=f"{label} (table {table!r})")
    where = f"{label} (table {table!r} on branch {branch!r})"
    environment = ensure_environment(m.notebook, m.script, log=context.log.info)
    context.log.info(_describe_environment(environment, m))
    context.log.info(f"{where}: {strategy.describe(None)}")
    properties = {"dagster.asset-key": asset_key.to_user_string()}
    step = step_context_of(context)
    own: dict[str, OwnWrite] = {}
    for u in upstreams:  # a parent this run wrote is read at the commit it wrote, as the IO manager reads it
        found = own_write_in_lineage(step, dg.AssetKey(list(u.key)), branch) if step is not None else None
        if found is not None:
            own[u.parameter] = found
    plan = ModelRun(
        notebook=str(m.notebook),
        model=m.name,
        table=table,
        where=label,
        lakehouse={
            "catalog_uri": store.catalog_uri,
            "warehouse": store.warehouse,
            "properties": dict(store.properties),
            "path": None if store.path == DEFAULT_PATH else store.path,
        },
        branch=branch,
        inputs=[_read_of(u, label, branch, own.get(u.parameter)) for u in upstreams],
        mode=strategy.mode,
        key=list(strategy.key),
        overwrite_filter=strategy.overwrite_filter,
        message=f"dagster: {strategy.mode} {asset_key.to_user_string()}",
        run_id=context.run.run_id,
        snapshot_properties=properties,
        allow_main=store.allow_main,
    )
    written, snapshots = _run(context, environment, plan, m)
    if step is not None:
        for u in upstreams:
            if u.parameter in own:
                record_provenance(step, dg.AssetKey(list(u.key)), own[u.parameter])
    metadata: dict[str, Any] = {}
    data_version = None
    if written is not None:
        lakehouse = store.get_lakehouse()
        iceberg_table = load_at(lakehouse.catalog(branch), table, written["metadata_location"])
        result = WriteResult(**written, iceberg_table=iceberg_table)
        inputs = {dg.AssetKey(list(u.key)): list(u.input.columns) for u in upstreams if u.input and u.input.columns}
        metadata = write_metadata(result, partitioned=False, input_columns=inputs, input_snapshots=snapshots)
        metadata.update(strategy.metadata(None))
        if result.snapshot_id is not None:
            data_version = dg.DataVersion(str(result.snapshot_id))
    metadata.update(_environment_metadata(environment))
    return dg.MaterializeResult(metadata=metadata, data_version=data_version)


def _read_of(u: Upstream, label: str, branch: str, own: OwnWrite | None) -> InputRead:
    declared = u.input
    return InputRead(
        ref=own.ref if own is not None else None,
        parameter=u.parameter,
        table=u.table,
        columns=list(declared.columns) if declared is not None and declared.columns is not None else None,
        filter=declared.filter if declared is not None else None,
        load_as=u.load_as,
        where=f"{label} input {u.parameter!r} from {u.table!r} (table {u.table!r} on branch {branch!r})",
    )


def _run(
    context: dg.AssetExecutionContext, environment: Environment, plan: ModelRun, m: NotebookModel
) -> tuple[dict[str, Any] | None, dict[str, int | None]]:
    """Run the model's process in `environment` through a Pipes session; its write and the snapshot of each table it
    read, or its error re-raised here."""
    env = {k: v for k, v in os.environ.items() if k not in _NOT_PASSED}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)  # Pipes' own use of a preview hook, not ours
        with dg.open_pipes_session(
            context=context,
            context_injector=dg.PipesTempFileContextInjector(),
            message_reader=dg.PipesTempFileMessageReader(),
            extras=plan.to_extras(),
        ) as session:
            process = subprocess.Popen(
                [str(environment.python), "-I", "-m", RUNNER],
                env={**env, "PYTHONNOUSERSITE": "1", **session.get_bootstrap_env_vars()},
                cwd=os.getcwd(),
                stdout=sys.stdout,
                stderr=sys.stderr,
            )
            try:
                code = process.wait()
            except BaseException:  # the run was interrupted: the model's process goes with it
                process.terminate()
                process.wait(timeout=30)
                raise
    messages = {key: value for message in session.get_custom_messages() if isinstance(message, dict)
                for key, value in message.items()}  # fmt: skip
    if ERROR_MESSAGE in messages:
        raise _reraised(messages[ERROR_MESSAGE], m, environment)
    if code != 0 or WRITE_MESSAGE not in messages:
        raise IsolatedModelError(
            f"model {m.name!r} ({m.location}): its process in environment {environment.hash} exited with code "
            f"{code} without reporting a result (killed? out of memory?)"
        )
    return messages[WRITE_MESSAGE], dict(messages.get(INPUTS_MESSAGE) or {})


def _reraised(error: dict[str, Any], m: NotebookModel, environment: Environment) -> Exception:
    """The model's error as the step raises it: the same lakehouse error class with the same fields when it was one (a
    conflict, a protected branch; rebuilt without calling its constructor), else `IsolatedModelError`; the message has
    notebook:line and the model's traceback."""
    line = error.get("line")
    where = f"failed at {m.notebook}:{line}" if line else f"({m.location}) failed"
    message = (
        f"model {m.name!r} {where} in its isolated environment {environment.hash}: "
        f"{error['type']}: {error['message']}\n\nTraceback in the model's process:\n{error['traceback']}"
    )
    return rebuilt(error, message) or IsolatedModelError(message)


def _describe_environment(environment: Environment, m: NotebookModel) -> str:
    how = (
        f"built in {environment.seconds:.1f}s" + (" (resolved with uv)" if environment.resolved else "")
        if environment.built
        else f"cached, ready in {environment.seconds:.2f}s" + (" (resolved again)" if environment.resolved else "")
    )
    return (
        f"model {m.name!r} runs isolated in environment {environment.hash} ({len(environment.packages)} packages, "
        f"declared in {environment.declared_in}): {how}"
    )


def _environment_metadata(environment: Environment) -> dict[str, dg.MetadataValue]:
    return {
        "lakehouse/environment": dg.MetadataValue.text(environment.hash),
        "lakehouse/environment_declared_in": dg.MetadataValue.path(environment.declared_in),
        "lakehouse/environment_packages": dg.MetadataValue.json({"packages": list(environment.packages)}),
        "lakehouse/environment_cache_hit": dg.MetadataValue.bool(not environment.built),
        "lakehouse/environment_seconds": dg.MetadataValue.float(round(environment.seconds, 3)),
    }
