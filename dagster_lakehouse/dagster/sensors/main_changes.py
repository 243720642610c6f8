"""What `main_state_sensor` restates: the assets (partitions) finished runs wrote on other branches, and those on the
tables each new commit on `main` changed.

A commit on `main` (a merge or write from the CLI, Python, another process or a Dagster run, a revert, a reset) names
the tables it changed. Every asset whose latest materialization wrote one of them is looked at again: an unpartitioned
asset as a whole, a branch-partitioned one as its partition `main`, a data-partitioned one partition by partition
(each partition Dagster has materialized); `main_state_events` then skips those whose latest materialization already
describes `main`. Several causes of one asset (partition) in a tick collapse into the last one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg

from dagster_lakehouse.dagster.branch import branch_dimension, is_branch_partitions
from dagster_lakehouse.lakehouse.names import MAIN
from dagster_lakehouse.lakehouse.refs import Commit

__all__ = ["Restatement", "commit_restatements", "text_value", "written_elsewhere"]


@dataclass(frozen=True)
class Restatement:
    """One asset (partition) to be shown at its version on `main`: a run wrote it on `branch`, or `commit` (on
    `main`) changed its table."""

    key: dg.AssetKey
    partition: str | None
    table: str
    branch: str
    run_id: str
    commit: Commit | None = None

    @property
    def label(self) -> str:
        """The asset (partition) as notes name it."""
        return self.key.to_user_string() + (f" [{self.partition}]" if self.partition else "")

    @property
    def cause(self) -> str:
        """Why it is restated, for notes and descriptions."""
        if self.commit is not None:
            return f"{self.commit.kind} commit {self.commit.short_id} on main ({self.commit.message!r})"
        return f"run {self.run_id} wrote {self.branch!r}"

    def cause_metadata(self) -> dict[str, dg.MetadataValue]:
        """The cause as metadata entries of the restated materialization."""
        if self.commit is not None:
            return {
                "lakehouse/restated_after_commit": dg.MetadataValue.text(self.commit.id),
                "lakehouse/restated_after": dg.MetadataValue.text(f"{self.commit.kind}: {self.commit.message}"),
            }
        return {
            "lakehouse/restated_after_run": dg.MetadataValue.text(self.run_id),
            "lakehouse/restated_after_branch": dg.MetadataValue.text(self.branch),
        }


def text_value(metadata: dg.RawMetadataMapping | Any, key: str) -> str | None:
    """A metadata entry as text (None when absent)."""
    value = metadata.get(key) if metadata else None
    value = getattr(value, "value", value)
    return None if value is None else str(value)


def written_elsewhere(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[Restatement]:
    """The assets (partitions) `run` materialized on a branch other than `main`, from its materialization events."""
    found: dict[tuple[dg.AssetKey, str | None], Restatement] = {}
    for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        event = entry.dagster_event
        if event is None:
            continue
        materialization = event.event_specific_data.materialization
        branch = text_value(materialization.metadata, "lakehouse/branch")
        table = text_value(materialization.metadata, "dagster/table_name")
        if branch and table and branch != MAIN:
            key = (materialization.asset_key, materialization.partition)
            found[key] = Restatement(*key, table, branch, run.run_id)
    return list(found.values())


def changed_tables(commit: Commit) -> set[str]:
    """The tables a commit changed (its recorded pointers, else the tables it names)."""
    return set(commit.changes or {}) | set(commit.tables)


def commit_restatements(instance: dg.DagsterInstance, graph: Any, commits: Sequence[Commit]) -> list[Restatement]:
    """For each asset (partition) on a table one of `commits` (on `main`, oldest first) changed, a restatement
    naming the last of them."""
    if not commits or graph is None:
        return []
    last_change = {table: commit for commit in commits for table in changed_tables(commit)}
    found = []
    for key in sorted(graph.materializable_asset_keys, key=lambda k: k.to_user_string()):
        table = _table_of(instance, key)
        commit = last_change.get(table) if table else None
        if table is None or commit is None:
            continue
        for partition in _partitions(instance, graph.get(key).partitions_def, key):
            found.append(Restatement(key, partition, table, MAIN, commit.run_id or "", commit))
    return found


def _table_of(instance: dg.DagsterInstance, key: dg.AssetKey) -> str | None:
    """The table an asset's latest materialization wrote (None before its first)."""
    latest = instance.fetch_materializations(key, limit=1).records
    return text_value(latest[0].asset_materialization.metadata, "dagster/table_name") if latest else None


def _partitions(
    instance: dg.DagsterInstance, partitions_def: dg.PartitionsDefinition | None, key: dg.AssetKey
) -> Iterable[str | None]:
    """The asset's partitions that describe `main`: none (the asset), `main` of branch partitions, nothing of a
    branch dimension, each materialized partition of data partitions."""
    if partitions_def is None:
        return [None]
    if is_branch_partitions(partitions_def):
        return [MAIN]
    if branch_dimension(partitions_def) is not None:
        return []
    return sorted(instance.get_materialized_partitions(key))
