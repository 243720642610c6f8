"""Which lakehouse branch a Dagster run reads and writes, resolved once per step into one `RunBranch`.

The branch asked for, first match wins: the run's partition key for a step whose assets are partitioned by branch
(`branch_partitions`, alone or as a dimension; not for the run's other steps), the run tag `lakehouse/branch`, the
resource's `branch` (set in code, by `EnvVar`, or in run config: launchpad, `--config-json`, a schedule's run config),
else `main`. A write-audit-publish run (run tag `lakehouse/wap=true` or `LakehouseResource(wap=True)`) reads and
writes its own branch `wap/<run_id>` instead, forked from the branch asked for (its target); see
`dagster_lakehouse.dagster.wap`. A run of branch partition `main` is write-audit-publish unless the resource has
`allow_main` (or the run tag `lakehouse/wap` says otherwise). The run is tagged with what was resolved (`lakehouse/branch`: the branch it reads
and writes, `lakehouse/target`: where its work is published), so the tag of a WAP run names its WAP branch and later
steps find the target in `lakehouse/target`.

The branch asked for may name a past commit (`main@<commit id or prefix>`, `dev~3`): the run then reads the lake as
it was at that commit, read-only, so a past run's inputs can be reproduced. The spec is pinned to the full commit id
when the run starts (or at its first step) and the run is tagged with the pinned spec, so every step reads the same
commit while the branch moves on; a step that would write to it fails before it computes.

A run mixing assets partitioned by branch with other assets goes ahead only when both rules name the same branch
(`dagster_lakehouse.dagster.step_partitions`), so its tags name the one branch all its steps read and write.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import dagster as dg
from dagster._core.execution.context.system import StepExecutionContext

from dagster_lakehouse.dagster.partitions import (
    branch_dimension,
    branch_of_partitions,
    is_branch_partitions,
    names_branches,
)
from dagster_lakehouse.dagster.step_partitions import mixed_run_error, run_assets_by_partitioning, step_partitions_def
from dagster_lakehouse.dagster.wap import MERGE_INTO_TAG, WAP_TAG, wap_branch_name, wap_enabled
from dagster_lakehouse.lakehouse.names import MAIN

BRANCH_TAG = "lakehouse/branch"
TARGET_TAG = "lakehouse/target"

Pin = Callable[[str], tuple[str, str | None]]
"""Turns a branch asked for into `(spec, commit id)`: a past-commit spec pinned to its full commit id, a branch's
name unchanged with `None`."""

RunContext = (
    dg.OutputContext
    | dg.InputContext
    | dg.AssetExecutionContext
    | dg.OpExecutionContext
    | dg.AssetCheckExecutionContext
    | StepExecutionContext
)

__all__ = [
    "BRANCH_TAG",
    "TARGET_TAG",
    "Pin",
    "RunBranch",
    "RunContext",
    "branch_dimension",
    "is_branch_partitions",
    "is_wap_run",
    "names_branches",
    "resolve_branch",
    "resolve_run_branch",
    "resolve_target_branch",
    "wap_run_id_of",
]


@dataclass(frozen=True)
class RunBranch:
    """Where one step of a run reads and writes, and why: the one value the IO manager, resource and sensors share.

    `branch` is read and written; `target` is where the run's work goes (a WAP run's fork parent, a
    `lakehouse/merge_into` run's merge target, else `branch` itself); `chosen_by` names the rule that picked the
    branch asked for (`branch partition`, `run tag`, `resource config`, `default`). `commit` is set when the branch
    asked for names a past commit: `branch` is then `<ref>@<full commit id>`, read and never written.
    """

    branch: str
    target: str
    wap: bool
    chosen_by: str
    commit: str | None = None

    @property
    def read_only(self) -> bool:
        """Whether the run reads a past commit (and so writes nothing)."""
        return self.commit is not None

    def tags(self) -> dict[str, str]:
        """The run tags that say where the run reads and writes (filterable on the Runs page)."""
        return {BRANCH_TAG: self.branch, TARGET_TAG: self.target}

    def describe(self) -> str:
        """One line for run logs: the branch, its target and the rule that chose it."""
        if self.commit is not None:
            return (
                f"lakehouse ref {self.branch!r} (read-only: the lake as at commit {self.commit[:10]}; "
                f"chosen by {self.chosen_by})"
            )
        mode = f"write-audit-publish into {self.target!r}" if self.wap else (
            f"merged into {self.target!r} when done" if self.target != self.branch else "written directly"
        )
        return f"lakehouse branch {self.branch!r} ({mode}; chosen by {self.chosen_by})"


def step_context_of(context: RunContext | StepExecutionContext) -> StepExecutionContext | None:
    """The step execution context behind an IO manager or asset/op execution context, if there is one."""
    if isinstance(context, StepExecutionContext):
        return context
    if isinstance(context, (dg.OutputContext, dg.InputContext)):
        try:
            return context.step_context
        except dg.DagsterInvariantViolationError:
            return None
    op_context = getattr(context, "op_execution_context", context)
    getter = getattr(op_context, "get_step_execution_context", None)
    return getter() if callable(getter) else None


def _step_branch(step: StepExecutionContext | None) -> str | None:
    """Branch from the run's partition key, for a step whose assets (or checked asset) are partitioned by branch: the
    key of a run that also materializes unpartitioned assets does not choose theirs."""
    if step is None or not step.has_partitions:
        return None
    key_range = step.partition_key_range
    return branch_of_partitions(step_partitions_def(step), [key_range.start, key_range.end])


def _output_branch(context: dg.OutputContext) -> str | None:
    if not context.has_asset_partitions:
        return None
    key_range = context.asset_partition_key_range
    return branch_of_partitions(context.asset_partitions_def, [key_range.start, key_range.end])


def _input_branch(context: dg.InputContext) -> str | None:
    if not context.has_asset_partitions:
        return None
    key_range = context.asset_partition_key_range
    return branch_of_partitions(context.asset_partitions_def, [key_range.start, key_range.end])


def _mapped_input_branch(context: dg.InputContext, step: StepExecutionContext | None) -> str | None:
    """The branch partition an input reads from a parent partitioned by branch, for a step without a branch partition:
    only through an explicit `partition_mapping` (without one the step reads its parent's table on its own branch,
    which is that branch's partition); outside a step, the input's partitions."""
    if step is not None:
        assets_def = step.assets_def
        if assets_def is None or not context.has_asset_key:
            return None
        if assets_def.get_partition_mapping(context.asset_key) is None:
            return None
    return _input_branch(context)


def partition_branch(context: RunContext) -> str | None:
    """Rule 1: the branch named by the partition key of a branch-partitioned asset of this step, if any."""
    step = step_context_of(context)
    if isinstance(context, dg.OutputContext):
        return _output_branch(context) or _step_branch(step)
    if isinstance(context, dg.InputContext):
        return _step_branch(step) or _mapped_input_branch(context, step)
    return _step_branch(step)


def run_tags_of(context: RunContext) -> Mapping[str, str]:
    """The tags of the run the context belongs to (empty outside a run)."""
    step = step_context_of(context)
    if step is not None:
        return step.run_tags
    tags = getattr(context, "run_tags", None)
    return tags if isinstance(tags, Mapping) else {}


def resolve_target_branch(context: RunContext, default: str | None = None) -> str:
    """The branch the run asks for, first match wins: branch partition key, run tag `lakehouse/branch`, `default`,
    `main`. A WAP run forks its branch from this one and publishes into it."""
    tags = run_tags_of(context)
    asked, _ = _asked_branch(context, tags, default)
    if is_wap_run(context) and asked == wap_branch_name(wap_run_id_of(context)):
        return tags.get(TARGET_TAG) or MAIN
    return asked


def is_wap_run(context: RunContext, default: bool = False) -> bool:
    """Whether the run writes-audits-publishes: run tag `lakehouse/wap` (a re-execution without it inherits the
    tag of the run it re-executes), else `default` (the resource's `wap`)."""
    tags = run_tags_of(context)
    if WAP_TAG not in tags:
        inherited = _inherited_wap_tag(step_context_of(context))
        if inherited is not None:
            tags = {**tags, WAP_TAG: inherited}
    return wap_enabled(tags, default)


_INHERITED_WAP: OrderedDict[str, str | None] = OrderedDict()
_REMEMBERED_RUNS = 1024


def _inherited_wap_tag(step: StepExecutionContext | None) -> str | None:
    """Tag `lakehouse/wap` of the nearest run this re-execution descends from that has one (cached per run)."""
    if step is None or not step.dagster_run.parent_run_id:
        return None
    run_id = step.run_id
    if run_id not in _INHERITED_WAP:
        value = None
        parent_id: str | None = step.dagster_run.parent_run_id
        seen = {run_id}
        while parent_id and parent_id not in seen:
            seen.add(parent_id)
            parent = step.instance.get_run_by_id(parent_id)
            if parent is None:
                break
            if WAP_TAG in parent.tags:
                value = parent.tags[WAP_TAG]
                break
            parent_id = parent.parent_run_id
        _INHERITED_WAP[run_id] = value
        while len(_INHERITED_WAP) > _REMEMBERED_RUNS:  # a long-lived code server sees many runs
            _INHERITED_WAP.popitem(last=False)
    return _INHERITED_WAP[run_id]


def wap_run_id_of(context: RunContext) -> str:
    """The run id naming the run's WAP branch: the root run's id for a re-execution, else the run's own."""
    step = step_context_of(context)
    if step is not None:
        return step.dagster_run.root_run_id or step.run_id
    try:
        return str(getattr(context, "run_id", "") or "")
    except dg.DagsterInvariantViolationError:
        return ""


def resolve_branch(context: RunContext, default: str | None = None, *, wap: bool = False) -> str:
    """The branch the run reads and writes: `wap/<run_id>` for a write-audit-publish run (run tag `lakehouse/wap`,
    else `wap`), otherwise its target branch (`resolve_target_branch`)."""
    return resolve_run_branch(context, default, wap=wap).branch


_RESOLVED: OrderedDict[tuple[Any, ...], RunBranch] = OrderedDict()
_REMEMBERED_STEPS = 4096


def resolve_run_branch(
    context: RunContext,
    default: str | None = None,
    *,
    wap: bool = False,
    allow_main: bool = False,
    pin: Pin | None = None,
) -> RunBranch:
    """The step's `RunBranch`, resolved once per step (and per resource configuration) from the step's own
    partition and remembered; only an input read through an explicit partition mapping from one branch partition of
    its parent by a step without one resolves to that input's branch. A run that mixes assets partitioned by branch
    with other assets is refused here, in every step, unless both resolve to the same branch.

    `default` is the resource's `branch`, `wap` its `wap`, `allow_main` its `allow_main`: see the module docstring.
    `pin` resolves a past-commit spec to its commit (the resource's lakehouse does); without it a spec stays as given.
    """
    step = step_context_of(context)
    if step is None:
        return _resolve(context, default, wap, allow_main, pin)
    key = (step.run_id, step.step.key, default, wap, allow_main)
    resolved = _RESOLVED.get(key)
    if resolved is None:
        _refuse_mixed_run(step, default, wap, allow_main, pin)
        resolved = _resolve(step, default, wap, allow_main, pin)
        _RESOLVED[key] = resolved
        while len(_RESOLVED) > _REMEMBERED_STEPS:  # a long-lived code server sees many steps
            _RESOLVED.popitem(last=False)
    if isinstance(context, dg.InputContext) and _step_branch(step) is None:
        if _mapped_input_branch(context, step) is not None:
            # a step without a branch partition mapped to one branch partition of its parent: that input's branch
            return _resolve(context, default, wap, allow_main, pin)
    return resolved


def _resolve(
    context: RunContext, default: str | None, wap_default: bool, allow_main: bool, pin: Pin | None
) -> RunBranch:
    tags = run_tags_of(context)
    asked, chosen_by = _asked_branch(context, tags, default)
    return _resolve_asked(context, tags, asked, chosen_by, wap_default, allow_main, pin)


def _resolve_asked(
    context: RunContext,
    tags: Mapping[str, str],
    asked: str,
    chosen_by: str,
    wap_default: bool,
    allow_main: bool,
    pin: Pin | None,
) -> RunBranch:
    """The `RunBranch` of the branch `asked` for (chosen by rule `chosen_by`): pinned, write-audit-publish or plain."""
    pinned = _pinned(asked, chosen_by, pin)
    if pinned is not None:
        return pinned
    wap = is_wap_run(context, wap_default)
    if asked == MAIN and chosen_by == "branch partition" and not allow_main and WAP_TAG not in tags:
        wap = True  # partition `main` is published by audit: its run writes its own branch, merged once checks pass
    return run_branch_from(asked, chosen_by, tags, wap=wap, run_id=wap_run_id_of(context))


def _refuse_mixed_run(
    step: StepExecutionContext, default: str | None, wap_default: bool, allow_main: bool, pin: Pin | None
) -> None:
    """Refuse a run with a branch partition key whose branch-partitioned assets and other assets would read and write
    different branches (the key chooses only the former's); called in every step, so none of them writes."""
    if not step.has_partitions:
        return
    by_branch, others = run_assets_by_partitioning(step)
    if not by_branch or not others:
        return
    key_range = step.partition_key_range
    partitions_def = step.job_def.asset_layer.get(by_branch[0]).partitions_def
    partition = branch_of_partitions(partitions_def, [key_range.start, key_range.end])
    if partition is None:
        return
    tags = run_tags_of(step)
    by_partition = _resolve_asked(step, tags, partition, "branch partition", wap_default, allow_main, pin)
    asked, chosen_by = _asked_without_partition(tags, default)
    other = _resolve_asked(step, tags, asked, chosen_by, wap_default, allow_main, pin)
    if (by_partition.branch, by_partition.target, by_partition.wap) != (other.branch, other.target, other.wap):
        fix = f"'{BRANCH_TAG}={partition}'" + (f" and '{WAP_TAG}=true'" if by_partition.wap else "")
        raise mixed_run_error(by_branch, others, by_partition.describe(), other.describe(), fix)


def run_branch_from(asked: str, chosen_by: str, tags: Mapping[str, str], *, wap: bool, run_id: str) -> RunBranch:
    """The `RunBranch` of a run that asks for branch `asked`: its WAP branch when `wap` (named by `run_id`, the root
    run's id), whose target is `asked` unless `asked` is that WAP branch already (then the `lakehouse/target` tag)."""
    if wap:
        own = wap_branch_name(run_id)
        target = (tags.get(TARGET_TAG) or MAIN) if asked == own else asked
        return RunBranch(own, target, True, chosen_by)
    merge_into = (tags.get(MERGE_INTO_TAG) or "").strip()
    return RunBranch(asked, merge_into or asked, False, chosen_by)


def _pinned(asked: str, chosen_by: str, pin: Pin | None) -> RunBranch | None:
    """The read-only `RunBranch` of a branch asked for that names a past commit; None for a branch's name."""
    if pin is None:
        return None
    spec, commit = pin(asked)
    return None if commit is None else RunBranch(spec, spec, False, chosen_by, commit)


def run_level_branch(
    run: dg.DagsterRun, default: str | None, wap_default: bool, pin: Pin | None = None
) -> RunBranch | None:
    """The `RunBranch` of an unpartitioned run, known from its tags and config before any step runs; None for a
    partitioned run, whose steps may each be resolved by their branch partition."""
    tags = run.tags
    if any(key.startswith(("dagster/partition", "dagster/asset_partition_range")) for key in tags):
        return None
    asked, chosen_by = _asked_without_partition(tags, default)
    pinned = _pinned(asked, chosen_by, pin)
    if pinned is not None:
        return pinned
    return run_branch_from(asked, chosen_by, tags, wap=wap_enabled(tags, wap_default), run_id=run.root_run_id or run.run_id)


def _asked_branch(context: RunContext, tags: Mapping[str, str], default: str | None) -> tuple[str, str]:
    partition = partition_branch(context)
    if partition:
        return partition, "branch partition"
    return _asked_without_partition(tags, default)


def _asked_without_partition(tags: Mapping[str, str], default: str | None) -> tuple[str, str]:
    if tags.get(BRANCH_TAG):
        return tags[BRANCH_TAG], f"run tag {BRANCH_TAG!r}"
    if default:
        return default, "resource config 'branch'"
    return MAIN, "default"
