"""`branch_sync_sensor`: keeps the `lakehouse_branches` dynamic partitions equal to the lakehouse's branches."""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from dagster_lakehouse.dagster.partitions import BRANCH_PARTITIONS_NAME, branch_partitions
from dagster_lakehouse.dagster.resource import LakehouseResource
from dagster_lakehouse.dagster.wap import WAP_PREFIX
from dagster_lakehouse.lakehouse.names import MAIN

__all__ = ["branch_sync_sensor", "build_branch_sync_sensor", "partition_changes"]


def partition_changes(
    branches: Sequence[str],
    partitions: Sequence[str],
    *,
    include_main: bool = True,
    exclude_prefixes: Sequence[str] = (WAP_PREFIX,),
) -> tuple[list[str], list[str]]:
    """Partition keys to add (branches not yet partitions) and to delete (partitions whose branch is gone).

    `main` is added unless `include_main=False`; branches starting with an excluded prefix are never added; a key
    added by hand is deleted only once no branch of that name exists.
    """
    existing = set(partitions)
    wanted = [
        b
        for b in branches
        if (include_main or b != MAIN) and not any(b.startswith(prefix) for prefix in exclude_prefixes)
    ]
    add = sorted(set(wanted) - existing)
    delete = sorted(existing - set(branches))
    return add, delete


def build_branch_sync_sensor(
    *,
    name: str = "branch_sync_sensor",
    include_main: bool = True,
    exclude_prefixes: Sequence[str] = (WAP_PREFIX,),
    minimum_interval_seconds: int = 30,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.STOPPED,
) -> dg.SensorDefinition:
    """A sensor that adds a `lakehouse_branches` partition per new branch and deletes those of deleted branches.

    Needs the resource `lakehouse` (a `LakehouseResource`). `main` is a partition too (unless `include_main=False`),
    so a branch's partition can be compared with production's: a run of partition `main` write-audit-publishes
    (it writes `wap/<run_id>`, merged into `main` by `merge_sensor` once its checks pass) unless the resource has
    `allow_main`. WAP branches are left out (`exclude_prefixes`): they are one run's scratch.
    """
    prefixes = tuple(exclude_prefixes)

    @dg.sensor(
        name=name,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description=(
            f"Keeps the dynamic partitions {BRANCH_PARTITIONS_NAME!r} in step with the lakehouse branches "
            f"({'with' if include_main else 'without'} 'main'; skipping branches starting with "
            f"{', '.join(map(repr, prefixes)) or 'nothing'})."
        ),
    )
    def _branch_sync(
        context: dg.SensorEvaluationContext, lakehouse: LakehouseResource
    ) -> dg.SensorResult | dg.SkipReason:
        branches = lakehouse.get_lakehouse().branches()
        partitions = context.instance.get_dynamic_partitions(BRANCH_PARTITIONS_NAME)
        add, delete = partition_changes(branches, partitions, include_main=include_main, exclude_prefixes=prefixes)
        if not add and not delete:
            return dg.SkipReason(f"partitions {BRANCH_PARTITIONS_NAME!r} already match the {len(branches)} branches")
        requests: list[dg.AddDynamicPartitionsRequest | dg.DeleteDynamicPartitionsRequest] = []
        done: list[str] = []
        if add:
            done.append(f"added branch partitions {', '.join(add)} (new lakehouse branches)")
            requests.append(branch_partitions.build_add_request(add))
        if delete:
            done.append(f"deleted branch partitions {', '.join(delete)} (their branches are gone)")
            requests.append(branch_partitions.build_delete_request(delete))
        summary = "; ".join(done)
        context.log.info(f"{name}: {summary}")
        return dg.SensorResult(dynamic_partitions_requests=requests, skip_reason=summary)

    return _branch_sync


branch_sync_sensor = build_branch_sync_sensor()
"""The default `branch_sync_sensor` (stopped until turned on; every 30 s; with `main`, without `wap/` branches)."""
