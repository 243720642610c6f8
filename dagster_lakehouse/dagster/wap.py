"""Write-audit-publish: a run writes and reads on its own branch `wap/<run_id>`, forked from its target branch.

The target is the branch the run would use without WAP (branch partition > run tag `lakehouse/branch` > resource
`branch` > `main`); it only changes when `merge_sensor` merges the WAP branch into it, so writing to a WAP branch
is allowed even when the target is the protected `main`. The WAP branch records its target as its parent
(`lakehouse.ref(wap_branch_name(run_id)).parent`). Re-executions of a WAP run continue on the branch of the run
they re-execute (named by the root run id), so "re-execute from failure" after a failed audit works.
"""

from __future__ import annotations

from collections.abc import Mapping

from dagster_lakehouse.dagster.errors import BranchResolutionError
from dagster_lakehouse.lakehouse.core import Lakehouse

WAP_TAG = "lakehouse/wap"
WAP_PREFIX = "wap/"
MERGE_INTO_TAG = "lakehouse/merge_into"
MERGE_TAG = "lakehouse/merge"
MERGE_REASON_TAG = "lakehouse/merge_reason"
WAREHOUSE_TAG = "lakehouse/warehouse"
MERGE_PENDING = "pending"
MERGED = "merged"
MERGE_SKIPPED = "skipped"
MERGE_CONFLICT = "conflict"

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off", ""})

__all__ = [
    "MERGE_INTO_TAG",
    "MERGE_REASON_TAG",
    "MERGE_TAG",
    "WAP_PREFIX",
    "WAP_TAG",
    "WAREHOUSE_TAG",
    "ensure_wap_branch",
    "is_wap_branch",
    "wap_branch_name",
    "wap_enabled",
]


def wap_branch_name(run_id: str) -> str:
    """The WAP branch of run `run_id`: `wap/<run_id>` (re-executions use their root run's id)."""
    if not run_id:
        raise BranchResolutionError("a write-audit-publish branch needs a run id; this context belongs to no run")
    return f"{WAP_PREFIX}{run_id}"


def is_wap_branch(name: str) -> bool:
    """Whether `name` is a write-audit-publish branch (`wap/...`)."""
    return name.startswith(WAP_PREFIX)


def wap_enabled(tags: Mapping[str, str], default: bool = False) -> bool:
    """Whether a run with `tags` is write-audit-publish: run tag `lakehouse/wap` if set, else `default` (resource)."""
    value = tags.get(WAP_TAG)
    if value is None:
        return default
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise BranchResolutionError(f"run tag {WAP_TAG!r} must be 'true' or 'false', not {value!r}")


def ensure_wap_branch(lakehouse: Lakehouse, run_id: str, target: str) -> str:
    """Create the run's WAP branch from `target` unless it exists (safe when steps race); returns its name.

    Refuses a WAP branch that was forked from another branch: one WAP run publishes into one target.
    """
    name = wap_branch_name(run_id)
    if not lakehouse.has_branch(name):
        try:
            lakehouse.create_branch(name, from_ref=target, exist_ok=True)
        except Exception:
            if not lakehouse.has_branch(name):
                raise
    parent = lakehouse.ref(name).parent
    if parent != target:
        raise BranchResolutionError(
            f"write-audit-publish branch {name!r} of run {run_id} was forked from {parent!r}, but this step "
            f"targets {target!r}: one WAP run publishes into one branch, so give its assets one target branch"
        )
    return name
