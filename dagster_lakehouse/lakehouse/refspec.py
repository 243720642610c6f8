"""Ref specs that name a past state of the lake: `main@<commit>`, `dev~3`, `main@<commit>~1`.

A spec is `<ref>[@<commit id or unique prefix>][~<n>]` (`~` alone means `~1`); a ref whose name is the whole spec
wins (git allows `@` in ref names, so `parse` looks refs up). `~n` steps back `n` commits along what `log(ref)` shows (the ref's own commits, then its parent's up to the
fork). A spec resolves to a `RefView`: the commit and every table pointer the ref had right after it, rebuilt from
the log, which records each commit's pointers before and after in the transaction that moves them
(`refs.commits_table`). A view is read-only: writing to it raises `PinnedRefError` naming it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from dagster_lakehouse.lakehouse import refs as refstore
from dagster_lakehouse.lakehouse.errors import CommitExpired, CommitNotFound, LakehouseError, RefNotFound
from dagster_lakehouse.lakehouse.merge import State
from dagster_lakehouse.lakehouse.refs import Commit, Ref

if TYPE_CHECKING:
    from sqlalchemy import Connection

MIN_PREFIX = 4
"""The shortest commit-id prefix accepted after `@`."""

_CONSISTENT_READ_ATTEMPTS = 20


def is_pinned(spec: str) -> bool:
    """Whether `spec` has the form of a past commit (`<ref>@<hex>`, `<ref>~<n>`) rather than a ref's name."""
    if not isinstance(spec, str):
        return False
    match = re.search(rf"(@[0-9a-fA-F]{{{MIN_PREFIX},32}})?(~\d*)?$", spec)
    return match is not None and match.group(0) != "" and match.start() > 0


@dataclass(frozen=True)
class RefSpec:
    """A parsed spec: the ref, an optional commit prefix, and how many commits to step back from there."""

    text: str
    ref: str
    commit: str | None
    back: int


def parse(spec: str, exists: Callable[[str], bool]) -> RefSpec:
    """Split `spec` into ref, commit prefix and steps back. Ref names may hold `@` (git allows it) but not `~`: the
    `~<n>` suffix comes off first; then a ref named by what is left wins, else the part before the last `@` is the
    ref. `RefNotFound` / `CommitNotFound` name the spec when it is malformed or its ref does not exist."""
    rest, tilde, back_text = spec.partition("~")
    if tilde and not re.fullmatch(r"\d{0,6}", back_text):
        raise CommitNotFound(f"ref '{spec}': '~{back_text}' must be '~' followed by a number of commits, e.g. '~3'")
    back = (int(back_text) if back_text else 1) if tilde else 0
    if exists(rest) or "@" not in rest:
        if not exists(rest):
            raise RefNotFound(f"ref '{spec}': branch or tag '{rest}' does not exist")
        return RefSpec(spec, rest, None, back)
    ref, _, commit = rest.rpartition("@")
    if not exists(ref):
        raise RefNotFound(f"ref '{spec}': branch or tag '{ref}' does not exist")
    if not re.fullmatch(rf"[0-9a-fA-F]{{{MIN_PREFIX},32}}", commit):
        raise CommitNotFound(
            f"ref '{spec}': {commit!r} is not a commit id (at least {MIN_PREFIX} hex digits of an id `log` shows)"
        )
    return RefSpec(spec, ref, commit.lower(), back)


@dataclass(frozen=True)
class RefView:
    """What a spec names: the ref (branch or tag), the commit (None: the ref as it is now) and its table pointers."""

    spec: str
    ref: Ref
    commit: Commit | None
    state: State

    @property
    def pinned(self) -> bool:
        return self.commit is not None


def reachable(conn: Connection, ref: Ref, limit: int | None = None) -> list[Commit]:
    """Commits reachable from `ref`, newest first: its own, then its parent's up to the fork, and so on."""
    commits: list[Commit] = []
    current: Ref | None = ref
    up_to: int | None = None
    seen: set[str] = set()
    while current is not None and current.name not in seen and (limit is None or len(commits) < limit):
        seen.add(current.name)
        commits.extend(refstore.commits_of(conn, current.name, up_to))
        up_to = current.fork_seq
        current = refstore.get_ref(conn, current.parent) if current.parent else None
    commits.sort(key=lambda c: c.seq, reverse=True)
    return commits[:limit] if limit else commits


def resolve(conn: Connection, parsed: RefSpec, ref: Ref, current_state, retention: timedelta | None) -> RefView:
    """The view `parsed` names on `ref` (already looked up); `current_state(conn, name)` reads a ref's pointers.

    `CommitNotFound` when the commit is not in `ref`'s history, ambiguous, or `~n` goes past its first commit;
    `CommitExpired` when the commit is older than the history retention window (`retention`).
    """
    spec = parsed.text
    history = reachable(conn, ref)
    if parsed.commit is None:
        if parsed.back == 0:
            return RefView(spec, ref, None, current_state(conn, ref.name))
        start = 0
    else:
        matches = [i for i, c in enumerate(history) if c.id.startswith(parsed.commit)]
        if len(matches) > 1:
            shown = ", ".join(history[i].id[: len(parsed.commit) + 4] for i in matches[:5])
            raise CommitNotFound(f"ref '{spec}': commit prefix '{parsed.commit}' is ambiguous on '{ref.name}' ({shown}); give more digits")
        if not matches:
            raise CommitNotFound(_not_in_history(conn, spec, parsed.commit, ref, history))
        start = matches[0]
    index = start + parsed.back
    if index >= len(history):
        raise CommitNotFound(
            f"ref '{spec}': '{ref.name}' has only {len(history)} commit{'s' if len(history) != 1 else ''} in its history"
            f"{'' if parsed.commit is None else f' and {start} after that commit'}, so it cannot go back {parsed.back}"
        )
    commit = history[index]
    if retention is not None and commit.time < datetime.now(UTC) - retention and index > 0:
        raise CommitExpired(
            f"ref '{spec}': commit {commit.short_id} of {commit.time:%Y-%m-%d %H:%M} UTC is older than the history "
            f"retention window ({_days(retention)}), so gc may have deleted its files; lengthen the window with "
            f"LAKEHOUSE_HISTORY_RETENTION_DAYS (or Lakehouse(history_retention=...)) before gc runs"
        )
    return RefView(spec, ref, commit, state_at(conn, commit, current_state))


def _not_in_history(conn: Connection, spec: str, prefix: str, ref: Ref, history: list[Commit]) -> str:
    elsewhere = refstore.commits_by_prefix(conn, prefix, limit=3)
    if elsewhere:
        where = ", ".join(f"{c.short_id} on '{c.ref}'" for c in elsewhere)
        return f"ref '{spec}': commit '{prefix}' is not in the history of '{ref.name}' ({where}); name that ref instead"
    newest = ", ".join(c.short_id for c in history[:3]) or "none"
    return f"ref '{spec}': no commit '{prefix}' in the history of '{ref.name}' (newest: {newest}; see `lakehouse log {ref.name}`)"


def _days(window: timedelta) -> str:
    days = window.total_seconds() / 86400
    return f"{days:g} day{'s' if days != 1 else ''}"


def state_at(conn: Connection, commit: Commit, current_state) -> State:
    """Every table pointer of `commit.ref` right after `commit`: its pointers now, with each later commit undone.

    The ref's pointers and its log are read until two reads of the log agree on its newest commit, so the
    pointers read between them are exactly the log's last state (a commit moves pointers and logs in one transaction).
    """
    for _ in range(_CONSISTENT_READ_ATTEMPTS):
        later = refstore.commits_after(conn, commit.ref, commit.seq)
        state = current_state(conn, commit.ref)
        again = refstore.commits_after(conn, commit.ref, later[0].seq if later else commit.seq)
        if not again:
            break
    else:
        raise LakehouseError(f"'{commit.ref}' kept changing while commit {commit.short_id} was looked up; try again")
    state = dict(state)
    for newer in later:  # newest first
        if newer.changes is None:
            raise CommitNotFound(
                f"commit {commit.short_id} of '{commit.ref}' cannot be rebuilt: the later commit {newer.short_id} was "
                "logged by a version of this package that did not record table pointers"
            )
        for table, (before, _after) in newer.changes.items():
            if before is None:
                state.pop(table, None)
            else:
                state[table] = before
    return state
