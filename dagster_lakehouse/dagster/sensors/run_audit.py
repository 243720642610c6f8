"""What a finished run (with the runs it re-executes) planned, materialized and how its asset checks ended: the audit
`merge_sensor` judges before it publishes a run, and the labels its messages use."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import dagster as dg

__all__ = ["AssetPartition", "RunAudit", "audit_run", "label", "lineage"]

_EVENT_TYPES = {
    dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
    dg.DagsterEventType.ASSET_MATERIALIZATION,
    dg.DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED,
    dg.DagsterEventType.ASSET_CHECK_EVALUATION,
}

AssetPartition = tuple[dg.AssetKey, str | None]


@dataclass
class RunAudit:
    """What a run (with the runs it re-executes) planned, materialized and how its asset checks ended."""

    status: dg.DagsterRunStatus
    planned: set[AssetPartition] = field(default_factory=set)
    materializations: dict[AssetPartition, dg.AssetMaterialization] = field(default_factory=dict)
    planned_checks: set[dg.AssetCheckKey] = field(default_factory=set)
    evaluations: dict[tuple[dg.AssetCheckKey, str | None], Any] = field(default_factory=dict)

    def problems(self) -> list[str]:
        """Why the run must not be published; empty when it may."""
        found: list[str] = []
        if self.status != dg.DagsterRunStatus.SUCCESS:
            found.append(f"the run ended {self.status.value}")
        materialized_keys = {key for key, _ in self.materializations}
        missing = sorted(
            label(key, partition)
            for key, partition in self.planned
            if (key, partition) not in self.materializations and not (partition is None and key in materialized_keys)
        )
        if missing:
            found.append(f"planned but not materialized: {', '.join(missing)}")
        failed = sorted(
            f"{_checklabel(check_key, partition)} ({evaluation.severity.value}"
            f"{', blocking' if evaluation.blocking else ', non-blocking'})"
            for (check_key, partition), evaluation in self.evaluations.items()
            if not evaluation.passed
        )
        if failed:
            found.append(f"failed asset checks: {', '.join(failed)}")
        evaluated = {check_key for check_key, _ in self.evaluations}
        not_run = sorted(_checklabel(k, None) for k in self.planned_checks - evaluated)
        if not_run:
            found.append(f"asset checks that did not run: {', '.join(not_run)}")
        return found

    def tables(self) -> dict[AssetPartition, str]:
        """The lakehouse table each materialization wrote (from the IO manager's `dagster/table_name`)."""
        tables = {}
        for asset_partition, materialization in self.materializations.items():
            value = materialization.metadata.get("dagster/table_name")
            if value is not None:
                tables[asset_partition] = str(getattr(value, "value", value))
        return tables

    def branches(self) -> set[str]:
        """The lakehouse branches the materializations were written to (metadata `lakehouse/branch`)."""
        branches = set()
        for materialization in self.materializations.values():
            value = materialization.metadata.get("lakehouse/branch")
            if value is not None:
                branches.add(str(getattr(value, "value", value)))
        return branches


def lineage(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[dg.DagsterRun]:
    """The run and the runs it re-executes, oldest first."""
    chain = [run]
    seen = {run.run_id}
    while chain[-1].parent_run_id and chain[-1].parent_run_id not in seen:
        parent = instance.get_run_by_id(chain[-1].parent_run_id)
        if parent is None:
            break
        chain.append(parent)
        seen.add(parent.run_id)
    return list(reversed(chain))


def audit_run(instance: dg.DagsterInstance, run: dg.DagsterRun) -> RunAudit:
    """Collect the planned and done materializations and check evaluations of `run` and the runs it re-executes."""
    audit = RunAudit(status=run.status)
    for past in lineage(instance, run):
        for entry in instance.all_logs(past.run_id, of_type=_EVENT_TYPES):
            event = entry.dagster_event
            if event is None:
                continue
            data = event.event_specific_data
            if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED:
                audit.planned.update((data.asset_key, p) for p in _partitions(data.partition, data.partitions_subset))
            elif event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
                materialization = data.materialization
                audit.materializations[(materialization.asset_key, materialization.partition)] = materialization
            elif event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED:
                audit.planned_checks.add(data.asset_check_key)
            else:
                audit.evaluations[(data.asset_check_key, data.partition)] = data
    return audit


def _partitions(partition: str | None, subset: Any) -> list[str | None]:
    if partition is not None:
        return [partition]
    if subset is not None:
        try:
            return list(subset.get_partition_keys()) or [None]
        except Exception:
            return [None]
    return [None]


def label(key: dg.AssetKey, partition: str | None) -> str:
    return key.to_user_string() + (f" [{partition}]" if partition is not None else "")


def _checklabel(check_key: dg.AssetCheckKey, partition: str | None) -> str:
    return f"{check_key.asset_key.to_user_string()}:{check_key.name}" + (f" [{partition}]" if partition else "")
