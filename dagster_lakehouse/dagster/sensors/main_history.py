"""`main`'s commit log as `main_state_sensor` follows it: every commit since the sensor's cursor, each read once.

Every commit on `main` (a write or merge from Dagster, the CLI, Python or another process, a revert, a reset)
changes tables, and only the first two kinds can come with a Dagster run that records the new version. The sensor
keeps the log position (`seq`) of the last commit it handled: a tick with no newer commit costs one indexed query
and reads no table. A ref's commits are numbered in the order they took effect (each locks the ref's row, design note
16), so none is skipped.
"""

from __future__ import annotations

from dagster_lakehouse.lakehouse import refs as refstore
from dagster_lakehouse.lakehouse.core import Lakehouse
from dagster_lakehouse.lakehouse.names import MAIN
from dagster_lakehouse.lakehouse.refs import Commit

__all__ = ["main_commits"]


def main_commits(lakehouse: Lakehouse, after_seq: int | None) -> tuple[list[Commit], int]:
    """Every commit on `main` after log position `after_seq`, oldest first, and the position to continue from.

    With no position yet (a sensor's first tick) none are returned: history from before the sensor ran stays as the
    asset pages show it."""
    with lakehouse.engine.connect() as conn:
        if after_seq is None:
            return [], refstore.last_seq(conn)
        commits = refstore.commits_after(conn, MAIN, after_seq)
    return list(reversed(commits)), max([after_seq, *(c.seq for c in commits)])
