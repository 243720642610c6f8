"""Which partitions choose a step's branch, and runs that mix assets partitioned by branch with others.

A branch partition key chooses the branch of the assets partitioned by branch (and of their checks), not of every
step of the run: an unpartitioned asset in the same run is resolved by the other rules (run tag, resource config,
default). Such a mixed run goes ahead only when both rules name the same branch; otherwise it is refused before any
step writes, since a run reads and writes one lakehouse branch and its tags name that one.
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg
from dagster._core.execution.context.system import StepExecutionContext

from dagster_lakehouse.dagster.errors import BranchResolutionError
from dagster_lakehouse.dagster.partitions import names_branches

__all__ = ["mixed_run_error", "run_assets_by_partitioning", "step_partitions_def"]


def step_partitions_def(step: StepExecutionContext) -> dg.PartitionsDefinition | None:
    """The partitions whose key chooses the step's branch: those of the assets it materializes (a check step: of the
    asset it checks); the job's for an op step, which materializes no asset."""
    assets_def = step.assets_def
    if assets_def is None:
        return step.job_def.partitions_def
    if assets_def.partitions_def is not None:
        return assets_def.partitions_def
    layer = step.job_def.asset_layer
    for key in layer.get_selected_entity_keys_for_node(step.node_handle):
        if isinstance(key, dg.AssetCheckKey) and layer.has(key.asset_key):
            checked = layer.get(key.asset_key).partitions_def
            if checked is not None:
                return checked
    return None


def run_assets_by_partitioning(step: StepExecutionContext) -> tuple[list[dg.AssetKey], list[dg.AssetKey]]:
    """The assets the step's run materializes, split into those partitioned by branch and the others."""
    layer = step.job_def.asset_layer
    by_branch: list[dg.AssetKey] = []
    others: list[dg.AssetKey] = []
    for key in sorted(layer.selected_asset_keys, key=lambda k: k.to_user_string()):
        (by_branch if names_branches(layer.get(key).partitions_def) else others).append(key)
    return by_branch, others


def mixed_run_error(
    by_branch: Sequence[dg.AssetKey], others: Sequence[dg.AssetKey], partition_side: str, other_side: str, fix: str
) -> BranchResolutionError:
    """The error refusing a run whose branch-partitioned assets (on `partition_side`) and other assets (on
    `other_side`) would write different branches; `fix` names the run tags that would make them agree."""
    return BranchResolutionError(
        f"this run mixes assets partitioned by branch ({_names(by_branch)}: {partition_side}) with assets that are "
        f"not ({_names(others)}: {other_side}), and a run reads and writes one lakehouse branch. Materialize the "
        f"branch-partitioned assets in a run of their own (select only them and pick the partition) and the others "
        f"without a partition, or give this run the tag {fix} so that every step uses the same branch"
    )


def _names(keys: Sequence[dg.AssetKey], most: int = 5) -> str:
    shown = ", ".join(key.to_user_string() for key in keys[:most])
    return shown if len(keys) <= most else f"{shown} and {len(keys) - most} more"
