"""Three-way merge planning over ref states (table name -> metadata file), and diffs between refs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

State = dict[str, str]


@dataclass(frozen=True)
class TableDiff:
    """How one table differs between two refs."""

    table: str
    change: Literal["added", "removed", "modified"]
    before: str | None
    after: str | None
    before_snapshot_id: int | None = None
    after_snapshot_id: int | None = None
    rows_added: int = 0
    """Rows the operations of `b` that `a` lacks brought in (appends; a replace's new rows)."""
    rows_removed: int = 0
    """Rows those operations removed (a replace's or delete's matched rows)."""
    files_added: int = 0
    files_removed: int = 0


@dataclass(frozen=True)
class MergeResult:
    """What a merge changed on its target: tables taken from the source, and the merge commit."""

    source: str
    target: str
    tables: list[str]
    commit_id: str | None
    fast_forward: bool = False
    changes: dict[str, str | None] = field(default_factory=dict)
    replayed: list[str] = field(default_factory=list)
    """Tables both sides changed, merged file by file by replaying the source's operations on the target."""
    resolved: dict[str, str] = field(default_factory=dict)
    """Conflicting tables settled by `on_conflict`: table -> the side whose version was kept."""


@dataclass(frozen=True)
class PointerPlan:
    """Per table changed on one side only: the metadata file to point the target at (None = drop); and the tables
    both sides changed, which `merging.MergeCommit` merges file by file."""

    changes: dict[str, str | None]
    both_changed: list[str]


def plan_merge(base: State, source: State, target: State) -> PointerPlan:
    """Changed on one side only: take that side; changed on both to different states: `both_changed`."""
    changes: dict[str, str | None] = {}
    both_changed: list[str] = []
    for table in sorted(set(base) | set(source) | set(target)):
        b, s, t = base.get(table), source.get(table), target.get(table)
        if s == b or s == t:
            continue
        if t == b:
            changes[table] = s
        else:
            both_changed.append(table)
    return PointerPlan(changes=changes, both_changed=both_changed)


def diff_states(before: State, after: State) -> list[TableDiff]:
    """Tables added, removed or modified going from `before` to `after`."""
    diffs = []
    for table in sorted(set(before) | set(after)):
        a, b = before.get(table), after.get(table)
        if a == b:
            continue
        change: Literal["added", "removed", "modified"] = "added" if a is None else "removed" if b is None else "modified"
        diffs.append(TableDiff(table=table, change=change, before=a, after=b))
    return diffs
