"""Which asset versions a revert or reset of `main` took away, so `main_state_sensor` restates those assets.

A revert or reset commit on `main` moves tables back (or forward) without a Dagster run: the assets' latest
materializations still describe versions `main` no longer holds, and staleness in the UI would be wrong. For each
such commit, a table's *removed* versions are the snapshots its pointer had before the commit and no longer has after
(`before`'s ancestry minus `after`'s), plus, for a file-level revert, the snapshots the reverted commit added. An
unpartitioned asset on a changed table is restated at `main`'s version; a partitioned one, each partition whose latest
version on `main` is a removed one (the others were not touched). `main_state_events` then copies the materialization
that produced the restored version when there is one (so data version = the restored snapshot id), else builds one
from the table.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import dagster as dg

from dagster_lakehouse.dagster.sensors.merge import DATA_VERSION_TAG
from dagster_lakehouse.lakehouse.core import Lakehouse
from dagster_lakehouse.lakehouse.errors import LakehouseError
from dagster_lakehouse.lakehouse.history import REVERT_OF, chain
from dagster_lakehouse.lakehouse.names import MAIN
from dagster_lakehouse.lakehouse.refs import Commit

__all__ = ["UNDO_KINDS", "removed_versions", "undo_commits", "versions_on_main"]

UNDO_KINDS = ("revert", "reset")
"""Kinds of commit on `main` that change tables without a run writing them."""

_LOG_PAGE = 500
_RECORDS = 1000


def undo_commits(lakehouse: Lakehouse, after_seq: int | None) -> tuple[list[Commit], int]:
    """Revert and reset commits on `main` after log position `after_seq`, oldest first, and the newest position.

    With no position yet (a sensor's first tick) none are returned: history from before the sensor ran stays as the
    asset pages show it."""
    commits = lakehouse.log(MAIN, limit=_LOG_PAGE)
    newest = commits[0].seq if commits else 0
    if after_seq is None:
        return [], newest
    return [c for c in reversed(commits) if c.seq > after_seq and c.kind in UNDO_KINDS], max(newest, after_seq)


def _chain_ids(lakehouse: Lakehouse, table: str, spec: str) -> set[int]:
    """Snapshot ids of `table` at `spec` and their ancestors (empty when the table is absent there)."""
    try:
        return {snapshot.snapshot_id for snapshot in chain(lakehouse.table(table, spec).metadata)}
    except LakehouseError:
        return set()


def _reverted_commit(lakehouse: Lakehouse, table: str, commit: Commit) -> str | None:
    """The commit a file-level revert of `table` undid (snapshot property `lakehouse.revert-of`), if it was one."""
    try:
        snapshot = lakehouse.table(table, f"{MAIN}@{commit.id}").current_snapshot()
    except LakehouseError:
        return None
    summary = snapshot.summary.additional_properties if snapshot is not None and snapshot.summary else {}
    return summary.get(REVERT_OF)


def removed_versions(lakehouse: Lakehouse, commit: Commit) -> dict[str, set[int]]:
    """Per table `commit` (a revert or reset on `main`) changed: the snapshot ids `main` no longer holds after it."""
    removed: dict[str, set[int]] = {}
    for table in sorted(commit.changes or {}):
        gone = _chain_ids(lakehouse, table, f"{MAIN}@{commit.id}~1") - _chain_ids(lakehouse, table, f"{MAIN}@{commit.id}")
        reverted = _reverted_commit(lakehouse, table, commit)
        if reverted is not None:
            gone |= _chain_ids(lakehouse, table, f"{MAIN}@{reverted}") - _chain_ids(lakehouse, table, f"{MAIN}@{reverted}~1")
        removed[table] = gone
    return removed


def _text(metadata: Any, key: str) -> str | None:
    value = metadata.get(key) if metadata else None
    value = getattr(value, "value", value)
    return None if value is None else str(value)


def _main_version(materialization: dg.AssetMaterialization) -> int | None:
    """The snapshot of `main` a materialization recorded (written on `main`, published or restated there)."""
    if _text(materialization.metadata, "lakehouse/branch") != MAIN:
        return None
    recorded = (materialization.tags or {}).get(DATA_VERSION_TAG) or _text(materialization.metadata, "lakehouse/snapshot_id")
    return int(recorded) if recorded and recorded.lstrip("-").isdigit() else None


def versions_on_main(
    instance: dg.DagsterInstance, keys: Iterable[dg.AssetKey], tables: set[str]
) -> list[tuple[dg.AssetKey, str | None, str, int | None]]:
    """`(asset, partition, table, snapshot on main)` for each asset (partition) whose latest materialization wrote one
    of `tables`: the version its page shows (snapshot None when that is not a version of `main`)."""
    found = []
    for key in keys:
        latest = instance.fetch_materializations(key, limit=1).records
        if not latest or _text(latest[0].asset_materialization.metadata, "dagster/table_name") not in tables:
            continue
        seen: set[str | None] = set()
        for record in instance.fetch_materializations(key, limit=_RECORDS).records:
            materialization = record.asset_materialization
            if materialization is None or materialization.partition in seen:
                continue
            seen.add(materialization.partition)
            table = _text(materialization.metadata, "dagster/table_name")
            if table in tables:
                found.append((key, materialization.partition, table, _main_version(materialization)))
    return found
