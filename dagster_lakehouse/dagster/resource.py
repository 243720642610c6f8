"""`LakehouseResource`: the lakehouse connection for Dagster, and the branch a run reads and writes."""

from __future__ import annotations

import os
import threading
from typing import Any

import dagster as dg
from pydantic import Field

from dagster_lakehouse.dagster.branch import RunContext, resolve_branch
from dagster_lakehouse.dagster.errors import naming
from dagster_lakehouse.lakehouse.config import DEFAULT_PATH
from dagster_lakehouse.lakehouse.core import Lakehouse
from dagster_lakehouse.lakehouse.errors import ProtectedBranchError, RefNotFound
from dagster_lakehouse.lakehouse.names import MAIN

__all__ = ["LakehouseResource", "clear_lakehouse_cache"]

_CACHE: dict[tuple[Any, ...], Lakehouse] = {}
_CACHE_LOCK = threading.Lock()


def clear_lakehouse_cache() -> None:
    """Close and forget every `Lakehouse` opened by resources in this process."""
    with _CACHE_LOCK:
        for lakehouse in _CACHE.values():
            lakehouse.close()
        _CACHE.clear()


class LakehouseResource(dg.ConfigurableResource):
    """Connection to the lakehouse plus the default branch of a run.

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
        """The branch of the run `context` belongs to: branch partition key, run tag `lakehouse/branch`,
        this resource's `branch`, else `main` (first match wins)."""
        return resolve_branch(context, self.branch)

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
                f"and merge, or set LakehouseResource(allow_main=True)"
            )

    def read_branch_for(self, context: RunContext, *, what: str) -> str:
        """The branch a run reads `what` from: resolved, and created from `main` if missing."""
        with naming(what):
            branch = self.branch_for(context)
        return self.ensure_branch(branch, what=what)

    def write_branch_for(self, context: RunContext, *, what: str) -> str:
        """The branch a run writes `what` to: resolved, checked against `main` protection, created if missing."""
        with naming(what):
            branch = self.branch_for(context)
        self.check_writable(branch, what=what)
        return self.ensure_branch(branch, what=what)
