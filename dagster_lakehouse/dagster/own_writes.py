"""Inputs a run wrote itself: read at the commit its own materialization recorded, and recorded as read.

Two runs of one job on one branch interleave: run B's write of the upstream table can land between run A's write
of it and A's downstream step. That step reads the upstream table at the commit A's own materialization recorded
(`<branch>@<commit>`, metadata `lakehouse/commit_id`), not at the branch head, and the input's provenance (the
`dagster/input_data_version/<key>` tag Dagster puts on the step's materializations, which Dagster takes from the
asset's latest materialization in the instance: B's) names the materialization that was read. A re-execution
reads what the run it loads the output from (its parent or an earlier ancestor) wrote. The IO manager does this
for its inputs (`own_write`), an isolated model's step for the parents its process reads (`own_write_in_lineage`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from hashlib import sha256

import dagster as dg
from dagster._core.execution.context.system import StepExecutionContext

from dagster_lakehouse.dagster.branch import step_context_of

__all__ = ["OwnWrite", "own_write", "own_write_in_lineage", "record_input_provenance", "record_provenance"]

COMMIT_KEY = "lakehouse/commit_id"
BRANCH_KEY = "lakehouse/branch"
DATA_VERSION_TAG = "dagster/data_version"
_PAGE = 1000
PARTITION_VERSIONS_LIMIT = 100
"""Dagster hashes the versions of at most this many input partitions (`SKIP_PARTITION_DATA_VERSION_DEPENDENCY_
THRESHOLD`); with more it takes the latest materialization's version, and so does `record_input_provenance`."""


@dataclass(frozen=True)
class OwnWrite:
    """The materializations of an input's asset (of the partitions the input reads) that the run recorded; the
    newest one's commit is where the input is read (`ref`)."""

    ref: str
    commit_id: str
    newest: dg.EventLogRecord
    records: tuple[dg.EventLogRecord, ...]

    @property
    def snapshot_id(self) -> int | None:
        """The table snapshot the newest materialization recorded (`lakehouse/snapshot_id`)."""
        value = _metadata(self.newest).get("lakehouse/snapshot_id")
        return int(value.value) if value is not None else None


def own_write(context: dg.InputContext, branch: str) -> OwnWrite | None:
    """The input's asset as the run materialized it on `branch` (or, for a re-execution that loads the output from
    an earlier run of its lineage, as that run did); None when no run of the lineage wrote it through this IO
    manager: the input is then read at the branch head."""
    step = step_context_of(context)
    run_id = _upstream_run_id(context)
    if step is None or run_id is None or not _same_lineage(step, run_id):
        return None
    partitions = set(context.asset_partition_keys) if context.has_asset_partitions else None
    return _own_write(step.instance, context.asset_key, branch, run_id, partitions)


def own_write_in_lineage(step: StepExecutionContext, key: dg.AssetKey, branch: str) -> OwnWrite | None:
    """For a step that reads its parents itself (an isolated model): asset `key` as this run materialized it on
    `branch`, else as the nearest run it re-executes did; None when none of them did."""
    run_id: str | None = step.run_id
    seen: set[str] = set()
    while run_id is not None and run_id not in seen:
        seen.add(run_id)
        found = _own_write(step.instance, key, branch, run_id, None)
        if found is not None:
            return found
        run = step.dagster_run if run_id == step.run_id else step.instance.get_run_by_id(run_id)
        run_id = run.parent_run_id if run is not None else None
    return None


def _own_write(
    instance: dg.DagsterInstance, key: dg.AssetKey, branch: str, run_id: str, partitions: set[str] | None
) -> OwnWrite | None:
    """The materializations of `key` (of `partitions`, when given) that run `run_id` recorded on `branch`."""
    records = tuple(
        record
        for record in _materializations_since(instance, key, run_id)
        if record.run_id == run_id
        and (partitions is None or record.partition_key in partitions)
        and _text(record, BRANCH_KEY) == branch
        and _text(record, COMMIT_KEY)
    )
    if not records:
        return None
    newest = max(records, key=lambda r: r.storage_id)
    commit_id = _text(newest, COMMIT_KEY)
    assert commit_id is not None
    return OwnWrite(f"{branch}@{commit_id}", commit_id, newest, records)


def _materializations_since(instance: dg.DagsterInstance, key: dg.AssetKey, run_id: str) -> list[dg.EventLogRecord]:
    """The materializations of `key` recorded since run `run_id` was created (from the asset index, whose storage ids
    are the ones Dagster's provenance points to; a run's own event log numbers its events apart on SQLite)."""
    run = instance.get_run_record_by_id(run_id)
    if run is None:
        return []
    since = run.create_timestamp.timestamp() - 1
    found: list[dg.EventLogRecord] = []
    cursor = None
    while True:
        page = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, after_timestamp=since), limit=_PAGE, cursor=cursor
        )
        found.extend(page.records)
        if not page.has_more:
            return found
        cursor = page.cursor


def record_input_provenance(context: dg.InputContext, write: OwnWrite) -> bool:
    """Make Dagster record `write` as what input `context` read (`record_provenance` of the input's step)."""
    step = step_context_of(context)
    if step is None:
        return False
    keys = context.asset_partition_keys if context.has_asset_partitions else ()
    return record_provenance(step, context.asset_key, write, keys)


def record_provenance(
    step: StepExecutionContext, key: dg.AssetKey, write: OwnWrite, partition_keys: Sequence[str] = ()
) -> bool:
    """Make Dagster record `write` as what the step read of asset `key` (of `partition_keys`, when it reads
    partitions): the `dagster/input_data_version/<key>` and `dagster/input_event_pointer/<key>` tags of the step's
    materializations (and the target of an unpartitioned check's evaluation) then name the run's own
    materialization, not the asset's latest in the instance.

    Dagster keeps those in a private per-step cache (`StepExecutionContext.input_asset_records`, filled with the
    latest materializations when the step starts); this sets the entry of `key`. False when this Dagster version
    keeps it otherwise: the tags then name the latest materialization, as Dagster does by default.
    """
    try:
        from dagster._core.execution.context.data_version_cache import InputAssetVersionInfo

        cache = step.input_asset_records
        if not isinstance(cache, dict):
            return False
        cache[key] = InputAssetVersionInfo(
            storage_id=write.newest.storage_id,
            event_type=dg.DagsterEventType.ASSET_MATERIALIZATION,
            data_version=_version_read(step, key, partition_keys, write),
            run_id=write.newest.run_id,
            timestamp=write.newest.timestamp,
        )
    except (ImportError, AttributeError, TypeError):
        return False
    return True


def _version_read(
    step: StepExecutionContext, key: dg.AssetKey, keys: Sequence[str], write: OwnWrite
) -> dg.DataVersion | None:
    """The input's data version as Dagster computes it, with the run's own materializations in place of the latest:
    a partitioned input's is the hash of its partitions' versions in partition-key order."""
    newest = _data_version(write.newest)
    if not keys or len(keys) >= PARTITION_VERSIONS_LIMIT:
        return newest
    own: dict[str, str] = {}
    for record in sorted(write.records, key=lambda r: r.storage_id):
        version = _data_version(record)
        if record.partition_key is not None and version is not None:
            own[record.partition_key] = version.value
    others = [k for k in keys if k not in own]
    latest: Mapping[str, Mapping[str, str]] = (
        step.instance.event_log_storage.get_latest_tags_by_partition(
            key, dg.DagsterEventType.ASSET_MATERIALIZATION, [DATA_VERSION_TAG], asset_partitions=others
        )
        if others
        else {}
    )
    versions = {k: tags[DATA_VERSION_TAG] for k, tags in latest.items() if DATA_VERSION_TAG in tags} | own
    digest = sha256("".join(version for _, version in sorted(versions.items())).encode("utf8"))
    return dg.DataVersion(digest.hexdigest())


def _upstream_run_id(context: dg.InputContext) -> str | None:
    """The run whose output the input loads: this run, or for a re-execution the ancestor that produced it; None
    for an asset that is not part of the run (Dagster gives it a placeholder output)."""
    try:
        upstream = context.upstream_output
        return upstream.run_id if upstream is not None and upstream.step_key != "none" else None
    except dg.DagsterInvariantViolationError:
        return None


def _same_lineage(step: StepExecutionContext, run_id: str) -> bool:
    """Whether `run_id` is the step's run or a run of its re-execution lineage (same root run)."""
    if run_id == step.run_id:
        return True
    root = step.dagster_run.root_run_id
    if root is None:
        return False
    if run_id == root:
        return True
    run = step.instance.get_run_by_id(run_id)
    return run is not None and run.root_run_id == root


def _metadata(record: dg.EventLogRecord) -> Mapping[str, dg.MetadataValue]:
    materialization = record.asset_materialization
    return materialization.metadata if materialization is not None else {}


def _text(record: dg.EventLogRecord, key: str) -> str | None:
    value = _metadata(record).get(key)
    return str(value.value) if value is not None else None


def _data_version(record: dg.EventLogRecord) -> dg.DataVersion | None:
    materialization = record.asset_materialization
    version = (materialization.tags or {}).get(DATA_VERSION_TAG) if materialization is not None else None
    return dg.DataVersion(version) if version else None
