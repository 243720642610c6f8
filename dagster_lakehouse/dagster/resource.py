"""`LakehouseResource`: the lakehouse connection for Dagster, and the branch a run reads and writes."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Any

import dagster as dg
from pydantic import Field

from dagster_lakehouse.dagster.branch import (
    RunContext,
    is_wap_run,
    resolve_branch,
    resolve_target_branch,
    step_context_of,
    wap_run_id_of,
)
from dagster_lakehouse.dagster.errors import naming
from dagster_lakehouse.dagster.wap import (
    MERGE_INTO_TAG,
    MERGE_PENDING,
    MERGE_REASON_TAG,
    MERGE_TAG,
    WAP_TAG,
    WAREHOUSE_TAG,
    ensure_wap_branch,
)
from dagster_lakehouse.lakehouse.config import DEFAULT_PATH
from dagster_lakehouse.lakehouse.core import Lakehouse
from dagster_lakehouse.lakehouse.errors import ProtectedBranchError, RefNotFound
from dagster_lakehouse.lakehouse.names import MAIN

__all__ = ["LakehouseResource", "clear_lakehouse_cache"]

_CACHE: dict[tuple[Any, ...], Lakehouse] = {}
_CACHE_LOCK = threading.Lock()
_MARKED_RUNS: OrderedDict[str, None] = OrderedDict()
_REMEMBERED_RUNS = 1024


def clear_lakehouse_cache() -> None:
    """Close and forget every `Lakehouse` opened by resources in this process."""
    with _CACHE_LOCK:
        for lakehouse in _CACHE.values():
            lakehouse.close()
        _CACHE.clear()


class LakehouseResource(dg.ConfigurableResource):
    """Connection to the lakehouse plus the default branch of a run, and whether runs write-audit-publish.

    With neither `catalog_uri` nor `warehouse` set (nor `LAKEHOUSE_CATALOG_URI`/`LAKEHOUSE_WAREHOUSE` in the
    environment) it is the embedded lakehouse under `path`; `LAKEHOUSE_PATH` applies when `path` is the default.
    """

    catalog_uri: str | None = Field(default=None, description="SQL catalog URI, e.g. postgresql+psycopg://...")
    warehouse: str | None = Field(default=None, description="Warehouse URI for data files, e.g. s3://bucket/path")
    path: str = Field(default=DEFAULT_PATH, description="Folder of the embedded lakehouse (SQLite + local files)")
    properties: dict[str, str] = Field(default={}, description="PyIceberg catalog/FileIO properties (s3.endpoint...)")
    branch: str | None = Field(default=None, description="Branch of runs without a branch partition or tag")
    allow_main: bool = Field(default=False, description="Allow runs to write to the protected branch 'main'")
    create_branches: bool = Field(default=True, description="Create a run's missing branch from 'main'")
    wap: bool = Field(
        default=False,
        description="Write-audit-publish: runs write and read their own branch wap/<run_id>, forked from the branch "
        "they would otherwise use; merge_sensor merges it when every asset materialized and every check passed "
        "(run tag lakehouse/wap overrides)",
    )

    def get_lakehouse(self) -> Lakehouse:
        """The `Lakehouse` for this configuration, opened once per process and shared by all steps."""
        path = None if self.path == DEFAULT_PATH else self.path
        key = (
            os.getpid(),
            self.catalog_uri,
            self.warehouse,
            os.path.abspath(path or os.environ.get("LAKEHOUSE_PATH") or DEFAULT_PATH),
            tuple(sorted(self.properties.items())),
        )
        with _CACHE_LOCK:
            lakehouse = _CACHE.get(key)
            if lakehouse is None:
                lakehouse = Lakehouse(self.catalog_uri, self.warehouse, dict(self.properties), path=path)
                _CACHE[key] = lakehouse
            return lakehouse

    def branch_for(self, context: RunContext) -> str:
        """The branch the run `context` belongs to reads and writes: `wap/<run_id>` for a write-audit-publish run,
        else its target (`target_branch_for`). Does not create it: `read_branch_for`/`write_branch_for` do."""
        return resolve_branch(context, self.branch, wap=self.wap)

    def target_branch_for(self, context: RunContext) -> str:
        """The run's target branch: branch partition key, run tag `lakehouse/branch`, this resource's `branch`,
        else `main` (first match wins). A WAP run forks its branch from it and is merged into it."""
        return resolve_target_branch(context, self.branch)

    def is_wap(self, context: RunContext) -> bool:
        """Whether the run is write-audit-publish: run tag `lakehouse/wap`, else this resource's `wap`."""
        return is_wap_run(context, self.wap)

    def ensure_branch(self, branch: str, *, what: str = "this run") -> str:
        """Make sure `branch` exists, creating it from `main` when `create_branches` allows; returns it."""
        lakehouse = self.get_lakehouse()
        if branch == MAIN or lakehouse.has_branch(branch):
            return branch
        if not self.create_branches:
            raise RefNotFound(
                f"{what} uses branch {branch!r}, which does not exist: create it "
                f"(lakehouse.create_branch({branch!r})) or set create_branches=True on the LakehouseResource"
            )
        try:
            with naming(what):
                lakehouse.create_branch(branch, from_ref=MAIN, exist_ok=True)
        except Exception:
            if not lakehouse.has_branch(branch):  # lost a race with another step creating it: fine
                raise
        return branch

    def check_writable(self, branch: str, *, what: str) -> None:
        """Refuse a run's write to `main` unless `allow_main` is set, naming what would have been written."""
        if branch == MAIN and not self.allow_main:
            raise ProtectedBranchError(
                f"{what} would be written to branch 'main', which is protected: run it on a branch "
                f"(a branch partition, run tag 'lakehouse/branch', or LakehouseResource(branch=...)) "
                f"and merge, or write-audit-publish it (run tag 'lakehouse/wap=true': merge_sensor merges it "
                f"into 'main' once every check passed), or set LakehouseResource(allow_main=True)"
            )

    def read_branch_for(self, context: RunContext, *, what: str) -> str:
        """The branch a run reads `what` from: resolved, and created if missing (a WAP branch from its target)."""
        with naming(what):
            target = self.target_branch_for(context)
            wap = self.is_wap(context)
        if wap:
            return self._wap_branch(context, target, what=what)
        return self.ensure_branch(target, what=what)

    def write_branch_for(self, context: RunContext, *, what: str) -> str:
        """The branch a run writes `what` to: resolved, checked against `main` protection, created if missing.

        A WAP run writes its own branch even when the target is `main`: the target changes only by merge.
        """
        with naming(what):
            target = self.target_branch_for(context)
            wap = self.is_wap(context)
        if wap:
            return self._wap_branch(context, target, what=what)
        self.check_writable(target, what=what)
        branch = self.ensure_branch(target, what=what)
        self._mark_for_merge(context, wap=False)
        return branch

    def _wap_branch(self, context: RunContext, target: str, *, what: str) -> str:
        """The run's WAP branch, forked from `target` (created first if missing) on first use."""
        self.ensure_branch(target, what=what)
        with naming(what):
            branch = ensure_wap_branch(self.get_lakehouse(), wap_run_id_of(context), target)
        self._mark_for_merge(context, wap=True)
        return branch

    def _mark_for_merge(self, context: RunContext, *, wap: bool) -> None:
        """Tag a run that asks to be published (WAP or `lakehouse/merge_into`) `lakehouse/merge=pending`, once.

        `merge_sensor` picks up finished runs carrying that tag; `lakehouse/warehouse` names the lakehouse, so a
        sensor on another lakehouse leaves the run alone; a run enabled for WAP by this resource also gets
        `lakehouse/wap=true`, so the sensor and the UI see it as one.
        """
        step = step_context_of(context)
        if step is None:
            return
        tags = step.run_tags
        if not wap and MERGE_INTO_TAG not in tags:
            return
        with _CACHE_LOCK:
            if step.run_id in _MARKED_RUNS:
                return
            _MARKED_RUNS[step.run_id] = None
            while len(_MARKED_RUNS) > _REMEMBERED_RUNS:  # a long-lived code server sees many runs
                _MARKED_RUNS.popitem(last=False)
        new_tags = {
            MERGE_TAG: MERGE_PENDING,
            MERGE_REASON_TAG: "waiting for the merge sensor",
            WAREHOUSE_TAG: self.get_lakehouse().config.warehouse,
        }
        if wap:
            new_tags[WAP_TAG] = "true"
        if any(tags.get(key) != value for key, value in new_tags.items()):
            step.instance.add_run_tags(step.run_id, new_tags)
