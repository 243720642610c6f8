"""The history half of `Lakehouse` (mixed into it): past states by ref spec, the log, diffs, revert and reset."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from dagster_lakehouse.lakehouse import corruption, expiry, refspec
from dagster_lakehouse.lakehouse import refs as refstore
from dagster_lakehouse.lakehouse.catalog import PinnedCatalog, ReadOnlyCatalog
from dagster_lakehouse.lakehouse.commits import load_at
from dagster_lakehouse.lakehouse.config import LakehouseConfig
from dagster_lakehouse.lakehouse.errors import CommitNotFound
from dagster_lakehouse.lakehouse.merge import TableDiff, diff_states
from dagster_lakehouse.lakehouse.merging import change_counts
from dagster_lakehouse.lakehouse.names import MAIN
from dagster_lakehouse.lakehouse.refs import Commit
from dagster_lakehouse.lakehouse.refspec import RefView

if TYPE_CHECKING:
    from pyiceberg.table import Table

    from dagster_lakehouse.lakehouse.undo import UndoResult


class Timeline:
    """Reads of past states (`main@<commit>`, `dev~2`), `log`, `diff`, `revert` and `reset` (mixed into `Lakehouse`)."""

    engine: Engine
    config: LakehouseConfig
    _lock: threading.Lock
    _schema_version: str
    _catalog_properties: dict[str, str]

    if TYPE_CHECKING:

        def _get_ref(self, conn: Any, name: str) -> refstore.Ref: ...
        def _state(self, conn: Any, ref: str) -> dict[str, str]: ...
        def _check_storable(self, name: Any) -> None: ...
        def _read_catalog(self, ref: str) -> ReadOnlyCatalog: ...
        def _retrying(self, what: str, fn: Any) -> Any: ...

    def _view(self, conn: Any, spec: str) -> RefView:
        """What `spec` names: a ref as it is now, or (`main@<commit>`, `dev~3`) a past commit of one and its pointers."""
        self._check_storable(spec)
        if not ("@" in spec or "~" in spec) or refstore.get_ref(conn, spec) is not None:
            return RefView(spec, self._get_ref(conn, spec), None, self._state(conn, spec))
        parsed = refspec.parse(spec, lambda name: refstore.get_ref(conn, name) is not None)
        ref = self._get_ref(conn, parsed.ref)
        view = refspec.resolve(conn, parsed, ref, self._state, self.config.history_retention)
        if view.commit is not None:  # `CommitExpired` if a shorter window's gc took a metadata file it needs
            current = self._state(conn, view.commit.ref)
            past = [(table, location) for table, location in view.state.items() if current.get(table) != location]
            expiry.check_kept(spec, view.commit, past, self.config.properties, self.config.history_retention)
        return view

    def view(self, spec: str = MAIN) -> RefView:
        """Resolve a ref spec (`main`, `main@<commit>`, `dev~3`, a tag): its ref, commit and table pointers."""
        with self.engine.connect() as conn:
            return self._view(conn, spec)

    def _pinned_catalog(self, view: RefView) -> ReadOnlyCatalog:
        if not view.pinned:
            return self._read_catalog(view.ref.name)
        return PinnedCatalog(view.spec, self.engine, self._schema_version, view.state, **self._catalog_properties)

    def log(
        self, ref: str = MAIN, limit: int | None = None, *, table: str | None = None, run_id: str | None = None
    ) -> list[Commit]:
        """Commits reachable from `ref` (a branch, tag or past commit), newest first: its own, then its parent's up
        to the fork; only those that changed `table`, or were made by Dagster run `run_id`, when given."""
        with self.engine.connect() as conn:
            view = self._view(conn, ref)
            commits = refspec.reachable(conn, view.ref)
        if view.commit is not None:
            commits = [c for c in commits if c.seq <= view.commit.seq]
        if table is not None:
            commits = [c for c in commits if table in c.tables or table in (c.changes or {})]
        if run_id is not None:
            commits = [c for c in commits if c.run_id == run_id]
        return commits[:limit] if limit else commits

    def diff(self, a: str, b: str) -> list[TableDiff]:
        """Tables added, removed or modified going from ref `a` to ref `b` (either may be a past commit): snapshot ids,
        and the rows and files that `b`'s operations not yet in `a` added and removed (what merging `b` into `a` would
        replay)."""
        with self.engine.connect() as conn:
            before, after = self._view(conn, a), self._view(conn, b)
        diffs = diff_states(before.state, after.state)
        return [
            self._retrying(f"diff of table '{d.table}' from '{a}' to '{b}'", lambda d=d: self._diff_counts(d, before, after))
            for d in diffs
        ]

    def _diff_counts(self, d: TableDiff, a: RefView, b: RefView) -> TableDiff:
        before = load_at(self._read_catalog(a.ref.name), d.table, d.before) if d.before else None
        after = load_at(self._read_catalog(b.ref.name), d.table, d.after) if d.after else None
        sides = [(view.spec, table) for view, table in ((b, after), (a, before)) if table is not None]
        with corruption.named(d.table, lambda: sides):
            counts = change_counts(after, before) if after is not None else {}
        return replace(d, before_snapshot_id=_snapshot_id(before), after_snapshot_id=_snapshot_id(after), **counts)

    def revert(
        self, commit: str | Commit, *, on: str = MAIN, message: str | None = None, run_id: str | None = None
    ) -> UndoResult:
        """A new commit on branch `on` that undoes `commit` (an id or unique prefix from `log`) for each table it changed.

        A table nothing changed since goes back to its metadata before the commit (schema included); one that later
        commits changed gets the file-level inverse (the commit's added files removed, its removed files added back)
        when those commits left the commit's files in place, else `RevertConflict` names it and nothing changes.
        Allowed on `main`: it only takes away what one commit did.
        """
        from dagster_lakehouse.lakehouse.undo import RevertCommit

        commit_id = commit.id if isinstance(commit, Commit) else commit
        with self.engine.connect() as conn:
            self._get_ref(conn, on)  # a branch, not a past commit (`PinnedRefError`)
            target = self._view(conn, f"{on}@{commit_id}" if "@" not in commit_id and "~" not in commit_id else commit_id)
            if target.commit is None:
                raise CommitNotFound(f"ref '{commit_id}': names '{target.ref.name}' as it is now, not a commit; give a commit id or '{target.ref.name}~1'")
        return RevertCommit(self, target.commit, on, message=message, run_id=run_id).execute()

    def reset(
        self, branch: str, *, to: str, allow_main: bool = False, message: str | None = None, run_id: str | None = None
    ) -> UndoResult:
        """Point every table of `branch` where `to` (a ref or past commit: `dev~2`, `main@<id>`, `main`) points, in one
        commit; tables `to` lacks are dropped from the branch. Refused for `main` unless `allow_main`."""
        from dagster_lakehouse.lakehouse.undo import ResetCommit

        return ResetCommit(self, branch, to, allow_main=allow_main, message=message, run_id=run_id).execute()


def _snapshot_id(table: Table | None) -> int | None:
    snapshot = table.current_snapshot() if table is not None else None
    return snapshot.snapshot_id if snapshot else None
