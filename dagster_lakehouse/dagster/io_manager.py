"""`LakehouseIOManager`: assets as Iceberg tables on the run's branch, inputs read back with pushdown."""


import os
import typing
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
import polars as pl
from dagster._core.execution.context.system import StepExecutionContext
from pydantic import Field, PrivateAttr
from pyiceberg.expressions import And

from dagster_lakehouse.dagster.branch import step_context_of
from dagster_lakehouse.dagster.errors import LakehouseIOError, naming
from dagster_lakehouse.dagster.input_scope import input_scope
from dagster_lakehouse.dagster.lineage import declared_input_columns
from dagster_lakehouse.dagster.metadata import write_metadata
from dagster_lakehouse.dagster.own_writes import own_write, record_input_provenance
from dagster_lakehouse.dagster.partition_report import report_partitions
from dagster_lakehouse.dagster.resource import LakehouseResource
from dagster_lakehouse.dagster.scope import (
    Scope,
    build_scope,
    data_dimensions,
    partition_columns,
    polars_kind,
)
from dagster_lakehouse.dagster.strategies import write_strategy
from dagster_lakehouse.dagster.tables import (
    COLUMNS_KEY,
    FILTER_KEY,
    metadata_value,
    table_name_for,
)
from dagster_lakehouse.frames import LOAD_AS_KEY, FrameHandler, input_handler, output_handler
from dagster_lakehouse.lakehouse.errors import TableNotFound
from dagster_lakehouse.lakehouse.filters import parse_filter
from dagster_lakehouse.lakehouse.refspec import is_pinned
from dagster_lakehouse.lakehouse.row_checks import RowRule
from dagster_lakehouse.lakehouse.write_data import WriteData, write_data

__all__ = ["LAKEHOUSE_RESOURCE_KEY", "LakehouseIOManager"]

LAKEHOUSE_RESOURCE_KEY = "lakehouse"
_REMEMBERED_STEPS = 1024

class LakehouseIOManager(dg.ConfigurableIOManager):
    """Stores each asset as table `namespace.name` on the run's branch and loads inputs from the same branch.

    The branch is `LakehouseResource.write_branch_for`/`read_branch_for`: for a write-audit-publish run its own
    branch `wap/<run_id>`, so asset checks, which load the asset through this IO manager, audit what the run wrote.

    Table: asset metadata `lakehouse/table`, else the asset key (`[ns, name]` -> `ns.name`, `[name]` ->
    `<default_namespace>.name`, longer keys join all but the last part with `_`). Mode: metadata
    `lakehouse/mode` (`replace`, `append` or `upsert` on metadata `lakehouse/key`), `lakehouse/overwrite_filter` to
    replace only the rows a filter matches (`strategies`). Partitioned assets overwrite only their partition's rows,
    found by metadata `lakehouse/partition_column` (or `partition_expr`). Inputs take `AssetIn(metadata={"columns":
    [...], "filter": "...", "load_as": "arrow"})` and are returned as `load_as` or else the parameter's annotation
    asks: `pl.DataFrame` (default), `pl.LazyFrame`, `pa.Table` or `pd.DataFrame` (`frames`). In a partitioned run an
    input reads the run's partitions, an asset check's too, unless its metadata `lakehouse/scope` is `table`
    (`input_scope`); an asset the run wrote itself is read at the commit it wrote (`own_writes`). A partition's
    materialization reports its partition's rows and version (`partition_report`).

    Run config given to the resource key `lakehouse` (e.g. `{"resources": {"lakehouse": {"config": {"branch":
    "feat"}}}}` from the launchpad, `--config-json` or a schedule) applies to this IO manager's `lakehouse` too, so
    one setting moves the whole run; `LakehouseResource.configure_at_launch()` works as well.
    """

    lakehouse: dg.ResourceDependency[LakehouseResource]
    default_namespace: str = Field(
        default="public", description="Namespace of assets whose key has one part and no lakehouse/table metadata"
    )
    _run_lakehouse: LakehouseResource | None = PrivateAttr(default=None)
    _prepared: set[tuple[str, str]] = PrivateAttr(default_factory=set)
    _reads: OrderedDict[tuple[str, str], dict[dg.AssetKey, tuple[str, int | None]]] = PrivateAttr(
        default_factory=OrderedDict
    )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Take the run config of the resource key `lakehouse` into the nested resource: it is one setting."""
        run = context.run
        resources = (run.run_config or {}).get("resources") or {} if run is not None else {}
        overrides = {
            name: os.environ.get(value["env"]) if isinstance(value, Mapping) and "env" in value else value
            for name, value in ((resources.get(LAKEHOUSE_RESOURCE_KEY) or {}).get("config") or {}).items()
        }
        current = self.lakehouse
        if overrides and isinstance(current, LakehouseResource):
            fields = {name: getattr(current, name) for name in type(current).model_fields}
            if any(fields.get(name) != value for name, value in overrides.items()):
                self._run_lakehouse = type(current)(**{**fields, **overrides})
        if run is not None and context.instance is not None:
            self.store.tag_run_at_start(run, context.instance, context.log)

    @property
    def store(self) -> LakehouseResource:
        """The lakehouse resource of this run: the nested `lakehouse`, with the run's config for it."""
        return self._run_lakehouse or self.lakehouse

    def prepare_step(self, context: dg.AssetExecutionContext | dg.OpExecutionContext | dg.InputContext) -> None:
        """Before a step's body runs: resolve its branch, tag the run, create the branch, and refuse now (not after
        an expensive computation) a write the step's lakehouse outputs could not make (protected `main`, a tag)."""
        step = step_context_of(context)
        if step is None or (step.run_id, step.step.key) in self._prepared:
            return  # once per step: a step with several inputs (and a notebook model's body) asks again
        outputs = _lakehouse_outputs(step)
        what = f"asset {outputs[0]!r}" if len(outputs) == 1 else f"the assets {', '.join(outputs)}" if outputs else (
            f"step {step.step.key!r}"
        )
        self.store.prepare(step, what=what, writes=bool(outputs))
        self._prepared.add((step.run_id, step.step.key))

    # ----- outputs ------------------------------------------------------------------------------------

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        """Write `obj` to the asset's table on the run's branch in one commit, by the asset's strategy (replace,
        append, upsert, overwrite of the rows a filter matches), and report what was written."""
        asset_key = context.asset_key
        label = f"asset {asset_key.to_user_string()!r}"
        if obj is None:
            context.log.info(f"{label} returned None: nothing written to the lakehouse")
            return
        definition = context.definition_metadata
        table = table_name_for(asset_key, definition, self.default_namespace)
        partitioned = context.has_asset_partitions and bool(data_dimensions(context.asset_partitions_def))
        strategy = write_strategy(definition, label, partitioned=partitioned)
        mode = strategy.mode
        branch = self.store.write_branch_for(context, what=f"{label} (table {table!r})")
        where = f"{label} (table {table!r} on branch {branch!r})"
        handler = output_handler(obj, where)
        try:
            data = write_data(handler.to_write(obj, where))
        except TypeError as exc:
            raise LakehouseIOError(f"{where}: {exc}") from None
        scope = self._output_scope(context, data, where)
        properties = {"dagster.asset-key": asset_key.to_user_string()}
        if context.has_asset_partitions:
            properties["dagster.partition-key"] = _partition_label(context.asset_partition_key_range)
        context.log.info(f"{where}: {strategy.describe(scope.text() if scope is not None else None)}")
        row_scope = strategy.overwrite_filter
        if scope is not None and mode == "replace":
            row_scope = scope.iceberg()
        lakehouse = self.store.get_lakehouse()
        with naming(where):
            result = lakehouse.write(
                table,
                data,
                branch=branch,
                mode=mode,
                where=row_scope,
                message=f"dagster: {mode} {asset_key.to_user_string()}",
                run_id=context.run_id,
                snapshot_properties=properties,
                allow_main=self.store.allow_main,
                **({"key": list(strategy.key)} if strategy.key else {}),
            )
        report = report_partitions(context, lakehouse, result, where)
        metadata = write_metadata(
            result,
            partitioned=context.has_asset_partitions,
            partition_rows=report.rows if report is not None else None,
            input_columns=declared_input_columns(context),
            input_snapshots=self._input_snapshots(context),
        )
        metadata.update(strategy.metadata(scope.text() if scope is not None else None))
        context.add_output_metadata(metadata)
        version = report.snapshot_id if report is not None and report.snapshot_id is not None else result.snapshot_id
        if version is not None:
            _set_data_version(context, dg.DataVersion(str(version)))

    def _output_scope(self, context: dg.OutputContext, data: WriteData, where: str) -> Scope | None:
        """The rows this partitioned output replaces; refuses data with rows outside them (streamed data as it is
        written, before the commit)."""
        if not context.has_asset_partitions or not data_dimensions(context.asset_partitions_def):
            return None
        partitions_def = context.asset_partitions_def
        columns = partition_columns(context.definition_metadata, partitions_def, where)
        schema = pl.from_arrow(data.schema.empty_table()).schema  # type: ignore[union-attr]
        missing = [c for c in columns.values() if c not in schema]
        if missing:
            raise LakehouseIOError(
                f"{where}: partition column {', '.join(map(repr, missing))} is not in the output "
                f"(columns: {', '.join(schema)})"
            )
        scope = build_scope(partitions_def, context.asset_partition_keys, columns, lambda c: polars_kind(schema[c]), where)
        if scope is None:
            return None
        partition = _partition_label(context.asset_partition_key_range)

        def outside(rows: int, total: int) -> LakehouseIOError:
            return LakehouseIOError(
                f"{where}: {rows} of {total} rows lie outside partition "
                f"{partition} ({scope.text()}); a partitioned asset returns only its partition's rows"
            )

        data.add_rule(RowRule(scope.polars(), outside))
        return scope

    # ----- inputs -------------------------------------------------------------------------------------

    def load_input(self, context: dg.InputContext) -> Any:
        """Read the parent's table from the run's branch, pushing down the input's columns, filter and partitions;
        a parent this run (or the run a re-execution loads it from) wrote is read at the commit it wrote."""
        upstream = context.upstream_output
        upstream_metadata = upstream.definition_metadata if upstream is not None else {}
        table = table_name_for(context.asset_key, upstream_metadata, self.default_namespace)
        label = f"{_consumer(context)} (table {table!r})"
        self.prepare_step(context)
        branch = self.store.read_branch_for(context, what=label)
        own = own_write(context, branch) if not is_pinned(branch) else None
        ref = own.ref if own is not None else branch
        where = f"{_consumer(context)} (table {table!r} on branch {branch!r})"
        input_metadata = context.definition_metadata or {}
        columns = _columns(metadata_value(input_metadata, COLUMNS_KEY), where)
        row_filter = metadata_value(input_metadata, FILTER_KEY)
        handler = _handler_for(context, metadata_value(input_metadata, LOAD_AS_KEY), where)
        lakehouse = self.store.get_lakehouse()
        with naming(where):
            try:
                loaded = lakehouse.table(table, ref)
                scope = input_scope(context, loaded, upstream_metadata, where)
                if scope is not None:
                    context.log.info(f"{where}: reading partition rows where {scope.text()}")
                    row_filter = And(parse_filter(row_filter, context=f"{where}: "), scope.iceberg())
                value = handler.read(
                    lakehouse, table, ref, loaded=loaded, columns=columns, filter=row_filter, where=where
                )
            except TableNotFound as exc:
                raise TableNotFound(
                    f"{exc}; materialize {context.asset_key.to_user_string()!r} on branch {branch!r} (or on 'main' "
                    f"before the branch was created), or, for a raw table, write {table!r} first (e.g. `lakehouse import`)"
                ) from None
        snapshot = loaded.current_snapshot()
        self._remember_read(context, table, snapshot.snapshot_id if snapshot is not None else None)
        if own is not None:
            recorded = record_input_provenance(context, own)
            context.log.info(
                f"{where}: read at commit {own.commit_id[:10]}, which this run's materialization of "
                f"{context.asset_key.to_user_string()!r} wrote" + ("" if recorded else " (its input data version "
                "is Dagster's default, the latest materialization: this Dagster version keeps it elsewhere)")
            )
        return value

    def _remember_read(self, context: dg.InputContext, table: str, snapshot_id: int | None) -> None:
        """Note the snapshot of `table` the step read, for its outputs' `lakehouse/input_snapshots`."""
        step = step_context_of(context)
        if step is None:
            return
        key = (step.run_id, step.step.key)
        self._reads.setdefault(key, {})[context.asset_key] = (table, snapshot_id)
        self._reads.move_to_end(key)
        while len(self._reads) > _REMEMBERED_STEPS:  # a long-lived process runs many steps
            self._reads.popitem(last=False)

    def _input_snapshots(self, context: dg.OutputContext) -> dict[str, int | None]:
        """Table -> snapshot id the output's step read of the output's parents (all its reads when unknown)."""
        step = _optional(lambda: context.step_context)
        if step is None:
            return {}
        reads = self._reads.get((step.run_id, step.step.key), {})
        assets_def = step.assets_def
        parents = assets_def.asset_deps.get(context.asset_key) if assets_def is not None else None
        return {table: snapshot for key, (table, snapshot) in reads.items() if parents is None or key in parents}


def _lakehouse_outputs(step: StepExecutionContext) -> list[str]:
    """The assets the step writes through a `LakehouseIOManager` (user strings); asset checks write none."""
    assets_def = step.assets_def
    if assets_def is None:
        return []
    found = []
    outputs = {o.name for o in step.step.step_outputs}
    for name, key in assets_def.keys_by_output_name.items():
        if name not in outputs or not step.op_def.has_output(name):
            continue
        output = step.op_def.output_def_named(name)
        if output.dagster_type.is_nothing or output.dagster_type.typing_type is type(None):
            continue  # `-> None`: the asset writes nothing through the IO manager
        if isinstance(getattr(step.resources, output.io_manager_key, None), LakehouseIOManager):
            found.append(key.to_user_string())
    return found


def _columns(value: Any, where: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(isinstance(c, str) for c in value):
        raise LakehouseIOError(f"{where}: input metadata {COLUMNS_KEY!r} must be a list of column names, not {value!r}")
    return list(value)


def _handler_for(context: dg.InputContext, load_as: Any, where: str) -> FrameHandler:
    """The handler of an input: its metadata `load_as`, else its annotation, else `polars` (`frames.input_handler`)."""
    dagster_type = _optional(lambda: context.dagster_type)
    annotation = None if dagster_type is None or dagster_type.is_any else dagster_type.typing_type
    return input_handler(load_as, annotation, where)


def _consumer(context: dg.InputContext) -> str:
    """'asset <key> input <name> from <parent>' for error messages (less when built outside a run)."""
    step = _optional(lambda: context.step_context)
    assets_def = step.assets_def if step is not None else None
    if assets_def is not None and len(assets_def.keys) == 1:
        owner = f"asset {next(iter(assets_def.keys)).to_user_string()!r} "
    else:
        op_def = _optional(lambda: context.op_def)
        owner = f"op {op_def.name!r} " if op_def is not None else ""
    name = _optional(lambda: context.name)
    label = f"{owner}input {name!r}" if name else f"{owner}input"
    return f"{label} from {context.asset_key.to_user_string()!r}"


def _optional(get: typing.Callable[[], typing.Any]) -> typing.Any:
    """A context property, or None when the context was built without it (e.g. `dg.build_input_context`)."""
    try:
        return get()
    except dg.DagsterInvariantViolationError:
        return None


def _partition_label(key_range: dg.PartitionKeyRange) -> str:
    return str(key_range.start) if key_range.start == key_range.end else f"{key_range.start}...{key_range.end}"


def _set_data_version(context: dg.OutputContext, version: dg.DataVersion) -> None:
    """Make `version` the data version of the materialization Dagster records after `handle_output` returns."""
    try:
        step = context.step_context
    except dg.DagsterInvariantViolationError:
        return
    step.set_data_version(context.asset_key, version)
