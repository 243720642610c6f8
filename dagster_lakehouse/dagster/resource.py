"""`LakehouseResource`: the lakehouse connection for Dagster, and the branch a run reads and writes."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Any

import dagster as dg
from pydantic import Field

from dagster_lakehouse.dagster.branch import (
    RunBranch,
    RunContext,
    is_wap_run,
    resolve_run_branch,
    resolve_target_branch,
    run_level_branch,
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
from dagster_lakehouse.lakehouse.errors import PinnedRefError, ProtectedBranchError, RefNotFound
from dagster_lakehouse.lakehouse.names import MAIN
from dagster_lakehouse.lakehouse.refs import Ref
from dagster_lakehouse.lakehouse.refspec import is_pinned

__all__ = ["LakehouseResource", "clear_lakehouse_cache"]

_CACHE: dict[tuple[Any, ...], Lakehouse] = {}
_CACHE_LOCK = threading.Lock()
_MARKED_RUNS: OrderedDict[tuple[str, RunBranch], None] = OrderedDict()
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
    branch: str | None = Field(
        default=None,
        description="Lakehouse branch this run reads and writes, unless a branch partition or the run tag "
        "lakehouse/branch names one; created from main on first use. Empty: main (read-only unless allow_main). "
        "A past commit (main@<commit>, dev~3) makes the run read the lake as at that commit, writing nothing",
    )
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

    def run_branch(self, context: RunContext, *, what: str = "this run") -> RunBranch:
        """Where the step of `context` reads and writes (resolved once per step): branch, target, WAP or not."""
        with naming(what):
            return resolve_run_branch(context, self.branch, wap=self.wap, allow_main=self.allow_main, pin=self.pin)

    def pin(self, spec: str) -> tuple[str, str | None]:
        """`(spec, commit id)`: a spec naming a past commit (`main@<prefix>`, `dev~3`) as `<ref>@<full commit id>`,
        so every step of a run reads the same commit; a branch's or tag's name unchanged, with `None`. A spec naming
        no commit raises `CommitNotFound` naming it."""
        if not is_pinned(spec):
            return spec, None
        view = self.get_lakehouse().view(spec)
        if view.commit is None:  # a ref whose name merely looks like a spec
            return spec, None
        return f"{view.ref.name}@{view.commit.id}", view.commit.id

    def branch_for(self, context: RunContext) -> str:
        """The branch the run `context` belongs to reads and writes: `wap/<run_id>` for a write-audit-publish run,
        else its target (`target_branch_for`). Does not create it: `read_branch_for`/`write_branch_for` do."""
        return self.run_branch(context).branch

    def target_branch_for(self, context: RunContext) -> str:
        """The branch the run asks for: branch partition key, run tag `lakehouse/branch`, this resource's `branch`,
        else `main` (first match wins). A WAP run forks its branch from it and is merged into it."""
        return resolve_target_branch(context, self.branch)

    def is_wap(self, context: RunContext) -> bool:
        """Whether the run is write-audit-publish: run tag `lakehouse/wap`, else this resource's `wap`."""
        return is_wap_run(context, self.wap)

    def ensure_branch(self, branch: str, *, what: str = "this run") -> str:
        """Make sure `branch` exists (a tag is fine to read), creating it from `main` when `create_branches`
        allows; returns it."""
        lakehouse = self.get_lakehouse()
        if branch == MAIN or self._existing_ref(branch) is not None:
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

    def _existing_ref(self, name: str) -> Ref | None:
        try:
            return self.get_lakehouse().ref(name)
        except RefNotFound:
            return None

    def check_writable(self, branch: str, *, what: str) -> None:
        """Refuse a run's write to `main` unless `allow_main` is set, and any write to a tag, naming what would have
        been written; called before a model runs, so nothing is computed for a write that cannot happen."""
        ref = self._existing_ref(branch) if branch != MAIN else None
        if ref is not None and ref.is_tag:
            raise ProtectedBranchError(
                f"{what} would be written to {branch!r}, which is a tag (tags are immutable): run it on a branch "
                f"(a branch partition, run tag 'lakehouse/branch', or the resource's 'branch' in run config)"
            )
        if branch == MAIN and not self.allow_main:
            raise ProtectedBranchError(
                f"{what} would be written to branch 'main', which is protected: run it on a branch "
                f"(a branch partition, run tag 'lakehouse/branch', or the resource's 'branch', e.g. run config "
                f"{{'resources': {{'lakehouse': {{'config': {{'branch': 'dev'}}}}}}}}) and merge, or "
                f"write-audit-publish it (run tag 'lakehouse/wap=true': merge_sensor merges it into 'main' once "
                f"every check passed), or set LakehouseResource(allow_main=True)"
            )

    def prepare(self, context: RunContext, *, what: str, writes: bool) -> RunBranch:
        """Resolve the step's branch, refuse it if `writes` and it is not writable, create it if missing (a WAP
        branch is forked from its target) and tag the run with it; returns the `RunBranch`."""
        resolved = self.run_branch(context, what=what)
        if resolved.read_only:
            if writes:
                raise PinnedRefError(
                    f"{what} would be written to {resolved.branch!r}, a past commit ({resolved.chosen_by} names it), "
                    f"which is read-only: run it on a branch, e.g. one made from that commit with "
                    f"lakehouse.create_branch('fix', from_ref={resolved.branch!r})"
                )
        elif resolved.wap:
            self.ensure_branch(resolved.target, what=what)
            with naming(what):
                ensure_wap_branch(self.get_lakehouse(), wap_run_id_of(context), resolved.target)
        else:
            if writes:
                self.check_writable(resolved.branch, what=what)
            self.ensure_branch(resolved.branch, what=what)
        step = step_context_of(context)
        if step is not None:
            self._tag(step.instance, step.run_id, self.run_branch(step, what=what), step.log)
        return resolved

    def read_branch_for(self, context: RunContext, *, what: str) -> str:
        """The branch a run reads `what` from: resolved, and created if missing (a WAP branch from its target)."""
        return self.prepare(context, what=what, writes=False).branch

    def write_branch_for(self, context: RunContext, *, what: str) -> str:
        """The branch a run writes `what` to: resolved, checked against `main` protection, created if missing.

        A WAP run writes its own branch even when the target is `main`: the target changes only by merge.
        """
        return self.prepare(context, what=what, writes=True).branch

    def tag_run_at_start(self, run: dg.DagsterRun, instance: dg.DagsterInstance, log: Any = None) -> None:
        """Tag an unpartitioned run with its branch before its first step runs (partitioned runs are tagged by their
        first step, whose branch partition may choose the branch). A past commit that does not resolve is left to
        the steps, which fail naming it."""
        try:
            with naming("this run"):
                resolved = run_level_branch(run, self.branch, self.wap, self.pin)
        except RefNotFound:
            return
        if resolved is not None:
            self._tag(instance, run.run_id, resolved, log)

    def _tag(self, instance: dg.DagsterInstance, run_id: str, resolved: RunBranch, log: Any) -> None:
        """Tag the run with its branch and target (once per run and branch), and a run that asks to be published
        (WAP or `lakehouse/merge_into`) `lakehouse/merge=pending`.

        `merge_sensor` picks up finished runs carrying that tag; `lakehouse/warehouse` names the lakehouse, so a
        sensor on another lakehouse leaves the run alone; a run enabled for WAP by this resource also gets
        `lakehouse/wap=true`, so the sensor and the UI see it as one.
        """
        with _CACHE_LOCK:
            if (run_id, resolved) in _MARKED_RUNS:
                return
            _MARKED_RUNS[(run_id, resolved)] = None
            while len(_MARKED_RUNS) > _REMEMBERED_RUNS:  # a long-lived code server sees many runs
                _MARKED_RUNS.popitem(last=False)
        run = instance.get_run_by_id(run_id)
        tags = run.tags if run is not None else {}
        new_tags = resolved.tags()
        if resolved.wap or MERGE_INTO_TAG in tags:
            new_tags[MERGE_TAG] = MERGE_PENDING
            new_tags[MERGE_REASON_TAG] = "waiting for the merge sensor"
            new_tags[WAREHOUSE_TAG] = self.get_lakehouse().config.warehouse
        if resolved.wap:
            new_tags[WAP_TAG] = "true"
        if any(tags.get(key) != value for key, value in new_tags.items()):
            instance.add_run_tags(run_id, new_tags)
            if log is not None:
                log.info(f"this run reads and writes {resolved.describe()}")
