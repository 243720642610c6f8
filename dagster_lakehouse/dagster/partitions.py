"""`branch_partitions`: Dagster partitions whose keys are lakehouse branches, so one asset has one partition per branch;
and reading the branch a partition key names, for the assets partitioned by branch only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dagster as dg

from dagster_lakehouse.dagster.errors import BranchResolutionError

BRANCH_PARTITIONS_NAME = "lakehouse_branches"

branch_partitions = dg.DynamicPartitionsDefinition(name=BRANCH_PARTITIONS_NAME)


def is_branch_partitions(partitions_def: dg.PartitionsDefinition | None) -> bool:
    """Whether `partitions_def` is the branch partitions (a dynamic partitions set named `lakehouse_branches`)."""
    return isinstance(partitions_def, dg.DynamicPartitionsDefinition) and partitions_def.name == BRANCH_PARTITIONS_NAME


def branch_dimension(partitions_def: dg.PartitionsDefinition | None) -> str | None:
    """Name of the branch dimension of a multi-partitions definition, if it has one."""
    if isinstance(partitions_def, dg.MultiPartitionsDefinition):
        for dimension in partitions_def.partitions_defs:
            if is_branch_partitions(dimension.partitions_def):
                return dimension.name
    return None


def names_branches(partitions_def: dg.PartitionsDefinition | None) -> bool:
    """Whether an asset with these partitions is partitioned by branch (alone or as one dimension), so that its
    partition key chooses the branch it reads and writes."""
    return is_branch_partitions(partitions_def) or branch_dimension(partitions_def) is not None


def branch_of_partitions(partitions_def: dg.PartitionsDefinition | None, keys: Sequence[Any]) -> str | None:
    """The branch named by partition `keys` of a branch-partitioned definition; None when it is not one.

    Raises when the keys name several branches: one run writes to one branch.
    """
    if not keys:
        return None
    if is_branch_partitions(partitions_def):
        branches = {str(key) for key in keys}
    else:
        dimension = branch_dimension(partitions_def)
        if dimension is None:
            return None
        assert isinstance(partitions_def, dg.MultiPartitionsDefinition)
        branches = {_as_multi_key(partitions_def, key).keys_by_dimension[dimension] for key in keys}
    if len(branches) > 1:
        raise BranchResolutionError(
            f"one run covers the branch partitions {', '.join(sorted(branches))}: "
            "a run reads and writes one lakehouse branch, so launch one run per branch"
        )
    return branches.pop()


def _as_multi_key(partitions_def: dg.MultiPartitionsDefinition, key: Any) -> dg.MultiPartitionKey:
    return key if isinstance(key, dg.MultiPartitionKey) else partitions_def.get_partition_key_from_str(str(key))
