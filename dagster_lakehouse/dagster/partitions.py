"""`branch_partitions`: Dagster partitions whose keys are lakehouse branches, so one asset has one partition per branch."""

from __future__ import annotations

import dagster as dg

BRANCH_PARTITIONS_NAME = "lakehouse_branches"

branch_partitions = dg.DynamicPartitionsDefinition(name=BRANCH_PARTITIONS_NAME)
